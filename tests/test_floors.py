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


def test_user_rate_shift_against_the_loop_reference():
    rng = np.random.default_rng(5)
    train, test = _arrays(rng, 400), _arrays(rng, 150)
    shift = floors.user_rate_shift(train, test)
    # The floor's AUC, and the same score with each user's rate counted on the test rows themselves.
    want_floor = _loop_reference(train, test)[floors.USER_ITEM_RATE]
    # Scores equal in exact arithmetic (a tie, half a pair in the AUC) can differ in the last bit between math.log
    # here and NumPy's vectorised log there (CPU-dependent); rounding the reference to 1e-9 keeps them tied.
    assert shift["floor_auc"] == pytest.approx(M.auc(test[F.LABEL], np.round(want_floor, 9)))
    g = train[F.LABEL].mean()
    own = {}
    for u, y in zip(test[F.USER_ID], test[F.LABEL]):
        c, n = own.get(u, (0, 0))
        own[u] = (c + y, n + 1)
    own_rate = {u: (c + 10 * g) / (n + 10) for u, (c, n) in own.items()}
    item_rate = _loop_reference(train, test)[floors.ITEM_RATE]
    scores = [math.log(own_rate[u] / (1 - own_rate[u])) + math.log(p / (1 - p))
              for u, p in zip(test[F.USER_ID], item_rate)]
    assert shift["own_user_rate_auc"] == pytest.approx(M.auc(test[F.LABEL], np.round(scores, 9)))
    users = sorted(own_rate)
    stats = {}
    for u, y in zip(train[F.USER_ID], train[F.LABEL]):
        c, n = stats.get(u, (0, 0))
        stats[u] = (c + y, n + 1)
    before = [(stats[u][0] + 10 * g) / (stats[u][1] + 10) if u in stats else g for u in users]
    assert shift["user_rate_correlation"] == pytest.approx(np.corrcoef(before, [own_rate[u] for u in users])[0, 1])
    assert shift["click_rate_fit"] == pytest.approx(g) and shift["click_rate"] == pytest.approx(test[F.LABEL].mean())


def test_the_command_prints_floors_and_the_shift_for_either_fit(tiny_planted, capsys):
    import json

    from mtin_tf.data.examples import read_split_arrays
    from mtin_tf.retrieval import popularity_floor_metrics

    splits = read_split_arrays(tiny_planted["examples"], 6)
    for refit in (False, True):
        assert floors.main([tiny_planted["examples"], *(["--refit"] if refit else [])]) == 0
        out = json.loads(capsys.readouterr().out)
        fit = splits["train"]
        if refit:
            fit = {k: np.concatenate([fit[k], splits["validation"][k]]) for k in fit}
        assert out["fit"] == ("train + validation" if refit else "train")
        assert out["user_rate_shift"] == pytest.approx(floors.user_rate_shift(fit, splits["test"]))
        assert out["floors"][floors.ITEM_RATE]["auc"] == pytest.approx(
            floors.floor_metrics(fit, splits["test"])[floors.ITEM_RATE]["auc"])
        assert out["floors"][floors.POPULAR] == pytest.approx(
            popularity_floor_metrics([splits["train"], splits["validation"]], splits["test"]))
    # On validation (the split models are chosen on): fitted on train, clicks before validation for the catalogue.
    assert floors.main([tiny_planted["examples"], "--split", "validation"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "validation"
    assert out["floors"][floors.USER_ITEM_RATE]["auc"] == pytest.approx(
        floors.floor_metrics(splits["train"], splits["validation"])[floors.USER_ITEM_RATE]["auc"])
    assert out["floors"][floors.POPULAR] == pytest.approx(
        popularity_floor_metrics([splits["train"]], splits["validation"]))
    with pytest.raises(SystemExit):
        floors.main([tiny_planted["examples"], "--split", "validation", "--refit"])
