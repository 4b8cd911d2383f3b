"""Tests of mtin_tf.metrics: hand-computed cases, scikit-learn and plain-loop references, errors."""
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mtin_tf import metrics as M


# ----------------------------------------------------------------------------- references (plain loops)
def ref_gauc(user_ids, labels, scores):
    num = den = 0.0
    for u in np.unique(user_ids):
        m = user_ids == u
        if labels[m].min() == labels[m].max():
            continue  # one class only: skipped
        num += m.sum() * roc_auc_score(labels[m], scores[m])
        den += m.sum()
    return num / den


def ref_prf(user_ids, labels, scores, k):
    ps, rs = [], []
    for u in np.unique(user_ids):
        rows = [i for i in range(len(user_ids)) if user_ids[i] == u]
        ranked = sorted(rows, key=lambda i: (-scores[i], i))  # score desc, then earlier row first
        hits = sum(labels[i] for i in ranked[:k])
        n_pos = sum(labels[i] for i in rows)
        ps.append(hits / min(k, len(rows)))
        rs.append(hits / n_pos if n_pos else 0.0)
    p, r = sum(ps) / len(ps), sum(rs) / len(rs)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def random_data(seed, n_users=300, tie_levels=None):
    """Users of sizes 1..60 (many smaller than k), ~10% positives, some users with none, rows shuffled."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 61, n_users)
    user_ids = np.repeat(np.arange(n_users) * 7 + 3, sizes)  # non-contiguous ids
    n = len(user_ids)
    rate = np.repeat(rng.choice([0.0, 0.05, 0.3], n_users), sizes)  # rate 0 => user with no positive
    labels = (rng.random(n) < rate).astype(int)
    scores = rng.random(n) if tie_levels is None else rng.integers(0, tie_levels, n) / tie_levels
    perm = rng.permutation(n)
    return user_ids[perm], labels[perm], scores[perm]


# ----------------------------------------------------------------------------- AUC
def test_auc_hand_no_ties():
    # positives 0.9, 0.3; negatives 0.8, 0.1.
    # 0.9 beats 0.8 and 0.1 (2); 0.3 beats 0.1 only (1) -> 3 of 4 pairs = 0.75
    assert M.auc([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]) == 0.75


def test_auc_hand_ties():
    # positives 0.5, 0.7; negatives 0.5, 0.2.
    # (0.5 vs 0.5) tie = 1/2, (0.5 vs 0.2) = 1, (0.7 vs 0.5) = 1, (0.7 vs 0.2) = 1 -> 3.5 / 4 = 0.875
    assert M.auc([1, 0, 1, 0], [0.5, 0.5, 0.7, 0.2]) == 0.875
    # everything tied -> every pair is 1/2 -> 0.5
    assert M.auc([1, 0, 0, 1, 0], [3, 3, 3, 3, 3]) == 0.5
    # perfectly inverted -> 0
    assert M.auc([1, 1, 0], [0.1, 0.2, 0.3]) == 0.0


def test_auc_accepts_bool_labels_column_scores_and_inf():
    # (n, 1) prediction column; +-inf are ordinary extreme scores.
    # positives inf, 0.2; negatives 0.5, -inf: inf beats both (2), 0.2 beats -inf only (1) -> 3/4
    s = np.array([[np.inf], [0.5], [0.2], [-np.inf]])
    assert M.auc(np.array([True, False, True, False]), s) == 0.75


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tie_levels", [None, 2, 5, 50])
def test_auc_matches_sklearn(seed, tie_levels):
    _, y, s = random_data(seed, tie_levels=tie_levels)
    assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_matches_sklearn_large_heavy_ties():
    rng = np.random.default_rng(123)
    n = 200_000
    y = (rng.random(n) < 0.03).astype(np.int8)
    s = np.round(rng.normal(size=n) + 0.5 * y, 1).astype(np.float32)  # ~60 distinct values
    assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


# ----------------------------------------------------------------------------- gAUC
def test_gauc_hand():
    # user "a" (3 rows): pos 0.9 vs negs 0.5 (win) and 0.95 (loss) -> AUC 0.5, weight 3
    # user "b" (2 rows): pos 0.2 vs neg 0.1 -> AUC 1.0, weight 2
    # user "c" (2 rows, both negative) and "d" (1 positive row): skipped
    # gAUC = (3 * 0.5 + 2 * 1.0) / (3 + 2) = 3.5 / 5 = 0.7
    users = ["a", "b", "c", "a", "d", "b", "a", "c"]
    labels = [1, 1, 0, 0, 1, 0, 0, 0]
    scores = [0.9, 0.2, 0.3, 0.5, 0.4, 0.1, 0.95, 0.6]
    assert M.gauc(users, labels, scores) == pytest.approx(0.7, abs=1e-15)


def test_gauc_hand_ties_within_and_across_users():
    # user 1: pos 0.5, negs 0.5, 0.5 -> two ties = 1/2 each -> AUC 0.5, weight 3
    # user 2: pos 0.5, 0.9; neg 0.5 -> tie 1/2 + win 1 = 1.5 / 2 = 0.75, weight 3
    # (equal scores in different users must not interact)
    # gAUC = (3 * 0.5 + 3 * 0.75) / 6 = 3.75 / 6 = 0.625
    users = [1, 2, 1, 2, 1, 2]
    labels = [1, 1, 0, 0, 0, 1]
    scores = [0.5, 0.5, 0.5, 0.5, 0.5, 0.9]
    assert M.gauc(users, labels, scores) == 0.625


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tie_levels", [None, 3, 20])
def test_gauc_matches_per_user_sklearn_loop(seed, tie_levels):
    u, y, s = random_data(seed, tie_levels=tie_levels)
    assert M.gauc(u, y, s) == pytest.approx(ref_gauc(u, y, s), abs=1e-12)


def test_gauc_string_and_huge_integer_ids_agree():
    u, y, s = random_data(7, tie_levels=10)
    expected = ref_gauc(u, y, s)
    assert M.gauc(u.astype(str), y, s) == pytest.approx(expected, abs=1e-12)
    assert M.gauc(u.astype(np.int64) * 10**12, y, s) == pytest.approx(expected, abs=1e-12)  # sparse id range
    assert M.gauc(u.astype(np.uint64) + np.uint64(2**63), y, s) == pytest.approx(expected, abs=1e-12)


def test_gauc_single_user_equals_auc():
    _, y, s = random_data(3, tie_levels=4)
    assert M.gauc(np.zeros(len(y)), y, s) == pytest.approx(M.auc(y, s), abs=1e-12)


# ----------------------------------------------------------------------------- precision / recall / F1 @ k
HAND_USERS = ["A", "B", "C", "A", "C", "A", "D", "C", "A", "D", "A"]
HAND_LABELS = [1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 0]
HAND_SCORES = [0.9, 0.4, 0.5, 0.1, 0.5, 0.8, 0.7, 0.5, 0.3, 0.6, 0.2]
# Per user, rows in original order:
#   A: scores 0.9 0.1 0.8 0.3 0.2, labels 1 1 0 1 0 -> 5 rows, 3 positives; ranked 0.9(1) 0.8(0) 0.3(1) 0.2(0) 0.1(1)
#   B: score 0.4, label 1                           -> 1 row, 1 positive
#   C: scores 0.5 0.5 0.5, labels 0 0 1             -> all tied: original row order keeps the positive last
#   D: scores 0.7 0.6, labels 0 0                   -> no positive (recall 0, still averaged)


def test_prf_at_k_hand_k2():
    # k = 2: A top2 = 0.9(1), 0.8(0) -> hits 1, P = 1/2, R = 1/3
    #        B 1 row -> hits 1, P = 1/min(2, 1) = 1, R = 1/1 = 1
    #        C top2 = first two tied rows (0, 0) -> P = 0, R = 0
    #        D -> P = 0, R = 0
    # P = (1/2 + 1 + 0 + 0) / 4 = 3/8; R = (1/3 + 1 + 0 + 0) / 4 = 1/3
    # F1 = 2 * (3/8) * (1/3) / (3/8 + 1/3) = (1/4) / (17/24) = 6/17
    p, r, f1 = M.precision_recall_f1_at_k(HAND_USERS, HAND_LABELS, HAND_SCORES, 2)
    assert (p, r, f1) == pytest.approx((3 / 8, 1 / 3, 6 / 17), abs=1e-15)


def test_prf_at_k_hand_k1_and_k_larger_than_users():
    # k = 1: A 0.9(1) -> P 1, R 1/3; B -> P 1, R 1; C first tied row (0) -> 0, 0; D -> 0, 0
    # P = 2/4 = 1/2; R = (1/3 + 1) / 4 = 1/3; F1 = 2 * (1/2)(1/3) / (5/6) = (1/3) / (5/6) = 2/5
    assert M.precision_recall_f1_at_k(HAND_USERS, HAND_LABELS, HAND_SCORES, 1) == pytest.approx(
        (1 / 2, 1 / 3, 2 / 5), abs=1e-15
    )
    # k = 10 >= every user's rows: P_u = n_pos / n_rows: A 3/5, B 1, C 1/3, D 0; R_u: A 1, B 1, C 1, D 0
    # P = (3/5 + 1 + 1/3) / 4 = (29/15) / 4 = 29/60; R = 3/4; F1 = 2 * (29/60)(3/4) / (29/60 + 3/4)
    #   = (29/40) / (74/60) = (29/40) * (60/74) = 87/148
    assert M.precision_recall_f1_at_k(HAND_USERS, HAND_LABELS, HAND_SCORES, 10) == pytest.approx(
        (29 / 60, 3 / 4, 87 / 148), abs=1e-15
    )


def test_prf_tie_break_is_original_row_order():
    # one user, two tied rows, k = 1: the earlier row is ranked first
    assert M.precision_recall_f1_at_k([5, 5], [0, 1], [0.3, 0.3], 1) == (0.0, 0.0, 0.0)
    assert M.precision_recall_f1_at_k([5, 5], [1, 0], [0.3, 0.3], 1) == (1.0, 1.0, 1.0)


def test_prf_all_zero_gives_f1_zero():
    # nobody has a positive: P = R = 0 -> F1 defined as 0 (no division by zero)
    assert M.precision_recall_f1_at_k([1, 1, 2], [0, 0, 0], [0.1, 0.2, 0.3], 2) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tie_levels", [None, 4])
@pytest.mark.parametrize("k", [1, 5, 10, 50])
def test_prf_matches_python_loop(seed, tie_levels, k):
    u, y, s = random_data(seed, n_users=200, tie_levels=tie_levels)
    got = M.precision_recall_f1_at_k(u, y, s, k)
    assert got == pytest.approx(ref_prf(u, y, s, k), abs=1e-12)


def test_prf_string_ids_match_integer_ids():
    u, y, s = random_data(11, n_users=100, tie_levels=3)
    expected = ref_prf(u, y, s, 10)
    assert M.precision_recall_f1_at_k(np.char.add("user_", u.astype(str)), y, s, 10) == pytest.approx(expected)
    assert M.precision_recall_f1_at_k(list(u), list(y), list(s), 10) == pytest.approx(expected)


# ----------------------------------------------------------------------------- summary
def test_summary_keys_and_values():
    u, y, s = random_data(2, tie_levels=8)
    out = M.summary(u, y, s, ks=(10, 50))
    assert list(out) == [
        "auc", "gauc",
        "precision@10", "recall@10", "f1@10",
        "precision@50", "recall@50", "f1@50",
    ]
    assert out["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert out["gauc"] == pytest.approx(ref_gauc(u, y, s), abs=1e-12)
    for k in (10, 50):
        p, r, f1 = ref_prf(u, y, s, k)
        assert (out[f"precision@{k}"], out[f"recall@{k}"], out[f"f1@{k}"]) == pytest.approx((p, r, f1), abs=1e-12)
    assert all(isinstance(v, float) for v in out.values())


def test_summary_default_ks():
    out = M.summary(HAND_USERS, HAND_LABELS, HAND_SCORES)
    assert {"precision@10", "f1@50"} <= set(out)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0]])
def test_auc_one_class_raises(labels):
    with pytest.raises(ValueError, match="one class"):
        M.auc(labels, [0.1, 0.2, 0.3])


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="same length"):
        M.auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="same length"):
        M.gauc([1, 2], [0, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="same length"):
        M.precision_recall_f1_at_k([1, 2, 3], [0, 1, 1], [0.1, 0.2], 5)


def test_nan_scores_raise():
    with pytest.raises(ValueError, match="NaN"):
        M.auc([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        M.gauc([1, 1, 1], [0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        M.summary([1, 1, 1], [0, 1, 1], [0.1, np.nan, 0.3])


def test_bad_labels_and_shapes_raise():
    with pytest.raises(ValueError, match="0 or 1"):
        M.auc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0 or 1"):
        M.auc([0, 1, np.nan], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="1-D"):
        M.auc(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="empty"):
        M.auc([], [])
    with pytest.raises(ValueError, match="empty"):
        M.precision_recall_f1_at_k([], [], [], 5)


def test_gauc_without_qualifying_user_raises():
    # each user is one class only, although the whole set has both classes (global AUC is defined)
    with pytest.raises(ValueError, match="no user has both"):
        M.gauc([1, 1, 2], [1, 1, 0], [0.1, 0.2, 0.3])


@pytest.mark.parametrize("k", [0, -1, 2.0, True, "5"])
def test_bad_k_raises(k):
    with pytest.raises(ValueError, match="positive integer"):
        M.precision_recall_f1_at_k([1, 1], [0, 1], [0.1, 0.2], k)
    with pytest.raises(ValueError, match="positive integer"):
        M.summary([1, 1], [0, 1], [0.1, 0.2], ks=(10, k))


def test_import_does_not_load_tensorflow():
    code = "import sys, mtin_tf.metrics; sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ----------------------------------------------------------------------------- retrieval over the catalogue
def _retrieval_loop(retrieved, relevant, ks):
    """Recall@K / HitRate@K by a plain loop: relevant is {user row: set of item ids}."""
    out = {}
    scored = [u for u in range(len(retrieved)) if relevant.get(u)]
    for k in ks:
        recalls, hits = [], []
        for u in scored:
            top = {int(i) for i in retrieved[u][:k] if i != 0}
            n = len(top & relevant[u])
            recalls.append(n / len(relevant[u]))
            hits.append(n > 0)
        out[f"recall@{k}"] = float(np.mean(recalls)) if scored else 0.0
        out[f"hit_rate@{k}"] = float(np.mean(hits)) if scored else 0.0
    out["users"] = len(scored)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_retrieval_recall_and_hit_rate_match_a_loop(seed):
    rng = np.random.default_rng(seed)
    users, depth = 30, 12
    retrieved = rng.integers(0, 40, size=(users, depth)) * 10 ** 12  # large ids; 0 = an empty slot
    retrieved[3, 4] = retrieved[3, 1]  # an item listed twice counts once
    relevant = {u: set((rng.integers(1, 40, size=rng.integers(0, 6)) * 10 ** 12).tolist()) for u in range(users)}
    pairs = [(u, i) for u, items in relevant.items() for i in items] + [(0, 5 * 10 ** 12)] * 2  # a repeated pair
    relevant[0].add(5 * 10 ** 12)
    got = M.retrieval_recall_hit_rate(retrieved, [p[0] for p in pairs], [p[1] for p in pairs], ks=(1, 5, 20))
    want = _retrieval_loop(retrieved, relevant, (1, 5, 20))
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_retrieval_metrics_on_a_hand_case():
    retrieved = np.array([[5, 7, 9], [1, 2, 0], [3, 3, 3]])
    got = M.retrieval_recall_hit_rate(retrieved, [0, 0, 1, 2], [9, 4, 8, 3], ks=(1, 3))
    # user 0: 9 at rank 3 of {9, 4}; user 1: 8 never; user 2: 3 at rank 1 (repeats count once) of {3}.
    assert got == {"users": 3, "recall@1": pytest.approx(1 / 3), "hit_rate@1": pytest.approx(1 / 3),
                   "recall@3": pytest.approx((0.5 + 0 + 1) / 3), "hit_rate@3": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="rows of retrieved"):
        M.retrieval_recall_hit_rate(retrieved, [3], [1])
