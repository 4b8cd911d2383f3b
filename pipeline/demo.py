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

from mtin_tf import demo  # the demo's sizes (read at run time: tests shrink them) and the standalone path


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the README's main job: planted data through the local TFX pipeline "
                                           "to a pushed model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="run directory (data, examples, model, metrics)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--standalone", action="store_true", help="the quick path without TFX (data build + mtin train)")
    p.set_defaults(func=run)


def run(args) -> int:
    return demo.run_standalone(args.out, args.seed) if args.standalone else run_pipeline(args)


def run_pipeline(args) -> int:
    """generate → the TFX pipeline (local) → metrics, pushed model, and the pushed model's score check."""
    import numpy as np

    from mtin_tf.data import planted
    from mtin_tf.pipeline.cli import print_run_summary
    from mtin_tf.pipeline.config import PipelineConfig
    from mtin_tf.pipeline.runners.local import run_local, run_summary

    out = os.path.abspath(args.out)
    data_dir, run_dir = os.path.join(out, "data"), os.path.join(out, "pipeline")
    print("mtin demo: planted data -> TFX pipeline (LocalDagRunner) -> blessed model pushed to a serving directory",
          flush=True)
    start = time.perf_counter()
    planted.generate(data_dir, seed=args.seed, **demo.DEMO_DATA)
    generate_s = time.perf_counter() - start
    config = {k: v for k, v in demo.DEMO_MODEL.items() if k != "max_history"}
    start = time.perf_counter()
    dirs = run_local(data_dir, run_dir, PipelineConfig(max_history=demo.DEMO_MODEL["max_history"],
                                                       mtin_config=dict(config, seed=args.seed)))
    pipeline_s = time.perf_counter() - start
    result = run_summary(dirs)
    print_run_summary(result)
    with open(os.path.join(data_dir, planted.SUMMARY_FILE)) as f:
        oracle = json.load(f)["oracle_auc"]
    print(f"  oracle AUC (true click probabilities): {oracle:.4f}")
    print(f"  wall time: generate {generate_s:.0f}s, pipeline {pipeline_s:.0f}s")
    if not result["pushed"]:
        print("mtin demo: the model was not blessed, so nothing was pushed")
        return 1
    served, keras = score_pushed_model(result["pushed"], result["outputs"]["HistoryGen"]["examples"][0],
                                       demo.DEMO_MODEL["max_history"])
    gap = float(np.max(np.abs(served - keras)))
    print(f"  pushed model: serving_default (tf.Example) vs reloaded Keras model on {len(served)} test examples: "
          f"max |diff| = {gap:.2e}")
    if gap > 1e-5:
        print("mtin demo: the pushed model scores differently from the trained model")
        return 1
    overall = result["metrics"].get("", {})
    auc, gauc = (overall.get(key, float("nan")) for key in ("auc", "gauc"))
    print(f"mtin demo: the TFX pipeline trained MTIN, test AUC {auc:.4f} gAUC {gauc:.4f} (oracle {oracle:.4f}); "
          f"pushed model: {result['pushed']}")
    return 0


def score_pushed_model(model_dir: str, examples_uri: str, max_history: int):
    """(serving_default scores of the raw test tf.Examples, reloaded Keras model's scores of mtin_tf's dense arrays)."""
    import glob

    import numpy as np
    import tensorflow as tf
    import tf_keras

    from mtin_tf import features as F
    from mtin_tf.data.examples import parse_example, to_model_arrays
    from mtin_tf.pipeline.components.history import TEST_SPLIT
    from mtin_tf.signatures import DEFAULT_SIGNATURE, EXAMPLES_INPUT
    from mtin_tf.train import predict_probabilities

    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{TEST_SPLIT}", "*")))
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())
    model = tf_keras.models.load_model(model_dir, compile=False)  # scoring only
    served = model.signatures[DEFAULT_SIGNATURE](**{EXAMPLES_INPUT: tf.constant(records)})[F.OUTPUT_PROBABILITY]
    keras = predict_probabilities(model, to_model_arrays([parse_example(r) for r in records], max_history))
    return np.asarray(served).reshape(-1), keras
