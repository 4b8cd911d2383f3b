"""Plain helpers shared by the training tests and the scripts they start in subprocesses (no tests here)."""
import numpy as np

from mtin_tf import features as F

L = 10


def two_cluster_users(seed=0, num_users=6, clusters=4, items_per_cluster=15, dim=8, per_user=40):
    """A few users, each interested in two of `clusters` item clusters; clicks are items of their clusters.

    Returns (arrays with labels, item ids, item features).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 3
    item_cluster = np.repeat(np.arange(clusters), items_per_cluster)
    feats = (centres[item_cluster] + rng.normal(size=(len(item_cluster), dim))).astype(np.float32)
    item_ids = np.arange(1, len(item_cluster) + 1) * 11
    rows = []
    for u in range(num_users):
        liked = rng.choice(clusters, 2, replace=False)
        liked_items = item_ids[np.isin(item_cluster, liked)]
        other_items = item_ids[~np.isin(item_cluster, liked)]
        history = list(rng.choice(liked_items, L))
        for t in range(per_user):
            label = int(rng.random() < 0.5)
            cand = rng.choice(liked_items if label else other_items)
            rows.append((u + 1, cand, 1000 + t, label, history[-L:], list(rng.choice(other_items, L))))
            if label:
                history.append(cand)
    arrays = {F.USER_ID: np.array([r[0] for r in rows]), F.ITEM_ID: np.array([r[1] for r in rows]),
              F.TIMESTAMP: np.array([r[2] for r in rows]), F.LABEL: np.array([r[3] for r in rows]),
              F.CLICKED_ITEMS: np.array([r[4] for r in rows]), F.BROWSED_ITEMS: np.array([r[5] for r in rows])}
    arrays[F.CLICKED_TIMES] = np.tile(np.arange(1, L + 1), (len(rows), 1)) * 10
    arrays[F.BROWSED_TIMES] = arrays[F.CLICKED_TIMES].copy()
    return {k: np.asarray(v, np.int64) for k, v in arrays.items()}, item_ids, feats


def planted_run(out_dir, batch_size, strategy, epochs=2):
    """A tiny MTIN trained on two_cluster_users (120 rows) under ``strategy`` with ``batch_size`` rows per replica,
    the way the trainers write: TensorBoard logs and a weights checkpoint under ``out_dir`` through
    mtin_tf.train.chief_writes (only the chief's stay). Returns (model, history). Exact settings (no retrieval term,
    whose in-batch negatives are each replica's batch); for time, no XLA (its compile) and no validation pass (the
    mirrored test covers it)."""
    import os

    from mtin_tf.config import MTINConfig
    from mtin_tf.train import chief_writes, train_mtin

    arrays, item_ids, feats = two_cluster_users(per_user=20)
    feats = feats / 3  # unit scale: see test_mirrored_strategy_on_two_logical_cpus_matches_the_single_device_run
    config = MTINConfig(embedding_dim=8, num_masks=2, num_groups=2, max_history=L, batch_size=batch_size,
                        epochs=epochs, seed=0, learning_rate=1e-3, l2=1e-4, memory_anchors=8, jit_routing=False,
                        retrieval_weight=0.0)
    with chief_writes(str(out_dir), strategy) as where:
        model, history = train_mtin(config, arrays, item_ids, feats, strategy=strategy,
                                    log_dir=os.path.join(where, "logs"), verbose=0)
        model.save_weights(os.path.join(where, "checkpoint", "weights"))
    return model, history


def latest_examples(examples):
    """{user id: the user's latest example dict} — largest timestamp, then longest clicked history — in plain
    Python: the reference of memory pretraining's latest-row rule."""
    latest = {}
    for ex in examples:
        best = latest.get(ex[F.USER_ID])
        if best is None or (ex[F.TIMESTAMP], len(ex[F.CLICKED_ITEMS])) > (best[F.TIMESTAMP],
                                                                          len(best[F.CLICKED_ITEMS])):
            latest[ex[F.USER_ID]] = ex
    return latest


def reference_anchors(example, features, num_groups, anchor_size, seed):
    """{name of mtin_tf.pretrain.ANCHOR_FEATURES: int64 [k, m]} of one example dict: per branch the distinct history
    items that have features (``features``: {item id: vector}) with the first time the example shows each, in id
    order, through mtin_tf.pretrain.user_anchors — in plain Python."""
    from mtin_tf.pretrain import ANCHOR_FEATURES, user_anchors

    record = {}
    for (items_key, times_key), names in zip(F.HISTORY_PAIRS, ANCHOR_FEATURES):
        first = {}
        for item, time in zip(np.asarray(example[items_key]).tolist(), np.asarray(example[times_key]).tolist()):
            if item in features:
                first[item] = min(time, first.get(item, time))
        ids = sorted(first)
        points = np.array([features[i] for i in ids], np.float32).reshape(len(ids), -1 if ids else 0)
        record.update(zip(names, user_anchors(ids, [first[i] for i in ids], points, num_groups, anchor_size,
                                              seed=seed, user_id=example[F.USER_ID])))
    return record
