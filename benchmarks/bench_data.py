"""Benchmark of the data path on 1 M interactions: generate, read + validate, build histories and write TFRecords.

    .venv/bin/python benchmarks/bench_data.py [--users 10000 --per-user 100 --max-history 50]

Stages run in one process, in order; after each, the wall time and the process's peak resident memory so far
(``ru_maxrss``) are printed, then a JSON line with all numbers. ``--in-memory`` adds a last stage: the in-memory
``build_examples`` + ``to_model_arrays`` over all examples (what standalone training does). Goal: under 5 minutes
and 4 GB on the project's 2-core machine. Results go in docs/DATA.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mtin_tf  # noqa: F401  (before TensorFlow: importing it sets TF_USE_LEGACY_KERAS=1)

# isort: split

from mtin_tf.data import canonical as C
from mtin_tf.data import examples as E
from mtin_tf.data import history as H
from mtin_tf.data import planted as P
from mtin_tf.data.report import Report


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--per-user", type=int, default=100)
    ap.add_argument("--max-history", type=int, default=50)
    ap.add_argument("--in-memory", action="store_true", help="also time build_examples + to_model_arrays")
    ap.add_argument("--workdir", default=None, help="default: a temporary directory, removed afterwards")
    args = ap.parse_args(argv)
    results = {"users": args.users, "interactions": args.users * args.per_user, "max_history": args.max_history,
               "cpus": os.cpu_count()}
    start = time.perf_counter()

    def stage(name, fn):
        t = time.perf_counter()
        out = fn()
        results[f"{name}_s"] = round(time.perf_counter() - t, 1)
        results[f"peak_rss_after_{name}_mb"] = round(peak_mb())
        print(f"{name}: {results[f'{name}_s']} s, peak RSS so far {results[f'peak_rss_after_{name}_mb']} MB",
              flush=True)
        return out

    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        summary = stage("generate", lambda: P.generate(os.path.join(work, "raw"), num_users=args.users,
                                                       interactions_per_user=args.per_user, progress=True))
        report = Report("build")
        df = stage("read_validate", lambda: C.read_interactions(
            summary.interactions_path, report, items=C.read_item_features(summary.item_features_path)))
        paths = stage("build_write_tfrecords", lambda: E.write_split_tfrecords(
            H.iter_examples(df, max_history=args.max_history, report=report, progress=True), os.path.join(work, "ex")))
        results["train_examples"] = report.counts["train_examples"]
        results["test_examples"] = report.counts["test_examples"]
        results["tfrecord_mb"] = round(sum(os.path.getsize(p) for p in paths.values()) / 2 ** 20)
        if args.in_memory:
            def in_memory():
                train, _, _, _ = H.build_examples(df, max_history=args.max_history)
                return E.to_model_arrays(train, args.max_history)
            stage("in_memory_build_arrays", in_memory)
    results["total_s"] = round(time.perf_counter() - start, 1)
    results["peak_rss_mb"] = round(peak_mb())
    results["oracle_auc"] = round(summary.oracle_auc, 4)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
