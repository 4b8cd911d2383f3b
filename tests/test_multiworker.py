"""Multi-worker training: MultiWorkerMirroredStrategy from TF_CONFIG, run as two real worker processes on localhost
(CPU, collective ops over gRPC) through `mtin train`'s path (mtin_tf.train.train_and_evaluate)."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from mtin_tf.train import chief_path, multi_worker_resolver, select_strategy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tf_config_selects_multi_worker_only_for_a_cluster_of_several_workers(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert multi_worker_resolver() is None
    one = {"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(one))
    assert multi_worker_resolver() is None  # one worker: today's local strategy, no gRPC server
    strategy = select_strategy()
    assert strategy.num_replicas_in_sync >= 1 and chief_path("/x/out", strategy) == "/x/out"
    two = {"cluster": {"chief": ["localhost:1"], "worker": ["localhost:2"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(two))
    resolver = multi_worker_resolver()
    assert (resolver.task_type, resolver.task_id) == ("worker", 0)
    assert resolver.cluster_spec().as_dict() == two["cluster"]
    monkeypatch.setenv("TF_CONFIG", json.dumps({**two, "cluster": {**two["cluster"], "ps": ["localhost:3"]}}))
    with pytest.raises(ValueError, match="parameter servers"):
        multi_worker_resolver()
    monkeypatch.setenv("TF_CONFIG", json.dumps({**two, "task": {"type": "evaluator", "index": 0}}))
    with pytest.raises(ValueError, match="does not train"):
        multi_worker_resolver()


# One worker process: the strategy from TF_CONFIG first (before TensorFlow's runtime starts), then the run.
WORKER = r"""
import json, sys
import numpy as np
import tensorflow as tf
from mtin_tf import train as T

strategy = T.select_strategy()
tests, out, weights, batch = sys.argv[1:5]
sys.path.insert(0, tests)
from training_support import planted_run

model, history = planted_run(out, int(batch), strategy)
np.savez(weights, *model.get_weights())
print(json.dumps({"module": T.__file__, "multi_worker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                  and T.is_multi_worker(strategy), "chief": T.is_chief(strategy),
                  "replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"],
                  "steps": int(model.optimizer.iterations.numpy())}))
"""


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start(script, args, tf_config=None):
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def finish(procs, timeout):
    """{name: parsed last stdout line}; a process still running after ``timeout`` s (a hung collective) is killed,
    and so are the others, and the test fails with their stderr."""
    outs = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in procs.values():
                other.kill()
            tails = {n: p.communicate()[1][-2000:] for n, p in procs.items()}
            pytest.fail(f"{name} did not finish in {timeout} s: {tails}")
        assert proc.returncode == 0, f"{name}: {stderr[-3000:]}"
        outs[name] = json.loads(stdout.strip().splitlines()[-1])
    return outs


@pytest.mark.timeout(900)  # minutes on a loaded 2-core machine; a hung collective still fails
def test_two_worker_processes_train_like_one_process_of_the_same_global_batch_and_only_the_chief_writes(tmp_path):
    import tensorflow as tf
    from training_support import planted_run

    from mtin_tf.train import is_chief

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}  # no chief task: worker 0 is the chief
    run = tmp_path / "run"  # both workers are given the same out dir, as pods sharing a bucket would be
    procs = {f"worker{i}": start(script, [os.path.dirname(__file__), str(run / "out"), str(tmp_path / f"worker{i}.npz"),
                                          "8"], {"cluster": cluster, "task": {"type": "worker", "index": i}})
             for i in range(2)}
    try:  # meanwhile, the reference here: one process, the default strategy, the same global batch of 2 × 8
        strategy = tf.distribute.get_strategy()
        model, history = planted_run(tmp_path / "single", 16, strategy)
        out = finish(procs, timeout=600)
    finally:  # never leave a worker behind (a failure here, a hung collective, pytest-timeout)
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    single = {"chief": is_chief(strategy), "replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"],
              "steps": int(model.optimizer.iterations.numpy())}
    single_weights = model.get_weights()
    chief, worker = out["worker0"], out["worker1"]
    assert all(o["module"].startswith(REPO) for o in out.values())
    assert chief["multi_worker"] and worker["multi_worker"]
    assert chief["replicas"] == worker["replicas"] == 2 and single["replicas"] == 1
    assert (chief["chief"], worker["chief"], single["chief"]) == (True, False, True)
    assert chief["steps"] == worker["steps"] == single["steps"] == 16  # 2 epochs of 120 rows in batches of 16

    weights = {name: np.load(tmp_path / f"{name}.npz") for name in out}
    assert len(single_weights) > 10 and len(weights["worker0"].files) == len(weights["worker1"].files) == len(
        single_weights)
    for i, reference in enumerate(single_weights):
        key = f"arr_{i}"
        # The workers all-reduce their gradients and apply the same updates: the same weights.
        np.testing.assert_allclose(weights["worker0"][key], weights["worker1"][key], rtol=0, atol=1e-6, err_msg=key)
        # Each worker's half of every global batch (DATA sharding) adds up to the single process's step.
        np.testing.assert_allclose(weights["worker0"][key], reference, rtol=1e-3, atol=1e-4, err_msg=key)
    np.testing.assert_allclose(chief["loss"], single["loss"], rtol=1e-4)
    assert chief["loss"] == worker["loss"]

    # Only the chief wrote: the logs and checkpoint are its own, and the worker's temporary directories are gone.
    assert sorted(os.listdir(run)) == ["out"]
    assert sorted(os.listdir(run / "out")) == ["checkpoint", "logs"]
    assert sorted(os.listdir(run / "out" / "logs")) == sorted(os.listdir(tmp_path / "single" / "logs"))
    assert not [d for d, dirs, _ in os.walk(run) for name in dirs if name.startswith("workertemp")]
