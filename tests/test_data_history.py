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
    train, validation, test, report = H.build_examples(df, max_history=L, test_fraction=0.25)
    assert len(train) + len(validation) + len(test) == len(df) and validation
    assert report.counts["train_examples"] == len(train) and report.counts["test_examples"] == len(test)
    assert report.counts["validation_examples"] == len(validation)
    for ex in train + validation + test:
        want = reference_histories(df, ex[F.USER_ID], ex[F.ITEM_ID], ex[F.TIMESTAMP], L)
        for key, values in want.items():
            assert ex[key].tolist() == values, key
        assert all(t < ex[F.TIMESTAMP] for t in ex[F.CLICKED_TIMES].tolist() + ex[F.BROWSED_TIMES].tolist())
        assert len(ex[F.CLICKED_ITEMS]) <= L and len(ex[F.BROWSED_ITEMS]) <= L


def test_truncation_keeps_most_recent_oldest_first_and_separates_clicks():
    df = pd.DataFrame({F.USER_ID: 1, F.ITEM_ID: np.arange(1, 11), F.TIMESTAMP: np.arange(10) * 10,
                       F.CLICK: [1, 0] * 5})
    train, validation, test, _ = H.build_examples(df, max_history=2, test_fraction=0.0, validation_fraction=0.0)
    assert test == [] and validation == []
    last = train[-1]  # item 10 at t=90, clicked items 1,3,5,7,9 and browsed 2,4,6,8 before it
    assert last[F.CLICKED_ITEMS].tolist() == [7, 9] and last[F.CLICKED_TIMES].tolist() == [60, 80]
    assert last[F.BROWSED_ITEMS].tolist() == [6, 8] and last[F.BROWSED_TIMES].tolist() == [50, 70]
    first = train[0]
    assert first[F.CLICKED_ITEMS].size == 0 and first[F.BROWSED_ITEMS].size == 0  # empty histories are emitted


def test_ties_never_enter_each_others_history():
    df = pd.DataFrame({F.USER_ID: 1, F.ITEM_ID: [1, 2, 3, 4], F.TIMESTAMP: [5, 7, 7, 9], F.CLICK: [1, 1, 0, 1]})
    train, _, _, _ = H.build_examples(df, test_fraction=0.0, validation_fraction=0.0)
    by_item = {ex[F.ITEM_ID]: ex for ex in train}
    assert by_item[2][F.CLICKED_ITEMS].tolist() == [1] and by_item[2][F.BROWSED_ITEMS].tolist() == []
    assert by_item[3][F.CLICKED_ITEMS].tolist() == [1]
    assert by_item[4][F.CLICKED_ITEMS].tolist() == [1, 2] and by_item[4][F.BROWSED_ITEMS].tolist() == [3]


def test_min_history_skips_and_counts_targets():
    df = pd.DataFrame({F.USER_ID: 1, F.ITEM_ID: [1, 2, 3, 4], F.TIMESTAMP: [1, 2, 3, 4], F.CLICK: [1, 0, 1, 1]})
    train, _, _, report = H.build_examples(df, test_fraction=0.0, validation_fraction=0.0, min_history=2)
    assert [ex[F.ITEM_ID] for ex in train] == [4]
    assert report.counts["targets_skipped_short_history"] == 3


def test_split_by_fraction_time_cut_and_given_column():
    df = pd.DataFrame({F.USER_ID: [1] * 5 + [2] * 5, F.ITEM_ID: list(range(1, 11)),
                       F.TIMESTAMP: [1, 2, 3, 4, 4, 10, 20, 30, 40, 50], F.CLICK: 1})
    # last floor(5*0.2) = 1 per user in test, ties go to test; floor(5*0.2) = 1 more just before it in validation
    train, validation, test, _ = H.build_examples(df, test_fraction=0.2, validation_fraction=0.2)
    assert sorted(ex[F.ITEM_ID] for ex in test) == [4, 5, 10]
    assert sorted(ex[F.ITEM_ID] for ex in validation) == [3, 9]
    assert all(ex[F.TIMESTAMP] < min(t[F.TIMESTAMP] for t in test if t[F.USER_ID] == ex[F.USER_ID])
               for ex in train + validation)
    train, validation, test, _ = H.build_examples(df, time_cut=30, validation_cut=20)
    assert sorted(ex[F.ITEM_ID] for ex in test) == [8, 9, 10] and [ex[F.ITEM_ID] for ex in validation] == [7]
    given = df.assign(**{IS_TEST: [0, 1, 0, 0, 0, 0, 0, 0, 0, 1]})
    train, validation, test, _ = H.build_examples(given, validation_fraction=0.2)
    assert sorted(ex[F.ITEM_ID] for ex in test) == [2, 10]
    assert sorted(ex[F.ITEM_ID] for ex in validation) == [4, 5, 9]  # user 1: both interactions at t=4 (tie)
    # later targets see earlier test interactions, unless histories come from the training period only
    by_item = {ex[F.ITEM_ID]: ex for ex in train}
    assert by_item[3][F.CLICKED_ITEMS].tolist() == [1, 2]
    train, _, _, _ = H.build_examples(given, history_from="train")
    assert {ex[F.ITEM_ID]: ex for ex in train}[3][F.CLICKED_ITEMS].tolist() == [1]


def test_model_arrays_pad_right_and_keep_most_recent():
    df = pd.DataFrame({F.USER_ID: 7, F.ITEM_ID: [1, 2, 3, 4, 5], F.TIMESTAMP: [1, 2, 3, 4, 5], F.CLICK: 1})
    train, _, _, _ = H.build_examples(df, test_fraction=0.0, validation_fraction=0.0)
    arrays = E.to_model_arrays(train, max_history=3)
    assert set(arrays) == set(F.MODEL_INPUT_NAMES) | {F.LABEL}
    assert arrays[F.CLICKED_ITEMS].tolist() == [[0, 0, 0], [1, 0, 0], [1, 2, 0], [1, 2, 3], [2, 3, 4]]
    assert arrays[F.CLICKED_TIMES][4].tolist() == [2, 3, 4]
    assert arrays[F.BROWSED_ITEMS].shape == (5, 3) and not arrays[F.BROWSED_ITEMS].any()
    assert arrays[F.USER_ID].dtype == np.int64 and arrays[F.ITEM_ID].tolist() == [1, 2, 3, 4, 5]
    assert arrays[F.LABEL].tolist() == [1] * 5


def test_tfrecord_round_trip(tmp_path):
    train, _, _, _ = H.build_examples(random_interactions(seed=3, rows=120), max_history=4)
    path = str(tmp_path / "ex.tfrecord")
    assert E.write_tfrecords(train, path) == len(train)
    back = E.read_tfrecords(str(tmp_path / "*.tfrecord"))
    assert len(back) == len(train)
    for a, b in zip(train, back):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    names = H.SPLIT_NAMES
    paths = E.write_split_tfrecords(((names[i % 3], ex) for i, ex in enumerate(train)), str(tmp_path / "split"))
    assert sorted(paths) == sorted(names) and len(E.read_tfrecords(list(paths.values()))) == len(train)
    for k, name in enumerate(names):
        assert [ex[F.ITEM_ID] for ex in E.read_tfrecords(paths[name])] == [ex[F.ITEM_ID] for ex in train[k::3]]
    arrays = E.read_split_arrays(str(tmp_path / "split"), max_history=4)
    assert [len(arrays[name][F.LABEL]) for name in names] == [len(train[k::3]) for k in range(3)]


def _per_user(examples):
    out = {}
    for ex in examples:
        out.setdefault(ex[F.USER_ID], []).append(ex[F.TIMESTAMP])
    return out


@pytest.mark.parametrize("options", [dict(), dict(test_fraction=0.3, validation_fraction=0.2),
                                     dict(time_cut=45, validation_cut=30), dict(time_cut=45, validation_fraction=0.15)])
def test_validation_is_disjoint_and_between_train_and_test_per_user(options):
    df = random_interactions(seed=5, users=10, rows=600, max_time=80)
    train, validation, test, _ = H.build_examples(df, **options)
    keys = [{(ex[F.USER_ID], ex[F.ITEM_ID], ex[F.TIMESTAMP]) for ex in part} for part in (train, validation, test)]
    assert sum(map(len, keys)) == len(df) and len(set.union(*keys)) == len(df)  # a partition of the interactions
    assert validation and test and train
    train_t, val_t, test_t = (_per_user(part) for part in (train, validation, test))
    for user, times in val_t.items():  # strictly after the user's train rows, strictly before the user's test rows
        assert max(train_t.get(user, [-1])) < min(times) and max(times) < min(test_t.get(user, [10 ** 9]))
    if "validation_cut" in options:
        assert all(options["validation_cut"] <= t < options["time_cut"] for ex in validation for t in [ex[F.TIMESTAMP]])
    # validation histories never hold a test interaction (they are later), train histories no validation one
    for part, later in ((validation, test_t), (train, val_t)):
        for ex in part:
            hist = ex[F.CLICKED_TIMES].tolist() + ex[F.BROWSED_TIMES].tolist()
            assert all(t < min(later.get(ex[F.USER_ID], [10 ** 9])) for t in hist)


def test_fractions_are_respected_per_user_without_ties():
    n = 40
    df = pd.DataFrame({F.USER_ID: np.repeat([1, 2], n), F.ITEM_ID: np.arange(1, 2 * n + 1),
                       F.TIMESTAMP: np.tile(np.arange(n) * 3, 2), F.CLICK: 1})
    train, validation, test, _ = H.build_examples(df, test_fraction=0.25, validation_fraction=0.1)
    for user in (1, 2):
        counts = [sum(ex[F.USER_ID] == user for ex in part) for part in (train, validation, test)]
        assert counts == [26, 4, 10]  # floor(40 * 0.1) = 4 validation, floor(40 * 0.25) = 10 test
    user1_val = sorted(ex[F.TIMESTAMP] for ex in validation if ex[F.USER_ID] == 1)
    assert user1_val == [78, 81, 84, 87]  # the 4 interactions just before the test part (t = 90..117)


def test_bad_split_options_are_rejected_with_a_clear_error():
    df = random_interactions()
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        H.build_examples(df, validation_fraction=1.5)
    with pytest.raises(ValueError, match="must be below 1"):
        H.build_examples(df, test_fraction=0.6, validation_fraction=0.5)
    with pytest.raises(ValueError, match="must be before time_cut"):
        H.build_examples(df, time_cut=30, validation_cut=30)


def test_old_examples_dir_without_validation_asks_to_rebuild(tmp_path):
    train, _, _, _ = H.build_examples(random_interactions(seed=2, rows=60), max_history=4)
    E.write_tfrecords(train, str(tmp_path / E.TRAIN_FILE))
    E.write_tfrecords(train, str(tmp_path / E.TEST_FILE))
    with pytest.raises(FileNotFoundError, match="re-run `mtin data build`"):
        E.read_split_arrays(str(tmp_path), max_history=4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        E.read_split_arrays(str(tmp_path / "nowhere"), max_history=4)


def test_the_tensorflow_history_padding_is_to_model_arrays_twin():
    """signatures.pad_history (serving and the pipeline's Transform) keeps the most recent L entries and right-pads
    with 0, as to_model_arrays does in training, whatever form the history comes in (sparse from tf.io, ragged,
    dense with 0 as padding)."""
    import tensorflow as tf

    from mtin_tf.signatures import pad_history

    rng = np.random.default_rng(0)
    histories = [rng.integers(1, 100, n).tolist() for n in (0, 1, 3, 4, 9)]  # shorter than, equal to, longer than L
    examples = [{**{spec.name: [] if spec.is_history else 0 for spec in F.EXAMPLE_FEATURES}, F.CLICKED_ITEMS: h}
                for h in histories]
    want = E.to_model_arrays(examples, max_history=4)[F.CLICKED_ITEMS]
    ragged = tf.ragged.constant(histories, dtype=tf.int64, ragged_rank=1)
    dense = ragged.to_tensor(default_value=0)
    for form in (ragged, ragged.to_sparse(), dense):
        np.testing.assert_array_equal(pad_history(form, 4).numpy(), want)
    assert want[4].tolist() == histories[4][-4:] and want[1].tolist() == [histories[1][0], 0, 0, 0]
