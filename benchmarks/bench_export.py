"""Size of an exported MTIN SavedModel and the peak memory of building and exporting it, for a large item table.

Usage: .venv/bin/python benchmarks/bench_export.py [--items 1700000] [--features 512]
       [--features-only] [--from-file]

A synthetic float32 item table of --items × --features (MicroVideo-1.7M's size by default: 1.7 M × 512, 3.5 GB) is
made, MTIN is built on it at the paper's size (d=128, p=8, s=6, L=50), the caller's copy of the table is dropped,
and the model is exported with mtin_tf.export (which carries the pre-projected [N, d] table instead of the features).
Prints one JSON line: the table's size, the
process's peak RSS after building and after exporting (both as a multiple of the table), the SavedModel's size on
disk, and the largest difference between the built and the exported model's logits on a batch.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import mtin_tf  # noqa: F401  (before TensorFlow: importing it sets TF_USE_LEGACY_KERAS=1)

# isort: split

import numpy as np
import tensorflow as tf

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.export import export_saved_model
from mtin_tf.layers.tables import NpyRows
from mtin_tf.model import build_mtin


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_700_000)
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--features-only", action="store_true",
                        help="no id embedding and no item bias: the cold-start mode (MicroVideo-1.7M's test items are "
                             "all new)")
    parser.add_argument("--from-file", action="store_true",
                        help="write the table to a .npy file by chunks and build from NpyRows(file): the process "
                             "never holds the caller's copy")
    args = parser.parse_args()
    base_rss = peak_rss_bytes()
    rng = np.random.default_rng(0)
    tmp_table = tempfile.TemporaryDirectory()
    chunks = ((start, min(start + 100_000, args.items)) for start in range(0, args.items, 100_000))
    if args.from_file:
        path = os.path.join(tmp_table.name, "items.npy")
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (args.items, args.features)})
            for start, stop in chunks:
                rng.standard_normal((stop - start, args.features), dtype=np.float32).tofile(f)
        features = NpyRows(path)
    else:
        features = np.empty([args.items, args.features], np.float32)
        for start, stop in chunks:  # filled in chunks: no float64 temporary of the whole table
            features[start:stop] = rng.standard_normal((stop - start, args.features), dtype=np.float32)
    item_ids = rng.permutation(args.items).astype(np.int64) * 3 + 1  # unsorted, sparse raw ids
    table_bytes = args.items * args.features * 4
    identity = dict(use_id_embedding=False, use_item_bias=False, exposure_prior=False) if args.features_only else {}
    config = MTINConfig(embedding_dim=128, num_masks=8, num_groups=6, max_history=50, **identity)
    start = time.perf_counter()
    model = build_mtin(config, item_ids, features, np.arange(1, args.users + 1))
    build_s, build_rss = time.perf_counter() - start, peak_rss_bytes()
    batch = {name: np.zeros([8, 50] if spec.is_history else [8], np.int64)
             for name, spec in ((s.name, s) for s in F.MODEL_INPUTS)}
    batch[F.ITEM_ID][:] = item_ids[:8]
    batch[F.CLICKED_ITEMS][:, :5] = item_ids[8:13]
    batch[F.USER_ID][:] = np.arange(1, 9)
    want = model(batch)[F.OUTPUT_LOGIT].numpy()
    del features  # the model holds the table now; a caller that keeps its own copy adds one table to every figure
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_saved_model(model, os.path.join(tmp, "m"), version=1)
        export_s, export_rss = time.perf_counter() - start, peak_rss_bytes()
        size = dir_bytes(path)
        raw = tf.saved_model.load(path).signatures["predict_raw"](**{k: tf.constant(v) for k, v in batch.items()})
        diff = float(np.abs(raw[F.OUTPUT_LOGIT].numpy() - want).max())
    tmp_table.cleanup()
    print(json.dumps({
        "items": args.items, "features": args.features, "features_only": args.features_only,
        "from_file": args.from_file, "table_gb": round(table_bytes / 1e9, 2),
        "rss_before_table_gb": round(base_rss / 1e9, 2),
        "build_s": round(build_s, 1), "peak_rss_after_build_gb": round(build_rss / 1e9, 2),
        "peak_rss_after_build_x_table": round(build_rss / table_bytes, 2),
        "peak_rss_after_build_above_start_x_table": round((build_rss - base_rss) / table_bytes, 2),
        "export_s": round(export_s, 1), "peak_rss_after_export_gb": round(export_rss / 1e9, 2),
        "peak_rss_after_export_x_table": round(export_rss / table_bytes, 2),
        "saved_model_gb": round(size / 1e9, 4), "saved_model_gib": round(size / 2 ** 30, 4),
        "max_logit_diff_exported_vs_built": diff}))


if __name__ == "__main__":
    main()
