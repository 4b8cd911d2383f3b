"""What `mtin experiment` measures beyond the click metrics on planted data: the true click probabilities of the test
rows (the oracle AUC), how well MTIN's routed groups recover the planted item clusters (adjusted Rand index,
sklearn.metrics.adjusted_rand_score), and the per-user group attention of the Fig. 6 heat map."""
from __future__ import annotations

import os

import numpy as np


def truth_click_probabilities(planted_dir: str, test: dict) -> np.ndarray:
    """True p_click [N] of the test examples: truth.parquet (row-aligned with interactions.parquet) joined on
    (user_id, item_id, timestamp). Raises if a test row has no truth."""
    import pandas as pd

    from mtin_tf import features as F
    from mtin_tf.data.canonical import INTERACTIONS_FILE
    from mtin_tf.data.planted import P_CLICK, TRUTH_FILE

    keys = [F.USER_ID, F.ITEM_ID, F.TIMESTAMP]
    logged = pd.read_parquet(os.path.join(planted_dir, INTERACTIONS_FILE), columns=keys)
    logged[P_CLICK] = pd.read_parquet(os.path.join(planted_dir, TRUTH_FILE), columns=[P_CLICK])[P_CLICK].to_numpy()
    logged = logged.drop_duplicates(keys)
    rows = pd.DataFrame({k: np.asarray(test[k], np.int64) for k in keys})
    joined = rows.merge(logged, on=keys, how="left")
    missing = int(joined[P_CLICK].isna().sum())
    if missing:
        raise ValueError(f"{missing} test rows have no ground truth in {planted_dir}")
    return joined[P_CLICK].to_numpy(np.float64)


def group_recovery(user_ids, clicked, assignment, item_cluster, *, seed: int = 0) -> dict:
    """Mean per-user ARI between routed groups and true clusters of the clicked history.

    user_ids [N], clicked [N, L] item ids (0 = padding), assignment [N, L] (−1 = no group), item_cluster [num_items]
    (item id i at row i − 1). Uses each user's example with the longest history; users with < 2 routed items are
    skipped. Returns {"ari", "ari_shuffled", "users"}.
    """
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(seed)
    lengths = (np.asarray(assignment) >= 0).sum(1)
    order = np.lexsort((-lengths, user_ids))
    first = order[np.r_[True, np.asarray(user_ids)[order][1:] != np.asarray(user_ids)[order][:-1]]]
    scores, shuffled = [], []
    for row in first:
        routed = assignment[row] >= 0
        if routed.sum() < 2:
            continue
        groups, truth = assignment[row][routed], item_cluster[clicked[row][routed] - 1]
        scores.append(adjusted_rand_score(groups, truth))
        shuffled.append(adjusted_rand_score(rng.permutation(groups), truth))
    return {"ari": float(np.mean(scores)) if scores else float("nan"),
            "ari_shuffled": float(np.mean(shuffled)) if shuffled else float("nan"), "users": len(scores)}


def user_group_attention(user_ids, group_weights) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 6 data: group_weights [N, s, s] (w_{p,g}) → (users [U], attention [U, s]): the weight each group g gets,
    averaged over memory rows p and over each user's examples."""
    per_example = np.asarray(group_weights).mean(axis=1)  # [N, s]
    users, inverse = np.unique(user_ids, return_inverse=True)
    sums = np.zeros((len(users), per_example.shape[1]))
    np.add.at(sums, inverse, per_example)
    return users, sums / np.bincount(inverse)[:, None]
