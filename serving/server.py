"""A local server speaking TF Serving's gRPC API over a versioned SavedModel directory.

Services (tensorflow_serving/apis):
- ``tensorflow.serving.PredictionService``: ``Predict`` runs the named signature of the loaded SavedModel
  (``tf.saved_model.load``; never a second model implementation), ``GetModelMetadata`` returns the SignatureDefs;
  ``Classify``, ``Regress`` and ``MultiInference`` answer UNIMPLEMENTED (MTIN serves Predict signatures only).
- ``tensorflow.serving.ModelService``: ``GetModelStatus`` reports each version's state; ``HandleReloadConfigRequest``
  answers UNIMPLEMENTED.

Status codes follow TF Serving: unknown model, version or label → NOT_FOUND; nothing loaded yet → UNAVAILABLE; a
request that does not match the signature or its limits (see :mod:`serving.validation`), an unknown signature, a
malformed tf.Example → INVALID_ARGUMENT; more requests in flight than admitted → RESOURCE_EXHAUSTED; a deadline that
passes before the request runs → DEADLINE_EXCEEDED (dropped before compute, :class:`Admission`); anything else →
INTERNAL. Every error is logged and counted (:class:`ErrorCounts`) and the server keeps serving. :func:`serve` runs until SIGTERM or SIGINT, then stops accepting RPCs, lets those in
flight finish (up to ``grace_seconds``) and returns 0.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import signal
import threading

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from serving import GRPC_OPTIONS, MAX_ROWS, METADATA_FIELD
from serving.errors import ServingError
from serving.model_store import ModelStore
from serving.validation import check_inputs, check_output_filter, input_specs

log = logging.getLogger(__name__)

SHED_HEADROOM = 128  # RPCs beyond --max-in-flight that still reach the server's own admission (and its counts)
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY  # run when the request names no signature


class ErrorCounts:
    """Thread-safe counts of failed RPCs by (method, status code name)."""

    def __init__(self):
        self._counts = collections.Counter()
        self._lock = threading.Lock()

    def add(self, method: str, code: grpc.StatusCode) -> int:
        with self._lock:
            self._counts[(method, code.name)] += 1
            return sum(self._counts.values())

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)


class Admission:
    """Load shedding and deadlines for Predict: at most ``workers`` requests compute at once; at most ``max_in_flight``
    are admitted (computing or waiting for a worker), beyond that a request is refused at once with
    RESOURCE_EXHAUSTED; a request whose deadline has passed, or passes while it waits, is dropped before any compute
    with DEADLINE_EXCEEDED. Both are ServingErrors, so _run counts and logs them like any other failure."""

    def __init__(self, workers: int, max_in_flight: int):
        if not 1 <= workers <= max_in_flight:
            raise ValueError(f"need 1 <= workers <= max_in_flight, got {workers} and {max_in_flight}")
        self.workers, self.max_in_flight = int(workers), int(max_in_flight)
        self._compute = threading.BoundedSemaphore(self.workers)
        self._lock = threading.Lock()
        self.in_flight = 0

    @contextlib.contextmanager
    def admit(self, context):
        with self._lock:
            if self.in_flight >= self.max_in_flight:
                raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"server busy: {self.in_flight} requests in flight (mtin serve --max-in-flight "
                                   f"{self.max_in_flight}); retry with backoff")
            self.in_flight += 1
        try:
            remaining = context.time_remaining()  # seconds, or None without a deadline
            if remaining is not None and remaining <= 0:
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the request ran")
            if not self._compute.acquire(timeout=remaining):
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   f"the deadline passed while waiting for one of {self.workers} workers")
            try:
                yield
            finally:
                self._compute.release()
        finally:
            with self._lock:
                self.in_flight -= 1


def _run(method: str, context, errors: ErrorCounts, body):
    """Run ``body()``; turn a failure into the RPC's status (logged and counted) instead of an exception."""
    try:
        return body()
    except ServingError as exc:
        error = exc
    except tf.errors.InvalidArgumentError as exc:  # e.g. a malformed serialized tf.Example
        error = ServingError(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
    except Exception as exc:  # noqa: BLE001 - the server must survive anything a request triggers
        log.exception("%s failed unexpectedly", method)
        error = ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    total = errors.add(method, error.code)
    log.warning("%s -> %s (%d failed requests so far)", method, error, total)
    context.abort(error.code, error.message)


def _version_of(model_spec) -> int | None:
    return model_spec.version.value if model_spec.HasField("version") else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata over a :class:`ModelStore`."""

    def __init__(self, store: ModelStore, errors: ErrorCounts, max_rows: int = MAX_ROWS,
                 admission: Admission | None = None):
        self.store = store
        self.errors = errors
        self.max_rows = int(max_rows)
        self.admission = admission or Admission(16, 64)

    def _resolve(self, model_spec):
        return self.store.get(model_spec.name, _version_of(model_spec), model_spec.version_label or None)

    def Predict(self, request, context):
        def admitted():
            with self.admission.admit(context):
                return self._predict(request)
        return _run("Predict", context, self.errors, admitted)

    def _predict(self, request):
        servable = self._resolve(request.model_spec)
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        if name not in servable.signatures:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"signature {name!r} not found in model {self.store.name!r} version "
                               f"{servable.version}; its signatures: {sorted(servable.signatures)}")
        signature = servable.signatures[name]
        arrays = check_inputs(request.inputs, input_specs(signature), name, self.max_rows)
        try:
            outputs = signature(**{k: tf.constant(v) for k, v in arrays.items()})
        except UnicodeDecodeError as exc:  # TF failed to decode its own error message, which quotes the bad input
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"signature {name!r} rejected its input (e.g. a malformed serialized tf.Example); "
                               f"TensorFlow's message was not valid UTF-8: {exc}") from exc
        response = predict_pb2.PredictResponse()
        for key in check_output_filter(request.output_filter, outputs, name):
            response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key].numpy()))
        response.model_spec.name = self.store.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = name
        return response

    def GetModelMetadata(self, request, context):
        return _run("GetModelMetadata", context, self.errors, lambda: self._metadata(request))

    def _metadata(self, request):
        servable = self._resolve(request.model_spec)
        fields = list(request.metadata_field)
        if fields != [METADATA_FIELD]:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"metadata_field must be [{METADATA_FIELD!r}] (the only one supported), got {fields}")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.store.name
        response.model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        response.metadata[METADATA_FIELD].Pack(signature_map)
        return response

    def _unimplemented(self, method: str, context):
        def refuse():
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               f"{method} is not supported: model {self.store.name!r} serves Predict signatures only")
        return _run(method, context, self.errors, refuse)

    def Classify(self, request, context):
        return self._unimplemented("Classify", context)

    def Regress(self, request, context):
        return self._unimplemented("Regress", context)

    def MultiInference(self, request, context):
        return self._unimplemented("MultiInference", context)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus over a :class:`ModelStore`."""

    def __init__(self, store: ModelStore, errors: ErrorCounts):
        self.store = store
        self.errors = errors

    def GetModelStatus(self, request, context):
        return _run("GetModelStatus", context, self.errors, lambda: self._status(request))

    def _status(self, request):
        self.store.check_name(request.model_spec.name)
        version = _version_of(request.model_spec)
        statuses = [s for s in self.store.statuses() if version is None or s.version == version]
        if not statuses:
            which = f"version {version}" if version is not None else "any version"
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"could not find {which} of model {self.store.name!r} under {self.store.base_path}")
        response = get_model_status_pb2.GetModelStatusResponse()
        states = get_model_status_pb2.ModelVersionStatus.State
        for status in statuses:
            entry = response.model_version_status.add(version=status.version, state=states.Value(status.state))
            if status.error:
                entry.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                entry.status.error_message = status.error
        return response

    def HandleReloadConfigRequest(self, request, context):
        def refuse():
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               "this server watches one base path; restart it to change the model config")
        return _run("HandleReloadConfigRequest", context, self.errors, refuse)


def build_server(store: ModelStore, host: str, port: int, *, max_workers: int = 16, max_in_flight: int | None = None,
                 errors: ErrorCounts | None = None, max_rows: int = MAX_ROWS) -> tuple[grpc.Server, int]:
    """A started-not-yet gRPC server with both services, bound to ``host:port`` (0: any free port). Predict takes at
    most ``max_rows`` rows per request; ``max_workers`` Predicts compute at once and ``max_in_flight`` (default 4 ×
    max_workers) are admitted (:class:`Admission`). Returns (server, bound port)."""
    errors = errors or ErrorCounts()
    max_in_flight = max_in_flight or 4 * max_workers
    admission = Admission(max_workers, max_in_flight)
    # Threads for every admitted request and SHED_HEADROOM more (idle threads cost little), so that requests beyond
    # the cap reach Admission and are refused (and counted) there; only beyond that does gRPC itself refuse them
    # (RESOURCE_EXHAUSTED too, but uncounted).
    threads = max_in_flight + SHED_HEADROOM
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc"),
                         # No SO_REUSEPORT: a second server on a port in use fails to bind instead of silently
                         # taking half of the connections.
                         options=GRPC_OPTIONS + (("grpc.so_reuseport", 0),),
                         maximum_concurrent_rpcs=threads)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(store, errors, max_rows, admission), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(store, errors), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")  # grpcio raises where older versions returned 0
    except RuntimeError:
        bound = 0
    if not bound:
        raise OSError(f"could not bind gRPC port {host}:{port} (is another server listening on it?)")
    return server, bound


def serve(store: ModelStore, host: str = "127.0.0.1", port: int = 8500, *, max_workers: int = 16,
          max_in_flight: int | None = None, grace_seconds: float = 10.0, max_rows: int = MAX_ROWS) -> int:
    """Serve ``store`` until SIGTERM/SIGINT; then stop accepting, finish in-flight RPCs and return 0.
    Must run in the main thread (signal handlers)."""
    errors = ErrorCounts()
    if host not in LOOPBACK:
        log.warning("binding %s without TLS: anyone who can reach this address can call the model and read its "
                    "answers in the clear; keep it on a private network or serve through TF Serving with "
                    "--ssl_config_file", host)
    server, bound = build_server(store, host, port, max_workers=max_workers, max_in_flight=max_in_flight,
                                 errors=errors, max_rows=max_rows)
    stop = threading.Event()
    received = []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        store.start()
        log.info("serving model %r from %s on %s:%d (gRPC: PredictionService, ModelService)",
                 store.name, store.base_path, host, bound)
        print(f"mtin serve: listening on {host}:{bound}", flush=True)
        while not stop.wait(0.5):
            pass
        log.info("%s received: no new RPCs; finishing those in flight (up to %.0f s)", received[0], grace_seconds)
        server.stop(grace_seconds).wait()
        store.stop(timeout=grace_seconds)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped; failed requests by (method, code): %s", errors.snapshot() or "none")
    return 0
