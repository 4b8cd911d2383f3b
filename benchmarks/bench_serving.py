"""Predict latency and throughput of an exported MTIN, in process and through the local gRPC server (`mtin serve`).

Builds an MTIN (random weights: latency does not depend on training) over a 20k-item, 64-d feature table and 2k users,
exports it (routing under XLA, the default, and once without: ``--no-xla`` rows), then measures one user × 100
candidates per request (and × 1000 where marked):
  - in process, the SavedModel's signatures called directly (tf.saved_model.load), sequentially:
    ``score_candidates`` (the user encoded once), ``predict_raw`` (100 rows; its distinct user rows are encoded once)
    and, as the reference measured in the same process, the fused Keras model on the 100 rows (one encoding per row,
    what every request cost before the split);
  - through `mtin serve` (a subprocess on 127.0.0.1) with MTINClient.predict (score_candidates) at 1, 8 and 32
    concurrent clients (one thread and one channel each), a bounded number of requests per level after one warm-up
    request per client.

Usage: .venv/bin/python benchmarks/bench_serving.py [--config paper|demo|tiny] [--requests 40]
Prints a Markdown table per config.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's mtin_tf
import mtin_tf  # noqa: F401  (before TensorFlow: importing it sets TF_USE_LEGACY_KERAS=1)

# isort: split

import numpy as np

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.signatures import RAW_SIGNATURE, SCORE_SIGNATURE

NUM_ITEMS, FEATURE_DIM, NUM_USERS, CANDIDATES, MANY = 20_000, 64, 2_000, 100, 1_000
CONFIGS = {
    "paper": dict(),  # MTINConfig defaults: the paper's d=128, p=8, s=6, L=50
    "demo": dict(embedding_dim=32, num_masks=4, num_groups=4, max_history=20),  # mtin demo's model
    "tiny": dict(embedding_dim=8, num_masks=2, num_groups=3, max_history=8),  # the tests' model: shows the overhead
}


def query(rng, max_history, candidates=CANDIDATES):
    """One user, ``candidates`` candidates, histories of L/2..L clicked and browsed items (timestamps ascending)."""
    def history():
        n = int(rng.integers(max_history // 2, max_history + 1))
        return rng.integers(1, NUM_ITEMS + 1, n).tolist(), np.sort(rng.integers(10**9 - 10**7, 10**9, n)).tolist()
    clicked, clicked_times = history()
    browsed, browsed_times = history()
    return dict(user_id=int(rng.integers(1, NUM_USERS + 1)), candidates=rng.integers(1, NUM_ITEMS + 1, candidates),
                timestamp=10**9, clicked=clicked, clicked_times=clicked_times, browsed=browsed,
                browsed_times=browsed_times)


def percentiles(seconds):
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def timed(fn, requests):
    fn()
    fn()
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def in_process(path, q, max_history, requests, *, signature):
    """Latencies of ``requests`` sequential calls of one signature of the SavedModel at ``path`` for query ``q``."""
    import tensorflow as tf

    from mtin_tf.serving.client import candidate_inputs, raw_inputs

    build = candidate_inputs if signature == SCORE_SIGNATURE else raw_inputs
    histories = {k: q[k] for k in ("clicked", "clicked_times", "browsed", "browsed_times")}
    inputs = build(q["user_id"], q["candidates"], q["timestamp"], max_history, **histories)
    fn = tf.saved_model.load(path).signatures[signature]
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    return timed(lambda: fn(**tensors)[F.OUTPUT_PROBABILITY].numpy(), requests)


def fused_rows(model, q, max_history, requests):
    """The reference: the fused Keras model (under tf.function) on the request's N rows, one encoding per row."""
    import tensorflow as tf

    from mtin_tf.serving.client import raw_inputs

    histories = {k: q[k] for k in ("clicked", "clicked_times", "browsed", "browsed_times")}
    tensors = {k: tf.constant(v) for k, v in raw_inputs(q["user_id"], q["candidates"], q["timestamp"], max_history,
                                                          **histories).items()}
    fn = tf.function(lambda x: model(x, training=False))
    return timed(lambda: fn(tensors)[F.OUTPUT_PROBABILITY].numpy(), requests)


def through_server(target, q, concurrency, requests):
    """(latencies, wall seconds) of ``requests`` Predict calls spread over ``concurrency`` client threads."""
    from mtin_tf.serving.client import MTINClient

    per_client = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    latencies, lock = [], threading.Lock()
    clients = [MTINClient(target, timeout=120) for _ in range(concurrency)]
    ask = dict(q)
    user, candidates, timestamp = ask.pop("user_id"), ask.pop("candidates"), ask.pop("timestamp")
    for client in clients:  # warm-up: channel, cached L
        client.predict(user, candidates, timestamp, **ask)
    barrier = threading.Barrier(concurrency + 1)

    def run(client, n):
        barrier.wait()
        for _ in range(n):
            start = time.perf_counter()
            client.predict(user, candidates, timestamp, **ask)
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=run, args=(c, n)) for c, n in zip(clients, per_client)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for client in clients:
        client.close()
    return latencies, wall


def bench(name, requests, levels):
    from mtin_tf.export import export_saved_model, serving_model
    from mtin_tf.model import build_mtin
    from mtin_tf.serving.local import LocalServer

    config = MTINConfig(**CONFIGS[name])
    rng = np.random.default_rng(0)
    features = rng.normal(size=(NUM_ITEMS, FEATURE_DIM)).astype(np.float32)
    model = build_mtin(config, np.arange(1, NUM_ITEMS + 1), features, np.arange(1, NUM_USERS + 1), compile=False)
    base, portable = tempfile.mkdtemp(prefix="mtin-bench-serving-"), tempfile.mkdtemp(prefix="mtin-bench-serving-")
    L = config.max_history
    try:
        path = export_saved_model(model, base, version=1)
        portable_path = export_saved_model(model, portable, version=1, jit_routing=False)
        q, many = query(rng, L), query(rng, L, MANY)
        rows = []

        def add(label, clients, latencies, wall=None):
            p50, p99 = percentiles(latencies)
            rows.append((label, clients, len(latencies), p50, p99, len(latencies) / (wall or sum(latencies))))

        add("in process: fused Keras model on the 100 rows (one encoding per row; reference)", 1,
            fused_rows(serving_model(model), q, L, max(4, requests // 4)))
        add("in process: `score_candidates`", 1, in_process(path, q, L, requests, signature=SCORE_SIGNATURE))
        add("in process: `score_candidates`, 1000 candidates", 1,
            in_process(path, many, L, requests, signature=SCORE_SIGNATURE))
        add("in process: `predict_raw` (100 rows, one encoding)", 1,
            in_process(path, q, L, requests, signature=RAW_SIGNATURE))
        add("in process: `score_candidates`, exported without XLA", 1,
            in_process(portable_path, q, L, requests, signature=SCORE_SIGNATURE))
        del model
        with LocalServer(base) as server:
            server.wait_available(timeout=300)
            for concurrency in levels:
                latencies, wall = through_server(server.target, q, concurrency, max(requests, 2 * concurrency))
                add("`mtin serve` + MTINClient.predict", concurrency, latencies, wall)
            latencies, wall = through_server(server.target, many, 1, requests)
            add("`mtin serve` + MTINClient.predict, 1000 candidates", 1, latencies, wall)
            assert server.terminate() == 0
        with LocalServer(portable) as server:
            server.wait_available(timeout=300)
            latencies, wall = through_server(server.target, q, 1, requests)
            add("`mtin serve` + MTINClient.predict, exported without XLA", 1, latencies, wall)
            assert server.terminate() == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(portable, ignore_errors=True)
    print(f"\n### config {name}: d={config.embedding_dim}, p={config.num_masks}, s={config.num_groups}, "
          f"L={config.max_history}; {NUM_ITEMS} items x {FEATURE_DIM}-d features, {NUM_USERS} users; "
          f"1 user x {CANDIDATES} candidates per request unless marked; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs\n")
    print("| path | concurrent clients | requests | p50 ms | p99 ms | requests/s | p50 vs reference |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    reference = rows[0][3]
    for label, concurrency, n, p50, p99, rate in rows:
        print(f"| {label} | {concurrency} | {n} | {p50:.1f} | {p99:.1f} | {rate:.1f} | {p50 / reference:.3f} |")
    served = {(label, c): (p50, p99, rate) for label, c, _, p50, p99, rate in rows}
    client = "`mtin serve` + MTINClient.predict"
    one, thousand = served[(client, 1)], served[(f"{client}, 1000 candidates", 1)]
    goals = [f"p99 <= 20 ms at concurrency 1: {'met' if one[1] <= 20 else 'NOT met'} ({one[1]:.1f} ms)",
             f"1000 candidates <= 2x the 100-candidate latency: {'met' if thousand[0] <= 2 * one[0] else 'NOT met'} "
             f"(p50 x{thousand[0] / one[0]:.2f})"]
    if (client, 8) in served:
        goals.insert(1, f">= 50 requests/s at 8 clients: {'met' if served[(client, 8)][2] >= 50 else 'NOT met'} "
                        f"({served[(client, 8)][2]:.1f})")
    print("\ngoals: " + "; ".join(goals), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append",
                        help="model size (repeatable; default: paper, demo)")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per row (at least 2 per client)")
    parser.add_argument("--concurrency", default="1,8,32", help="client counts, comma-separated")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    for name in args.config or ["paper", "demo"]:
        bench(name, args.requests, levels)


if __name__ == "__main__":
    main()
