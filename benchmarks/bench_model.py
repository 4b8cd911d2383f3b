"""Train-step time of MTIN on CPU: vs a DIN-style model, sequential vs parallel routing, and growth with L and s.

Usage: TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/bench_model.py [--steps 5] [--batch 256] [--quick]
Prints a Markdown table (median seconds per train step over --steps steps after 2 warm-up steps).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtin_tf import features as F  # noqa: E402
from mtin_tf.baselines import build_din  # noqa: E402
from mtin_tf.config import MTINConfig  # noqa: E402
from mtin_tf.layers import route_interest_groups  # noqa: E402
from mtin_tf.model import build_mtin  # noqa: E402

NUM_ITEMS, FEATURE_DIM, NUM_USERS = 20_000, 64, 2_000


def batch(rng, size, length):
    x = {F.USER_ID: rng.integers(1, NUM_USERS + 1, size), F.ITEM_ID: rng.integers(1, NUM_ITEMS + 1, size),
         F.TIMESTAMP: np.full(size, 10**9)}
    for items_key, times_key in F.HISTORY_PAIRS:
        n = rng.integers(length // 2, length + 1, size)
        pad = np.arange(length)[None, :] >= n[:, None]
        x[items_key] = np.where(pad, 0, rng.integers(1, NUM_ITEMS + 1, (size, length)))
        x[times_key] = np.where(pad, 0, np.sort(rng.integers(10**9 - 10**7, 10**9, (size, length)), 1))
    return {k: v.astype(np.int64) for k, v in x.items()}, {F.OUTPUT_LOGIT: rng.integers(0, 2, size).astype(np.float32)}


def step_time(builder, config, batch_size, steps, seed=0):
    rng = np.random.default_rng(seed)
    item_feats = rng.normal(size=(NUM_ITEMS, FEATURE_DIM)).astype(np.float32)
    model = builder(config, np.arange(1, NUM_ITEMS + 1), item_feats, np.arange(1, NUM_USERS + 1))
    x, y = batch(rng, batch_size, config.max_history)
    for _ in range(2):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def routing_time(parallel, batch_size, length, groups, steps):
    rng = np.random.default_rng(0)
    scores = tf.constant(rng.uniform(size=(batch_size, length, groups)).astype(np.float32))
    mask = tf.constant(np.ones((batch_size, length), bool))
    fn = tf.function(lambda s, m: route_interest_groups(s, m, iterations=3, epsilon=0.1, base=2.0, parallel=parallel))
    fn(scores, mask)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn(scores, mask).numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="only the MTIN vs DIN comparison")
    args = parser.parse_args()
    base = dict(embedding_dim=128, num_masks=8, num_groups=6, max_history=50)
    rows = []

    def row(name, seconds, ref=None):
        ratio = f"{seconds / ref:.1f}×" if ref else ""
        rows.append(f"| {name} | {seconds * 1000:.0f} | {ratio} |")
        print(rows[-1], flush=True)

    print(f"| train step, batch {args.batch}, CPU ({os.cpu_count()} cores) | ms | vs DIN |\n|---|---:|---:|")
    din = step_time(build_din, MTINConfig(**base), args.batch, args.steps)
    row("DIN-style target attention, d=128, L=50", din)
    row("MTIN, d=128, p=8, s=6, L=50, sequential routing", step_time(build_mtin, MTINConfig(**base), args.batch,
                                                                     args.steps), din)
    row("MTIN, same, parallel routing (approximation)",
        step_time(build_mtin, MTINConfig(**base, parallel_routing=True), args.batch, args.steps), din)
    if args.quick:
        return
    for parallel in (False, True):
        row(f"routing alone (Algorithm 1, 3 iterations), B={args.batch}, L=50, s=6, "
            f"{'parallel' if parallel else 'sequential'}", routing_time(parallel, args.batch, 50, 6, args.steps))
    for length in (25, 100, 200):
        row(f"MTIN, L={length} (s=6)", step_time(build_mtin, MTINConfig(**{**base, "max_history": length}),
                                                 args.batch, max(2, args.steps // 2)), din)
    for groups in (2, 4, 8):
        row(f"MTIN, s={groups} (L=50)", step_time(build_mtin, MTINConfig(**{**base, "num_groups": groups}),
                                                  args.batch, max(2, args.steps // 2)), din)


if __name__ == "__main__":
    main()
