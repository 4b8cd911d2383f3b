"""Readers on small files in each dataset's published layout, and the round trip to training examples."""
import argparse
import pickle

import numpy as np
import pandas as pd
import pytest

from mtin_tf import features as F
from mtin_tf.data import canonical as C
from mtin_tf.data import cli as data_cli
from mtin_tf.data import examples as E
from mtin_tf.data import report as R
from mtin_tf.data.kuaishou import read_kuaishou
from mtin_tf.data.microvideo import read_microvideo


def _thacil_dir(tmp_path):
    """THACIL layout: ids from 0, test items in their own id space, 512-d cover features per split."""
    d = tmp_path / "microvideo"
    d.mkdir()
    head = "user_id,item_id,cate_id,is_click,timestamp\n"
    (d / "train_data.csv").write_text(head + "0,0,5,1,100\n0,1,6,0,101\n1,2,5,1,50\n1,0,5,0,60\n0,0,5,1,100\n"
                                      "1,9,5,1,70\n")  # line 6 duplicates line 2; line 7: item 9 has no feature row
    (d / "test_data.csv").write_text(head + "0,0,7,1,200\n1,1,7,0,300\n")  # test items 0, 1 are new items
    rng = np.random.default_rng(0)
    train_feats = rng.standard_normal((3, 512)).astype(np.float32)
    test_feats = rng.standard_normal((2, 512)).astype(np.float32)
    np.save(d / "train_cover_image_feature.npy", train_feats)
    np.save(d / "test_cover_image_feature.npy", test_feats)
    return d, train_feats, test_feats


def test_microvideo_keeps_split_and_separates_test_items(tmp_path):
    d, train_feats, test_feats = _thacil_dir(tmp_path)
    report = R.Report("convert")
    df, items = read_microvideo(str(d), report)
    assert items.dim == 512 and len(items) == 5
    np.testing.assert_array_equal(items.features[items.rows(np.array([1, 3]))], train_feats[[0, 2]])
    np.testing.assert_array_equal(items.features[items.rows(np.array([4, 5]))], test_feats)  # offset by N_train
    assert items.category.tolist() == [6, 7, 6, 8, 8]  # cate_id + 1
    test = df[df[C.IS_TEST] == 1]
    assert test[F.ITEM_ID].tolist() == [4, 5] and test[F.USER_ID].tolist() == [1, 2]
    assert set(df[df[C.IS_TEST] == 0][F.ITEM_ID]).isdisjoint(test[F.ITEM_ID])
    assert report.bad[R.DUPLICATE_ROW]["examples"][0].startswith(f"{d / 'train_data.csv'}:6")
    assert report.bad[R.ITEM_WITHOUT_FEATURES]["examples"][0].startswith(f"{d / 'train_data.csv'}:7")
    assert len(df) == 6 and report.counts["rows_read"] == 8


def _alpine_files(tmp_path, mismatch=False):
    """ALPINE Dataset I layout: dataset.pkl of consecutive pickles + visual .npy with a trailing padding row."""
    pos_his = [[0, 2], [1]]          # user 0 clicked item 0 then 2; user 1 clicked item 1
    neg_his = [[1], [3, 0]]          # user 0 skipped item 1; user 1 skipped 3 then 0
    train = [((0, 0, 1), 0, 0), ((0, 1, 0), 1, 0), ((1, 3, 0), 0, 0), ((1, 1, 1), 0, 1)]
    test = [((0, 3 if mismatch else 2, 1), 1, 1), ((1, 0, 0), 1, 1), "garbage"]
    pkl = tmp_path / "dataset.pkl"
    with open(pkl, "wb") as f:
        for obj in (train, test, pos_his, neg_his, [[0, 0], [0]], [[0], [0, 0]]):
            pickle.dump(obj, f)
    visual = np.arange(5 * 64, dtype=np.float32).reshape(5, 64)  # 4 items + padding row
    npy = tmp_path / "visual64_select.npy"
    np.save(npy, visual)
    return str(pkl), str(npy), visual


def test_kuaishou_ordinal_time_rebuilds_alpine_histories(tmp_path):
    pkl, npy, visual = _alpine_files(tmp_path)
    report = R.Report("convert")
    df, items = read_kuaishou(pkl, npy, report)
    assert len(items) == 4 and items.dim == 64
    np.testing.assert_array_equal(items.features, visual[:4])
    assert report.bad[R.MALFORMED_ROW]["count"] == 1  # the "garbage" record, located by its index
    assert report.bad[R.MALFORMED_ROW]["examples"][0].startswith(f"{pkl}:test:2: 'garbage' is not ((user, item")
    assert R.HISTORY_MISMATCH not in report.bad
    assert df[C.IS_TEST].tolist() == [0, 0, 1, 0, 0, 1]
    from mtin_tf.data.history import build_examples

    _, _, test, _ = build_examples(df, split="given", max_history=10)
    by_user = {ex[F.USER_ID]: ex for ex in test}
    # user 0's test click (item 2, canonical 3) comes after clicking item 0 and skipping item 1 (ALPINE's prefixes)
    assert by_user[1][F.ITEM_ID] == 3 and by_user[1][F.CLICKED_ITEMS].tolist() == [1]
    assert by_user[1][F.BROWSED_ITEMS].tolist() == [2]
    assert by_user[2][F.CLICKED_ITEMS].tolist() == [2] and by_user[2][F.BROWSED_ITEMS].tolist() == [4]


def test_kuaishou_reports_history_mismatch(tmp_path):
    pkl, npy, _ = _alpine_files(tmp_path, mismatch=True)
    report = R.Report("convert")
    df, _ = read_kuaishou(pkl, npy, report)
    assert report.bad[R.HISTORY_MISMATCH]["count"] == 1 and len(df) == 6  # counted, kept
    assert "counted (kept) 1 x history_mismatch" in report.summary()


@pytest.fixture(scope="module")
def recbole_wheel():
    from mtin_tf.data import movielens

    # PyPI is reachable wherever this project is tested; a failed download is a failure, not a skip.
    return movielens.fetch_wheel()


def test_movielens_from_the_recbole_wheel(recbole_wheel):
    from mtin_tf.data.movielens import read_movielens

    report = R.Report("convert")
    df, items = read_movielens(recbole_wheel, report, title_hash_dim=8)
    assert len(df) == 100_000 and df[F.USER_ID].nunique() == 943 and len(items) == 1682
    assert items.dim == 19 + 2 + 8  # genres + (year, year unknown) + title hash
    assert df[F.CLICK].mean() == pytest.approx(0.55375)  # share of ratings >= 4 in ML-100K
    toy_story = items.features[items.rows(np.array([1]))[0]]
    assert toy_story[19] == pytest.approx(0.95) and toy_story[20] == 0.0  # 1995
    assert report.counts["items_unknown_release_year"] >= 1 and not report.bad
    strict, _ = read_movielens(recbole_wheel, R.Report("c"), click_threshold=5)
    assert strict[F.CLICK].sum() < df[F.CLICK].sum()


def test_convert_then_build_round_trip(tmp_path):
    d, _, _ = _thacil_dir(tmp_path)
    conv = tmp_path / "canon"
    ns = argparse.Namespace(format="microvideo", input=[str(d)], features=None, out=str(conv), strict=False,
                            click_threshold=4.0, title_hash_dim=0, time_field=None, data_command="convert")
    assert data_cli.run_convert(ns) == 0
    built = tmp_path / "built"
    ns = argparse.Namespace(interactions=[str(conv / C.INTERACTIONS_FILE)], items=str(conv / C.ITEM_FEATURES_FILE),
                            out=str(built), max_history=5, test_fraction=0.2, time_cut=None, split="auto",
                            validation_fraction=0.1, validation_cut=None,
                            min_history=0, history_from="train", engine="memory", strict=False, data_command="build")
    assert data_cli.run_build(ns) == 0
    test = E.read_tfrecords(str(built / E.TEST_FILE))
    train = E.read_tfrecords(str(built / E.TRAIN_FILE))
    validation = E.read_tfrecords(str(built / E.VALIDATION_FILE))
    assert sorted(ex[F.ITEM_ID] for ex in test) == [4, 5] and len(train) == 4 and validation == []
    user1_test = next(ex for ex in test if ex[F.USER_ID] == 1)
    assert user1_test[F.CLICKED_ITEMS].tolist() == [1] and user1_test[F.BROWSED_ITEMS].tolist() == [2]
    canon = pd.read_parquet(conv / C.INTERACTIONS_FILE)
    assert len(train) + len(validation) + len(test) == len(canon)


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")`` - arbitrary code, were the pickle trusted."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", ["record", "history"])
def test_kuaishou_refuses_a_pickle_that_would_run_code(tmp_path, where):
    marker = tmp_path / "pwned"
    train = [((0, 0, 1), 0, 0)] + ([_RunsCode(str(marker))] if where == "record" else [])
    pos_his = [[0]] if where == "record" else {0: _RunsCode(str(marker))}
    pkl = tmp_path / "dataset.pkl"
    with open(pkl, "wb") as f:
        for obj in (train, [], pos_his, [[]]):
            pickle.dump(obj, f)
    np.save(tmp_path / "v.npy", np.ones((2, 4), np.float32))
    with pytest.raises(R.BadInputError, match=r"dataset.pkl: refused to load (io|builtins)\.open: .*nothing from the "
                                              r"file was run"):
        read_kuaishou(str(pkl), str(tmp_path / "v.npy"), R.Report("convert"))
    assert not marker.exists()
    rc = data_cli.run_convert(argparse.Namespace(format="kuaishou", input=[str(pkl)], features=str(tmp_path / "v.npy"),
                                                 out=str(tmp_path / "o"), strict=False, click_threshold=4.0,
                                                 title_hash_dim=0, time_field=None, data_command="convert"))
    assert rc == 2 and not marker.exists()


def test_kuaishou_admits_numpy_data_and_checks_the_layout(tmp_path):
    from mtin_tf.data import safe_pickle

    pkl = tmp_path / "dataset.pkl"
    train = [((np.int64(0), np.int64(0), 1), 0, 0), ((0, 10 ** 30, 1), 1, 0), ((0, 1), 1, 0)]
    with open(pkl, "wb") as f:
        for obj in (train, [], np.array([[0, 5]]), {0: np.array([9])}):
            pickle.dump(obj, f)
    np.save(tmp_path / "v.npy", np.ones((3, 4), np.float32))
    report = R.Report("convert")
    df, _ = read_kuaishou(str(pkl), str(tmp_path / "v.npy"), report)
    assert df[F.ITEM_ID].tolist() == [1]
    assert report.bad[R.ID_OUT_OF_RANGE]["examples"] == [f"{pkl}:train:1: item_id={10 ** 30!r} is above "
                                                         f"{2 ** 63 - 2}"]
    assert report.bad[R.MALFORMED_ROW]["count"] == 1
    with open(pkl, "wb") as f:
        pickle.dump(np.array([1, None], dtype=object), f)
    with pytest.raises(safe_pickle.UnsafePickleError, match="dtype object"):
        safe_pickle.load_all(str(pkl), 1)
    with open(pkl, "wb") as f:
        for obj in ("not records", [], [], []):
            pickle.dump(obj, f)
    with pytest.raises(R.BadInputError, match="the train records are a str, expected a list or tuple"):
        read_kuaishou(str(pkl), str(tmp_path / "v.npy"), R.Report("c"))
    with pytest.raises(R.BadInputError, match="holds 4 pickle"):
        safe_pickle.load_all(str(pkl), 5)
    pkl.write_bytes(b"\x80\x04garbage")
    with pytest.raises(R.BadInputError, match="pickle 1 is corrupt"):
        safe_pickle.load_all(str(pkl), 1)


def test_microvideo_counts_malformed_rows_and_bad_categories(tmp_path):
    d, _, _ = _thacil_dir(tmp_path)
    with open(d / "train_data.csv", "a") as f:
        f.write("0,1,5,1,400,extra\n0,2,abc,1,401\n0,2,,0,402\n1,1,99999999999999999999,0,403\n")
    report = R.Report("convert")
    df, items = read_microvideo(str(d), report)
    csv_path = d / "train_data.csv"
    assert report.bad[R.MALFORMED_ROW]["examples"] == [f"{csv_path}:8: 6 fields, the header has 5"]
    assert report.bad[R.BAD_CATEGORY]["examples"] == [f"{csv_path}:9: cate_id='abc'",
                                                      f"{csv_path}:11: cate_id='99999999999999999999'"]
    assert len(df) == 7 and items.category.tolist() == [6, 7, 6, 8, 8]  # the empty cate_id row is kept
    np.save(d / "test_cover_image_feature.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(R.BadInputError, match="test_cover_image_feature.npy: not a readable numeric .npy"):
        read_microvideo(str(d), R.Report("convert"))


def test_historygen_counts_skipped_rows_under_the_readers_kinds():
    import tensorflow as tf

    from mtin_tf.data.ranges import RANGES
    from mtin_tf.pipeline.components.history import REQUIRED, bad_input_kind, parse_interaction

    def record(**values):
        msg = tf.train.Example()
        for name, v in values.items():
            if isinstance(v, bytes):
                msg.features.feature[name].bytes_list.value.append(v)
            else:
                msg.features.feature[name].int64_list.value.append(v)
        return msg.SerializeToString()

    good = {F.USER_ID: 1, F.ITEM_ID: 2, F.TIMESTAMP: 3, F.CLICK: 1}
    assert REQUIRED is RANGES  # one definition of the ranges
    cases = {R.MISSING_FIELD: {F.ITEM_ID: 2, F.TIMESTAMP: 3, F.CLICK: 1}, R.NON_NUMERIC_ID: {**good, F.ITEM_ID: b"x"},
             R.NONPOSITIVE_ID: {**good, F.USER_ID: 0}, R.BAD_TIMESTAMP: {**good, F.TIMESTAMP: -1},
             R.BAD_CLICK: {**good, F.CLICK: 2}}
    for kind, values in cases.items():
        row, reason = parse_interaction(record(**values))
        assert row is None and bad_input_kind(reason) == kind, (kind, reason)
