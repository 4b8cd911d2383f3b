"""Run the local server (``mtin serve``) as a subprocess from Python: for the tests, the benchmark and users who embed
the default server next to their own process.

    with LocalServer("/path/to/base") as server:
        server.wait_available()
        MTINClient(server.target).predict(...)

The child runs ``python -m mtin_tf.cli serve`` with this interpreter and the directory of this process's mtin_tf on its
PYTHONPATH, bound to 127.0.0.1 on a free port; its stdout and stderr go to ``log_path``. Leaving the ``with`` block
kills it; use :meth:`LocalServer.terminate` for the graceful SIGTERM path.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import mtin_tf
from mtin_tf.serving import DEFAULT_MODEL_NAME
from mtin_tf.serving.client import MTINClient

# The directory holding the mtin_tf package this process imported (the repository or site-packages): the child runs
# from there so that it imports the same mtin_tf; mtin_tf.serving then resolves as here (installed, or editable).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mtin_tf.__file__)))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalServer:
    """``mtin serve --model-base-path base_path`` on 127.0.0.1:<port> (default: a free port); ``extra_args`` go to
    ``mtin serve``. Passing the port of a server that stopped restarts the service at the same address.
    ``client_options`` go to the :class:`MTINClient` of ``self.client`` (e.g. ``credentials`` for a TLS server)."""

    def __init__(self, base_path: str, *extra_args: str, model_name: str = DEFAULT_MODEL_NAME,
                 log_path: str | None = None, port: int | None = None, client_options: dict | None = None):
        self.port = port or free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.model_name = model_name
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix=f"mtin-serve-{self.port}-", suffix=".log")
            os.close(fd)
        self.log_path = log_path
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                   PYTHONPATH=os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mtin_tf.cli", "serve", "--model-base-path", base_path, "--host", "127.0.0.1",
                 "--port", str(self.port), "--model-name", model_name, *extra_args],
                cwd=_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.client = MTINClient(self.target, model_name, timeout=5.0, **(client_options or {}))

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_available(self, version: int | None = None, timeout: float = 120.0) -> int:
        """Block until ``version`` (default: any) is AVAILABLE; returns it. Raises RuntimeError with the server's
        log if the process exits first, TimeoutError after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mtin serve exited with code {self.proc.returncode}:\n{self.log()}")
            try:
                return self.client.wait_until_available(version, timeout=min(2.0, max(0.0, end - time.monotonic())))
            except TimeoutError:
                if time.monotonic() >= end:
                    raise TimeoutError(f"not available after {timeout} s; server log:\n{self.log()}") from None

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful: in-flight requests finish), wait, and return the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
