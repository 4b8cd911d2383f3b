"""Does anything about *when* an impression happens predict a user's click level beyond the recent click share?

``.venv/bin/python experiments/drift_probe.py runs/exp/movielens/examples`` (a ``mtin data build`` directory) fits
a logistic regression on the validation rows and scores test, with the user and item click rates counted on the
training rows (logit, smoothed as the popularity floors are: mtin_tf.floors) and, per row:

- ``share``, ``n``: the click share (logit of (clicks + 1) / (n + 2)) and the count n / K of the K = 20 latest
  impressions of the two histories — what the model's ClickLevel layer reads;
- ``position``: log(1 + the number of the user's earlier impressions, over all splits);
- ``since_first``: log(1 + seconds since the user's first impression);
- ``gap``: log(1 + seconds since the latest history impression).

It prints each feature set's test AUC and gAUC. An analysis for docs/EXPERIMENTS.md, not part of the library.
"""
from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression

from mtin_tf import features as F
from mtin_tf import floors, metrics
from mtin_tf.data.examples import join_arrays, read_split_arrays
from mtin_tf.layers import ClickLevel

K = 20
FEATURE_SETS = (("user", "item"), ("user", "item", "share", "n"), ("user", "item", "share", "n", "position"),
                ("user", "item", "share", "n", "since_first"), ("user", "item", "share", "n", "gap"),
                ("user", "item", "share", "n", "position", "since_first", "gap"))


def _logit(p):
    return np.log(p) - np.log1p(-p)


def sequence_features(rows: dict) -> tuple[np.ndarray, np.ndarray]:
    """(position, seconds since the user's first row) of every row of ``rows``, counted over ``rows`` themselves."""
    users, times = np.asarray(rows[F.USER_ID]), np.asarray(rows[F.TIMESTAMP])
    order = np.lexsort((times, users))
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    first_row = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    position, since = np.empty(len(order)), np.empty(len(order))
    position[order] = np.arange(len(order)) - first_row
    since[order] = times[order] - times[order][first_row]
    return position, since


def row_features(rows: dict, fit: dict, position, since) -> dict:
    labels = np.asarray(fit[F.LABEL], np.float64)
    prior = labels.mean()
    user = floors.smoothed_rates(fit[F.USER_ID], labels, rows[F.USER_ID], prior)
    item = floors.smoothed_rates(fit[F.ITEM_ID], labels, rows[F.ITEM_ID], prior)
    histories = [np.asarray(rows[key]) for pair in F.HISTORY_PAIRS for key in pair]
    share, n = ClickLevel(K).features(histories).numpy().T  # what the model's layer reads: [logit ρ, n / K]
    times = np.concatenate([np.where(histories[0] > 0, histories[1], 0), np.where(histories[2] > 0, histories[3], 0)],
                           1)
    last = np.where((times > 0).any(1), times.max(1), rows[F.TIMESTAMP])
    return {"user": _logit(user), "item": _logit(item), "share": share, "n": n,
            "position": np.log1p(position), "since_first": np.log1p(np.maximum(since, 0)),
            "gap": np.log1p(np.maximum(np.asarray(rows[F.TIMESTAMP]) - last, 0))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("examples", help="a `mtin data build` output directory")
    args = parser.parse_args(argv)
    splits = read_split_arrays(args.examples, F.DEFAULT_MAX_HISTORY)
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    position, since = sequence_features(join_arrays(train, validation, test))
    cut = np.cumsum([len(train[F.LABEL]), len(validation[F.LABEL])])
    fit_rows = row_features(validation, train, position[cut[0]:cut[1]], since[cut[0]:cut[1]])
    test_rows = row_features(test, train, position[cut[1]:], since[cut[1]:])
    for names in FEATURE_SETS:
        model = LogisticRegression(max_iter=1000).fit(np.stack([fit_rows[k] for k in names], 1), validation[F.LABEL])
        scores = model.decision_function(np.stack([test_rows[k] for k in names], 1))
        summary = metrics.summary(test[F.USER_ID], test[F.LABEL], scores)
        print(f"{' + '.join(names):55s} test AUC {summary['auc']:.4f} gAUC {summary['gauc']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
