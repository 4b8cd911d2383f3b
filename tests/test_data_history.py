"""History building: no leakage, ties, truncation, positive/negative separation, empty histories, splits,
model arrays and the TFRecord round trip."""
import numpy as np
import pandas as pd
import pytest

from mtin_tf import features as F
from mtin_tf.data import examples as E
from mtin_tf.data import history as H
from mtin_tf.data.canonical import IS_TEST


def random_interactions(seed=0, users=12, rows=400, max_time=60):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({F.USER_ID: rng.integers(1, users + 1, rows), F.ITEM_ID: rng.integers(1, 30, rows),
                       F.TIMESTAMP: rng.integers(0, max_time, rows), F.CLICK: rng.integers(0, 2, rows)})
    return df.drop_duplicates([F.USER_ID, F.ITEM_ID, F.TIMESTAMP]).reset_index(drop=True)


def reference_histories(df, user, item, t, L):
    """Brute force: the user's interactions strictly before t, in (time, item) order, split by click, last L."""
    prior = df[(df[F.USER_ID] == user) & (df[F.TIMESTAMP] < t)].sort_values([F.TIMESTAMP, F.ITEM_ID, F.CLICK])
    out = {}
    for (items_key, times_key), flag in zip(F.HISTORY_PAIRS, (1, 0)):
        part = prior[prior[F.CLICK] == flag].tail(L)
        out[items_key], out[times_key] = part[F.ITEM_ID].tolist(), part[F.TIMESTAMP].tolist()
    return out


@pytest.mark.parametrize("L", [3, 50])
def test_histories_match_brute_force_and_never_leak(L):
    df = random_interactions()
    train, test, report = H.build_examples(df, max_history=L, test_fraction=0.25)
    assert len(train) + len(test) == len(df)
    assert report.counts["train_examples"] == len(train) and report.counts["test_examples"] == len(test)
    for ex in train + test:
        want = reference_histories(df, ex[F.USER_ID], ex[F.ITEM_ID], ex[F.TIMESTAMP], L)
        for key, values in want.items():
            assert ex[key].tolist() == values, key
        assert all(t < ex[F.TIMESTAMP] for t in ex[F.CLICKED_TIMES].tolist() + ex[F.BROWSED_TIMES].tolist())
        assert len(ex[F.CLICKED_ITEMS]) <= L and len(ex[F.BROWSED_ITEMS]) <= L


def test_truncation_keeps_most_recent_oldest_first_and_separates_clicks():
    df = pd.DataFrame({F.USER_ID: 1, F.ITEM_ID: np.arange(1, 11), F.TIMESTAMP: np.arange(10) * 10,
                       F.CLICK: [1, 0] * 5})
    train, test, _ = H.build_examples(df, max_history=2, test_fraction=0.0)
    assert test == []
    last = train[-1]  # item 10 at t=90, clicked items 1,3,5,7,9 and browsed 2,4,6,8 before it
    assert last[F.CLICKED_ITEMS].tolist() == [7, 9] and last[F.CLICKED_TIMES].tolist() == [60, 80]
    assert last[F.BROWSED_ITEMS].tolist() == [6, 8] and last[F.BROWSED_TIMES].tolist() == [50, 70]
    first = train[0]
    assert first[F.CLICKED_ITEMS].size == 0 and first[F.BROWSED_ITEMS].size == 0  # empty histories are emitted


def test_ties_never_enter_each_others_history():
    df = pd.DataFrame({F.USER_ID: 1, F.ITEM_ID: [1, 2, 3, 4], F.TIMESTAMP: [5, 7, 7, 9], F.CLICK: [1, 1, 0, 1]})
    train, _, _ = H.build_examples(df, test_fraction=0.0)
    by_item = {ex[F.ITEM_ID]: ex for ex in train}
    assert by_item[2][F.CLICKED_ITEMS].tolist() == [1] and by_item[2][F.BROWSED_ITEMS].tolist() == []
    assert by_item[3][F.CLICKED_ITEMS].tolist() == [1]
    assert by_item[4][F.CLICKED_ITEMS].tolist() == [1, 2] and by_item[4][F.BROWSED_ITEMS].tolist() == [3]


def test_min_history_skips_and_counts_targets():
    df = pd.DataFrame({F.USER_ID: 1, F.ITEM_ID: [1, 2, 3, 4], F.TIMESTAMP: [1, 2, 3, 4], F.CLICK: [1, 0, 1, 1]})
    train, _, report = H.build_examples(df, test_fraction=0.0, min_history=2)
    assert [ex[F.ITEM_ID] for ex in train] == [4]
    assert report.counts["targets_skipped_short_history"] == 3


def test_split_by_fraction_time_cut_and_given_column():
    df = pd.DataFrame({F.USER_ID: [1] * 5 + [2] * 5, F.ITEM_ID: list(range(1, 11)),
                       F.TIMESTAMP: [1, 2, 3, 4, 4, 10, 20, 30, 40, 50], F.CLICK: 1})
    train, test, _ = H.build_examples(df, test_fraction=0.2)  # last floor(5*0.2) = 1 per user, ties go to test
    assert sorted(ex[F.ITEM_ID] for ex in test) == [4, 5, 10]
    assert all(ex[F.TIMESTAMP] < min(t[F.TIMESTAMP] for t in test if t[F.USER_ID] == ex[F.USER_ID])
               for ex in train)
    train, test, _ = H.build_examples(df, time_cut=30)
    assert sorted(ex[F.ITEM_ID] for ex in test) == [8, 9, 10]
    given = df.assign(**{IS_TEST: [0, 1, 0, 0, 0, 0, 0, 0, 0, 1]})
    train, test, _ = H.build_examples(given)
    assert sorted(ex[F.ITEM_ID] for ex in test) == [2, 10]
    # test targets see earlier test interactions, unless histories come from train only
    by_item = {ex[F.ITEM_ID]: ex for ex in train}
    assert by_item[3][F.CLICKED_ITEMS].tolist() == [1, 2]
    train, _, _ = H.build_examples(given, history_from="train")
    assert {ex[F.ITEM_ID]: ex for ex in train}[3][F.CLICKED_ITEMS].tolist() == [1]


def test_model_arrays_pad_right_and_keep_most_recent():
    df = pd.DataFrame({F.USER_ID: 7, F.ITEM_ID: [1, 2, 3, 4, 5], F.TIMESTAMP: [1, 2, 3, 4, 5], F.CLICK: 1})
    train, _, _ = H.build_examples(df, test_fraction=0.0)
    arrays = E.to_model_arrays(train, max_history=3)
    assert set(arrays) == set(F.MODEL_INPUT_NAMES) | {F.LABEL}
    assert arrays[F.CLICKED_ITEMS].tolist() == [[0, 0, 0], [1, 0, 0], [1, 2, 0], [1, 2, 3], [2, 3, 4]]
    assert arrays[F.CLICKED_TIMES][4].tolist() == [2, 3, 4]
    assert arrays[F.BROWSED_ITEMS].shape == (5, 3) and not arrays[F.BROWSED_ITEMS].any()
    assert arrays[F.USER_ID].dtype == np.int64 and arrays[F.ITEM_ID].tolist() == [1, 2, 3, 4, 5]
    assert arrays[F.LABEL].tolist() == [1] * 5


def test_tfrecord_round_trip(tmp_path):
    train, test, _ = H.build_examples(random_interactions(seed=3, rows=120), max_history=4)
    path = str(tmp_path / "ex.tfrecord")
    assert E.write_tfrecords(train, path) == len(train)
    back = E.read_tfrecords(str(tmp_path / "*.tfrecord"))
    assert len(back) == len(train)
    for a, b in zip(train, back):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    paths = E.write_split_tfrecords(((i % 2 == 1, ex) for i, ex in enumerate(train)), str(tmp_path / "split"))
    assert len(E.read_tfrecords([paths["train"], paths["test"]])) == len(train)
    assert [ex[F.ITEM_ID] for ex in E.read_tfrecords(paths["test"])] == [ex[F.ITEM_ID] for ex in train[1::2]]
