"""Memory pretraining computed in Beam (mtin_tf.data.beam_pretrain) against plain-Python references: one user's
anchors (mtin_tf.pretrain.user_anchors), the PretrainAnchors transform on the real DirectRunner on planted data, and
the Trainer's path that streams its records into the memories (mtin_tf.train.build_for_training with anchor_files),
which must fill them exactly as in-memory pretraining on the same latest rows does — also under MirroredStrategy on
two logical CPU devices."""
import json
import os
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
import tf_keras
from apache_beam.metrics.metric import MetricsFilter
from training_support import latest_examples, reference_anchors

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.data import history as H
from mtin_tf.data.beam_history import BuildExamples
from mtin_tf.data.beam_pretrain import NAMESPACE, PretrainAnchors
from mtin_tf.data.examples import to_model_arrays
from mtin_tf.model import NEGATIVE_MEMORY, POSITIVE_MEMORY, build_mtin
from mtin_tf.pretrain import ANCHOR_FEATURES, anchor_record, kmeans, latest_per_user, read_anchor_records, user_anchors
from mtin_tf.train import pretrain_memories

K, M, SEED, L = 3, 4, 7, 6
SPLIT = dict(max_history=L, test_fraction=0.2, validation_fraction=0.1, split="fraction")


def _loop_reference(ids, times, points, k, m, seed, user):
    """user_anchors written as plain loops: the user's k-means (its own RNG), then per centroid its members (points
    whose nearest centroid it is, or the single nearest point when it has none), nearest first, up to m, 0-padded."""
    centroids = kmeans(points, k, rng=np.random.default_rng([seed, user]))
    dist = [[float(((p - c) ** 2).sum()) for c in centroids] for p in np.asarray(points, np.float64)]
    label = [min(range(k), key=lambda g: (d[g], g)) for d in dist]
    anchors, anchor_times = np.zeros([k, m], np.int64), np.zeros([k, m], np.int64)
    for g in range(k):
        members = [i for i in range(len(ids)) if label[i] == g] or [min(range(len(ids)), key=lambda i: dist[i][g])]
        for slot, i in enumerate(sorted(members, key=lambda i: (dist[i][g], i))[:m]):
            anchors[g, slot], anchor_times[g, slot] = ids[i], times[i]
    return anchors, anchor_times


def test_user_anchors_are_each_clusters_nearest_members_with_their_times():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    sizes = (6, 5, 2)  # the third cluster has fewer items than m: its row is 0-padded
    points = np.concatenate([c + rng.normal(size=(n, 2)) for c, n in zip(centres, sizes)]).astype(np.float32)
    cluster = np.repeat(np.arange(3), sizes)
    ids = np.arange(1, len(points) + 1) * 10
    times = rng.integers(1000, 2000, len(points))
    anchors, anchor_times = user_anchors(ids, times, points, K, M, seed=SEED, user_id=42)
    assert anchors.shape == anchor_times.shape == (K, M) and anchors.dtype == np.int64
    want = _loop_reference(ids, times, points, K, M, SEED, 42)
    np.testing.assert_array_equal(anchors, want[0])
    np.testing.assert_array_equal(anchor_times, want[1])
    time_of = dict(zip(ids.tolist(), times.tolist()))
    for row, row_times in zip(anchors, anchor_times):
        members = row[row > 0]
        assert len({int(cluster[i // 10 - 1]) for i in members}) == 1  # one planted cluster per row
        c = cluster[members[0] // 10 - 1]
        np.testing.assert_array_equal(row[len(members):], 0)
        np.testing.assert_array_equal(row_times, [time_of.get(int(i), 0) for i in row])  # times follow ids
        mine = np.flatnonzero(cluster == c)  # the cluster's items nearest its mean, nearest first
        nearest = mine[np.argsort(((points[mine] - points[mine].mean(0)) ** 2).sum(1), kind="stable")][:M]
        np.testing.assert_array_equal(members, ids[nearest])
    assert sorted(len(row[row > 0]) for row in anchors) == [2, 4, 4]
    # The user's own RNG: the same anchors whatever was computed before, and another seed is another draw.
    user_anchors(ids[::-1], times, points, K, M, seed=SEED, user_id=1)
    np.testing.assert_array_equal(user_anchors(ids, times, points, K, M, seed=SEED, user_id=42)[0], anchors)
    assert all(np.array_equal(a, b) for a, b in zip(user_anchors([], [], np.zeros([0, 2]), K, M),
                                                    (np.zeros([K, M]),) * 2))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Planted interactions plus one user who met only items without features; the item table lacks every 7th item.
    Runs HistoryGen's Beam steps (BuildExamples, then PretrainAnchors, records written as gzipped TFRecord) once on
    the DirectRunner, the interactions in shuffled order."""
    from mtin_tf.data import planted as P
    from mtin_tf.data.canonical import read_item_features

    out = tmp_path_factory.mktemp("planted")
    P.generate(str(out), num_users=24, num_items=150, num_clusters=6, feature_dim=4, interactions_per_user=30, seed=3)
    df = pd.read_parquet(out / "interactions.parquet")[list(F.INTERACTION_COLUMNS)].astype(np.int64)
    items = read_item_features(str(out / "item_features.npz"))
    dropped = items.item_ids[::7]
    keep = ~np.isin(items.item_ids, dropped)
    item_ids, feats = items.item_ids[keep], items.features[keep]
    lonely = int(df[F.USER_ID].max()) + 1
    df = pd.concat([df, pd.DataFrame({F.USER_ID: lonely, F.ITEM_ID: np.resize(dropped, 12),
                                      F.TIMESTAMP: np.arange(12) * 100, F.CLICK: np.arange(12) % 2})])
    prefix = str(out / "anchors" / "anchors")
    p = beam.Pipeline(runner="DirectRunner")
    rows = p | "Rows" >> beam.Create(df.sample(frac=1.0, random_state=1).to_dict("records"))
    item_pairs = p | "Items" >> beam.Create(list(zip(item_ids.tolist(), feats)))
    train = (rows | BuildExamples(**SPLIT)).train
    _ = ((train, item_pairs) | PretrainAnchors(num_groups=K, anchor_size=M, seed=SEED) | beam.Map(anchor_record)
         | beam.io.WriteToTFRecord(prefix, file_name_suffix=".gz"))
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in
                result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]}
    return dict(df=df, item_ids=item_ids, feats=feats, lonely=lonely, pattern=prefix + "*", counters=counters,
                train=H.build_examples(df, **SPLIT)[0])


def _read_records(pattern):
    batches = list(read_anchor_records([pattern], K, M, batch_size=5).as_numpy_iterator())
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def test_beam_gives_each_user_the_anchors_of_their_latest_training_row(planted):
    """For every user, the records hold exactly user_anchors of the user's latest training example (largest timestamp,
    then longest clicked history), computed here in plain Python: each branch's distinct items with the first time
    the row shows each, the items without features left out, in id order."""
    features = dict(zip(planted["item_ids"].tolist(), planted["feats"]))
    latest = latest_examples(planted["train"])
    want = {user: reference_anchors(ex, features, K, M, SEED) for user, ex in latest.items()}
    want = {user: record for user, record in want.items() if any(value.any() for value in record.values())}
    assert planted["lonely"] in latest and planted["lonely"] not in want  # met only items without features
    assert len(want) > 20
    got = _read_records(planted["pattern"])
    assert sorted(got[F.USER_ID].tolist()) == sorted(want)
    for row, user in enumerate(got[F.USER_ID].tolist()):
        for name in (name for pair in ANCHOR_FEATURES for name in pair):
            np.testing.assert_array_equal(got[name][row], want[user][name], err_msg=f"user {user} {name}")
    assert planted["counters"]["pretraining_users"] == len(want)
    assert planted["counters"]["pretraining_users_without_known_items"] == 1
    assert planted["counters"]["pretraining_unknown_items"] > 0


def _config():
    return MTINConfig(embedding_dim=8, num_masks=2, num_groups=K, max_history=L, memory_anchors=M, seed=SEED,
                      jit_routing=False, retrieval_weight=0.0, exposure_prior=False)


def _memories(model):
    return {f"{layer}.{weight}": getattr(model.get_layer(layer), weight).numpy()
            for layer in (POSITIVE_MEMORY, NEGATIVE_MEMORY) for weight in ("anchors", "anchor_times", "memory")}


def test_the_trainer_fills_the_memories_from_the_beam_records_as_in_memory_pretraining_does(planted):
    """Two models with the same initial weights: one pretrained in memory from the latest training rows (`mtin
    train`'s path, latest_per_user as the Trainer keeps them), one from the Beam records. Every anchor, anchor time
    and residual is equal; a user of the records missing from the memory table is skipped and counted."""
    config = _config()
    latest = latest_per_user(to_model_arrays(planted["train"], L))
    users = np.unique(latest[F.USER_ID])
    users = users[users != users[3]]  # a user the model does not know: the records' row for it is skipped
    models = {}
    for source in ("in_memory", "beam"):
        tf_keras.utils.set_random_seed(SEED)
        models[source] = build_mtin(config, planted["item_ids"], planted["feats"], users)
    counts = pretrain_memories(models["beam"], config, anchor_files=[planted["pattern"]])
    done = pretrain_memories(models["in_memory"], config, history_arrays=latest)
    assert counts["source"] == "beam" and done["source"] == "in_memory"
    assert counts["users"] == planted["counters"]["pretraining_users"] and counts["unknown_users"] == 1
    assert counts[POSITIVE_MEMORY] == done[POSITIVE_MEMORY] and counts[NEGATIVE_MEMORY] == done[NEGATIVE_MEMORY] > 10
    beam_memories, in_memory = _memories(models["beam"]), _memories(models["in_memory"])
    for name, value in in_memory.items():
        np.testing.assert_array_equal(beam_memories[name], value, err_msg=name)
    for layer in (POSITIVE_MEMORY, NEGATIVE_MEMORY):  # pretrained rows: anchors and a residual of 0; others as built
        anchors, residual = in_memory[f"{layer}.anchors"], in_memory[f"{layer}.memory"]
        pretrained = anchors.reshape(len(anchors), -1).any(1)
        assert pretrained.sum() == done[layer] and not residual[pretrained].any() and residual[~pretrained].all()


MIRRORED = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
from test_beam_pretrain import _config, _memories
from mtin_tf.train import build_for_training, select_strategy
data = np.load(sys.argv[2])
latest = {name[len("latest."):]: data[name] for name in data.files if name.startswith("latest.")}
config = _config()
args = (config, data["item_ids"], data["feats"], data["users"])
reference, _, _, done = build_for_training(*args, latest, None, strategy=tf.distribute.get_strategy())
mirrored = select_strategy([d.name for d in tf.config.list_logical_devices("CPU")])
model, _, strategy, counts = build_for_training(*args, None, None, strategy=mirrored, anchor_files=[sys.argv[3]])
want = _memories(reference)
layer = model.get_layer("positive_memory")
replicas = [dict(zip(("anchors", "anchor_times", "memory"), (v.numpy() for v in vs)))
            for vs in zip(*(w.values for w in (layer.anchors, layer.anchor_times, layer.memory)))]
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "type": type(layer.anchors).__name__,
                  "sources": [done["source"], counts["source"]],
                  "equal": all(np.array_equal(v, want[k]) for k, v in _memories(model).items()),
                  "replicas_equal": [all(np.array_equal(r[k], want["positive_memory." + k]) for k in r)
                                     for r in replicas]}))
"""


def test_the_beam_records_fill_mirrored_memories_on_two_logical_cpus(planted, tmp_path):
    """build_for_training under MirroredStrategy (two replicas) with the anchor records gives every replica the
    memories in-memory pretraining gives on one device."""
    latest = latest_per_user(to_model_arrays(planted["train"], L))
    data = tmp_path / "data.npz"
    np.savez(data, item_ids=planted["item_ids"], feats=planted["feats"], users=np.unique(latest[F.USER_ID]),
             **{f"latest.{k}": v for k, v in latest.items()})
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    out = subprocess.run([sys.executable, str(script), os.path.dirname(__file__), str(data), planted["pattern"]],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["type"] == "MirroredVariable"
    assert result["sources"] == ["in_memory", "beam"]
    assert result["equal"] and result["replicas_equal"] == [True, True]
