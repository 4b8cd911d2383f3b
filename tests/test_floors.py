"""Popularity floors against a plain-loop reference, smoothing, unknown ids, and training-rows-only fitting."""
import math

import numpy as np
import pytest

from mtin_tf import features as F
from mtin_tf import floors
from mtin_tf import metrics as M


def _arrays(rng, n, users=15, items=25):
    return {F.USER_ID: rng.integers(1, users + 1, n), F.ITEM_ID: rng.integers(1, items + 1, n),
            F.LABEL: (rng.random(n) < 0.3).astype(np.int64)}


def _loop_reference(train, test):
    """Dicts and a for loop, written from the definition."""
    g = sum(train[F.LABEL]) / len(train[F.LABEL])
    stats = {"u": {}, "i": {}}
    for u, i, y in zip(train[F.USER_ID], train[F.ITEM_ID], train[F.LABEL]):
        for table, key in (("u", u), ("i", i)):
            c, n = stats[table].get(key, (0, 0))
            stats[table][key] = (c + y, n + 1)

    def rate(table, key):
        if key not in stats[table]:
            return g
        c, n = stats[table][key]
        return (c + 10 * g) / (n + 10)

    item, user_item = [], []
    for u, i in zip(test[F.USER_ID], test[F.ITEM_ID]):
        pu, pi = rate("u", u), rate("i", i)
        item.append(pi)
        user_item.append(math.log(pu / (1 - pu)) + math.log(pi / (1 - pi)))
    return {floors.ITEM_RATE: item, floors.USER_ITEM_RATE: user_item}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_floor_scores_match_a_loop_reference_including_unknown_users_and_items(seed):
    rng = np.random.default_rng(seed)
    train, test = _arrays(rng, 400), _arrays(rng, 150, users=20, items=35)  # ids above 15 / 25: unseen in train
    got = floors.floor_scores(train, test)
    want = _loop_reference(train, test)
    assert set(got) == set(floors.FLOORS)
    for name in floors.FLOORS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-12)
    unseen = test[F.ITEM_ID] > 25
    assert unseen.any()
    np.testing.assert_allclose(got[floors.ITEM_RATE][unseen], train[F.LABEL].mean())


def test_smoothing_pulls_rare_keys_towards_the_prior():
    rates = floors.smoothed_rates([7, 7, 8], [1, 1, 0], [7, 8, 9], prior=0.5)
    np.testing.assert_allclose(rates, [(2 + 5) / 12, (0 + 5) / 11, 0.5])


def test_floor_metrics_use_the_model_metrics_and_only_training_labels():
    rng = np.random.default_rng(4)
    train, test = _arrays(rng, 500), _arrays(rng, 200)
    got = floors.floor_metrics(train, test)
    scores = floors.floor_scores(train, test)
    for name in floors.FLOORS:
        assert got[name] == M.summary(test[F.USER_ID], test[F.LABEL], scores[name])
    flipped = dict(test, **{F.LABEL: 1 - test[F.LABEL]})  # test labels do not move the scores
    for name in floors.FLOORS:
        np.testing.assert_array_equal(floors.floor_scores(train, flipped)[name], scores[name])
    assert floors.best_floor_auc(got) == max(got[n]["auc"] for n in floors.FLOORS)


def test_one_class_training_labels_are_rejected():
    train = {F.USER_ID: np.array([1, 2]), F.ITEM_ID: np.array([1, 2]), F.LABEL: np.array([1, 1])}
    with pytest.raises(ValueError, match="clicks and non-clicks"):
        floors.floor_scores(train, train)
