"""Model versions of one served model: discovery under a base directory, loading, polling and hot swap.

The base directory holds numeric version directories ``<base>/<version>/`` (``mtin_tf.export`` and TFX's Pusher write
them; export renames a complete directory into place, Pusher copies ``saved_model.pb`` last). A version counts as
ready on disk once its ``saved_model.pb`` exists. The version policy is TF Serving's ``latest { num_versions: N }``:
the N highest ready versions are served, and a request without a version gets the highest loaded one.

Swapping never fails a request in flight: a new version is loaded completely (``tf.saved_model.load``) before the
table of served versions is replaced in one assignment, and a request keeps the :class:`LoadedVersion` it resolved
until it finishes; an unloaded version is freed when its last request drops it. A version that fails to load is
logged and reported by :meth:`ModelStore.statuses` (``END`` with its error) while the previous version keeps serving;
like TF Serving it is retried every ``load_retry_seconds``, at most ``max_load_retries`` times, and at once whenever
its directory changes (a copy that put ``saved_model.pb`` in place before ``variables/``, then completed). A base
path that does not exist is logged as a warning (once, and again if it disappears) and named in UNAVAILABLE answers.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Callable, Mapping

import grpc

from mtin_tf.serving.errors import ServingError
from mtin_tf.serving.validation import input_specs

log = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"

# ModelVersionStatus.State names of tensorflow_serving/apis/get_model_status.proto.
LOADING, AVAILABLE, END = "LOADING", "AVAILABLE", "END"


@dataclasses.dataclass(frozen=True)
class LoadedVersion:
    """One loaded SavedModel version.

    ``signatures``: {signature name: concrete function} of ``tf.saved_model.load`` (``structured_input_signature``
    gives each input's TensorSpec); ``signature_defs``: {name: SignatureDef proto} of the MetaGraphDef, as TF
    Serving's GetModelMetadata returns them; ``root``: the loaded object, kept alive while the version is used.
    """
    version: int
    path: str
    signatures: Mapping
    signature_defs: Mapping
    root: object = dataclasses.field(repr=False, default=None)
    known_ids: Mapping = dataclasses.field(repr=False, default_factory=dict)  # {"item"|"user": sorted int64 ids}


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """State of one version (``LOADING``, ``AVAILABLE`` or ``END``); ``error`` is set when loading failed."""
    version: int
    state: str
    error: str = ""


def load_version(path: str, version: int) -> LoadedVersion:
    """Load ``path`` (a SavedModel directory) with ``tf.saved_model.load`` and read its SignatureDefs."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    root = tf.saved_model.load(path)
    with open(os.path.join(path, SAVED_MODEL_FILE), "rb") as f:
        proto = saved_model_pb2.SavedModel.FromString(f.read())
    signature_defs = dict(proto.meta_graphs[0].signature_def)
    signatures = dict(root.signatures)
    warm_up(signatures)
    return LoadedVersion(version, path, signatures, signature_defs, root, read_known_ids(path))


def read_known_ids(path: str) -> dict:
    """{"item"|"user": sorted int64 ids} of a version exported by mtin_tf (mtin_tf.export.write_known_ids); {} for a
    SavedModel without the file (then unknown ids are not counted)."""
    import numpy as np

    from mtin_tf.export import KNOWN_IDS_FILE

    file = os.path.join(path, KNOWN_IDS_FILE)
    if not os.path.exists(file):
        return {}
    with np.load(file) as data:
        return {key: data[key] for key in data.files}


def warm_up(signatures: Mapping) -> None:
    """Call every signature once on a batch of one synthetic row (zeros; empty strings; k = 1 for ``recommend``)
    before the version serves: the first call of a loaded function optimizes its graph (about a second), which would
    otherwise stall the first requests after a swap. A signature that rejects the synthetic row (e.g. an empty
    tf.Example) is warm all the same.
    """
    import tensorflow as tf

    from mtin_tf import features as F

    for name, signature in signatures.items():
        inputs = {key: (tf.ones if key == F.RECOMMEND_K else tf.zeros)(
            [1 if d is None else d for d in spec.shape.as_list()], spec.dtype)
            for key, spec in input_specs(signature).items()}
        try:
            signature(**inputs)
        except (tf.errors.OpError, UnicodeDecodeError) as exc:
            log.debug("warm-up call of signature %r failed as expected for synthetic input: %s", name, exc)


@dataclasses.dataclass(frozen=True)
class _Failure:
    """A version that failed to load: the directory as it was then, the attempts so far, when to try again."""
    fingerprint: tuple
    attempts: int
    retry_at: float


def directory_fingerprint(path: str) -> tuple:
    """(relative path, size, mtime in ns) of every file under ``path``, sorted: changes when a copy completes."""
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except FileNotFoundError:  # removed while we looked: the next poll sees the new state
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def ready_versions(base_path: str) -> list[int]:
    """Numeric version directories under ``base_path`` whose ``saved_model.pb`` exists, ascending ([] if the base
    directory does not exist yet)."""
    try:
        names = os.listdir(base_path)
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names
                  if n.isdigit() and os.path.isfile(os.path.join(base_path, n, SAVED_MODEL_FILE)))


class ModelStore:
    """The served versions of model ``name`` under ``base_path``.

    Args:
      name: model name requests must use (``model_spec.name``).
      base_path: directory of numeric version directories.
      num_versions: how many of the newest versions to serve (TF Serving's ``latest`` policy; default 1).
      poll_seconds: how often :meth:`start`'s thread looks for new versions.
      version_labels: {label: version} for ``model_spec.version_label`` (as ``version_labels`` in models.config).
      max_load_retries, load_retry_seconds: a version that failed to load is tried again every
        ``load_retry_seconds``, at most ``max_load_retries`` more times (TF Serving's defaults: 5 and 60 s), and at
        once whenever its directory changes.
      loader: (path, version) -> LoadedVersion; :func:`load_version` unless a test replaces it.
    """

    def __init__(self, name: str, base_path: str, *, num_versions: int = 1, poll_seconds: float = 1.0,
                 version_labels: Mapping[str, int] | None = None, max_load_retries: int = 5,
                 load_retry_seconds: float = 60.0, loader: Callable[[str, int], LoadedVersion] = load_version):
        if num_versions < 1:
            raise ValueError(f"num_versions must be >= 1, got {num_versions}")
        self.name = name
        self.base_path = base_path
        self.num_versions = num_versions
        self.poll_seconds = poll_seconds
        self.version_labels = dict(version_labels or {})
        self._loader = loader
        self._served: dict[int, LoadedVersion] = {}  # replaced, never mutated: readers need no lock
        self._status: dict[int, VersionStatus] = {}
        self._status_lock = threading.Lock()
        self.max_load_retries, self.load_retry_seconds = int(max_load_retries), float(load_retry_seconds)
        self._failed: dict[int, _Failure] = {}
        self._base_missing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- polling -------------------------------------------------------------------------------------------------
    def poll(self) -> bool:
        """One pass: load the newest ``num_versions`` ready versions not loaded yet, then swap the served table and
        drop versions that fell out of the policy. Returns True if the served set changed."""
        ready = ready_versions(self.base_path)
        self._check_base_path()
        served = self._served
        loaded = {}
        now = time.monotonic()
        retry = {v for v in ready if v in self._failed and self._may_retry(v, now)}
        while True:  # a version that fails to load leaves the policy, and the next older one may enter it
            wanted = [v for v in ready if v not in self._failed or v in retry][-self.num_versions:]
            missing = sorted(set(wanted) - set(served) - set(loaded), reverse=True)  # newest first: serves soonest
            if not missing:
                break
            for version in missing:
                path = os.path.join(self.base_path, str(version))
                self._set_status(version, LOADING)
                log.info("loading model %r version %d from %s", self.name, version, path)
                try:
                    loaded[version] = self._loader(path, version)
                    self._failed.pop(version, None)
                except Exception as exc:  # noqa: BLE001 - any load failure must leave the server serving
                    retry.discard(version)
                    self._set_status(version, END, f"failed to load {path}: {exc}; {self._record_failure(version)}")
                    log.exception("model %r version %d failed to load; serving %s", self.name, version,
                                  sorted(served))
        keep = {v: served[v] for v in served if v in wanted}
        new = {**keep, **loaded}
        if not new and served:  # everything wanted failed: keep serving what we have
            return False
        if set(new) == set(served):
            return False
        self._served = new  # the swap: one reference assignment
        for version in loaded:
            self._set_status(version, AVAILABLE)
            log.info("model %r version %d is available", self.name, version)
        for version in set(served) - set(new):
            self._set_status(version, END)
            log.info("model %r version %d unloaded (in-flight requests finish on it)", self.name, version)
        return True

    def _may_retry(self, version: int, now: float) -> bool:
        """A failed version is tried again when its directory changed, or its retry time came and retries are left."""
        failure = self._failed[version]
        path = os.path.join(self.base_path, str(version))
        if directory_fingerprint(path) != failure.fingerprint:
            log.info("model %r version %d changed on disk since it failed to load: retrying", self.name, version)
            self._failed[version] = dataclasses.replace(failure, attempts=0)
            return True
        return failure.attempts <= self.max_load_retries and now >= failure.retry_at

    def _record_failure(self, version: int) -> str:
        """Count a failed load of ``version``; returns what happens next, for its status message."""
        previous = self._failed.get(version)
        attempts = (previous.attempts if previous else 0) + 1
        path = os.path.join(self.base_path, str(version))
        self._failed[version] = _Failure(directory_fingerprint(path), attempts,
                                         time.monotonic() + self.load_retry_seconds)
        if attempts <= self.max_load_retries:
            return (f"attempt {attempts} of {self.max_load_retries + 1}; retried in {self.load_retry_seconds:g} s "
                    f"or as soon as the directory changes")
        return "no retries left; retried when the directory changes"

    def _check_base_path(self) -> None:
        missing = not os.path.isdir(self.base_path)
        if missing and not self._base_missing:
            log.warning("model %r: base path %s does not exist; nothing to serve until it does", self.name,
                        self.base_path)
        self._base_missing = missing

    def start(self) -> "ModelStore":
        """Poll once now, then every ``poll_seconds`` in a daemon thread until :meth:`stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"model-store-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - e.g. a transient file system error: log and poll again
                log.exception("polling %s failed", self.base_path)
            self._stop.wait(self.poll_seconds)

    # -- lookups -------------------------------------------------------------------------------------------------
    def get(self, name: str, version: int | None = None, label: str | None = None) -> LoadedVersion:
        """The version a request names: ``version``, else ``label``'s version, else the newest loaded.

        Raises ServingError: NOT_FOUND for another model name, an unknown label or a version not loaded;
        UNAVAILABLE when no version is loaded yet."""
        self.check_name(name)
        served = self._served
        if label:
            if label not in self.version_labels:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"unknown version_label {label!r} of model {self.name!r}; known labels: "
                                   f"{sorted(self.version_labels)}")
            version = self.version_labels[label]
        if not served:
            why = "which does not exist" if self._base_missing else "no version has loaded"
            raise ServingError(grpc.StatusCode.UNAVAILABLE,
                               f"no version of model {self.name!r} is loaded yet (watching {self.base_path}, {why})")
        if version is None:
            return served[max(served)]
        if version not in served:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"version {version} of model {self.name!r} is not loaded; loaded versions: "
                               f"{sorted(served)}")
        return served[version]

    def check_name(self, name: str) -> None:
        if name != self.name:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"model {name!r} is not served here; this server serves {self.name!r}")

    def loaded_versions(self) -> list[int]:
        return sorted(self._served)

    def statuses(self) -> list[VersionStatus]:
        """Every version seen, ascending (loaded, loading, unloaded or failed)."""
        with self._status_lock:
            return [self._status[v] for v in sorted(self._status)]

    def _set_status(self, version: int, state: str, error: str = "") -> None:
        with self._status_lock:
            self._status[version] = VersionStatus(version, state, error)
