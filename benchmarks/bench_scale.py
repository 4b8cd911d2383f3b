"""Scale benchmark: history building and the local pipeline at 1 M – 10 M interactions, wall time and peak memory.

    .venv/bin/python benchmarks/bench_scale.py --interactions 10000000 --jobs generate memory pipeline \
        --stop-after HistoryGen [--beam-arg=--direct_num_workers=2 --beam-arg=--direct_running_mode=multi_processing]
    .venv/bin/python benchmarks/bench_scale.py --interactions 1000000 --jobs generate pipeline

Each job is the project's own command in a child process, exactly as a user runs it:
  generate  ``mtin data generate --total-interactions N`` (planted data, 10 000 users by default)
  memory    ``mtin data build`` (the in-process builder: streams users, writes train/validation/test TFRecords)
  pipeline  ``mtin pipeline run`` (LocalDagRunner, Beam DirectRunner, SQLite ML Metadata), optionally ``--stop-after``
While a child runs, the resident memory of it and all its descendants (Beam's worker processes included) is sampled
every 0.5 s; a job's peak RSS is the largest sampled sum. For the pipeline, each component's wall time comes from ML
Metadata (the execution's start and last update) and its peak RSS is the largest sample inside that interval.

Prints one line per job and component, then one JSON line with everything. Results go in docs/PIPELINE.md.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MTIN = [sys.executable, "-m", "mtin_tf.cli"]


class RssSampler(threading.Thread):
    """Samples the summed RSS (bytes) of a process and its descendants: [(unix time, bytes)]."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.process, self.every, self.samples = psutil.Process(pid), every, []
        self._done = threading.Event()

    def run(self):
        while not self._done.is_set():
            try:
                procs = [self.process] + self.process.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.samples.append((time.time(), total))
            self._done.wait(self.every)

    def stop(self):
        self._done.set()
        self.join()

    def peak_mb(self, start: float = 0.0, end: float = float("inf")) -> float:
        """The largest sample in [start, end]; for an interval shorter than the sampling period, the sample nearest
        to its middle."""
        inside = [rss for t, rss in self.samples if start <= t <= end]
        if not inside and self.samples:
            middle = (start + end) / 2
            inside = [min(self.samples, key=lambda s: abs(s[0] - middle))[1]]
        return round(max(inside, default=0) / 2 ** 20)


def run_job(name: str, argv: list, log_dir: str) -> dict:
    """Runs argv as a child (its output to log_dir/name.log); wall time, exit code and the RSS samples."""
    log_path = os.path.join(log_dir, f"{name}.log")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    start = time.time()
    with open(log_path, "w") as log:
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        sampler = RssSampler(child.pid)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        sampler.stop()
    result = {"job": name, "seconds": round(time.time() - start, 1), "exit_code": os.waitstatus_to_exitcode(status),
              "peak_rss_mb": sampler.peak_mb(), "largest_process_rss_mb": round(usage.ru_maxrss / 1024),
              "log": log_path}
    print(f"{name}: {result['seconds']} s, peak RSS {result['peak_rss_mb']} MB (exit {result['exit_code']})",
          flush=True)
    result["_sampler"] = sampler
    return result


def component_rows(metadata_path: str, sampler: RssSampler) -> list:
    """Per component of the latest run: id, state, wall seconds and the peak sampled RSS while it ran."""
    from ml_metadata.proto import metadata_store_pb2

    from mtin_tf.pipeline.metadata import latest_run_executions

    _, executions = latest_run_executions(metadata_path)
    rows = []
    for node, e in executions:
        start, end = e.create_time_since_epoch / 1000.0, e.last_update_time_since_epoch / 1000.0
        rows.append({"component": node, "state": metadata_store_pb2.Execution.State.Name(e.last_known_state),
                     "seconds": round(end - start, 1), "peak_rss_mb": sampler.peak_mb(start, end)})
        print(f"  {node}: {rows[-1]['seconds']} s, peak RSS {rows[-1]['peak_rss_mb']} MB ({rows[-1]['state']})",
              flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interactions", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--jobs", nargs="+", default=["generate", "memory", "pipeline"],
                    choices=("generate", "memory", "pipeline"))
    ap.add_argument("--stop-after", default=None, help="pipeline: run only up to this component")
    ap.add_argument("--beam-arg", action="append", default=[], help="pipeline: a Beam argument (repeatable)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="pipeline: MTINConfig overrides")
    ap.add_argument("--workdir", default=None,
                    help="keeps data and outputs here (default: a temporary directory, removed afterwards); an "
                         "existing data/ in it is reused when the generate job is not asked for")
    args = ap.parse_args(argv)
    results = {"interactions": args.interactions, "users": args.users, "cpus": os.cpu_count(),
               "memory_gb": round(psutil.virtual_memory().total / 2 ** 30, 1), "stop_after": args.stop_after,
               "beam_args": args.beam_arg, "set": args.set, "jobs": []}
    tmp = None if args.workdir else tempfile.TemporaryDirectory()
    work = args.workdir or tmp.name
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    try:
        for job in args.jobs:
            if job == "generate":
                argv_ = MTIN + ["data", "generate", "--out", data, "--num-users", str(args.users),
                                "--total-interactions", str(args.interactions)]
            elif job == "memory":
                interactions = sorted(glob.glob(os.path.join(data, "interactions.*")))
                items = sorted(glob.glob(os.path.join(data, "item_features.*")))
                argv_ = MTIN + ["data", "build", "--interactions", *interactions, "--items", items[0],
                                "--out", os.path.join(work, "built")]
            else:
                argv_ = MTIN + ["pipeline", "run", "--data", data, "--run-dir", os.path.join(work, "run")]
                argv_ += ["--stop-after", args.stop_after] if args.stop_after else []
                argv_ += [f"--beam-arg={a}" for a in args.beam_arg]
                argv_ += ["--set", *args.set] if args.set else []
            result = run_job(job, argv_, work)
            sampler = result.pop("_sampler")
            if job == "pipeline" and result["exit_code"] == 0:
                result["components"] = component_rows(os.path.join(work, "run", "metadata.sqlite"), sampler)
            results["jobs"].append(result)
            if result["exit_code"] != 0:
                print(f"{job} failed: see {result['log']}", file=sys.stderr)
                break
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(json.dumps(results))
    return 0 if all(j["exit_code"] == 0 for j in results["jobs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
