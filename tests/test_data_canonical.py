"""Canonical I/O and bad-input reporting: every kind is counted with file:line, strict mode names the line."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from mtin_tf import features as F
from mtin_tf.data import canonical as C
from mtin_tf.data import cli as data_cli
from mtin_tf.data import report as R

HEADER = ",".join(F.INTERACTION_COLUMNS)
# line numbers count the header as line 1
GOOD_AND_BAD_ROWS = [
    "1,10,100,1",      # 2 good
    "1,11,101,0",      # 3 good
    ",12,102,1",       # 4 missing_field
    "abc,12,103,1",    # 5 non_numeric_id
    "0,12,104,1",      # 6 nonpositive_id
    "2,-5,105,0",      # 7 nonpositive_id
    "2,12,-3,1",       # 8 bad_timestamp (negative)
    "2,12,yesterday,1",  # 9 bad_timestamp (unparsable)
    "2,12,106,7",      # 10 bad_click
    "1,10,100,0",      # 11 duplicate_row of line 2 (first kept, even though its click differs)
    "2,99,107,1",      # 12 item_without_features (item 99 has no vector)
    "2,13,108,1",      # 13 item_without_features (item 13's vector is NaN -> bad_feature_vector)
    "2,14,109,0",      # 14 item_without_features (item 14's vector has the wrong length)
    "2,12,110,1",      # 15 good
]
EXPECTED = {R.MISSING_FIELD: [4], R.NON_NUMERIC_ID: [5], R.NONPOSITIVE_ID: [6, 7], R.BAD_TIMESTAMP: [8, 9],
            R.BAD_CLICK: [10], R.DUPLICATE_ROW: [11], R.ITEM_WITHOUT_FEATURES: [12, 13, 14]}


def _write_inputs(tmp_path):
    inter = tmp_path / "log.csv"
    inter.write_text("\n".join([HEADER] + GOOD_AND_BAD_ROWS) + "\n")
    items = tmp_path / "items.csv"
    items.write_text("item_id,features,category\n10,0.1 0.2 0.3,1\n11,1 2 3,2\n12,0 0 1,1\n13,nan 1 2,3\n"
                     "14,1 2,3\n")
    return str(inter), str(items)


def test_every_bad_input_kind_is_counted_with_file_and_line(tmp_path):
    inter, items_path = _write_inputs(tmp_path)
    report = R.Report("convert")
    items = C.read_item_table(items_path, report)
    df = C.read_interactions(inter, report, items=items)
    assert sorted(items.item_ids.tolist()) == [10, 11, 12]
    assert report.bad[R.BAD_FEATURE_VECTOR]["count"] == 2
    vec_lines = sorted(e[len(items_path) + 1:].split(":")[0] for e in report.bad[R.BAD_FEATURE_VECTOR]["examples"])
    assert vec_lines == ["5", "6"]  # item 13 (NaN) and item 14 (2 values)
    for kind, lines in EXPECTED.items():
        entry = report.bad[kind]
        assert entry["count"] == len(lines), kind
        assert [e.split(":")[1] for e in entry["examples"]] == [str(n) for n in lines], kind
        assert all(e.startswith(inter + ":") for e in entry["examples"])
    # nothing dropped without being counted
    interaction_bad = sum(len(v) for v in EXPECTED.values())
    assert report.counts["rows_read"] == len(GOOD_AND_BAD_ROWS)
    assert report.counts["rows_kept"] == len(GOOD_AND_BAD_ROWS) - interaction_bad == len(df) == 3
    assert df.to_dict("list") == {F.USER_ID: [1, 1, 2], F.ITEM_ID: [10, 11, 12], F.TIMESTAMP: [100, 101, 110],
                                  F.CLICK: [1, 0, 1]}
    assert all(df[c].dtype == np.int64 for c in F.INTERACTION_COLUMNS)


def test_strict_mode_stops_at_first_bad_row_naming_file_and_line(tmp_path):
    inter, items_path = _write_inputs(tmp_path)
    with pytest.raises(R.BadInputError, match=rf"missing_field at {inter}:4"):
        C.read_interactions(inter, R.Report("convert", strict=True))
    rc = data_cli.run_convert(_args(format="canonical", input=[inter], features=items_path,
                                    out=str(tmp_path / "o"), strict=True))
    assert rc == 2


def _args(**kw):
    import argparse

    defaults = dict(click_threshold=4.0, title_hash_dim=0, time_field=None, data_command="convert", strict=False)
    return argparse.Namespace(**{**defaults, **kw})


def test_convert_canonical_writes_outputs_and_json_report(tmp_path, capsys):
    inter, items_path = _write_inputs(tmp_path)
    out = tmp_path / "out"
    assert data_cli.run_convert(_args(format="canonical", input=[inter], features=items_path, out=str(out))) == 0
    printed = capsys.readouterr().out
    assert "skipped 2 x bad_timestamp" in printed and "convert_report.json" in printed
    rep = json.loads((out / "convert_report.json").read_text())
    assert rep["bad_input"][R.DUPLICATE_ROW]["count"] == 1
    assert rep["counts"]["rows_kept"] == 3
    df = pd.read_parquet(out / C.INTERACTIONS_FILE)
    assert len(df) == 3
    items = C.read_item_features(str(out / C.ITEM_FEATURES_FILE))
    assert items.features.shape == (3, 3) and items.features.dtype == np.float32
    assert items.category.tolist() == [1, 2, 1]


def test_interactions_and_item_features_round_trip(tmp_path):
    df = pd.DataFrame({F.USER_ID: [3, 1, 1], F.ITEM_ID: [5, 6, 5], F.TIMESTAMP: [9, 2, 1], F.CLICK: [0, 1, 1],
                       C.IS_TEST: [1, 0, 0]})
    for name in ("a.parquet", "a.csv"):
        path = C.write_interactions(df, str(tmp_path / name))
        back = C.read_interactions(path, R.Report("t"))
        expected = df.sort_values([F.USER_ID, F.TIMESTAMP]).reset_index(drop=True)
        pd.testing.assert_frame_equal(back, expected.astype({C.IS_TEST: np.int8}), check_dtype=False)
    items = C.ItemFeatures(np.array([4, 2], np.int64), np.arange(6, dtype=np.float32).reshape(2, 3),
                           np.array([1, 0], np.int64))
    path = C.write_item_features(str(tmp_path / "items.npz"), items)
    back = C.read_item_features(path)
    assert os.path.basename(path) == "items.npz"
    np.testing.assert_array_equal(back.item_ids, items.item_ids)
    np.testing.assert_array_equal(back.features, items.features)
    np.testing.assert_array_equal(back.category, items.category)
    np.testing.assert_array_equal(back.rows(np.array([2, 4, 7])), [1, 0, -1])
    assert C.read_item_features(C.write_item_features(str(tmp_path / "b.npz"), item_ids=[1], features=[[0.5]])) \
        .category is None


def test_parquet_locations_are_row_numbers(tmp_path):
    df = pd.DataFrame({F.USER_ID: [1, 1, -2], F.ITEM_ID: [1, 1, 3], F.TIMESTAMP: [5, 5, 6], F.CLICK: [1, 1, 0]})
    path = str(tmp_path / "x.parquet")
    df.to_parquet(path, index=False)
    report = R.Report("t")
    C.read_interactions(path, report)
    assert report.bad[R.DUPLICATE_ROW]["examples"][0].startswith(f"{path}:2:")
    assert report.bad[R.NONPOSITIVE_ID]["examples"][0].startswith(f"{path}:3:")


def test_the_issue_19_file_converts_every_valid_row(tmp_path, capsys):
    """A row with an extra field, an id beyond int64 and a non-UTF-8 byte are each one counted skip; the rest stays."""
    rows = ["1,10,100,1", "1,10,101,0,extra", "99999999999999999999999,10,102,1", "1,99999999999999999999999,103,1",
            "2,9223372036854775807,104,1", "", "2,10,105.7,0", "2,10,1e400,1", "2,10,\xff,1", "1,10", "2,10,107,1"]
    inter = tmp_path / "inter.csv"
    inter.write_bytes(("\n".join([HEADER] + rows) + "\n").encode("latin-1"))  # \xff: not UTF-8
    items = tmp_path / "items.npz"
    C.write_item_features(str(items), item_ids=[10, 9223372036854775807], features=[[0.0], [1.0]])
    out = tmp_path / "out"
    args = _args(format="canonical", input=[str(inter)], features=str(items), out=str(out))
    assert data_cli.run_convert(args) == 0
    rep = json.loads((out / "convert_report.json").read_text())["bad_input"]
    assert rep[R.MALFORMED_ROW] == {"count": 1, "examples": [f"{inter}:3: 5 fields, the header has 4"]}
    assert rep[R.ID_OUT_OF_RANGE]["examples"] == [
        f"{inter}:4: user_id='99999999999999999999999' is above 9223372036854775807",
        f"{inter}:5: item_id='99999999999999999999999' is above 9223372036854775807"]
    assert [e.split(":")[1] for e in rep[R.BAD_TIMESTAMP]["examples"]] == ["9", "10"]  # 1e400; the U+FFFD byte
    assert rep[R.MISSING_FIELD]["examples"] == [f"{inter}:11: timestamp is empty"]  # the blank line 7 is no row
    df = pd.read_parquet(out / C.INTERACTIONS_FILE)
    assert df[F.ITEM_ID].tolist() == [10, 9223372036854775807, 10, 10]  # the largest id survives, exactly
    assert df[F.TIMESTAMP].tolist() == [100, 104, 105, 107]  # 105.7 floored
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(R.BadInputError, match=rf"malformed_row at {inter}:3: 5 fields"):
        C.read_interactions(str(inter), R.Report("convert", strict=True))


def test_strict_mode_reports_the_earlier_row_before_a_later_malformed_one(tmp_path):
    inter = tmp_path / "a.csv"
    inter.write_text("\n".join([HEADER, "0,1,1,1", "1,1,1,1,1"]) + "\n")
    with pytest.raises(R.BadInputError, match=rf"nonpositive_id at {inter}:2"):
        C.read_interactions(str(inter), R.Report("c", strict=True))
    inter.write_text("\n".join([HEADER, "1,99999999999999999999999,1,1", "x,1,1,1"]) + "\n")  # later check first
    with pytest.raises(R.BadInputError, match=rf"id_out_of_range at {inter}:2"):
        C.read_interactions(str(inter), R.Report("c", strict=True))


def test_ids_above_2_53_keep_every_digit_in_csv_and_parquet(tmp_path):
    big = 2 ** 53 + 1
    df = pd.DataFrame({F.USER_ID: [big, 1], F.ITEM_ID: [big + 2, 2], F.TIMESTAMP: [big, 0], F.CLICK: [1, 0]})
    for name in ("x.csv", "x.parquet"):
        back = C.read_interactions(C.write_interactions(df, str(tmp_path / name)), R.Report("t"))
        assert back[F.USER_ID].tolist() == [1, big] and back[F.ITEM_ID].tolist() == [2, big + 2]
    bad = tmp_path / "bad.csv"  # one bad row makes pandas fall back to floats: the exact path must still hold
    bad.write_text(f"{HEADER}\n{big},{big + 2},{big},1\nabc,1,1,1\n8064403691180127.0,1,1,1\n")
    report = R.Report("t")  # (pandas parses 8064403691180127.0 as ...126.0: 17 digits are decided exactly)
    back = C.read_interactions(str(bad), report)
    assert back[F.USER_ID].tolist() == [8064403691180127, big] and back[F.ITEM_ID].tolist() == [1, big + 2]
    assert report.bad[R.NON_NUMERIC_ID]["count"] == 1


def test_parquet_with_nulls_uint64_and_float_ids(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({F.USER_ID: pa.array([1, None, 2 ** 63, 3], pa.uint64()),
                      F.ITEM_ID: pa.array([5, 5, 5, 1.5], pa.float64()),
                      F.TIMESTAMP: pa.array([1, 2, 3, 4], pa.int64()), F.CLICK: pa.array([1, 0, 1, 0], pa.int8())})
    path = str(tmp_path / "t.parquet")
    pq.write_table(table, path)
    report = R.Report("t")
    df = C.read_interactions(path, report)
    assert df[F.USER_ID].tolist() == [1]
    assert {k: v["examples"][0].split(":")[1] for k, v in report.bad.items()} == {
        R.MISSING_FIELD: "2", R.ID_OUT_OF_RANGE: "3", R.NON_NUMERIC_ID: "4"}


def test_is_test_and_category_values_are_checked(tmp_path):
    inter = tmp_path / "a.csv"
    inter.write_text(f"{HEADER},is_test\n1,10,1,1,0\n1,10,2,1,\n1,10,3,1,300\n1,10,4,1,x\n")
    report = R.Report("t")
    df = C.read_interactions(str(inter), report)
    assert df[C.IS_TEST].tolist() == [0, 0] and report.bad[R.BAD_IS_TEST]["count"] == 2  # 300 does not wrap
    items = tmp_path / "items.csv"
    items.write_text("item_id,features,category\n1,0.5,3\n2,0.5,\n3,0.5,abc\n4,0.5,-1\n5,0.5,1e30\n")
    report = R.Report("t")
    table = C.read_item_table(str(items), report)
    assert table.item_ids.tolist() == [1, 2] and table.category.tolist() == [3, 0]
    assert [e.split(":")[1] for e in report.bad[R.BAD_CATEGORY]["examples"]] == ["4", "5", "6"]


def _npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return str(path)


@pytest.mark.parametrize("arrays, message", [
    (dict(item_id=np.arange(1, 3), features=np.ones((2, 2))),
     r"no array \['item_ids'\] and unexpected array\(s\) \['item_id'\] \(found \['features', 'item_id'\]\)"),
    (dict(item_ids=np.arange(1, 3), features=np.ones((2, 2)), categories=np.ones(2, np.int64)),
     r"unexpected array\(s\) \['categories'\]"),
    (dict(item_ids=np.array([1.0, 2.0]), features=np.ones((2, 2))),
     r"item_ids is float64 \[2\], expected an integer \(int64\) vector \[N\]"),
    (dict(item_ids=np.arange(1, 3), features=np.array(["a", "b"])),
     r"features is <U1 \[2\], expected a float32 matrix \[N, F\]"),
    (dict(item_ids=np.arange(1, 4), features=np.ones((2, 2))), r"features has 2 rows for 3 item_ids \(ragged"),
    (dict(item_ids=np.zeros(0, np.int64), features=np.ones((0, 2))), r"the table is empty \(0 items\)"),
    (dict(item_ids=np.arange(1, 3), features=np.ones((2, 2)), category=np.ones(3, np.int64)),
     r"category is int64 \[3\], expected an integer \(int64\) vector \[2\]"),
])
def test_item_table_structure_errors_name_file_found_and_expected(tmp_path, arrays, message):
    path = _npz(tmp_path / "items.npz", **arrays)
    for read in (lambda: C.read_item_table(path, R.Report("t")), lambda: C.read_item_features(path)):
        with pytest.raises(R.BadInputError, match=message) as err:
            read()
        assert str(err.value).startswith(f"{path}: ") and "expected item_ids int64 [N]" in str(err.value)


def test_item_table_bad_rows_are_counted_or_refused(tmp_path):
    path = _npz(tmp_path / "items.npz", item_ids=np.array([3, 3, 4, 2 ** 64 - 1], np.uint64),
                features=np.array([[1.0], [2.0], [np.nan], [0.0]]))
    report = R.Report("t")
    items = C.read_item_table(path, report)
    assert items.item_ids.tolist() == [3] and items.features.tolist() == [[1.0]]
    assert {k: v["count"] for k, v in report.bad.items()} == {
        R.ID_OUT_OF_RANGE: 1, R.BAD_FEATURE_VECTOR: 1, R.DUPLICATE_ROW: 1}
    with pytest.raises(R.BadInputError, match=r"row 3 \(item_ids\[3\] = 18446744073709551615\) has an id outside"):
        C.read_item_features(path)
    with pytest.raises(R.BadInputError, match=r"row 1 .* has an id listed again"):
        C.read_item_features(_npz(tmp_path / "d.npz", item_ids=np.array([3, 3]), features=np.ones((2, 1))))
    with pytest.raises(R.BadInputError, match=r"none of its item rows is valid"):
        C.read_item_table(_npz(tmp_path / "n.npz", item_ids=np.array([1]), features=np.array([[np.inf]])),
                          R.Report("t"))


def test_unreadable_files_are_precise_errors_not_tracebacks(tmp_path):
    pickled = tmp_path / "obj.npz"
    with open(pickled, "wb") as f:
        np.savez(f, item_ids=np.array([1, 2], dtype=object), features=np.ones((2, 1)))
    not_a_file = tmp_path / "garbage.parquet"
    not_a_file.write_bytes(b"\x00not parquet")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    repeated = tmp_path / "rep.csv"
    repeated.write_text("user_id,item_id,timestamp,click,click\n")
    for read, message in [
            (lambda: C.read_item_table(str(pickled), R.Report("t")), "array 'item_ids' holds Python objects"),
            (lambda: C.read_item_table(str(tmp_path / "x.npz"), R.Report("t")), "not a readable .npz archive"),
            (lambda: C.read_interactions(str(not_a_file), R.Report("t")), "not a readable Parquet file"),
            (lambda: C.read_interactions(str(tmp_path / "none.csv"), R.Report("t")), "cannot open"),
            (lambda: C.read_interactions(str(empty), R.Report("t")), ":1: no header line"),
            (lambda: C.read_interactions(str(repeated), R.Report("t")), r"column name\(s\) \['click'\] appear")]:
        with pytest.raises(R.BadInputError, match=message):
            read()
    header_only = tmp_path / "h.csv"
    header_only.write_text(HEADER + "\n")
    assert len(C.read_interactions(str(header_only), R.Report("t"))) == 0


def test_csv_block_boundaries_keep_line_numbers(tmp_path):
    rows = [f"{u},{u},{u},1" for u in range(1, 40)]
    rows[10] = "1,2,3,4,5"
    rows[25] = '"7",8,"x,y",1'  # quoted separator: 4 fields, counted by the csv module
    rows[30] = ""
    inter = tmp_path / "a.csv"
    inter.write_text("\n".join([HEADER] + rows) + "\n")
    for chunk_rows in (1, 7, 1000):
        report = R.Report("t")
        df = C.read_interactions(str(inter), report, chunk_rows=chunk_rows)
        assert len(df) == 36 and report.counts["rows_read"] == 38
        assert report.bad[R.MALFORMED_ROW]["examples"] == [f"{inter}:12: 5 fields, the header has 4"]
        assert report.bad[R.BAD_TIMESTAMP]["examples"] == [f"{inter}:27: timestamp='x,y'"]
