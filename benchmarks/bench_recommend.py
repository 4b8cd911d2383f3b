"""Latency of recommending from the whole catalogue (the ``recommend`` signature) as the catalogue grows.

For each catalogue size, builds an MTIN at the paper's size (d=128, p=8, s=6, L=50; random weights: latency does not
depend on training) over a synthetic feature table (N items × 32 features) and 2k users, exports it, and measures one
user's top-k per request:
  - in process (tf.saved_model.load, sequential calls): ``recommend`` with k = 10, and, as the reference measured in
    the same process, ``score_candidates`` with 100 candidates (what a caller with its own candidate list pays);
  - through `mtin serve` (a subprocess on 127.0.0.1) with MTINClient.recommend(k=10), one client, sequential.
Every catalogue size gets its own model, export and server.

Usage: .venv/bin/python benchmarks/bench_recommend.py [--items 1682 100000 1000000]
       [--requests 100] [--k 10]
Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's mtin_tf
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mtin_tf  # noqa: F401  (before TensorFlow: importing it sets TF_USE_LEGACY_KERAS=1)

# isort: split

import numpy as np
from bench_serving import percentiles, timed

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.signatures import RECOMMEND_SIGNATURE, SCORE_SIGNATURE

FEATURE_DIM, NUM_USERS, CANDIDATES = 32, 2_000, 100


def user_query(rng, num_items, max_history):
    """One user with L/2..L clicked and browsed items (timestamps ascending) and 100 candidates."""
    def history():
        n = int(rng.integers(max_history // 2, max_history + 1))
        return rng.integers(1, num_items + 1, n).tolist(), np.sort(rng.integers(10**9 - 10**7, 10**9, n)).tolist()
    clicked, clicked_times = history()
    browsed, browsed_times = history()
    return dict(user_id=int(rng.integers(1, NUM_USERS + 1)), timestamp=10**9, clicked=clicked,
                clicked_times=clicked_times, browsed=browsed, browsed_times=browsed_times,
                candidates=rng.integers(1, num_items + 1, CANDIDATES))


def bench(num_items, requests, k):
    import tensorflow as tf

    from mtin_tf.export import export_saved_model
    from mtin_tf.model import build_mtin
    from mtin_tf.serving.client import MTINClient, candidate_inputs, recommend_inputs
    from mtin_tf.serving.local import LocalServer

    config = MTINConfig()  # the paper's size: d=128, p=8, s=6, L=50
    rng = np.random.default_rng(0)
    features = rng.normal(size=(num_items, FEATURE_DIM)).astype(np.float32)
    start = time.perf_counter()
    model = build_mtin(config, np.arange(1, num_items + 1), features, np.arange(1, NUM_USERS + 1), compile=False)
    base = tempfile.mkdtemp(prefix="mtin-bench-recommend-")
    try:
        path = export_saved_model(model, base, version=1)
        export_s = time.perf_counter() - start
        del model, features
        q = user_query(rng, num_items, config.max_history)
        histories = {key: q[key] for key in ("clicked", "clicked_times", "browsed", "browsed_times")}
        saved = tf.saved_model.load(path)
        rows = []
        scored = {key: tf.constant(v) for key, v in candidate_inputs(
            q["user_id"], q["candidates"], q["timestamp"], config.max_history, **histories).items()}
        reference = timed(lambda: saved.signatures[SCORE_SIGNATURE](**scored)[F.OUTPUT_PROBABILITY].numpy(),
                          requests)
        rows.append((f"in process: `score_candidates`, {CANDIDATES} candidates (reference)", reference))
        asked = {key: tf.constant(v) for key, v in recommend_inputs(
            q["user_id"], q["timestamp"], k, config.max_history, **histories).items()}
        rows.append((f"in process: `recommend`, top {k}", timed(
            lambda: saved.signatures[RECOMMEND_SIGNATURE](**asked)[F.OUTPUT_ITEM_IDS].numpy(), requests)))
        saved = None  # free the in-process copy before the server loads its own
        with LocalServer(base) as server:
            server.wait_available(timeout=900)
            with MTINClient(server.target, timeout=120) as client:
                ask = lambda: client.recommend(q["user_id"], timestamp=q["timestamp"], k=k, **histories)
                got = ask()
                assert len(got.item_ids) == k and not set(got.item_ids.tolist()) & set(q["clicked"])
                rows.append((f"`mtin serve` + MTINClient.recommend, top {k}", timed(ask, requests)))
            assert server.terminate() == 0
        size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 2**20
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ref = percentiles(reference)[0]
    out = []
    for label, latencies in rows:
        p50, p99 = percentiles(latencies)
        out.append(f"| {num_items:,} | {label} | {len(latencies)} | {p50:.1f} | {p99:.1f} | {p50 / ref:.2f} |")
    return out, export_s, size_mb


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[1_682, 100_000, 1_000_000])
    parser.add_argument("--requests", type=int, default=100, help="timed requests per row")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    lines, notes = [], []
    for n in args.items:
        rows, export_s, size_mb = bench(n, args.requests, args.k)
        lines += rows
        notes.append(f"{n:,} items: build + export {export_s:.0f} s, SavedModel {size_mb:.0f} MiB")
        print("\n".join(rows), flush=True)
    print(f"\nd=128, p=8, s=6, L=50; {FEATURE_DIM}-d synthetic features; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs\n")
    print("| items | path | requests | p50 ms | p99 ms | p50 / score_candidates p50 |")
    print("|---:|---|---:|---:|---:|---:|")
    print("\n".join(lines))
    print("\n" + "; ".join(notes))


if __name__ == "__main__":
    main()
