"""Interest memory pretraining (section 4.1.1, "we pretrain a positive interest memory matrix M_u").

The paper does not say how M_u is pretrained. Here each user's history (clicked items for the positive memory,
browsed-not-clicked items for the negative one) is clustered into s groups by k-means on the items' feature vectors,
so that routing starts from groups that already mean something. With anchored memories (config.memory_anchors = m,
the default) each row keeps the m items of its cluster nearest the centroid and is their mean current embedding plus
a trained residual (started at 0): the row stays on its cluster as W_e and the id embeddings train. Without anchors
the rows are set once to the centroids of the items' embeddings x_j, which go stale as soon as W_e moves.
MTIN-P (config.pretrain_memory = False) skips this and keeps the random initialisation.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from mtin_tf import features as F


def kmeans(points, k, *, iterations=10, rng=None):
    """Plain Lloyd's k-means with k-means++ seeding. points [n, d] → centroids [k, d].

    With fewer than k points, the points are used as they are and the remaining rows are their mean plus small noise.
    """
    rng = rng or np.random.default_rng(0)
    points = np.asarray(points, np.float64)
    n, d = points.shape
    if n <= k:
        extra = points.mean(0) + 0.01 * rng.standard_normal((k - n, d)) if n else rng.standard_normal((k, d)) * 0.01
        return np.concatenate([points, extra])[:k]
    centroids = [points[rng.integers(n)]]
    for _ in range(1, k):
        dist = np.min([((points - c) ** 2).sum(1) for c in centroids], axis=0)
        total = dist.sum()
        centroids.append(points[rng.choice(n, p=dist / total)] if total > 0 else points[rng.integers(n)])
    centroids = np.stack(centroids)
    for _ in range(iterations):
        labels = ((points[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
        for g in range(k):
            members = points[labels == g]
            if len(members):
                centroids[g] = members.mean(0)
    return centroids


def user_histories_from_arrays(arrays: Mapping[str, np.ndarray], items_key: str = F.CLICKED_ITEMS,
                               times_key: str | None = None) -> dict:
    """{user id: sorted unique non-padding item ids} from model-input arrays (user_id [N], items_key [N, L]); with
    ``times_key`` (the history's timestamps [N, L]) {user id: (those ids, the earliest time each appears)}."""
    users = np.asarray(arrays[F.USER_ID]).reshape(-1)
    items = np.asarray(arrays[items_key])
    times = np.asarray(arrays[times_key]).reshape(-1) if times_key else np.zeros(items.size, np.int64)
    rows = np.stack([np.repeat(users, items.shape[1]), items.reshape(-1), times], 1)
    rows = rows[rows[:, 1] != F.PADDING_ID]
    rows = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]  # by user, item, time: first of each pair earliest
    first = np.ones(len(rows), bool)
    first[1:] = np.any(rows[1:, :2] != rows[:-1, :2], axis=1)
    rows = rows[first]
    split = np.flatnonzero(np.diff(rows[:, 0])) + 1
    chunks = [chunk for chunk in np.split(rows, split) if len(chunk)]
    if times_key:
        return {int(chunk[0, 0]): (chunk[:, 1], chunk[:, 2]) for chunk in chunks}
    return {int(chunk[0, 0]): chunk[:, 1] for chunk in chunks}


def pretrain_memory(model, histories: Mapping[int, Sequence[int]], *, memory_layer: str, iterations: int = 10,
                    seed: int = 0) -> int:
    """Initialise ``memory_layer``'s rows from a k-means clustering of each user's history.

    model: a model from build_mtin; histories: {raw user id: raw item ids} or {raw user id: (raw item ids, the time
    the user first met each)} (user_histories_from_arrays with ``times_key``); memory_layer: "positive_memory" or
    "negative_memory". Anchored rows use an anchor only at impressions after its time (AnchoredMemory); anchors
    given without times count at every impression. Users not in the memory table or without known items are left as
    they are. Returns the number of users initialised.
    """
    from mtin_tf.layers.tables import frozen_value
    from mtin_tf.model import ITEM_EMBEDDING

    memory = model.get_layer(memory_layer)
    embed = model.get_layer(ITEM_EMBEDDING)
    rng = np.random.default_rng(seed)
    timed = {int(u): (np.asarray(v[0], np.int64), np.asarray(v[1], np.int64)) if isinstance(v, tuple)
             else (np.asarray(v, np.int64), np.full(len(v), np.iinfo(np.int64).min)) for u, v in histories.items()}
    users = np.fromiter(timed.keys(), np.int64, len(timed))
    rows = memory.rows(tf.constant(users)).numpy() if len(users) else np.zeros([0], np.int32)
    all_items = np.unique(np.concatenate([ids for ids, _ in timed.values()] or [[0]]))
    item_rows = embed.rows(tf.constant(all_items)).numpy()
    known = item_rows > 0
    if memory.anchor_size:  # cluster in feature space; the rows follow the embeddings of their anchors
        points = tf.gather(frozen_value(embed.table), tf.gather(frozen_value(embed.table_rows),
                                                                  np.maximum(item_rows - 1, 0))).numpy()
        anchors, anchor_times = memory.anchors.numpy(), memory.anchor_times.numpy()
    else:
        points = embed(tf.constant(all_items))[0].numpy()
    values = memory.memory.numpy()
    done = 0
    for user, row in zip(users, rows):
        if row == 0:
            continue
        ids, times = timed[int(user)]
        idx = np.searchsorted(all_items, ids)
        keep = known[idx]
        ids, times, idx = ids[keep], times[keep], idx[keep]
        if len(idx) == 0:
            continue
        centroids = kmeans(points[idx], memory.num_groups, iterations=iterations, rng=rng)
        if memory.anchor_size:
            # members as 1-based positions in (ids, times), 0 for none: one index picks both
            members = nearest_members(points[idx], np.arange(1, len(ids) + 1), centroids, memory.anchor_size)
            anchors[row], anchor_times[row] = np.r_[0, ids][members], np.r_[0, times][members]
            values[row] = 0.0
        else:
            values[row] = centroids
        done += 1
    memory.memory.assign(values)
    if memory.anchor_size:
        memory.anchors.assign(anchors)
        memory.anchor_times.assign(anchor_times)
    return done


def nearest_members(points, ids, centroids, size):
    """For each centroid, the ids of up to ``size`` points assigned to it, nearest first; 0-padded: int64 [k, size].

    A centroid with no member (fewer points than groups) gets the single nearest point overall."""
    dist = ((points[:, None, :] - centroids[None]) ** 2).sum(-1)  # [n, k]
    labels = dist.argmin(1)
    out = np.zeros([len(centroids), size], np.int64)
    for g in range(len(centroids)):
        members = np.flatnonzero(labels == g)
        if not len(members):
            members = np.array([dist[:, g].argmin()])
        members = members[np.argsort(dist[members, g], kind="stable")][:size]
        out[g, :len(members)] = ids[members]
    return out
