"""What `mtin` prints (mtin_tf/output.py): a real run, in a fresh process started like the console script, prints no
line of third-party noise (mtin_tf.output.NOISE), while `mtin --verbose` brings those lines back.

The run: `mtin data build --engine beam` (TensorFlow, Beam: the CUDA plugin lines, google-api-core's Python-version
FutureWarning, Beam's python-snappy notice and INFO chatter) and `mtin train` of a baseline (Keras training, the
evaluation and the SavedModel export) on tiny planted data; about a minute of CPU.
"""
import os
import re
import subprocess
import sys

import pytest

from mtin_tf.output import NOISE_RE, is_noise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mtin(*argv, timeout=600):
    """`mtin ARGV` as the console script runs it, with the user's environment: TF_CPP_MIN_LOG_LEVEL not set."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "-m", "mtin_tf.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    out = proc.stdout + proc.stderr
    print(f"$ mtin {' '.join(argv)}  (exit {proc.returncode})\n{out}")
    return proc.returncode, out


def _lines(out: str):
    return [part for line in out.splitlines() for part in line.split("\r") if part.strip()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("output")
    code, out = _mtin("data", "generate", "--out", str(root / "data"), "--num-users", "24", "--num-items", "80",
                      "--num-clusters", "6", "--feature-dim", "4", "--interactions-per-user", "20", "--seed", "3")
    assert code == 0, out
    return root


def _build(data, out_dir, *flags):
    return _mtin(*flags, "data", "build", "--engine", "beam", "--interactions",
                 str(data / "data" / "interactions.parquet"), "--items", str(data / "data" / "item_features.npz"),
                 "--out", str(out_dir), "--max-history", "6")


def test_build_and_train_print_no_third_party_noise_and_end_with_a_summary(data):
    code, build = _build(data, data / "examples")
    assert code == 0, build
    code, train = _mtin("train", "--examples", str(data / "examples"), "--items",
                        str(data / "data" / "item_features.npz"), "--out", str(data / "train"), "--model", "bpr",
                        "--set", "embedding_dim=8", "max_history=6", "batch_size=64", "epochs=1")
    assert code == 0, train
    noise = [line for line in _lines(build + train) if is_noise(line)]
    assert not noise, "\n".join(noise)
    last = train.strip().splitlines()[-1]
    match = re.fullmatch(r"mtin train: trained bpr on \d+ examples, test AUC [\d.]+ gAUC [\d.]+ "
                         r"\(best epoch 1 of 1\); model: (\S+)", last)
    assert match and os.path.isfile(os.path.join(match.group(1), "saved_model.pb")), last
    assert "wrote " in build and "[build]" in build  # the step's own lines are still there


def test_verbose_brings_the_third_party_lines_back(data):
    code, out = _build(data, data / "examples_verbose", "--verbose")
    assert code == 0, out
    lines = _lines(out)
    noise = [line for line in lines if NOISE_RE.search(line)]
    assert any(re.search(r" INFO (absl|apache_beam|root)\b", line) for line in noise), out  # absl / Beam INFO
    # TensorFlow's own C++ INFO lines (TF_CPP_MIN_LOG_LEVEL 0), e.g. "This TensorFlow binary is optimized..."
    assert any(re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: I ", line) for line in lines), out


def test_the_fd2_filter_drops_cpp_noise_and_passes_errors_tracebacks_and_progress_bars():
    from mtin_tf.output import _pump

    noise = (b"2026-12-05 23:06:21.212557: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:479] Unable to "
             b"register cuFFT factory: Attempting to register factory for plugin cuFFT when one has already been "
             b"registered\n"
             b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             b"W0000 00:00:1796512019.754518   23254 op_level_cost_estimator.cc:699] Error in PredictCost() for the "
             b"op: op: \"Softmax\"\n"
             b"I0000 00:00:1796512020.566676   23392 service.cc:145] XLA service 0x7fa8a4053280 initialized\n")
    kept = (b"2026-12-05 23:06:22.000000: E tensorflow/core/framework/op_kernel.cc:1] OP_REQUIRES failed\n"
            b"Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nValueError: boom\n")
    bar = b"\rbuild histories:  13%|#3        | 51/400"
    read_end, write_end = os.pipe()
    out_read, out_write = os.pipe()
    os.write(write_end, noise[:40])  # a C++ line may arrive in pieces: held until its newline
    os.write(write_end, noise[40:] + kept + bar)
    os.close(write_end)
    _pump(read_end, out_write)
    os.close(out_write)
    got = os.read(out_read, 1 << 16)
    assert got == kept + bar, got
    assert all(is_noise(line) for line in noise.decode().splitlines())
    assert not any(is_noise(line) for line in (kept + bar).decode().splitlines())
