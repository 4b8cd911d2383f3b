"""Interest memory pretraining (section 4.1.1, "we pretrain a positive interest memory matrix M_u").

The paper does not say how M_u is pretrained. Here each user's s memory rows start at the centroids of a k-means
clustering of the embeddings x_j of the items in that user's history (clicked items for the positive memory,
browsed-not-clicked items for the negative one), so that routing starts from groups that already mean something.
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


def user_histories_from_arrays(arrays: Mapping[str, np.ndarray], items_key: str = F.CLICKED_ITEMS) -> dict:
    """{user id: sorted unique non-padding item ids} from model-input arrays (user_id [N], items_key [N, L])."""
    users = np.asarray(arrays[F.USER_ID]).reshape(-1)
    items = np.asarray(arrays[items_key])
    pairs = np.stack([np.repeat(users, items.shape[1]), items.reshape(-1)], 1)
    pairs = np.unique(pairs[pairs[:, 1] != F.PADDING_ID], axis=0)
    split = np.flatnonzero(np.diff(pairs[:, 0])) + 1
    return {int(chunk[0, 0]): chunk[:, 1] for chunk in np.split(pairs, split) if len(chunk)}


def pretrain_memory(model, histories: Mapping[int, Sequence[int]], *, memory_layer: str, iterations: int = 10,
                    seed: int = 0) -> int:
    """Initialise ``memory_layer``'s rows from k-means centroids of each user's history item embeddings.

    model: a model from build_mtin; histories: {raw user id: raw item ids}; memory_layer: "positive_memory" or
    "negative_memory". Users not in the memory table or without known items are left as they are.
    Returns the number of users initialised.
    """
    from mtin_tf.model import ITEM_EMBEDDING

    memory = model.get_layer(memory_layer)
    embed = model.get_layer(ITEM_EMBEDDING)
    rng = np.random.default_rng(seed)
    users = np.fromiter(histories.keys(), np.int64, len(histories))
    rows = memory.rows(tf.constant(users)).numpy() if len(users) else np.zeros([0], np.int32)
    all_items = np.unique(np.concatenate([np.asarray(v, np.int64) for v in histories.values()] or [[0]]))
    x, known = embed(tf.constant(all_items))
    x, known = x.numpy(), known.numpy()
    values = memory.memory.numpy()
    done = 0
    for user, row in zip(users, rows):
        if row == 0:
            continue
        idx = np.searchsorted(all_items, np.asarray(histories[int(user)], np.int64))
        points = x[idx][known[idx]]
        if len(points) == 0:
            continue
        values[row] = kmeans(points, memory.num_groups, iterations=iterations, rng=rng)
        done += 1
    memory.memory.assign(values)
    return done
