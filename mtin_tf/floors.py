"""Popularity floors: the scores a model must beat before its numbers mean anything.

Both floors are fitted on the **training rows only** (the train split's labels; never validation or test) and scored
on any split with the same metrics as the models (:func:`mtin_tf.metrics.summary`):

- ``item_rate``: the candidate item's click rate.
- ``user_item_rate``: logit(the user's click rate) + logit(the item's click rate).

Every rate is smoothed towards the global training click rate g with :data:`PSEUDO_ROWS` pseudo-rows,
rate = (clicks + PSEUDO_ROWS · g) / (rows + PSEUDO_ROWS); a user or item without training rows gets g.
Plain NumPy, vectorised (one ``unique`` + ``bincount`` per table, one ``searchsorted`` per lookup).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from mtin_tf import features as F

PSEUDO_ROWS = 10
ITEM_RATE, USER_ITEM_RATE = "item_rate", "user_item_rate"
FLOORS = (ITEM_RATE, USER_ITEM_RATE)
POPULAR = "popular"  # retrieval from the catalogue: the most clicked items (mtin_tf.retrieval.popular_items)
LABELS = {ITEM_RATE: "Floor: item click rate", USER_ITEM_RATE: "Floor: logit user rate + logit item rate",
          POPULAR: "Floor: most clicked items (catalogue retrieval)"}


def smoothed_rates(train_keys, train_labels, keys, prior: float, pseudo_rows: float = PSEUDO_ROWS) -> np.ndarray:
    """Smoothed click rate float64 [M] of each of ``keys`` [M], from training rows ``train_keys`` [N] with 0/1
    ``train_labels`` [N]: (clicks + pseudo_rows · prior) / (rows + pseudo_rows); ``prior`` for a key never seen."""
    train_keys, keys = np.asarray(train_keys).reshape(-1), np.asarray(keys).reshape(-1)
    labels = np.asarray(train_labels, np.float64).reshape(-1)
    if train_keys.shape != labels.shape:
        raise ValueError(f"train_keys and train_labels differ in length: {train_keys.shape} vs {labels.shape}")
    uniq, inverse = np.unique(train_keys, return_inverse=True)
    if uniq.size == 0:
        return np.full(keys.shape, float(prior))
    rates = (np.bincount(inverse, weights=labels, minlength=uniq.size) + pseudo_rows * prior) / \
        (np.bincount(inverse, minlength=uniq.size) + pseudo_rows)
    pos = np.minimum(np.searchsorted(uniq, keys), uniq.size - 1)
    return np.where(uniq[pos] == keys, rates[pos], float(prior))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def floor_scores(train: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{floor name: scores float64 [M]} for the rows of ``arrays`` (user_id, item_id [M]), fitted on ``train``
    (user_id, item_id, label [N]: model arrays of the train split). ValueError if the training labels are one class
    (the logit floor is undefined)."""
    labels = np.asarray(train[F.LABEL], np.float64)
    prior = float(labels.mean()) if labels.size else float("nan")
    if not 0.0 < prior < 1.0:
        raise ValueError(f"popularity floors need clicks and non-clicks among the training rows, got click rate "
                         f"{prior} over {labels.size} rows")
    item = smoothed_rates(train[F.ITEM_ID], labels, arrays[F.ITEM_ID], prior)
    user = smoothed_rates(train[F.USER_ID], labels, arrays[F.USER_ID], prior)
    return {ITEM_RATE: item, USER_ITEM_RATE: _logit(user) + _logit(item)}


def floor_metrics(train: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray], ks=(10, 50)) -> dict[str, dict]:
    """{floor name: :func:`mtin_tf.metrics.summary` on ``arrays``' labels} of the floors fitted on ``train``."""
    from mtin_tf import metrics

    return {name: metrics.summary(arrays[F.USER_ID], arrays[F.LABEL], scores, ks=ks)
            for name, scores in floor_scores(train, arrays).items()}


def best_floor_auc(floors: Mapping[str, Mapping[str, float]]) -> float:
    """The highest AUC among the floors' metrics (a model below it is marked "below floor" in reports); floors that
    rank no impressions (the retrieval floor) have none."""
    return max(m["auc"] for m in floors.values() if "auc" in m)


def user_rate_shift(train: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
    """How far users' click rates move between the rows a model is fitted on (``train``) and ``arrays`` (test), and
    how much of an AUC over all users that is worth. Not a floor: ``own_user_rate_auc`` reads the labels it scores.

    Returns {click_rate_fit, click_rate: the two row sets' click rates; user_rate_correlation: Pearson correlation,
    over the users with rows in ``arrays``, of each user's smoothed click rate in ``train`` and in ``arrays`` (both
    smoothed towards the fitted rows' rate g as the floors are); floor_auc: the user + item floor's AUC on ``arrays``;
    own_user_rate_auc: the same score with each user's rate measured on ``arrays``' own rows instead — what knowing
    every user's current click rate exactly would give, with the item rates of the fitted rows}."""
    from mtin_tf import metrics

    labels = np.asarray(train[F.LABEL], np.float64)
    prior = float(labels.mean())
    scores = floor_scores(train, arrays)
    item = scores[ITEM_RATE]
    before = smoothed_rates(train[F.USER_ID], labels, arrays[F.USER_ID], prior)
    now = smoothed_rates(arrays[F.USER_ID], arrays[F.LABEL], arrays[F.USER_ID], prior)
    _, first = np.unique(np.asarray(arrays[F.USER_ID]), return_index=True)  # one value per user
    y = np.asarray(arrays[F.LABEL], np.float64)
    return {"click_rate_fit": prior, "click_rate": float(y.mean()),
            "user_rate_correlation": float(np.corrcoef(before[first], now[first])[0, 1]),
            "floor_auc": float(metrics.auc(y, scores[USER_ITEM_RATE])),
            "own_user_rate_auc": float(metrics.auc(y, _logit(now) + _logit(item)))}


def main(argv=None) -> int:
    """``python -m mtin_tf.floors EXAMPLES_DIR [--refit | --split validation]``: the floors' metrics and the users'
    click-rate shift (user_rate_shift) of a ``mtin data build`` directory, as JSON: on test, fitted on train
    (``--refit``: train + validation); or on validation, fitted on train (the split models are chosen on). With the
    catalogue-retrieval floor (POPULAR: the most clicked items, mtin_tf.retrieval.popularity_floor_metrics) of the
    same split."""
    import argparse
    import json

    from mtin_tf.data.examples import join_arrays, read_split_arrays
    from mtin_tf.features import DEFAULT_MAX_HISTORY
    from mtin_tf.retrieval import popularity_floor_metrics

    parser = argparse.ArgumentParser(prog="python -m mtin_tf.floors", description=main.__doc__)
    parser.add_argument("examples", help="a `mtin data build` output directory")
    parser.add_argument("--refit", action="store_true", help="fit on train + validation (as `mtin experiment --refit`)")
    parser.add_argument("--split", choices=("test", "validation"), default="test", help="the split to score")
    args = parser.parse_args(argv)
    if args.refit and args.split == "validation":
        parser.error("--refit fits on validation: it scores test only")
    splits = read_split_arrays(args.examples, DEFAULT_MAX_HISTORY)
    fit = join_arrays(splits["train"], splits["validation"]) if args.refit else splits["train"]
    # The catalogue floor counts clicks over every row before the scored split, as the models' retrieval excludes them.
    before = [splits["train"]] if args.split == "validation" else [splits["train"], splits["validation"]]
    scored = splits[args.split]
    result = floor_metrics(fit, scored)
    result[POPULAR] = popularity_floor_metrics(before, scored)
    print(json.dumps({"fit": "train + validation" if args.refit else "train", "split": args.split,
                      "floors": result, "user_rate_shift": user_rate_shift(fit, scored)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
