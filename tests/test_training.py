"""Training: memory pretraining, learning a planted signal, and the distributed path on two logical CPU devices."""
import numpy as np
import tensorflow as tf
from training_support import L, two_cluster_users

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.metrics import auc
from mtin_tf.model import POSITIVE_MEMORY, build_mtin
from mtin_tf.pretrain import kmeans, pretrain_memory, user_histories_from_arrays
from mtin_tf.train import make_dataset, select_strategy, train_mtin


def test_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + rng.normal(size=(30, 2)) * 0.3 for c in centres])
    got = kmeans(points, 3, rng=rng)
    dist = np.linalg.norm(got[:, None] - centres[None], axis=-1)
    assert np.all(dist.min(0) < 0.5)
    assert kmeans(points[:2], 3).shape == (3, 2)  # fewer points than groups


def test_pretrain_memory_sets_rows_to_centroids_of_history_embeddings():
    arrays, item_ids, feats = two_cluster_users()
    model = build_mtin(MTINConfig(embedding_dim=8, num_masks=2, num_groups=2, max_history=L, memory_anchors=0),
                       item_ids, feats, np.unique(arrays[F.USER_ID]))
    histories = user_histories_from_arrays(arrays)
    assert set(histories) == set(np.unique(arrays[F.USER_ID]).tolist())
    before = model.get_layer(POSITIVE_MEMORY).memory.numpy().copy()
    assert pretrain_memory(model, histories, memory_layer=POSITIVE_MEMORY) == len(histories)
    after = model.get_layer(POSITIVE_MEMORY).memory.numpy()
    np.testing.assert_array_equal(after[0], before[0])  # OOV row untouched
    x, _ = model.get_layer("item_embedding")(tf.constant(histories[1]))
    # Each centroid is the mean of some of the user's item embeddings: it lies inside their bounding box.
    row = model.get_layer(POSITIVE_MEMORY).rows(tf.constant([1])).numpy()[0]
    assert np.all(after[row] >= x.numpy().min(0) - 1e-5) and np.all(after[row] <= x.numpy().max(0) + 1e-5)
    assert not np.allclose(after[row], before[row])


def test_anchored_memory_rows_follow_their_clusters_as_the_embeddings_train():
    arrays, item_ids, feats = two_cluster_users()
    model = build_mtin(MTINConfig(embedding_dim=8, num_masks=2, num_groups=2, max_history=L, memory_anchors=4,
                                  use_id_embedding=False),
                       item_ids, feats, np.unique(arrays[F.USER_ID]))
    histories = user_histories_from_arrays(arrays)
    assert pretrain_memory(model, histories, memory_layer=POSITIVE_MEMORY) == len(histories)
    layer, embed = model.get_layer(POSITIVE_MEMORY), model.get_layer("item_embedding")
    anchored = model.get_layer(f"{POSITIVE_MEMORY}_anchored")
    cluster_of = {int(i): c for c, i in zip(np.repeat(np.arange(4), 15), item_ids)}  # two_cluster_users' layout

    def memory_of(user):  # at an impression after every anchor (histories without times: all count)
        residual, ids, times = layer(tf.constant([user]))
        return anchored([residual, *embed(ids), times, tf.constant([10 ** 9])]).numpy()[0], ids.numpy()[0]

    for user, history in histories.items():
        rows, ids = memory_of(user)
        for g in range(2):  # each row: up to 4 of the user's items, all from one planted cluster, nearest first
            members = ids[g][ids[g] > 0]
            assert 0 < len(members) <= 4 and set(members.tolist()) <= set(np.asarray(history).tolist())
            assert len({cluster_of[int(i)] for i in members}) == 1
            np.testing.assert_allclose(rows[g], embed(tf.constant(members))[0].numpy().mean(0), atol=1e-5)
    # The rows move with W_e: scaling the projection scales each row's (bias-free part of the) mean with it.
    user = next(iter(histories))
    before, ids = memory_of(user)
    kernel = embed.projection.kernel
    kernel.assign(kernel * 3.0)
    after, _ = memory_of(user)
    bias = embed.projection.bias.numpy()
    np.testing.assert_allclose(after - bias, 3.0 * (before - bias), rtol=1e-4, atol=1e-5)


def test_anchors_count_only_at_impressions_after_the_user_met_them():
    """A training row's own candidate, which later rows' histories hold, must not sit in the memory that scores it."""
    arrays = {F.USER_ID: np.array([4, 4, 4]), F.CLICKED_ITEMS: np.array([[11, 0], [11, 22], [22, 33]]),
              F.CLICKED_TIMES: np.array([[50, 0], [50, 70], [60, 90]])}
    histories = user_histories_from_arrays(arrays, F.CLICKED_ITEMS, F.CLICKED_TIMES)
    np.testing.assert_array_equal(histories[4][0], [11, 22, 33])
    np.testing.assert_array_equal(histories[4][1], [50, 60, 90])  # earliest time each item appears
    np.testing.assert_array_equal(user_histories_from_arrays(arrays)[4], [11, 22, 33])

    item_ids = np.array([11, 22, 33])
    feats = np.array([[1.0, 0.0], [1.1, 0.0], [1.2, 0.1]], np.float32)  # one cluster of three
    model = build_mtin(MTINConfig(embedding_dim=4, num_masks=1, num_groups=1, max_history=2, memory_anchors=3,
                                  use_routing=False), item_ids, feats, np.array([4]))
    assert pretrain_memory(model, histories, memory_layer=POSITIVE_MEMORY) == 1
    layer, embed = model.get_layer(POSITIVE_MEMORY), model.get_layer("item_embedding")
    anchored = model.get_layer(f"{POSITIVE_MEMORY}_anchored")
    residual, ids, times = layer(tf.constant([4, 4, 4, 4]))
    assert sorted(ids.numpy()[0, 0].tolist()) == [11, 22, 33]
    impressions = tf.constant([60, 61, 91, 40], tf.int64)
    rows = anchored([residual, *embed(ids), times, impressions]).numpy()[:, 0]
    x = dict(zip([11, 22, 33], embed(tf.constant(item_ids))[0].numpy()))
    np.testing.assert_allclose(rows[0], x[11], atol=1e-6)  # 22 is met at 60: not before the impression at 60
    np.testing.assert_allclose(rows[1], (x[11] + x[22]) / 2, atol=1e-6)
    np.testing.assert_allclose(rows[2], (x[11] + x[22] + x[33]) / 3, atol=1e-6)
    np.testing.assert_allclose(rows[3], 0.0, atol=1e-6)  # before every anchor: the residual (0) alone


def test_mtin_overfits_a_small_planted_dataset():
    arrays, item_ids, feats = two_cluster_users()
    config = MTINConfig(embedding_dim=16, num_masks=2, num_groups=2, max_history=L, batch_size=16, epochs=40,
                        learning_rate=3e-3, l2=0.0, seed=1)
    model, _ = train_mtin(config, arrays, item_ids, feats, verbose=0)
    scores = model.predict(make_dataset(arrays, 64), verbose=0)[F.OUTPUT_PROBABILITY]
    assert auc(arrays[F.LABEL], scores) > 0.95


def test_select_strategy_mirrors_over_visible_gpus_else_default():
    gpus = tf.config.list_logical_devices("GPU")
    strategy = select_strategy()
    assert strategy.num_replicas_in_sync == max(1, len(gpus))
    assert isinstance(strategy, tf.distribute.MirroredStrategy) == bool(gpus)


DISTRIBUTED = r"""
import sys, json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
from training_support import two_cluster_users, L
import dataclasses

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.train import predict_probabilities, select_strategy, train_mtin, make_dataset
devices = [d.name for d in tf.config.list_logical_devices("CPU")]
arrays, item_ids, feats = two_cluster_users(per_user=20)  # 120 rows: 8 steps an epoch, the last one a half batch
# Features of unit scale: at the fixture's scale (coordinates of variance 10) eq. 5-7, cubic in x, start the logits
# near 10^3, where the thresholded validation AUC turns on float rounding rather than on the model.
feats = feats / 3
runs = {}
# The same global batch of 16 on one device and as 2 replicas x 8, same data and seed; the production settings.
for name, strategy, batch in (("single", tf.distribute.get_strategy(), 16), ("mirrored", select_strategy(devices), 8)):
    config = MTINConfig(embedding_dim=8, num_masks=2, num_groups=2, max_history=L, batch_size=batch, epochs=2, seed=0,
                        learning_rate=1e-3, l2=1e-4, readout="attention", aggregation="concat_pool",
                        use_id_embedding=True, use_item_bias=True, pretrain_memory=True, memory_anchors=8,
                        jit_routing=True, mixed_precision=False, retrieval_weight=0.0)  # exact: no in-batch term
    model, history = train_mtin(config, arrays, item_ids, feats, eval_arrays=arrays, strategy=strategy, verbose=0)
    if name == "mirrored":  # the retrieval objective's train step on two replicas too (its own in-batch negatives)
        _, multitask = train_mtin(dataclasses.replace(config, retrieval_weight=1.0, epochs=1), arrays, item_ids, feats,
                                  strategy=strategy, verbose=0)
        runs["retrieval"] = {key: multitask.history[key] for key in ("loss", "logit_loss", "retrieval_loss")}
    if name == "mirrored":  # Keras predict under the strategy
        out = model.predict(make_dataset(arrays, 32), verbose=0)
    else:  # the reference run's outputs eagerly, with no predict function to trace
        out = {k: v.numpy() for k, v in model({k: arrays[k] for k in F.MODEL_INPUT_NAMES}).items()}
    scored = predict_probabilities(model, arrays)  # outside strategy.run: the scoring path of mtin train / evaluate
    runs[name] = {"replicas": strategy.num_replicas_in_sync, "mirrored": type(model.trainable_variables[0]).__name__,
                  "loss": history.history["loss"], "val_auc": history.history.get("val_logit_auc"),
                  "logits": out[F.OUTPUT_LOGIT].tolist(),
                  "scored_vs_keras": float(np.abs(scored - out[F.OUTPUT_PROBABILITY]).max()),
                  "n": int(len(scored))}
print(json.dumps({"devices": devices, "runs": runs}))
"""


def test_mirrored_strategy_on_two_logical_cpus_matches_the_single_device_run(tmp_path):
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "distributed.py"
    script.write_text(DISTRIBUTED)
    out = subprocess.run([sys.executable, str(script), os.path.dirname(__file__)], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    single, mirrored = result["runs"]["single"], result["runs"]["mirrored"]
    assert len(result["devices"]) == 2 and mirrored["replicas"] == 2 and single["replicas"] == 1
    assert mirrored["mirrored"] == "MirroredVariable"
    assert len(mirrored["loss"]) == 2 and all(np.isfinite(mirrored["loss"]))
    # Two replicas of 8 follow the single-device run of 16 step for step (up to float summation order), and the
    # validation pass early stopping watches gives the same AUC each epoch.
    np.testing.assert_allclose(mirrored["loss"], single["loss"], rtol=1e-4)
    assert len(mirrored["val_auc"]) == 2
    np.testing.assert_allclose(mirrored["val_auc"], single["val_auc"], atol=1e-3)
    np.testing.assert_allclose(mirrored["logits"], single["logits"], rtol=1e-3, atol=1e-3)
    assert mirrored["n"] == 120 and mirrored["scored_vs_keras"] < 1e-5 and single["scored_vs_keras"] < 1e-5
    # The retrieval objective's train step runs on the two replicas too (each with its own in-batch negatives): a
    # finite ranking loss and a finite, positive retrieval term (a softmax cross-entropy over the replica's batch).
    multitask = result["runs"]["retrieval"]
    assert np.isfinite(multitask["loss"]).all() and np.isfinite(multitask["logit_loss"]).all()
    assert np.isfinite(multitask["retrieval_loss"]).all() and multitask["retrieval_loss"][0] > 0
