"""Peak memory of the TFX Trainer's run_fn at two training-data sizes: does it grow with the number of rows?

Usage: .venv/bin/python benchmarks/bench_trainer_memory.py [--rows 100000 200000]
       [--users 2000] [--items 1000] [--max-history 50] [--old-code DIR] [--parallel] [--out DIR]

Builds one fixture per size in --out (default: a temporary directory): a real Transform output (tft_beam analysis of
one raw example per user with the pipeline's preprocessing_fn: the user and item vocabularies, the transformed feature
spec), gzipped transformed TFRecords with --rows training rows (and a tenth of that as validation) over the same
--users users and --items items, and the item-feature examples. Then runs ``mtin_tf.pipeline.trainer.run_fn`` on each
size in a fresh child process (FnArgs as TFX builds them) and reads the child's peak RSS from os.wait4 (ru_maxrss). With
--old-code ROOT it also runs the run_fn of the source tree at ROOT on the same data (e.g. the in-memory run_fn before
streaming: ``git archive f9f0242 | tar -x -C /tmp/mtin_base``). --parallel starts all children at once.
Every run trains one epoch over the whole split (no train_steps), so both code paths do the same work.

Prints one JSON line per run and a summary line with, per code path, the peak RSS at each size and the ratio of the
larger size's peak to the smaller's (1.0 = no growth with rows).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import mtin_tf  # noqa: F401  (before TensorFlow: importing it sets TF_USE_LEGACY_KERAS=1)

# isort: split

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = dict(embedding_dim=16, num_masks=2, num_groups=2, batch_size=256, epochs=1, learning_rate=0.01, seed=0)
FEATURE_DIM = 16


def _example(values: dict):
    import tensorflow as tf

    return tf.train.Example(features=tf.train.Features(feature={
        name: (tf.train.Feature(float_list=tf.train.FloatList(value=v)) if getattr(v, "dtype", None) == "float32"
               else tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in v])))
        for name, v in values.items()})).SerializeToString()


def _history(rng, n, max_history, items, now):
    """n histories: int64 [n, L] item ids (right-padded with 0) and their times (< now)."""
    import numpy as np

    lengths = rng.integers(0, max_history + 1, n)
    ids = rng.integers(1, items + 1, (n, max_history))
    times = np.sort(rng.integers(0, np.maximum(now, 1)[:, None], (n, max_history)), axis=1)
    pad = np.arange(max_history)[None, :] >= lengths[:, None]
    ids[pad], times[pad] = 0, 0
    return ids, times


def build_fixture(out: str, *, rows: int, users: int, items: int, max_history: int, seed: int = 0) -> dict:
    """Transform output, transformed train/validation TFRecords and item examples under ``out``; the FnArgs fields."""
    import apache_beam as beam
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform.beam as tft_beam
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from mtin_tf import features as F
    from mtin_tf.pipeline.pipeline import EXAMPLES_SCHEMA, SCHEMAS_DIR
    from mtin_tf.pipeline.transform import preprocessing_fn

    rng = np.random.default_rng(seed)
    with open(os.path.join(SCHEMAS_DIR, EXAMPLES_SCHEMA)) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    raw_metadata = dataset_metadata.DatasetMetadata(schema)
    raw_spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    # Transform's analysis: one raw example per user, every item once as a candidate or in a history.
    raw = []
    for user in range(1, users + 1):
        row = {F.USER_ID: [user], F.ITEM_ID: [1 + (user - 1) % items], F.TIMESTAMP: [10], F.LABEL: [user % 2]}
        row[F.CLICKED_ITEMS] = [1 + (user * 7 + j) % items for j in range(3)]
        row[F.BROWSED_ITEMS] = [1 + (user * 11 + j) % items for j in range(3)]
        row[F.CLICKED_TIMES] = row[F.BROWSED_TIMES] = [1, 2, 3]
        raw.append({k: np.asarray(v, raw_spec[k].dtype.as_numpy_dtype) for k, v in row.items()})
    graph = os.path.join(out, "transform_graph")
    with beam.Pipeline() as p, tft_beam.Context(temp_dir=os.path.join(out, "tft_tmp")):
        transform_fn = (p | beam.Create(raw), raw_metadata) | tft_beam.AnalyzeDataset(
            functools.partial(preprocessing_fn, custom_config={"max_history": max_history}))
        _ = transform_fn | tft_beam.WriteTransformFn(graph)
    metadata_io.write_metadata(raw_metadata, os.path.join(graph, "metadata"))

    def write_split(name, n, shards):
        tf.io.gfile.makedirs(os.path.join(out, "transformed", f"Split-{name}"))
        now = np.arange(n, dtype=np.int64) + 100
        user = rng.integers(1, users + 1, n)
        item = rng.integers(1, items + 1, n)
        label = (rng.random(n) < 0.3).astype(np.int64)
        clicked, clicked_t = _history(rng, n, max_history, items, now)
        browsed, browsed_t = _history(rng, n, max_history, items, now)
        for s in range(shards):
            path = os.path.join(out, "transformed", f"Split-{name}", f"transformed_examples-{s:05d}-of-{shards:05d}.gz")
            with tf.io.TFRecordWriter(path, options="GZIP") as writer:
                for i in range(s, n, shards):
                    writer.write(_example({F.USER_ID: [user[i]], F.ITEM_ID: [item[i]], F.TIMESTAMP: [now[i]],
                                           F.CLICKED_ITEMS: clicked[i], F.CLICKED_TIMES: clicked_t[i],
                                           F.BROWSED_ITEMS: browsed[i], F.BROWSED_TIMES: browsed_t[i],
                                           F.LABEL: [label[i]]}))

    write_split("train", rows, 4)
    write_split("validation", max(rows // 10, 1), 1)
    item_path = os.path.join(out, "items", "items.gz")
    tf.io.gfile.makedirs(os.path.dirname(item_path))
    vectors = rng.normal(size=(items, FEATURE_DIM)).astype(np.float32)
    with tf.io.TFRecordWriter(item_path, options="GZIP") as writer:
        for item in range(1, items + 1):
            writer.write(_example({F.ITEM_ID: [item], F.ITEM_FEATURES: vectors[item - 1]}))
    return {"transform_output": graph,
            "train_files": [os.path.join(out, "transformed", "Split-train", "*")],
            "eval_files": [os.path.join(out, "transformed", "Split-validation", "*")],
            "item_examples": [os.path.join(out, "items", "*")], "max_history": max_history}


def run_child(fixture: dict, work: str, *, train_steps=None, eval_steps=None, shuffle_buffer=None) -> dict:
    """In this (child) process: run_fn of the code on sys.path on ``fixture``; returns the run's training.json."""
    from tfx.components.trainer.fn_args_utils import FnArgs

    from mtin_tf.pipeline.trainer import run_fn

    custom = {"mtin_config": MODEL}
    if shuffle_buffer is not None:
        custom["shuffle_buffer"] = shuffle_buffer
    fn_args = FnArgs(train_files=fixture["train_files"], eval_files=fixture["eval_files"],
                     transform_output=fixture["transform_output"], serving_model_dir=os.path.join(work, "model"),
                     model_run_dir=os.path.join(work, "model_run"), train_steps=train_steps, eval_steps=eval_steps,
                     custom_config=custom, hyperparameters={"item_examples": fixture["item_examples"],
                                                            "max_history": fixture["max_history"]})
    os.makedirs(fn_args.model_run_dir, exist_ok=True)
    run_fn(fn_args)
    with open(os.path.join(fn_args.model_run_dir, "training.json")) as f:
        return json.load(f)


def start(code_root: str, fixture_file: str, work: str):
    """run_fn of ``code_root`` in a child process (started, not waited for): (process, start time)."""
    env = dict(os.environ, PYTHONPATH=code_root, TF_CPP_MIN_LOG_LEVEL="2")
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", fixture_file, "--work", work],
                             env=env, cwd=code_root, stdout=subprocess.PIPE)
    return child, time.time()


def finish(child, started: float, code_root: str) -> dict:
    """Wait for a child of :func:`start`: its peak RSS (os.wait4's ru_maxrss), wall time and training.json counts."""
    stdout = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"run_fn of {code_root} failed ({child.returncode})")
    record = json.loads(stdout.strip().splitlines()[-1])
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(time.time() - started, 1), **record}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs=2, default=[100_000, 200_000], help="training rows of the two runs")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--max-history", type=int, default=50)
    p.add_argument("--old-code", default=None, help="also run the run_fn of this checkout (e.g. /work/main)")
    p.add_argument("--parallel", action="store_true", help="run the children at the same time")
    p.add_argument("--out", default=None, help="fixture directory (default: a temporary one)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:  # one measured run: print training.json's counts as the last line
        with open(args.child) as f:
            record = run_child(json.load(f), args.work)
        keys = ("train_examples", "validation_examples", "epochs_run", "steps_run", "pretraining_users")
        print(json.dumps({k: record.get(k) for k in keys}))
        return
    sys.path.insert(0, REPO)
    out = args.out or tempfile.mkdtemp(prefix="bench_trainer_memory_")
    codes = {"streaming": REPO} | ({"in_memory": os.path.abspath(args.old_code)} if args.old_code else {})
    peaks = {name: {} for name in codes}
    runs = []
    for rows in args.rows:
        base = os.path.join(out, f"rows_{rows}")
        fixture_file = os.path.join(base, "fixture.json")
        if not os.path.exists(fixture_file):
            fixture = build_fixture(base, rows=rows, users=args.users, items=args.items,
                                    max_history=args.max_history)
            with open(fixture_file, "w") as f:
                json.dump(fixture, f)
        for name, root in codes.items():
            runs.append((name, rows, root, fixture_file, os.path.join(base, f"run_{name}")))
    started = []  # --parallel: all children at once (peak RSS is per process; only the wall times suffer)
    for name, rows, root, fixture_file, work in runs:
        started.append((name, rows, root, start(root, fixture_file, work)))
        if not args.parallel:
            started[-1] = (name, rows, root, finish(*started[-1][3], root))
    for name, rows, root, result in started:
        if args.parallel:
            result = finish(*result, root)
        peaks[name][rows] = result["peak_rss_mb"]
        print(json.dumps({"code": name, "rows": rows, **result}), flush=True)
    small, large = args.rows
    print(json.dumps({"summary": {name: {"peak_rss_mb": {str(small): v[small], str(large): v[large]},
                                         "ratio": round(v[large] / v[small], 3),
                                         "growth_mb": round(v[large] - v[small], 1)} for name, v in peaks.items()},
                      "rows": args.rows, "users": args.users, "items": args.items, "max_history": args.max_history,
                      "model": MODEL, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))


if __name__ == "__main__":
    main()
