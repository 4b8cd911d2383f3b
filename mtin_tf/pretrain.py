"""Interest memory pretraining (section 4.1.1, "we pretrain a positive interest memory matrix M_u").

The paper does not say how M_u is pretrained. Here each user's history (clicked items for the positive memory,
browsed-not-clicked items for the negative one) is clustered into s groups by k-means on the items' feature vectors,
so that routing starts from groups that already mean something. With anchored memories (config.memory_anchors = m,
the default) each row keeps the m items of its cluster nearest the centroid and is their mean current embedding plus
a trained residual (started at 0): the row stays on its cluster as W_e and the id embeddings train. Without anchors
the rows are set once to the centroids of the items' embeddings x_j, which go stale as soon as W_e moves.
MTIN-P (config.pretrain_memory = False) skips this and keeps the random initialisation.

Where it runs. Anchored pretraining needs only the items' feature vectors, not the model, so it is one pure NumPy
function per user and branch (:func:`user_anchors`, with a per-user RNG: the result does not depend on the order users
are processed in). The TFX pipeline runs it in Beam (:mod:`mtin_tf.data.beam_pretrain`, inside HistoryGen) on each
user's latest training row (:func:`latest_per_user`) and hands the anchors to the Trainer as gzipped TFRecords of
:func:`anchor_record` (:data:`ANCHOR_FEATURES`), which :func:`assign_anchors` streams into the model. `mtin train`
(and the Trainer when no anchors were computed) runs it in memory, :func:`pretrain_memory`, through the same
:func:`user_anchors`. The non-anchored form (memory_anchors = 0: rows set to centroids of the model's embeddings)
needs the model's weights and stays in memory (:func:`pretrain_memory`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from mtin_tf import features as F

KMEANS_ITERATIONS = 10  # Lloyd iterations of memory pretraining's k-means, in memory and in Beam alike


def kmeans(points, k, *, iterations=KMEANS_ITERATIONS, rng=None):
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


def pretrain_memory(model, histories: Mapping[int, Sequence[int]], *, memory_layer: str,
                    iterations: int = KMEANS_ITERATIONS, seed: int = 0) -> int:
    """Initialise ``memory_layer``'s rows from a k-means clustering of each user's history, in memory (the path of
    `mtin train`; the pipeline computes the anchored form in Beam instead: module docstring).

    model: a model from build_mtin; histories: {raw user id: raw item ids} or {raw user id: (raw item ids, the time
    the user first met each)} (user_histories_from_arrays with ``times_key``); memory_layer: "positive_memory" or
    "negative_memory". Anchored memories get each user's :func:`user_anchors` (clustering the items' feature vectors)
    and a residual of 0; anchored rows use an anchor only at impressions after its time (AnchoredMemory); anchors
    given without times count at every impression. Without anchors the rows are set to the k-means centroids of the
    items' current embeddings x_j (this form needs the model, so it runs only here). Each user's k-means draws from
    its own RNG (:func:`user_rng`). Users not in the memory table or without known items are left as they are.
    Returns the number of users initialised.
    """
    from mtin_tf.layers.tables import frozen_value
    from mtin_tf.model import ITEM_EMBEDDING

    memory = model.get_layer(memory_layer)
    embed = model.get_layer(ITEM_EMBEDDING)
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
        if memory.anchor_size:
            anchors[row], anchor_times[row] = user_anchors(ids, times, points[idx], memory.num_groups,
                                                           memory.anchor_size, iterations=iterations, seed=seed,
                                                           user_id=user)
            values[row] = 0.0
        else:
            values[row] = kmeans(points[idx], memory.num_groups, iterations=iterations, rng=user_rng(seed, user))
        done += 1
    memory.memory.assign(values)
    if memory.anchor_size:
        memory.anchors.assign(anchors)
        memory.anchor_times.assign(anchor_times)
    return done


def user_rng(seed: int, user_id: int) -> np.random.Generator:
    """The RNG of one user's k-means: ``np.random.default_rng([seed, user_id])`` (non-negative ints), the same
    whatever order, process or Beam worker the users are handled in."""
    return np.random.default_rng([int(seed), int(user_id)])


def user_anchors(ids, times, points, num_groups: int, anchor_size: int, *, iterations: int = KMEANS_ITERATIONS,
                 seed: int = 0, user_id: int = 0):
    """One user's anchors for one memory: k-means (k = ``num_groups``, :func:`user_rng` of ``seed`` and
    ``user_id``) of the items' feature vectors, then for each cluster the ids of up to ``anchor_size`` (m) of its
    items nearest the centroid, nearest first (:func:`nearest_members`), and the time the user first met each.

    ids: int64 [n], the user's distinct known item ids (sorted ascending by convention: the k-means++ draw depends on
    the order); times: int64 [n], when the user first met each; points: float [n, F], their feature vectors.
    Returns (anchors int64 [k, m], anchor_times int64 [k, m]), 0-padded; all 0 when n == 0. Pure NumPy: the Beam
    pretraining (mtin_tf.data.beam_pretrain) and :func:`pretrain_memory` both call it.
    """
    ids, times = np.asarray(ids, np.int64).reshape(-1), np.asarray(times, np.int64).reshape(-1)
    shape = [int(num_groups), int(anchor_size)]
    if not len(ids):
        return np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    points = np.asarray(points, np.float64)
    centroids = kmeans(points, shape[0], iterations=iterations, rng=user_rng(seed, user_id))
    # members as 1-based positions in (ids, times), 0 for none: one index picks both
    members = nearest_members(points, np.arange(1, len(ids) + 1), centroids, shape[1])
    return np.r_[0, ids][members], np.r_[0, times][members]


def latest_per_user(arrays: Mapping[str, np.ndarray]) -> dict:
    """The latest row of each user in ``arrays`` ({name: array [N, ...]} with user_id [N], timestamp [N] and
    clicked_item_ids [N, L], 0-padded): largest timestamp, then longest clicked history — the row whose histories
    memory pretraining clusters, in the Trainer (streamed) and in Beam (mtin_tf.data.beam_pretrain) alike. Returns
    every array of ``arrays`` at those rows, one per user, by user id."""
    users = np.asarray(arrays[F.USER_ID])
    if not len(users):
        return dict(arrays)
    length = (np.asarray(arrays[F.CLICKED_ITEMS]) != F.PADDING_ID).sum(1)
    order = np.lexsort((length, arrays[F.TIMESTAMP], users))
    last = np.r_[users[order][1:] != users[order][:-1], True]
    return {name: np.asarray(value)[order[last]] for name, value in arrays.items()}


# The anchor records (one tf.Example per user, gzipped TFRecord): the user id and, per memory in the order of
# F.HISTORY_PAIRS (positive: clicked, negative: browsed-not-clicked), its anchors and their times, int64 [k * m] each
# (a [k, m] block, row-major, 0-padded; all 0: that memory is not pretrained for the user).
ANCHOR_FEATURES = (("positive_anchors", "positive_anchor_times"), ("negative_anchors", "negative_anchor_times"))


def anchor_record(record: Mapping) -> bytes:
    """A serialized anchor record (tf.Example) of {user_id: int, each name of ANCHOR_FEATURES: int [k, m] or
    [k * m]}."""
    msg = tf.train.Example()
    feature = msg.features.feature
    feature[F.USER_ID].int64_list.value.append(int(record[F.USER_ID]))
    for name in (name for pair in ANCHOR_FEATURES for name in pair):
        feature[name].int64_list.value.extend(np.asarray(record[name], np.int64).reshape(-1).tolist())
    return msg.SerializeToString()


def read_anchor_records(file_patterns, num_groups: int, anchor_size: int, batch_size: int = 4096):
    """Anchor records (gzipped TFRecord, any filesystem TensorFlow reads), streamed: tf.data of batches {user_id
    int64 [B], each name of ANCHOR_FEATURES int64 [B, k, m]}."""
    files = sorted({f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)})
    size = int(num_groups) * int(anchor_size)
    spec = {F.USER_ID: tf.io.FixedLenFeature([], tf.int64)}
    spec.update({name: tf.io.FixedLenFeature([size], tf.int64) for pair in ANCHOR_FEATURES for name in pair})

    def parse(records):
        parsed = tf.io.parse_example(records, spec)
        return {name: value if name == F.USER_ID else tf.reshape(value, [-1, num_groups, anchor_size])
                for name, value in parsed.items()}

    return tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size).map(parse)


def assign_anchors(model, batches) -> dict:
    """Writes anchor records into the model's memories (POSITIVE_MEMORY, NEGATIVE_MEMORY, anchored): for each user
    known to the memory table (rows by ``memory.rows(user_ids)``) and each memory whose anchors are not all 0, the
    anchors, their times and a residual of 0 — what :func:`pretrain_memory` writes for the same anchors. Scatter
    updates batch by batch (no copy of the tables; also on mirrored variables, from the cross-replica context).

    batches: iterable of {user_id int64 [B], each name of ANCHOR_FEATURES int [B, k, m]} (:func:`read_anchor_records`).
    Returns {"users": records read, "unknown_users": records of users absent from the memory table (skipped), each
    memory layer's name: users whose rows were set}.
    """
    from mtin_tf.model import NEGATIVE_MEMORY, POSITIVE_MEMORY

    memories = [model.get_layer(name) for name in (POSITIVE_MEMORY, NEGATIVE_MEMORY)]
    counts = {"users": 0, "unknown_users": 0, **{memory.name: 0 for memory in memories}}
    for batch in batches:
        users = np.asarray(batch[F.USER_ID], np.int64)
        rows = memories[0].rows(tf.constant(users)).numpy()
        counts["users"] += len(users)
        counts["unknown_users"] += int((rows == 0).sum())
        for memory, (ids_name, times_name) in zip(memories, ANCHOR_FEATURES):
            ids, times = np.asarray(batch[ids_name], np.int64), np.asarray(batch[times_name], np.int64)
            if tuple(ids.shape[1:]) != (memory.num_groups, memory.anchor_size):
                raise ValueError(f"anchor records hold [{ids.shape[1:]}] anchors per user; {memory.name} has "
                                 f"[{memory.num_groups}, {memory.anchor_size}] (num_groups, memory_anchors)")
            keep = (rows > 0) & ids.reshape(len(ids), -1).any(1)
            if not keep.any():
                continue
            index = tf.constant(rows[keep], tf.int32)
            memory.anchors.scatter_update(tf.IndexedSlices(tf.constant(ids[keep]), index))
            memory.anchor_times.scatter_update(tf.IndexedSlices(tf.constant(times[keep]), index))
            memory.memory.scatter_update(tf.IndexedSlices(
                tf.zeros([int(keep.sum()), memory.num_groups, memory.embedding_dim], memory.memory.dtype), index))
            counts[memory.name] += int(keep.sum())
    return counts


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
