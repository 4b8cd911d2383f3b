"""The demo's sizes, and ``mtin demo --standalone``: the quick check without TFX.

Generate planted-interest data (:mod:`mtin_tf.data.planted`), build train/validation/test examples
(:mod:`mtin_tf.data.history`), train MTIN (mtin_tf.train.train_and_evaluate: early stopping on validation AUC, one
evaluation on test next to the popularity floors, versioned SavedModel export), then reload the export and compare its
scores. The command itself, and the demo's default path through the TFX pipeline, are :mod:`mtin_tf.pipeline.demo`.
"""
from __future__ import annotations

import json
import os
import time

# Small enough for a 2-core machine in a few minutes; large enough that the planted structure is learnable.
DEMO_DATA = dict(num_users=400, num_items=3000, num_clusters=12, feature_dim=16, interactions_per_user=60)
DEMO_MODEL = dict(embedding_dim=32, num_masks=4, num_groups=4, max_history=20, batch_size=64, epochs=6)


def build_demo_examples(data_dir: str, examples_dir: str, max_history: int) -> dict:
    """``mtin data build``'s default (in-memory) path on the generated data: {split: TFRecord path}; the build
    report goes to examples_dir/build_report.json and is printed."""
    from mtin_tf.data import canonical as C
    from mtin_tf.data.examples import write_split_tfrecords
    from mtin_tf.data.history import iter_examples
    from mtin_tf.data.report import Report

    report = Report("build")
    items = C.read_item_table(os.path.join(data_dir, C.ITEM_FEATURES_FILE), report)
    df = C.read_interactions(os.path.join(data_dir, C.INTERACTIONS_FILE), report, items=items)
    paths = write_split_tfrecords(iter_examples(df, max_history=max_history, report=report, progress=True),
                                  examples_dir)
    print("wrote " + ", ".join(paths.values()))
    print(report.summary())
    print(f"report: {report.write_json(os.path.join(examples_dir, 'build_report.json'))}")
    return paths


def run_standalone(out: str, seed: int) -> int:
    """generate → build → train + evaluate + export → reload the export and score the test split; prints the results
    and returns the exit code (1 when the reloaded model scores differently)."""
    import tf_keras

    from mtin_tf import features as F
    from mtin_tf.data import planted
    from mtin_tf.data.canonical import ITEM_FEATURES_FILE
    from mtin_tf.data.examples import TEST_FILE, read_tfrecords, to_model_arrays
    from mtin_tf.metrics import auc
    from mtin_tf.output import summary_line
    from mtin_tf.train import floor_report, predict_probabilities, train_and_evaluate

    print("mtin demo --standalone: generate -> build -> train -> evaluate -> export -> reload and score (no TFX)",
          flush=True)
    out = os.path.abspath(out)
    data_dir, examples_dir, run_dir = (os.path.join(out, d) for d in ("data", "examples", "train"))
    timings = {}

    start = time.perf_counter()
    print(planted.generate(data_dir, seed=seed, progress=True, **DEMO_DATA).describe())
    timings["generate"] = time.perf_counter() - start

    start = time.perf_counter()
    build_demo_examples(data_dir, examples_dir, DEMO_MODEL["max_history"])
    timings["build"] = time.perf_counter() - start

    start = time.perf_counter()
    result = train_and_evaluate(examples_dir, os.path.join(data_dir, ITEM_FEATURES_FILE), run_dir,
                                overrides=dict(DEMO_MODEL, seed=seed), verbose="auto")
    timings["train+evaluate+export"] = time.perf_counter() - start

    # The exported SavedModel alone (as a server loads it) must score the test set like the trained model.
    test = to_model_arrays(read_tfrecords(os.path.join(examples_dir, TEST_FILE)), DEMO_MODEL["max_history"])
    reloaded = tf_keras.models.load_model(result["model_path"], compile=False)
    served = predict_probabilities(reloaded, test)
    with open(os.path.join(data_dir, planted.SUMMARY_FILE)) as f:
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
    print(summary_line("mtin demo", result))
    return 0
