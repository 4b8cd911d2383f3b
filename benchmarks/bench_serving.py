"""Predict latency and throughput of the local gRPC server (`mtin serve`) for one user x 100 candidates.

Builds an MTIN (random weights: latency does not depend on training) over a 20k-item, 64-d feature table and 2k users,
exports it, then measures
  - in process: the SavedModel's ``predict_raw`` signature called directly (tf.saved_model.load), sequentially;
  - through `mtin serve` (a subprocess on 127.0.0.1) with MTINClient.predict at 1, 8 and 32 concurrent clients
    (one thread and one channel each), a bounded number of requests per level after one warm-up request per client.
The server's overhead is its p50 at concurrency 1 over the in-process p50.

Usage: TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/bench_serving.py [--config paper|demo|tiny] [--requests 40]
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

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's serving/

import numpy as np  # noqa: E402

from mtin_tf.config import MTINConfig  # noqa: E402
from mtin_tf.signatures import RAW_SIGNATURE  # noqa: E402

NUM_ITEMS, FEATURE_DIM, NUM_USERS, CANDIDATES = 20_000, 64, 2_000, 100
CONFIGS = {
    "paper": dict(),  # MTINConfig defaults: the paper's d=128, p=8, s=6, L=50
    "demo": dict(embedding_dim=32, num_masks=4, num_groups=4, max_history=20),  # mtin demo's model
    "tiny": dict(embedding_dim=8, num_masks=2, num_groups=3, max_history=8),  # the tests' model: shows the overhead
}


def query(rng, max_history):
    """One user, 100 candidates, histories of L/2..L clicked and browsed items (timestamps ascending)."""
    def history():
        n = int(rng.integers(max_history // 2, max_history + 1))
        return rng.integers(1, NUM_ITEMS + 1, n).tolist(), np.sort(rng.integers(10**9 - 10**7, 10**9, n)).tolist()
    clicked, clicked_times = history()
    browsed, browsed_times = history()
    return dict(user_id=int(rng.integers(1, NUM_USERS + 1)), candidates=rng.integers(1, NUM_ITEMS + 1, CANDIDATES),
                timestamp=10**9, clicked=clicked, clicked_times=clicked_times, browsed=browsed,
                browsed_times=browsed_times)


def percentiles(seconds):
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def in_process(path, q, max_history, requests):
    import tensorflow as tf

    from serving.client import raw_inputs

    signature = tf.saved_model.load(path).signatures[RAW_SIGNATURE]
    inputs = raw_inputs(q["user_id"], q["candidates"], q["timestamp"], max_history, clicked=q["clicked"],
                        clicked_times=q["clicked_times"], browsed=q["browsed"], browsed_times=q["browsed_times"])
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    signature(**tensors)
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        signature(**tensors)
        times.append(time.perf_counter() - start)
    return times


def through_server(target, q, concurrency, requests):
    """(latencies, wall seconds) of ``requests`` Predict calls spread over ``concurrency`` client threads."""
    from serving.client import MTINClient

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
    from mtin_tf.export import export_saved_model
    from mtin_tf.model import build_mtin
    from serving.local import LocalServer

    config = MTINConfig(**CONFIGS[name])
    rng = np.random.default_rng(0)
    features = rng.normal(size=(NUM_ITEMS, FEATURE_DIM)).astype(np.float32)
    model = build_mtin(config, np.arange(1, NUM_ITEMS + 1), features, np.arange(1, NUM_USERS + 1), compile=False)
    base = tempfile.mkdtemp(prefix="mtin-bench-serving-")
    try:
        path = export_saved_model(model, base, version=1)
        del model
        q = query(rng, config.max_history)
        rows = []
        local = in_process(path, q, config.max_history, requests)
        p50, p99 = percentiles(local)
        rows.append(("in-process signature call", 1, len(local), p50, p99, len(local) / sum(local)))
        with LocalServer(base) as server:
            server.wait_available(timeout=300)
            for concurrency in levels:
                latencies, wall = through_server(server.target, q, concurrency, max(requests, 2 * concurrency))
                s50, s99 = percentiles(latencies)
                rows.append(("`mtin serve` + MTINClient.predict", concurrency, len(latencies), s50, s99,
                             len(latencies) / wall))
            assert server.terminate() == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n### config {name}: d={config.embedding_dim}, p={config.num_masks}, s={config.num_groups}, "
          f"L={config.max_history}; {NUM_ITEMS} items x {FEATURE_DIM}-d features, {NUM_USERS} users; "
          f"1 user x {CANDIDATES} candidates per request; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs\n")
    print("| path | concurrent clients | requests | p50 ms | p99 ms | requests/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, concurrency, n, p50, p99, rate in rows:
        print(f"| {label} | {concurrency} | {n} | {p50:.1f} | {p99:.1f} | {rate:.1f} |")
    base_p50 = rows[0][3]
    print(f"\nserver overhead at concurrency 1: p50 {rows[1][3]:.1f} ms vs {base_p50:.1f} ms in process "
          f"(x{rows[1][3] / base_p50:.2f}, +{rows[1][3] - base_p50:.1f} ms); "
          f"p99 <= 20 ms at concurrency 1: {'met' if rows[1][4] <= 20 else 'NOT met'} ({rows[1][4]:.1f} ms)",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append",
                        help="model size (repeatable; default: paper, demo, tiny)")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per row (at least 2 per client)")
    parser.add_argument("--concurrency", default="1,8,32", help="client counts, comma-separated")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    for name in args.config or ["paper", "demo", "tiny"]:
        bench(name, args.requests, levels)


if __name__ == "__main__":
    main()
