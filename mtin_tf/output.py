"""What ``mtin`` prints: only what the user can act on. ``mtin --verbose COMMAND`` shows everything.

:func:`configure` runs once per process, from the console entry point (``mtin_tf.cli.main``) before TensorFlow is
imported, and filters each known third-party message at its source:

* TensorFlow's C++ INFO and WARNING lines (the oneDNN notice, "This TensorFlow binary is optimized..."):
  ``TF_CPP_MIN_LOG_LEVEL=2``, unless the environment sets it.
* C++ lines no environment variable reaches, printed to file descriptor 2 (the CUDA plugins' "Unable to register
  cuDNN/cuFFT/cuBLAS factory" on a machine without a GPU, XLA's and Grappler's absl-logged ``I0000``/``W0000`` lines,
  "oneDNN supports DT_INT64 only on platforms with AVX-512"): a small filter process between fd 2 and the terminal
  drops the lines matching :data:`CPP_NOISE` and passes everything else through (errors, tracebacks, progress bars).
* Python warnings, by module and message (google-api-core's and aiplatform's Python/dependency version notices).
* Python loggers, by logger and message (absl's ``ArtifactQuery.property_predicate``, Beam's python-snappy notice,
  tf_keras's "No training configuration found" on reloading a model for scoring, TF's deprecation notices about calls
  made by installed libraries such as TFMA), INFO chatter of absl (TFX) and Beam.
  TFX's "Component X is running/finished" INFO records become one progress line per pipeline component.

:data:`NOISE` holds a pattern for every line of that kind; tests/test_output.py checks a real run prints none.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import sys
import time
import warnings

# Lines that are never actionable for a user of mtin (each matched anywhere in one output line).
NOISE = (
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"oneDNN (custom operations are on|supports DT_INT64)",
    r"This TensorFlow binary is optimized|^To enable the following instructions: .* rebuild TensorFlow",
    r"All log messages before absl::InitializeLog\(\) is called",
    r"^[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\] ",  # absl C++ INFO / WARNING (XLA, Grappler)
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] ",  # TensorFlow C++ INFO / WARNING
    r"non-supported Python version",  # google.api_core
    r"Support for google-cloud-storage < 3\.0\.0",  # google.cloud.aiplatform
    r"warnings\.warn\(|from google\.cloud\.aiplatform\.utils import",  # source lines Python prints under them
    r"^WARNING:tensorflow:From \S*[/\\](site|dist)-packages[/\\]",  # a library's use of deprecated TF API...
    r"^Instructions for updating:",  # ...and its advice, for that library's maintainers
    r"ArtifactQuery\.property_predicate is not supported",
    r"does not have payload_format custom property",
    r"python-snappy",
    r"No training configuration found in save file",
    r"^(INFO|DEBUG):(absl|apache_beam|root|tfx|tensorflow)\b",  # Python logging INFO of absl, Beam, TFX...
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|DEBUG) (absl|apache_beam|root|tfx|tensorflow)\b",  # ...verbose
)
NOISE_RE = re.compile("|".join(f"(?:{p})" for p in NOISE))

# What the fd-2 filter drops: C++ lines printed before (or without) any Python code seeing them.
CPP_NOISE = re.compile(
    rb"Unable to register cu(DNN|FFT|BLAS) factory|oneDNN supports DT_INT64 only"
    rb"|^WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|^[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\] ")
# A partial line that may be the start of a C++ log line is held until its newline arrives.
_CPP_START = re.compile(rb"^(\d{4}-|[IWEF]\d{4} |WARNING: All)")

# (warning category, module regex, message regex) of Python warnings that are not the user's to act on.
WARNINGS = (
    (FutureWarning, r"google\.api_core", r"You are using a non-supported Python version"),
    (FutureWarning, r"google\.cloud\.aiplatform", r"Support for google-cloud-storage < 3\.0\.0"),
)
# logger name -> message regexes dropped at that logger (any level).
LOG_MESSAGES = {
    "absl": (r"ArtifactQuery\.property_predicate is not supported",
             r"artifact does not have payload_format custom property"),
    "apache_beam.io.tfrecordio": (r"python-snappy",),
    "tensorflow": (r"No training configuration found in save file",
                   r"^From \S*[/\\](site|dist)-packages[/\\]"),  # third-party code calling deprecated TF API
}
# Loggers whose INFO records are chatter (WARNING and above still show).
CHATTY = ("apache_beam", "tfx", "ml_metadata", "tensorflow_transform", "tensorflow_model_analysis",
          "tensorflow_data_validation")
VERBOSE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # `mtin serve`'s own (serving/cli.py)
_COMPONENT = re.compile(r"^Component (\S+) is (running|finished)\.$")

_configured: dict = {}


def is_noise(line: str) -> bool:
    return bool(NOISE_RE.search(line))


def configure(verbose: bool = False, *, filter_stderr: bool = True) -> None:
    """Set up the process's output once (later calls do nothing). verbose: show every third-party message."""
    if _configured:
        return
    _configured["verbose"] = verbose
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        logging.basicConfig(level=logging.INFO, format=VERBOSE_FORMAT)
        import absl.logging

        absl.logging.set_verbosity(absl.logging.INFO)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for category, module, message in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    import absl.logging  # first, so that logging.getLogger("absl") is absl's own logger

    for name, messages in LOG_MESSAGES.items():
        logging.getLogger(name).addFilter(_DropMessages(messages))
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    absl.logging.set_verbosity(absl.logging.INFO)  # INFO reaches _Progress, which prints components, drops the rest
    logging.getLogger("absl").addFilter(_Progress())
    if filter_stderr:
        _filter_fd2()


class _DropMessages(logging.Filter):
    def __init__(self, messages):
        super().__init__()
        self.pattern = re.compile("|".join(messages))

    def filter(self, record) -> bool:
        return not self.pattern.search(record.getMessage())


class _Progress(logging.Filter):
    """absl (TFX) INFO records: "Component X is running/finished." become one line per component; the rest go."""

    def __init__(self):
        super().__init__()
        self.started: dict = {}

    def filter(self, record) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        match = _COMPONENT.match(record.getMessage())
        if match:
            node, state = match.groups()
            if state == "running":
                self.started[node] = time.perf_counter()
                print(f"  pipeline: {node} ...", flush=True)
            else:
                seconds = time.perf_counter() - self.started.pop(node, time.perf_counter())
                print(f"  pipeline: {node} done ({seconds:.0f}s)", flush=True)
        return False


def _filter_fd2() -> None:
    """Route file descriptor 2 through a child process that drops CPP_NOISE lines (C++ writes there directly).

    A process, not a thread: it outlives a crash of this one and still passes its last words on. It ignores SIGINT
    (Ctrl-C reaches this process, whose traceback it then forwards) and ends when every writer has closed the pipe.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        pid = os.fork()
    except (OSError, AttributeError, ValueError):  # no fork (Windows) or no usable stderr: leave fd 2 alone
        return
    if pid == 0:  # the filter
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            os.close(write_end)
            devnull = os.open(os.devnull, os.O_RDWR)  # hold no copy of stdin/stdout (a reader waits for their EOF)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            _pump(read_end, 2)
        finally:
            os._exit(0)
    os.close(read_end)
    terminal = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)

    def restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(terminal, 2)  # closes this process's write end: the filter drains the pipe and exits
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # subprocesses still holding the pipe keep it open: wait a little only
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.02)

    atexit.register(restore)


def _pump(read_fd: int, write_fd: int) -> None:
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        out = [line + b"\n" for line in lines if not CPP_NOISE.search(line)]
        if pending and not _CPP_START.match(pending):  # a progress bar's in-place update: show it now
            out.append(pending)
            pending = b""
        if out:
            os.write(write_fd, b"".join(out))
    if pending and not CPP_NOISE.search(pending):
        os.write(write_fd, pending)


def summary_line(command: str, result: dict) -> str:
    """The last line of `mtin train` / `mtin demo --standalone`: what was trained, its test AUC, where it is."""
    test = result.get("test", result)
    return (f"{command}: trained {result.get('variant') or result.get('model', 'MTIN')} on "
            f"{result.get('train_examples', '?')} examples, test AUC {test['auc']:.4f} gAUC {test['gauc']:.4f} "
            f"(best epoch {result.get('best_epoch', '?')} of {result.get('epochs_run', '?')}); "
            f"model: {result['model_path']}")
