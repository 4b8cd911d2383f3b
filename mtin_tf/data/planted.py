"""Planted-interest generator: synthetic click logs with known user interests, deterministic by seed.

Model of the data
- Items belong to ``num_clusters`` latent clusters (uniformly). Item features = cluster centroid (random unit vector
  times ``centroid_scale``) + Gaussian noise (``feature_noise`` per coordinate); popularity is Zipf-like
  (``popularity_exponent``) over a random permutation of items.
- Each user has 1-6 interest clusters (uniform count) with weights = softmax(logits). The logits follow a Brownian
  motion in time with a personal rate (log-uniform in ``drift_rate``, per sqrt(day)), so how fast old behaviour stops
  mattering differs by user.
- Impressions: with probability ``interest_impression_rate`` the cluster is drawn from the user's current weights and
  the item by popularity within it; otherwise the item is drawn by global popularity. Gaps between impressions are
  1 s + exponential (mean ``mean_gap_hours``); timestamps are integer seconds from 2020-01-01 (+ a random start in the
  first 30 days).
- True click probability: for an item in one of the user's current clusters
  ``p_in_min + (p_in_max - p_in_min) * w / max(w)`` (``w`` = the cluster's current weight); for any other item a
  constant ``eps`` chosen per chunk of users so that a fraction ``false_positive_rate`` of the chunk's expected clicks
  are false positives (outside the user's interests). ``click ~ Bernoulli(p)``.

Output in ``out_dir`` (streamed, in chunks of ``chunk_users`` users)
- ``interactions.parquet``: canonical interactions, sorted by user then time.
- ``item_features.npz``: canonical item features (no category: clusters are latent).
- ``truth.parquet``: row-aligned with interactions: ``p_click`` float32, ``in_interest`` bool.
- ``ground_truth.npz``: ``item_cluster`` int64 [num_items] (item id i at row i-1), ``centroids`` float32 [C, F],
  ``user_clusters`` int64 [num_users, 6] (-1 padded; user id u at row u-1), ``drift_rate`` float32 [num_users].
- ``summary.json``: settings, counts, click rate, false-positive share and the oracle AUC (AUC of ``p_click``).

``generate(out_dir, num_users=..., ...) -> PlantedSummary`` (paths + numbers). At defaults (10 000 users, 100
interactions each) it writes 1 M interactions in well under 2 minutes and a few hundred MB of memory.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd

from mtin_tf import features as F
from mtin_tf.data.canonical import INTERACTIONS_FILE, ITEM_FEATURES_FILE, write_item_features
from mtin_tf.metrics import auc

MAX_INTERESTS = 6
TRUTH_FILE = "truth.parquet"
GROUND_TRUTH_FILE = "ground_truth.npz"
SUMMARY_FILE = "summary.json"
P_CLICK, IN_INTEREST = "p_click", "in_interest"
EPOCH_2020 = 1_577_836_800
DAY = 86_400


@dataclasses.dataclass
class PlantedSummary:
    out_dir: str
    interactions_path: str
    item_features_path: str
    truth_path: str
    ground_truth_path: str
    num_interactions: int
    click_rate: float
    false_positive_share: float
    oracle_auc: float
    settings: dict

    def describe(self) -> str:
        """What was written, as `mtin data generate` prints it."""
        return (f"wrote {self.num_interactions} interactions to {self.interactions_path}; click rate "
                f"{self.click_rate:.3f}, false-positive share of clicks {self.false_positive_share:.3f}, oracle AUC "
                f"{self.oracle_auc:.4f}\nsummary: {os.path.join(self.out_dir, SUMMARY_FILE)}")


def _group_cumsum(x: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sum along axis 0 restarting at each group (groups are contiguous, given by starts/counts)."""
    cs = np.cumsum(x, axis=0)
    before = np.where(starts[:, None] > 0, cs[np.maximum(starts - 1, 0)], 0) if x.ndim == 2 \
        else np.where(starts > 0, cs[np.maximum(starts - 1, 0)], 0)
    return cs - np.repeat(before, counts, axis=0)


def generate(out_dir: str, *, num_users: int = 10_000, num_items: int = 50_000, num_clusters: int = 20,
             feature_dim: int = 32, interactions_per_user: int = 100, total_interactions: int | None = None,
             seed: int = 0, false_positive_rate: float = 0.1, interest_impression_rate: float = 0.5,
             p_in_min: float = 0.15, p_in_max: float = 0.75, drift_rate: tuple[float, float] = (0.05, 1.0),
             centroid_scale: float = 1.0, feature_noise: float = 0.08, popularity_exponent: float = 0.8,
             mean_gap_hours: float = 2.0, chunk_users: int = 1000, progress: bool = False) -> PlantedSummary:
    """Generate planted-interest data into ``out_dir``; see the module docstring. Returns a :class:`PlantedSummary`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    settings = {k: v for k, v in locals().items() if k not in ("out_dir", "pa", "pq", "progress")}
    total = int(total_interactions if total_interactions is not None else num_users * interactions_per_user)
    if total < 2 * num_users:
        raise ValueError("need at least 2 interactions per user")
    if num_clusters < MAX_INTERESTS:
        raise ValueError(f"num_clusters must be >= {MAX_INTERESTS}")
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)

    # Items: clusters, features, popularity.
    centroids = rng.standard_normal((num_clusters, feature_dim))
    centroids *= centroid_scale / np.linalg.norm(centroids, axis=1, keepdims=True)
    if num_items < num_clusters:
        raise ValueError("need at least one item per cluster")
    item_cluster = rng.integers(0, num_clusters, num_items)
    item_cluster[:num_clusters] = np.arange(num_clusters)  # no empty cluster
    feats = (centroids[item_cluster] + feature_noise * rng.standard_normal((num_items, feature_dim))).astype(np.float32)
    pop = 1.0 / np.arange(1, num_items + 1) ** popularity_exponent
    pop = pop[rng.permutation(num_items)]
    global_cdf = np.cumsum(pop) / pop.sum()
    by_cluster = np.argsort(item_cluster, kind="stable")  # item rows grouped by cluster
    cl_sorted = item_cluster[by_cluster]
    within = pd.Series(pop[by_cluster]).groupby(cl_sorted).cumsum().to_numpy()
    cl_total = np.bincount(item_cluster, weights=pop, minlength=num_clusters)
    cluster_cdf = cl_sorted + within / cl_total[cl_sorted]  # in (c, c+1] for cluster c: one searchsorted per draw
    cluster_cdf[np.cumsum(np.bincount(item_cluster, minlength=num_clusters)) - 1] = np.arange(1, num_clusters + 1)
    item_ids = np.arange(1, num_items + 1, dtype=np.int64)
    items_path = write_item_features(os.path.join(out_dir, ITEM_FEATURES_FILE), item_ids=item_ids, features=feats)

    # Users: interests, drift rates, activity.
    n_interest = rng.integers(1, MAX_INTERESTS + 1, num_users)
    user_clusters = np.full((num_users, MAX_INTERESTS), -1, np.int64)
    for u in range(num_users):
        user_clusters[u, :n_interest[u]] = rng.choice(num_clusters, n_interest[u], replace=False)
    logit0 = rng.normal(0.0, 1.0, (num_users, MAX_INTERESTS))
    rate = np.exp(rng.uniform(np.log(drift_rate[0]), np.log(drift_rate[1]), num_users))
    activity = rng.lognormal(0.0, 0.5, num_users)
    counts = 2 + rng.multinomial(total - 2 * num_users, activity / activity.sum())
    gt_path = os.path.join(out_dir, GROUND_TRUTH_FILE)
    np.savez(gt_path, item_cluster=item_cluster.astype(np.int64), centroids=centroids.astype(np.float32),
             user_clusters=user_clusters, drift_rate=rate.astype(np.float32))

    inter_path = os.path.join(out_dir, INTERACTIONS_FILE)
    truth_path = os.path.join(out_dir, TRUTH_FILE)
    inter_schema = pa.schema([(c, pa.int64()) for c in F.INTERACTION_COLUMNS])
    truth_schema = pa.schema([(P_CLICK, pa.float32()), (IN_INTEREST, pa.bool_())])
    all_p, all_click = [], []
    fp_clicks = 0
    chunks = range(0, num_users, chunk_users)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="generate", unit="chunk")
    with pq.ParquetWriter(inter_path, inter_schema) as w_inter, pq.ParquetWriter(truth_path, truth_schema) as w_truth:
        for u0 in chunks:
            u1 = min(u0 + chunk_users, num_users)
            cols, p, in_int = _chunk(rng, u0, u1, counts, user_clusters, logit0, rate, mean_gap_hours,
                                     interest_impression_rate, global_cdf, cluster_cdf, by_cluster, item_cluster,
                                     p_in_min, p_in_max, false_positive_rate)
            w_inter.write_table(pa.table(cols, schema=inter_schema))
            w_truth.write_table(pa.table({P_CLICK: p.astype(np.float32), IN_INTEREST: in_int}, schema=truth_schema))
            all_p.append(p.astype(np.float32))
            all_click.append(cols[F.CLICK].astype(np.int8))
            fp_clicks += int((cols[F.CLICK].astype(bool) & ~in_int).sum())
    p_all, click_all = np.concatenate(all_p), np.concatenate(all_click)
    summary = PlantedSummary(out_dir, inter_path, items_path, truth_path, gt_path, int(click_all.shape[0]),
                             float(click_all.mean()), fp_clicks / max(int(click_all.sum()), 1),
                             auc(click_all, p_all) if 0 < click_all.sum() < click_all.size else float("nan"),
                             settings)
    with open(os.path.join(out_dir, SUMMARY_FILE), "w", encoding="utf-8") as f:
        json.dump(dataclasses.asdict(summary), f, indent=2, default=str)
    return summary


def _chunk(rng, u0, u1, counts, user_clusters, logit0, rate, mean_gap_hours, interest_rate, global_cdf, cluster_cdf,
           by_cluster, item_cluster, p_in_min, p_in_max, fp_rate):
    """Impressions of users u0..u1-1 (0-based rows): canonical columns, true p [E], in-interest mask [E]."""
    n = counts[u0:u1]
    e = int(n.sum())
    ue = np.repeat(np.arange(u0, u1), n)  # user row of each event
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    gaps = 1.0 + rng.exponential(mean_gap_hours * 3600.0, e)
    t = _group_cumsum(gaps, starts, n) + np.repeat(rng.uniform(0, 30 * DAY, u1 - u0), n)
    times = EPOCH_2020 + np.floor(t).astype(np.int64)
    # Brownian drift of each interest's logit: increments ~ N(0, rate^2 * dt_days).
    dt_days = gaps / DAY
    steps = rng.standard_normal((e, MAX_INTERESTS)) * (rate[ue] * np.sqrt(dt_days))[:, None]
    logits = logit0[ue] + _group_cumsum(steps, starts, n)
    clusters = user_clusters[ue]
    logits[clusters < 0] = -np.inf
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    # Impressions: from interests (cluster by current weight, item by popularity within it) or global popularity.
    from_interest = rng.random(e) < interest_rate
    slot = np.minimum((np.cumsum(w, axis=1) < rng.random(e)[:, None]).sum(axis=1), MAX_INTERESTS - 1)
    chosen = clusters[np.arange(e), slot]
    pos_in = np.minimum(np.searchsorted(cluster_cdf, chosen + rng.random(e)), cluster_cdf.shape[0] - 1)
    pos_glob = np.minimum(np.searchsorted(global_cdf, rng.random(e)), global_cdf.shape[0] - 1)
    item_row = np.where(from_interest, by_cluster[pos_in], pos_glob)
    match = clusters == item_cluster[item_row][:, None]
    in_interest = match.any(axis=1)
    w_item = (w * match).sum(axis=1)
    p = np.where(in_interest, p_in_min + (p_in_max - p_in_min) * w_item / w.max(axis=1), 0.0)
    n_out = max(int((~in_interest).sum()), 1)
    eps = min(fp_rate * p.sum() / ((1.0 - fp_rate) * n_out), 1.0)  # expected FP share of clicks = fp_rate
    p = np.where(in_interest, p, eps)
    click = (rng.random(e) < p).astype(np.int64)
    cols = {F.USER_ID: (ue + 1).astype(np.int64), F.ITEM_ID: (item_row + 1).astype(np.int64), F.TIMESTAMP: times,
            F.CLICK: click}
    return cols, p, in_interest
