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
