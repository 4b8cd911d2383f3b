"""``mtin demo``: the README's main job, end to end on this machine.

Default (the TFX pipeline): generate a small planted-interest dataset (:mod:`mtin_tf.data.planted`), run the whole
pipeline locally (`mtin pipeline run`: ExampleGen → validation → history building → Transform → Trainer → Evaluator →
Pusher, LocalDagRunner with SQLite ML Metadata), print the evaluation metrics and the pushed model's path, then reload
the pushed SavedModel and check that its tf.Example signature (Transform graph inside) scores the test examples exactly
as the reloaded Keras model does on the dense inputs mtin_tf builds itself (on the test split).

``--standalone``: the quick check without TFX — `mtin data generate`, `mtin data build`, `mtin train` (MTIN, early
stopping on validation AUC, one evaluation on test next to the popularity floors, versioned SavedModel export), then
reload the export and compare its scores.
"""
from __future__ import annotations

import argparse
import json
import os
import time

# Small enough for a 2-core machine in a few minutes; large enough that the planted structure is learnable.
DEMO_DATA = dict(num_users=400, num_items=3000, num_clusters=12, feature_dim=16, interactions_per_user=60)
DEMO_MODEL = dict(embedding_dim=32, num_masks=4, num_groups=4, max_history=20, batch_size=64, epochs=6)


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the README's main job: planted data through the local TFX pipeline "
                                           "to a pushed model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="run directory (data, examples, model, metrics)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--standalone", action="store_true", help="the quick path without TFX (data build + mtin train)")
    p.set_defaults(func=run)


def run(args) -> int:
    return run_standalone(args) if args.standalone else run_pipeline(args)


def run_pipeline(args) -> int:
    """generate → the TFX pipeline (local) → metrics, pushed model, and the pushed model's score check."""
    import numpy as np

    from mtin_tf.data import planted
    from pipeline.cli import print_run_summary
    from pipeline.runners.local import run_local

    out = os.path.abspath(args.out)
    data_dir, run_dir = os.path.join(out, "data"), os.path.join(out, "pipeline")
    print("mtin demo: planted data -> TFX pipeline (LocalDagRunner) -> blessed model pushed to a serving directory",
          flush=True)
    start = time.perf_counter()
    planted.generate(data_dir, seed=args.seed, **DEMO_DATA)
    generate_s = time.perf_counter() - start
    config = {k: v for k, v in DEMO_MODEL.items() if k != "max_history"}
    start = time.perf_counter()
    dirs = run_local(data_dir, run_dir, max_history=DEMO_MODEL["max_history"], mtin_config=dict(config, seed=args.seed))
    pipeline_s = time.perf_counter() - start
    result = print_run_summary(dirs)
    with open(os.path.join(data_dir, planted.SUMMARY_FILE)) as f:
        oracle = json.load(f)["oracle_auc"]
    print(f"  oracle AUC (true click probabilities): {oracle:.4f}")
    print(f"  wall time: generate {generate_s:.0f}s, pipeline {pipeline_s:.0f}s")
    if not result["pushed"]:
        print("mtin demo: the model was not blessed, so nothing was pushed")
        return 1
    served, keras = score_pushed_model(result["pushed"], result["outputs"]["HistoryGen"]["examples"][0],
                                       DEMO_MODEL["max_history"])
    gap = float(np.max(np.abs(served - keras)))
    print(f"  pushed model: serving_default (tf.Example) vs reloaded Keras model on {len(served)} test examples: "
          f"max |diff| = {gap:.2e}")
    if gap > 1e-5:
        print("mtin demo: the pushed model scores differently from the trained model")
        return 1
    return 0


def score_pushed_model(model_dir: str, examples_uri: str, max_history: int):
    """(serving_default scores of the raw test tf.Examples, reloaded Keras model's scores of mtin_tf's dense arrays)."""
    import glob

    import numpy as np
    import tensorflow as tf
    import tf_keras

    from mtin_tf import features as F
    from mtin_tf.data.examples import parse_example, to_model_arrays
    from mtin_tf.signatures import DEFAULT_SIGNATURE, EXAMPLES_INPUT
    from mtin_tf.train import predict_probabilities
    from pipeline.components.history import TEST_SPLIT

    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{TEST_SPLIT}", "*")))
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())
    model = tf_keras.models.load_model(model_dir)
    served = model.signatures[DEFAULT_SIGNATURE](**{EXAMPLES_INPUT: tf.constant(records)})[F.OUTPUT_PROBABILITY]
    keras = predict_probabilities(model, to_model_arrays([parse_example(r) for r in records], max_history))
    return np.asarray(served).reshape(-1), keras


def run_standalone(args) -> int:
    import tf_keras

    from mtin_tf import features as F
    from mtin_tf.cli import main as mtin
    from mtin_tf.data.canonical import INTERACTIONS_FILE, ITEM_FEATURES_FILE
    from mtin_tf.data.examples import TEST_FILE, read_tfrecords, to_model_arrays
    from mtin_tf.metrics import auc
    from mtin_tf.train import floor_report, predict_probabilities, train_and_evaluate

    print("mtin demo --standalone: generate -> build -> train -> evaluate -> export -> reload and score (no TFX)",
          flush=True)
    out = os.path.abspath(args.out)
    data_dir, examples_dir, run_dir = (os.path.join(out, d) for d in ("data", "examples", "train"))
    timings = {}

    start = time.perf_counter()
    gen = ["data", "generate", "--out", data_dir, "--seed", str(args.seed)]
    for key, value in DEMO_DATA.items():
        gen += [f"--{key.replace('_', '-')}", str(value)]
    _check(mtin(gen), "mtin data generate")
    timings["generate"] = time.perf_counter() - start

    start = time.perf_counter()
    _check(mtin(["data", "build", "--interactions", os.path.join(data_dir, INTERACTIONS_FILE), "--items",
                 os.path.join(data_dir, ITEM_FEATURES_FILE), "--out", examples_dir,
                 "--max-history", str(DEMO_MODEL["max_history"])]), "mtin data build")
    timings["build"] = time.perf_counter() - start

    start = time.perf_counter()
    result = train_and_evaluate(examples_dir, os.path.join(data_dir, ITEM_FEATURES_FILE), run_dir,
                                overrides=dict(DEMO_MODEL, seed=args.seed), verbose=2)
    timings["train+evaluate+export"] = time.perf_counter() - start

    # The exported SavedModel alone (as a server loads it) must score the test set like the trained model.
    test = to_model_arrays(read_tfrecords(os.path.join(examples_dir, TEST_FILE)), DEMO_MODEL["max_history"])
    reloaded = tf_keras.models.load_model(result["model_path"])
    served = predict_probabilities(reloaded, test)
    with open(os.path.join(data_dir, "summary.json")) as f:
        oracle = json.load(f)["oracle_auc"]
    reloaded_auc = auc(test[F.LABEL], served)
    print("\n== mtin demo results (test split) ==")
    for key in ("auc", "gauc", "precision@50", "recall@50", "f1@50"):
        print(f"  {key:>13}: {result['test'][key]:.4f}")
    print(floor_report(result))
    print(f"  {'oracle AUC':>13}: {oracle:.4f}  (AUC of the true click probabilities; MTIN/oracle = "
          f"{result['test']['auc'] / oracle:.3f})")
    print(f"  exported model: {result['model_path']}")
    print(f"  reloaded SavedModel AUC {reloaded_auc:.6f} vs in-process {result['test']['auc']:.6f}")
    print("  wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    if abs(reloaded_auc - result["test"]["auc"]) > 1e-6:
        print("mtin demo: the reloaded model scores differently from the trained model")
        return 1
    return 0


def _check(code: int, step: str) -> None:
    if code:
        raise SystemExit(f"mtin demo: `{step}` failed with exit code {code}")
