"""Train-step cost of MTIN against a DIN-style model, measured in one process, and against the machine's matmul speed.

Usage: .venv/bin/python benchmarks/bench_model.py [--steps 5] [--batch 256] [--quick]

Prints Markdown tables: the median seconds per train step over --steps steps after 2 warm-up steps, the ratio to the
DIN step measured in the same process, examples per second, the useful work of the step (the multiply-adds exact MTIN
has to do, counted from the sizes below) over the machine's measured float32 matmul speed (a 2048² matmul probe run
first, same process), routing alone, XLA on and off, and the growth with L and s. Synthetic data at the paper's size:
d=128, p=8, s=6, L=50, histories of uniform length in [L/2, L].
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import mtin_tf  # noqa: F401  (before TensorFlow: importing it sets TF_USE_LEGACY_KERAS=1)

# isort: split

import numpy as np
import tensorflow as tf

from mtin_tf import features as F
from mtin_tf.baselines import build_din
from mtin_tf.config import MTINConfig
from mtin_tf.layers import route_interest_groups
from mtin_tf.model import build_mtin

NUM_ITEMS, FEATURE_DIM, NUM_USERS = 20_000, 64, 2_000
PAPER = dict(embedding_dim=128, num_masks=8, num_groups=6, max_history=50)
ROUTING_LOSS = dict(routing_loss=0.1, routing_center=False, routing_epsilon=0.5)


def batch(rng, size, length):
    x = {F.USER_ID: rng.integers(1, NUM_USERS + 1, size), F.ITEM_ID: rng.integers(1, NUM_ITEMS + 1, size),
         F.TIMESTAMP: np.full(size, 10**9)}
    for items_key, times_key in F.HISTORY_PAIRS:
        n = rng.integers(length // 2, length + 1, size)
        pad = np.arange(length)[None, :] >= n[:, None]
        x[items_key] = np.where(pad, 0, rng.integers(1, NUM_ITEMS + 1, (size, length)))
        x[times_key] = np.where(pad, 0, np.sort(rng.integers(10**9 - 10**7, 10**9, (size, length)), 1))
    return {k: v.astype(np.int64) for k, v in x.items()}, {F.OUTPUT_LOGIT: rng.integers(0, 2, size).astype(np.float32)}


def median_time(fn, steps, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def train_step(builder, config, batch_size, seed=0):
    """A callable running one train step of a freshly built model on one fixed synthetic batch; an MTIN with
    retrieval_weight > 0 trains through the multi-task step that adds the retrieval objective, as train_mtin does."""
    rng = np.random.default_rng(seed)
    item_feats = rng.normal(size=(NUM_ITEMS, FEATURE_DIM)).astype(np.float32)
    model = builder(config, np.arange(1, NUM_ITEMS + 1), item_feats, np.arange(1, NUM_USERS + 1))
    x, y = batch(rng, batch_size, config.max_history)
    if builder is build_mtin and config.retrieval_weight:
        from mtin_tf.model import compile_model
        from mtin_tf.retrieval_task import MultiTaskTraining, impression_share

        model = compile_model(MultiTaskTraining(model, config.retrieval_weight, *impression_share(x[F.ITEM_ID])),
                              config)
    return lambda: model.train_on_batch(x, y)


def step_time(builder, config, batch_size, steps, seed=0):
    return median_time(train_step(builder, config, batch_size, seed), steps)


def interleaved_times(fns, steps, warmup=2):
    """Median seconds of each callable, timed in turns (a, b, c, a, b, c, ...): a slow spell of the machine falls on
    all of them alike, so their ratios hold where single figures drift (this machine's step times vary by up to
    1.5× from minute to minute)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(steps):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def routing_time(batch_size, length, groups, steps, *, parallel=False, jit_compile=True):
    rng = np.random.default_rng(0)
    scores = tf.constant(rng.uniform(size=(batch_size, length, groups)).astype(np.float32))
    mask = tf.constant(np.arange(length)[None, :] < rng.integers(length // 2, length + 1, batch_size)[:, None])
    fn = tf.function(lambda s, m: route_interest_groups(s, m, iterations=3, epsilon=0.1, base=2.0, parallel=parallel,
                                                        jit_compile=jit_compile))
    return median_time(lambda: fn(scores, mask).numpy(), steps)


def matmul_flops(n=2048, steps=5):
    """float32 FLOP/s of an n×n matmul on this machine (all cores TensorFlow uses)."""
    a = tf.random.normal([n, n])
    fn = tf.function(lambda a: tf.matmul(a, a))
    return 2 * n ** 3 / median_time(lambda: fn(a).numpy(), steps)


def mtin_macs_per_example(d=128, p=8, s=6, length=50, fill=0.75, chunk=50):
    """Multiply-adds of one exact MTIN training example (both branches, forward + backward), dominant terms only.

    Per branch, with n = fill·L real items: the forward-only co-attention over every (item, group) pair (eq. 2–4:
    W_s, W_p^l's two halves, 3·n·s·d²); eq. 2–4 again for each item's own group with gradient (3·n·d², ×3 for the
    backward pass); eq. 5 on each item's own group (W_g^k x_j: n·p·d², ×3); the decay sums a_j over pairs within a
    chunk of C positions (L·C·p·d, ×3) and, for L > C, the (chunk, group) states (⌈L/C⌉·s·p·L·d, ×3). Embedding
    projections and MLP heads are a few per cent and left out.
    """
    n = fill * length
    c = min(chunk, length)
    chunks = -(-length // c)
    coattention = 3 * n * s * d * d + 3 * 3 * n * d * d
    pairs = length * c * p * d + (chunks * s * p * length * d if chunks > 1 else 0)
    temporal = 3 * (n * p * d * d + pairs)
    return 2 * (coattention + temporal)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="only the MTIN vs DIN comparison and routing")
    args = parser.parse_args()
    b = args.batch

    peak = matmul_flops()
    print(f"machine: {os.cpu_count()} cores, float32 2048² matmul {peak / 1e9:.0f} GFLOP/s\n")
    print(f"| train step, batch {b}, CPU | ms | vs DIN | examples/s | useful GFLOP/s (% of matmul) |")
    print("|---|---:|---:|---:|---:|")
    din, mtin, multitask, routing_loss = interleaved_times(
        [train_step(build_din, MTINConfig(**PAPER), b),
         train_step(build_mtin, MTINConfig(**PAPER, retrieval_weight=0.0), b),
         train_step(build_mtin, MTINConfig(**PAPER, retrieval_weight=1.0), b),
         train_step(build_mtin, MTINConfig(**PAPER, retrieval_weight=1.0, **ROUTING_LOSS), b)], args.steps)

    def row(name, seconds, macs=None):
        useful = f"{2 * macs * b / seconds / 1e9:.0f} ({200 * macs * b / seconds / peak:.0f} %)" if macs else ""
        print(f"| {name} | {seconds * 1000:.0f} | {seconds / din:.1f}× | {b / seconds:.0f} | {useful} |", flush=True)

    row("DIN-style target attention, d=128, L=50", din)
    row("MTIN, d=128, p=8, s=6, L=50 (exact, Algorithm 1 sequential; timed in turns with DIN)", mtin,
        mtin_macs_per_example())
    row("MTIN, same, with the retrieval objective (w = 1; in turns with the two above)", multitask)
    row("MTIN, same, w = 1 and the routing loss (0.1, uncentred, ε = 0.5; in turns with the three above)",
        routing_loss)
    if not args.quick:
        row("MTIN, same, routing without XLA", step_time(build_mtin, MTINConfig(**PAPER, jit_routing=False), b,
                                                         args.steps), mtin_macs_per_example())
        row("MTIN, same, parallel routing (approximation)",
            step_time(build_mtin, MTINConfig(**PAPER, parallel_routing=True), b, args.steps))
        row("DIN, whole step under XLA", step_time(build_din, MTINConfig(**PAPER, jit_compile=True), b, args.steps))
        row("MTIN, whole step under XLA", step_time(build_mtin, MTINConfig(**PAPER, jit_compile=True), b,
                                                    max(2, args.steps // 2)))
        lengths = (25, 50, 100, 200)
        fns = [train_step(build_mtin, MTINConfig(**{**PAPER, "max_history": n}), b) for n in lengths]
        fns.append(train_step(build_mtin, MTINConfig(**{**PAPER, "max_history": 200, "temporal_chunk": 200}), b))
        times = interleaved_times(fns, args.steps)
        for n, seconds in zip(lengths, times):
            row(f"MTIN, L={n} (s=6; timed in turns, {seconds / times[1]:.2f}× the L=50 step)", seconds,
                mtin_macs_per_example(length=n))
        row(f"MTIN, L=200, decay sums over the whole history (temporal_chunk=200; {times[4] / times[1]:.2f}× L=50)",
            times[4], mtin_macs_per_example(length=200, chunk=200))
        for groups in (2, 4, 8):
            row(f"MTIN, s={groups} (L=50)", step_time(build_mtin, MTINConfig(**{**PAPER, "num_groups": groups}),
                                                       b, max(2, args.steps // 2)),
                mtin_macs_per_example(s=groups))

    print("\n| routing alone (Algorithm 1, 3 iterations), L=50, s=6 | ms |\n|---|---:|")
    for size in (32, b):
        for parallel, jit in ((False, True), (False, False), (True, True)):
            name = f"B={size}, {'parallel (approximation)' if parallel else 'sequential'}, {'XLA' if jit else 'no XLA'}"
            seconds = routing_time(size, 50, 6, args.steps, parallel=parallel, jit_compile=jit)
            print(f"| {name} | {seconds * 1000:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
