"""Peak memory of `mtin serve` under hostile and heavy requests, against its idle footprint.

Exports a small MTIN (d=8, L=8, 40 items: the serving tests' size, so that what is measured is the server's handling,
not the model), starts `mtin serve` on it, reads the server's resident memory once it is idle (VmRSS), resets nothing,
then sends four floods from 32 client threads, each flood after the previous one is answered, and reads the peak
resident memory (VmHWM, the kernel's high-water mark of the process) after each:

  declared   crafted requests whose TensorProto declares [1, 100 000 000] candidates and carries one value
             (273 bytes that used to make TensorFlow fill 800 MB)           → INVALID_ARGUMENT, before any array
  too_many   requests of 20 000 rows (over --max-rows 1 024)                 → INVALID_ARGUMENT
  at_cap     requests of 1 024 rows, each its own impression time (1 024 user encodings per request), computed
  burst      256 concurrent requests of 100 candidates against --max-in-flight 64  → the excess RESOURCE_EXHAUSTED

Usage: .venv/bin/python benchmarks/bench_serving_limits.py [--requests 64]
Prints one JSON line: idle RSS, the high-water mark after each flood, its ratio to idle, and the status codes seen.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's mtin_tf
import mtin_tf  # noqa: F401  (before TensorFlow: importing it sets TF_USE_LEGACY_KERAS=1)

# isort: split

import numpy as np

from mtin_tf import features as F
from mtin_tf.signatures import RAW_SIGNATURE, SCORE_SIGNATURE

L, USER, NOW = 8, 21, 1_000


def memory_mb(pid: int) -> dict:
    """VmRSS (resident now) and VmHWM (peak resident) of ``pid``, in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values


def export(base: str) -> None:
    import tf_keras

    from mtin_tf.config import MTINConfig
    from mtin_tf.export import export_saved_model
    from mtin_tf.model import build_mtin

    rng = np.random.default_rng(0)
    tf_keras.utils.set_random_seed(0)
    model = build_mtin(MTINConfig(embedding_dim=8, num_masks=2, num_groups=3, max_history=L),
                       np.arange(1, 41) * 1000, rng.normal(size=(40, 6)).astype(np.float32), np.arange(1, 11) * 7)
    export_saved_model(model, base, version=1)


def requests(kind: str):
    import tensorflow as tf

    from mtin_tf.serving.client import candidate_inputs, predict_request, raw_inputs

    candidates = np.arange(1, 41) * 1000
    if kind == "declared":
        request = predict_request("mtin", SCORE_SIGNATURE, candidate_inputs(USER, candidates[:5], NOW, L))
        request.inputs[F.CANDIDATE_IDS].CopyFrom(tf.make_tensor_proto(7, dtype=tf.int64, shape=[1, 100_000_000]))
        return request
    rows = {"too_many": 20_000, "at_cap": 1_024, "burst": 100}[kind]
    inputs = raw_inputs(USER, np.resize(candidates, rows), NOW, L)
    if kind == "at_cap":
        inputs[F.TIMESTAMP] = inputs[F.TIMESTAMP] + np.arange(rows)  # one user encoding per row
    return predict_request("mtin", RAW_SIGNATURE, inputs)


def flood(target: str, request, count: int, threads: int) -> collections.Counter:
    import grpc

    from mtin_tf.serving.client import MTINClient

    codes = collections.Counter()
    with MTINClient(target, max_attempts=1, timeout=120) as client:
        def one(_):
            try:
                client.stub.Predict(request, timeout=120)
                return "OK"
            except grpc.RpcError as exc:
                return exc.code().name
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            codes.update(pool.map(one, range(count)))
    return codes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64, help="requests per flood (the burst sends 4x)")
    args = parser.parse_args()
    from mtin_tf.serving.local import LocalServer

    base = tempfile.mkdtemp(prefix="mtin-bench-limits-")
    try:
        export(os.path.join(base, "model"))
        with LocalServer(os.path.join(base, "model"), "--max-in-flight", "64", "--max-workers", "16") as server:
            server.wait_available(1)
            for _ in range(3):  # warm: every signature path once
                flood(server.target, requests("burst"), 4, 4)
            time.sleep(2)
            idle = memory_mb(server.proc.pid)["VmRSS"]
            out = {"idle_rss_mb": round(idle, 1), "floods": {}}
            for kind, count, threads in (("declared", args.requests, 32), ("too_many", args.requests, 32),
                                         ("at_cap", args.requests, 32), ("burst", 4 * args.requests, 256)):
                start = time.perf_counter()
                codes = flood(server.target, requests(kind), count, threads)
                peak = memory_mb(server.proc.pid)["VmHWM"]
                out["floods"][kind] = {"requests": count, "codes": dict(codes), "peak_rss_mb": round(peak, 1),
                                       "peak_over_idle": round(peak / idle, 2),
                                       "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(out))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
