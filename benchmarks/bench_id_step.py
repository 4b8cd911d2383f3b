"""What inverting the item row map per request cost `recommend` (the step the `item_table_ids` weight removed).

Before the item ids were kept in table order, each `recommend` call turned the item table's row map (row of each id in
sorted order) into the ids in table order with ``tf.math.invert_permutation`` + ``tf.gather``: an O(N) step per
request. This times that step against what the request does anyway, the scoring of the catalogue and its top k
(``tf.math.top_k`` of the [s, d] × [d, N] product of the user's interest rows with the pre-projected item table), each
a ``tf.function`` on random data, timed over ``--calls`` calls after a warm-up, in the same process.

Usage: .venv/bin/python benchmarks/bench_id_step.py [--items 100000 1000000] [--calls 50] [--rows 6] [--dim 128]
       [--k 10]
Prints a Markdown table: p50 ms of each step and the id step's share of the two together.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's mtin_tf
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mtin_tf  # noqa: F401  (before TensorFlow: importing it sets TF_USE_LEGACY_KERAS=1)

# isort: split

import numpy as np
import tensorflow as tf
from bench_serving import percentiles, timed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--rows", type=int, default=6, help="interest rows s")
    p.add_argument("--dim", type=int, default=128, help="embedding size d")
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| items | invert row map + gather ids, p50 ms | score + top-k, p50 ms | id step's share |")
    print("|---:|---:|---:|---:|")
    for n in args.items:
        row_of_id = tf.constant(rng.permutation(n).astype(np.int32))  # row of each sorted id
        sorted_ids = tf.constant(np.sort(rng.choice(10 * n, n, replace=False)).astype(np.int64))
        table = tf.constant(rng.normal(size=[n, args.dim]).astype(np.float32))
        rows = tf.constant(rng.normal(size=[args.rows, args.dim]).astype(np.float32))

        @tf.function
        def id_step():
            return tf.gather(sorted_ids, tf.math.invert_permutation(row_of_id))  # ids in table order

        @tf.function
        def score_step():
            return tf.math.top_k(tf.matmul(rows, table, transpose_b=True), k=args.k)

        # timed: two warm-up calls (the first traces), then args.calls timed ones
        ids_ms = percentiles(timed(lambda: id_step().numpy(), args.calls))[0]
        score_ms = percentiles(timed(lambda: score_step().values.numpy(), args.calls))[0]
        print(f"| {n} | {ids_ms:.1f} | {score_ms:.1f} | {ids_ms / (ids_ms + score_ms):.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
