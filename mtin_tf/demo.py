"""``mtin demo``: the README's main job, end to end on this machine.

Runs the same steps a user runs by hand — `mtin data generate` (planted-interest data with ground truth),
`mtin data build` (time-ordered histories, time-based split, TFRecords), `mtin train` (MTIN, early stopping on test
AUC, evaluation, versioned SavedModel export) — then reloads the exported SavedModel and checks that it scores the
test examples exactly as the trained model did. Until the TFX pipeline (issue #7) lands, this standalone path is the
main job; it says so when it runs.
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
    p = subparsers.add_parser("demo", help="the README's main job: build data, train, export and score end to end",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="run directory (data, examples, model, metrics)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np
    import tf_keras

    from mtin_tf import features as F
    from mtin_tf.cli import main as mtin
    from mtin_tf.data.canonical import INTERACTIONS_FILE, ITEM_FEATURES_FILE
    from mtin_tf.data.examples import TEST_FILE, read_tfrecords, to_model_arrays
    from mtin_tf.train import predict_probabilities
    from mtin_tf.train_cli import train_and_evaluate

    print("mtin demo: standalone path (generate -> build -> train -> evaluate -> export -> reload and score); "
          "the TFX pipeline run replaces it when issue #7 lands.", flush=True)
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
    in_process = np.asarray(json.load(open(os.path.join(run_dir, "metrics.json")))["auc"])
    with open(os.path.join(data_dir, "summary.json")) as f:
        oracle = json.load(f)["oracle_auc"]
    from mtin_tf.metrics import auc

    reloaded_auc = auc(test[F.LABEL], served)
    print("\n== mtin demo results (test split) ==")
    for key in ("auc", "gauc", "precision@50", "recall@50", "f1@50"):
        print(f"  {key:>13}: {result[key]:.4f}")
    print(f"  {'oracle AUC':>13}: {oracle:.4f}  (AUC of the true click probabilities; MTIN/oracle = "
          f"{result['auc'] / oracle:.3f})")
    print(f"  exported model: {result['model_path']}")
    print(f"  reloaded SavedModel AUC {reloaded_auc:.6f} vs in-process {float(in_process):.6f}")
    print("  wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    if abs(reloaded_auc - float(in_process)) > 1e-6:
        print("mtin demo: the reloaded model scores differently from the trained model")
        return 1
    return 0


def _check(code: int, step: str) -> None:
    if code:
        raise SystemExit(f"mtin demo: `{step}` failed with exit code {code}")
