"""Offline ranking metrics for MTIN: AUC, gAUC and ALPINE's precision/recall/F1@k.

Plain NumPy (no TensorFlow import), vectorised: every function costs a constant number of
sorts and ``bincount``/``reduceat`` passes, with no Python loop over rows or users.
The protocol is described in docs/EVALUATION.md.

Conventions shared by all functions:

* ``labels`` are binary: bool, or numbers equal to 0 or 1 (1 = click).
* ``scores`` are real numbers, higher = more likely to be clicked; NaN is rejected,
  +-inf is allowed (only the order of the scores matters).
* ``user_ids`` may be of any sortable dtype (ints, strings, ...).
* Inputs must be 1-D (an ``(n, 1)`` column, e.g. a Keras prediction, is flattened) and of equal length.
"""
import numpy as np

__all__ = ["auc", "gauc", "precision_recall_f1_at_k", "retrieval_recall_hit_rate", "summary"]


# ----------------------------------------------------------------------------- validation
def _as_1d(x, name):
    a = np.asarray(x)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (or an (n, 1) column), got shape {a.shape}")
    return a


def _check_lengths(**arrays):
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError("inputs must have the same length, got " + ", ".join(f"{k}={v}" for k, v in lengths.items()))


def _labels(labels):
    y = _as_1d(labels, "labels")
    if y.dtype == bool:
        return y.astype(np.int64)
    if not (np.issubdtype(y.dtype, np.number)):
        raise ValueError(f"labels must be bool or numeric 0/1, got dtype {y.dtype}")
    ok = (y == 0) | (y == 1)
    if not ok.all():
        bad = y[~ok][:5]
        raise ValueError(f"labels must be 0 or 1, found e.g. {bad.tolist()}")
    return y.astype(np.int64)


def _scores(scores):
    s = _as_1d(scores, "scores")
    if not (s.dtype == bool or np.issubdtype(s.dtype, np.number)) or np.issubdtype(s.dtype, np.complexfloating):
        raise ValueError(f"scores must be real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64)
    n_nan = int(np.isnan(s).sum())
    if n_nan:
        raise ValueError(f"scores contain {n_nan} NaN value(s)")
    return s


def _user_codes(user_ids):
    """Dense integer codes 0..n_users-1 (in sorted order of the ids) for any sortable id dtype."""
    u = _as_1d(user_ids, "user_ids")
    if np.issubdtype(u.dtype, np.floating) and np.isnan(u).any():
        raise ValueError("user_ids contain NaN")
    if np.issubdtype(u.dtype, np.integer) and len(u):
        # Fast path for integer ids of moderate range: one bincount instead of a sort.
        if int(u.max()) - int(u.min()) <= 4 * len(u) + 1024:
            shifted = (u - u.min()).astype(np.int64)
            present = np.bincount(shifted) > 0
            remap = np.cumsum(present) - 1
            return remap[shifted], int(present.sum())
    uniq, codes = np.unique(u, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), len(uniq)


def _prepare(user_ids, labels, scores):
    y, s = _labels(labels), _scores(scores)
    u = _as_1d(user_ids, "user_ids")
    _check_lengths(user_ids=u, labels=y, scores=s)
    if len(y) == 0:
        raise ValueError("inputs are empty")
    codes, n_users = _user_codes(u)
    return codes, n_users, y, s


def _run_starts(*sorted_keys):
    """Indices where a run of equal values (in all of the given sorted arrays) starts."""
    n = len(sorted_keys[0])
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for a in sorted_keys:
        new[1:] |= a[1:] != a[:-1]
    return np.flatnonzero(new)


def _dense_score_rank(s):
    """(dense rank of each score, number of distinct scores, ascending order of the scores).

    Dense rank: 0 = lowest, equal scores share a rank. It lets the (user, score) orderings be
    done with one integer argsort instead of a slower lexsort.
    """
    order = np.argsort(s)
    ss = s[order]
    new = np.zeros(len(s), dtype=np.int64)
    new[1:] = ss[1:] != ss[:-1]
    rank = np.empty(len(s), dtype=np.int64)
    rank[order] = np.cumsum(new)
    return rank, int(rank[order[-1]]) + 1, order


# ----------------------------------------------------------------------------- AUC core
def _auc_parts(c_sorted, y_sorted, group_starts, n_users):
    """Per-user (2 * Mann-Whitney U, n_pos, n_neg) with ties counted 1/2, in exact int64 arithmetic.

    Rows are sorted by (user, score) ascending; each run of equal (user, score) is a tie group g
    with pos_g positives and neg_g negatives. A positive beats every negative of the same user in
    a lower group and ties with the neg_g of its own group, so
        2U_user = sum_g pos_g * (2 * neg_below_g + neg_g),
    which is the rank-sum statistic with average ranks for ties; AUC_user = U / (n_pos * n_neg).
    """
    n = len(y_sorted)
    size_g = np.diff(np.append(group_starts, n))
    pos_g = np.add.reduceat(y_sorted, group_starts)
    neg_g = size_g - pos_g
    user_g = c_sorted[group_starts]
    cum_neg_excl = np.cumsum(neg_g) - neg_g  # negatives before the group, all users
    user_first = _run_starts(user_g)  # first group of each user present
    first_of_group = np.repeat(user_first, np.diff(np.append(user_first, len(user_g))))
    neg_below = cum_neg_excl - cum_neg_excl[first_of_group]  # ... within the group's own user
    users = user_g[user_first]
    u2 = np.zeros(n_users, dtype=np.int64)
    u2[users] = np.add.reduceat(pos_g * (2 * neg_below + neg_g), user_first)
    n_pos = np.zeros(n_users, dtype=np.int64)
    n_pos[users] = np.add.reduceat(pos_g, user_first)
    n_all = np.zeros(n_users, dtype=np.int64)
    n_all[users] = np.add.reduceat(size_g, user_first)
    return u2, n_pos, n_all - n_pos


def auc(labels, scores):
    """ROC AUC over all rows: P(score of a random positive > score of a random negative), ties = 1/2.

    Equals sklearn's ``roc_auc_score`` (rank-based with average ranks for tied scores).
    Raises ValueError if the lengths differ, the inputs are empty, a score is NaN, a label is
    not 0/1, or the labels are all one class.
    """
    y, s = _labels(labels), _scores(scores)
    _check_lengths(labels=y, scores=s)
    if len(y) == 0:
        raise ValueError("inputs are empty")
    return _auc_checked(y, s, np.argsort(s))


def _auc_checked(y, s, order):
    """AUC of validated inputs, given the ascending order of the scores."""
    u2, n_pos, n_neg = _auc_parts(np.zeros(len(y), dtype=np.int64), y[order], _run_starts(s[order]), 1)
    if n_pos[0] == 0 or n_neg[0] == 0:
        raise ValueError(
            f"AUC is undefined when labels are all one class (got {n_pos[0]} positives, {n_neg[0]} negatives)"
        )
    return float(u2[0] / (2.0 * n_pos[0] * n_neg[0]))


def _gauc_from_codes(codes, n_users, y, rank, n_distinct):
    # codes * n_distinct + rank < n**2: no int64 overflow below 3e9 rows.
    key = codes * n_distinct + rank
    order = np.argsort(key)
    u2, n_pos, n_neg = _auc_parts(codes[order], y[order], _run_starts(key[order]), n_users)
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        raise ValueError(
            "gAUC is undefined: no user has both a positive and a negative row "
            f"({n_users} users, {len(y)} rows)"
        )
    w = (n_pos + n_neg)[ok].astype(np.float64)
    auc_u = u2[ok] / (2.0 * n_pos[ok] * n_neg[ok])
    return float(np.sum(w * auc_u) / np.sum(w))


def gauc(user_ids, labels, scores):
    """Group AUC: per-user AUC (ties = 1/2) averaged with weight = that user's number of rows.

    Users whose rows are all one class (AUC undefined) are skipped: they count in neither the
    numerator nor the weights. Raises ValueError when no user qualifies (no user has both a
    positive and a negative row), as well as on the input errors of :func:`auc`.
    """
    codes, n_users, y, s = _prepare(user_ids, labels, scores)
    rank, n_distinct, _ = _dense_score_rank(s)
    return _gauc_from_codes(codes, n_users, y, rank, n_distinct)


# ----------------------------------------------------------------------------- top-k
def _topk_rank(codes, rank, n_distinct):
    """Row order of the per-user ranking and each sorted row's 0-based rank within its user.

    Within a user, rows are ranked by score descending; equal scores keep their original row
    order (stable sort), so the earlier row ranks higher.
    """
    key = codes * n_distinct + (n_distinct - 1 - rank)
    order = np.argsort(key, kind="stable")
    c = codes[order]
    starts = _run_starts(c)
    start_of_row = np.repeat(starts, np.diff(np.append(starts, len(c))))
    return order, np.arange(len(c)) - start_of_row


def _check_k(k):
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _prf_from_rank(codes, n_users, y, order, pos_in_user, k):
    c_sorted, y_sorted = codes[order], y[order]
    top = pos_in_user < k
    hits = np.bincount(c_sorted[top], weights=y_sorted[top], minlength=n_users)
    n_rows = np.bincount(codes, minlength=n_users)
    n_pos = np.bincount(codes, weights=y, minlength=n_users)
    precision_u = hits / np.minimum(k, n_rows)
    recall_u = np.divide(hits, n_pos, out=np.zeros(n_users), where=n_pos > 0)
    p, r = float(precision_u.mean()), float(recall_u.mean())
    f1 = 2.0 * p * r / (p + r) if (p + r) > 0 else 0.0
    return p, r, f1


def precision_recall_f1_at_k(user_ids, labels, scores, k):
    """ALPINE's top-k protocol; returns (precision@k, recall@k, F1@k).

    For every user present in ``user_ids``: rank that user's rows by score, descending, equal
    scores broken by original row order (earlier row first); hits = positives among the top k;
    precision_u = hits / min(k, n_rows_u); recall_u = hits / n_pos_u, or 0 when the user has no
    positive (such users still count in the average). P and R are the uniform means over users;
    F1 = 2PR / (P + R) from those means (0 when both are 0).
    """
    k = _check_k(k)
    codes, n_users, y, s = _prepare(user_ids, labels, scores)
    rank, n_distinct, _ = _dense_score_rank(s)
    order, pos_in_user = _topk_rank(codes, rank, n_distinct)
    return _prf_from_rank(codes, n_users, y, order, pos_in_user, k)


def summary(user_ids, labels, scores, ks=(10, 50)):
    """All metrics in one dict: ``auc``, ``gauc`` and ``precision@k``, ``recall@k``, ``f1@k`` per k.

    Validates once and ranks the scores once for all metrics. Raises ValueError in the cases where :func:`auc`,
    :func:`gauc` or
    :func:`precision_recall_f1_at_k` would.
    """
    ks = [_check_k(k) for k in ks]
    codes, n_users, y, s = _prepare(user_ids, labels, scores)
    rank, n_distinct, score_order = _dense_score_rank(s)
    out = {"auc": _auc_checked(y, s, score_order), "gauc": _gauc_from_codes(codes, n_users, y, rank, n_distinct)}
    order, pos_in_user = _topk_rank(codes, rank, n_distinct)
    for k in ks:
        p, r, f1 = _prf_from_rank(codes, n_users, y, order, pos_in_user, k)
        out[f"precision@{k}"], out[f"recall@{k}"], out[f"f1@{k}"] = p, r, f1
    return out


# ----------------------------------------------------------------------------- retrieval over the whole catalogue
def retrieval_recall_hit_rate(retrieved, relevant_users, relevant_items, ks=(20, 50, 100)):
    """Recall@K and HitRate@K of top-K lists retrieved from the whole catalogue (docs/EVALUATION.md).

    retrieved: int [U, K_max], user u's retrieved item ids, best first; 0 marks an empty slot (never relevant).
    relevant_users, relevant_items: equal-length 1-D arrays, one (user row u in 0..U-1, item id) pair per relevant
      item, e.g. the items user u clicked in the test period and had not clicked before (duplicates count once).
    Only users with at least one relevant item are scored (a user with none can neither hit nor miss); for each,
    hits@K = relevant items among retrieved[u, :K]; recall_u = hits@K / relevant count; hit_u = hits@K > 0.
    Returns {"recall@K", "hit_rate@K" (uniform means over the scored users), "users": how many were scored}.
    K larger than K_max reads the whole list.
    """
    ks = [_check_k(k) for k in ks]
    retrieved = np.asarray(retrieved)
    if retrieved.ndim != 2 or not np.issubdtype(retrieved.dtype, np.integer):
        raise ValueError(f"retrieved must be a 2-D integer array [users, K], got {retrieved.dtype} {retrieved.shape}")
    users, items = _as_1d(relevant_users, "relevant_users"), _as_1d(relevant_items, "relevant_items")
    _check_lengths(relevant_users=users, relevant_items=items)
    if users.size and (users.min() < 0 or users.max() >= len(retrieved)):
        raise ValueError(f"relevant_users must be rows of retrieved (0..{len(retrieved) - 1})")
    pairs = np.unique(np.stack([users, items], axis=1).astype(np.int64), axis=0)
    n_relevant = np.bincount(pairs[:, 0], minlength=len(retrieved))
    scored = n_relevant > 0
    # Each retrieved (user, item, position) is a hit when (user, item) is a relevant pair: one sorted search.
    n_users, depth = retrieved.shape
    row = np.repeat(np.arange(n_users, dtype=np.int64), depth)
    flat = retrieved.reshape(-1).astype(np.int64)
    # Item ids coded densely first, so that (user, item) → user·span + code cannot overflow int64.
    codes = np.unique(np.concatenate([flat, pairs[:, 1]]), return_inverse=True)[1]
    span = int(codes.max(initial=0)) + 1
    keys = np.sort(pairs[:, 0] * span + codes[len(flat):])
    probe = row * span + codes[:len(flat)]
    at = np.minimum(np.searchsorted(keys, probe), max(len(keys) - 1, 0))
    hit = (keys[at] == probe) & (flat != 0) if len(keys) else np.zeros_like(flat, bool)
    hit = hit.reshape(n_users, depth)
    # A list holding the same item twice counts it once (the first time).
    first = np.ones_like(hit)
    order = np.argsort(retrieved, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(retrieved, order, axis=1)
    repeat = np.zeros_like(hit)
    repeat[:, 1:] = sorted_ids[:, 1:] == sorted_ids[:, :-1]
    np.put_along_axis(first, order, ~repeat, axis=1)
    hits_by_position = np.cumsum(hit & first, axis=1)
    out = {"users": int(scored.sum())}
    for k in ks:
        hits = hits_by_position[:, min(k, depth) - 1] if depth else np.zeros(n_users)
        recall = hits[scored] / n_relevant[scored]
        out[f"recall@{k}"] = float(recall.mean()) if scored.any() else 0.0
        out[f"hit_rate@{k}"] = float((hits[scored] > 0).mean()) if scored.any() else 0.0
    return out
