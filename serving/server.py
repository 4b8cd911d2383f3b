"""A local server speaking TF Serving's gRPC API over a versioned SavedModel directory.

Services (tensorflow_serving/apis):
- ``tensorflow.serving.PredictionService``: ``Predict`` runs the named signature of the loaded SavedModel
  (``tf.saved_model.load``; never a second model implementation), ``GetModelMetadata`` returns the SignatureDefs;
  ``Classify``, ``Regress`` and ``MultiInference`` answer UNIMPLEMENTED (MTIN serves Predict signatures only).
- ``tensorflow.serving.ModelService``: ``GetModelStatus`` reports each version's state; ``HandleReloadConfigRequest``
  answers UNIMPLEMENTED.

Status codes follow TF Serving: unknown model, version or label → NOT_FOUND; nothing loaded yet → UNAVAILABLE; a
request that does not match the signature or its limits (see :mod:`mtin_tf.serving.validation`), an unknown signature, a
malformed tf.Example → INVALID_ARGUMENT; more requests in flight than admitted → RESOURCE_EXHAUSTED; a deadline that
passes before the request runs → DEADLINE_EXCEEDED (dropped before compute, :class:`Admission`); anything else →
INTERNAL. Every error is counted and logged (:class:`ErrorCounts`; at most one line per second for each (method,
status), with the number of lines held back) and the server keeps serving.

Operability:
- ``grpc.health.v1.Health`` (the standard health service that Kubernetes' gRPC probes and ``grpc_health_probe``
  call): NOT_SERVING until a version is AVAILABLE and again from SIGTERM on, SERVING in between, for the service
  names "", ``tensorflow.serving.PredictionService`` and ``tensorflow.serving.ModelService``.
- Prometheus metrics (``metrics_port``; :class:`ServingMetrics`): requests by method and status code, their latency,
  Predict rows, requests in flight and the newest AVAILABLE model version.
- TLS and mutual TLS (``credentials``, from :func:`server_credentials`): the same certificate, key and client CA as
  TF Serving's ``--ssl_config_file``.

:func:`serve` runs until SIGTERM or SIGINT; then health turns NOT_SERVING while RPCs are still answered for
``drain_seconds`` (so that probes and load balancers move traffic away first), then it stops accepting RPCs, lets
those in flight finish (up to ``grace_seconds``) and returns 0.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import signal
import threading
import time

import grpc
import prometheus_client
import tensorflow as tf
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from mtin_tf import features as F
from mtin_tf.serving import GRPC_OPTIONS, MAX_ROWS, METADATA_FIELD
from mtin_tf.serving.errors import ServingError
from mtin_tf.serving.model_store import ModelStore
from mtin_tf.serving.validation import check_inputs, check_output_filter, input_specs

log = logging.getLogger(__name__)

SHED_HEADROOM = 128  # RPCs beyond --max-in-flight that still reach the server's own admission (and its counts)
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY  # run when the request names no signature


HEALTH_SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


class ErrorCounts:
    """Thread-safe counts of failed RPCs by (method, status code name), and the rate limit of their log lines: at
    most one line per ``log_interval`` seconds for each (method, code), naming how many were held back since."""

    def __init__(self, log_interval: float = 1.0):
        self._counts = collections.Counter()
        self._lock = threading.Lock()
        self.log_interval = float(log_interval)
        self._last_logged: dict[tuple[str, str], float] = {}
        self._held = collections.Counter()

    def add(self, method: str, code: grpc.StatusCode) -> int:
        with self._lock:
            self._counts[(method, code.name)] += 1
            return sum(self._counts.values())

    def log_failure(self, method: str, error: ServingError, total: int) -> None:
        """One WARNING for this failure, unless the same (method, code) was logged less than log_interval ago."""
        key, now = (method, error.code.name), time.monotonic()
        with self._lock:
            if now - self._last_logged.get(key, -float("inf")) < self.log_interval:
                self._held[key] += 1
                return
            self._last_logged[key] = now
            held, self._held[key] = self._held[key], 0
        log.warning("%s -> %s (%d failed requests so far%s)", method, error, total,
                    f"; {held} similar lines held back" if held else "")

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)


class ServingMetrics:
    """The server's Prometheus metrics, on a registry of its own (``registry``):

      mtin_serving_requests_total{method, code}   counter: RPCs answered, by method and status code name (OK too)
      mtin_serving_request_seconds{method}        histogram: time from the RPC's arrival to its answer
      mtin_serving_predict_rows_total             counter: rows (dimension 0 of the inputs) of successful Predicts
      mtin_serving_in_flight                      gauge: Predict requests admitted and not yet answered
      mtin_serving_model_version                  gauge: the newest AVAILABLE version (0: none)
      mtin_serving_unknown_ids_total{kind}        counter: user / item ids in raw-tensor requests that the served
                                                  version has no row for (scored from its out-of-vocabulary row)
    """

    def __init__(self):
        self.registry = prometheus_client.CollectorRegistry()
        self.requests = prometheus_client.Counter("mtin_serving_requests", "RPCs answered, by method and status code",
                                                  ["method", "code"], registry=self.registry)
        self.latency = prometheus_client.Histogram("mtin_serving_request_seconds", "RPC latency in seconds",
                                                   ["method"], registry=self.registry,
                                                   buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5,
                                                            5, 10, 30))
        self.rows = prometheus_client.Counter("mtin_serving_predict_rows", "rows of successful Predict requests",
                                              registry=self.registry)
        self.in_flight = prometheus_client.Gauge("mtin_serving_in_flight", "Predict requests admitted, unanswered",
                                                 registry=self.registry)
        self.unknown_ids = prometheus_client.Counter("mtin_serving_unknown_ids",
                                                     "request ids the served version has no row for",
                                                     ["kind"], registry=self.registry)
        self.model_version = prometheus_client.Gauge("mtin_serving_model_version",
                                                     "newest AVAILABLE model version (0: none)",
                                                     registry=self.registry)

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.requests.labels(method, code.name).inc()
        self.latency.labels(method).observe(seconds)


class Admission:
    """Load shedding and deadlines for Predict: at most ``workers`` requests compute at once; at most ``max_in_flight``
    are admitted (computing or waiting for a worker), beyond that a request is refused at once with
    RESOURCE_EXHAUSTED; a request whose deadline has passed, or passes while it waits, is dropped before any compute
    with DEADLINE_EXCEEDED. Both are ServingErrors, so _run counts and logs them like any other failure."""

    def __init__(self, workers: int, max_in_flight: int, metrics: ServingMetrics | None = None):
        self.metrics = metrics
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
            if self.metrics:
                self.metrics.in_flight.set(self.in_flight)
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
                if self.metrics:
                    self.metrics.in_flight.set(self.in_flight)


def _run(method: str, context, errors: ErrorCounts, body, metrics: ServingMetrics | None = None):
    """Run ``body()``; turn a failure into the RPC's status (logged and counted) instead of an exception. With
    ``metrics``, every answer is counted by status code and timed."""
    start = time.monotonic()
    try:
        result = body()
        if metrics:
            metrics.observe(method, grpc.StatusCode.OK, time.monotonic() - start)
        return result
    except ServingError as exc:
        error = exc
    except tf.errors.InvalidArgumentError as exc:  # e.g. a malformed serialized tf.Example
        error = ServingError(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
    except Exception as exc:  # noqa: BLE001 - the server must survive anything a request triggers
        log.exception("%s failed unexpectedly", method)
        error = ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    total = errors.add(method, error.code)
    errors.log_failure(method, error, total)
    if metrics:
        metrics.observe(method, error.code, time.monotonic() - start)
    context.abort(error.code, error.message)


ID_INPUTS = {"user": (F.USER_ID,), "item": (F.ITEM_ID, F.CANDIDATE_IDS, F.CLICKED_ITEMS, F.BROWSED_ITEMS)}


def unknown_ids(arrays: dict, known_ids: dict) -> dict:
    """{"user"|"item": how many ids of the request's raw inputs (padding 0 aside) are not in ``known_ids``} for the
    kinds the version lists (mtin_tf.serving.model_store.read_known_ids)."""
    import numpy as np

    counts = {}
    for kind, names in ID_INPUTS.items():
        if kind not in known_ids:
            continue
        values = [np.asarray(arrays[name]).reshape(-1) for name in names if name in arrays]
        values = np.concatenate(values) if values else np.zeros([0], np.int64)
        values = values[values != F.PADDING_ID]
        keys = known_ids[kind]  # sorted: a binary search per id, not a sort of the whole vocabulary per request
        found = keys[np.minimum(np.searchsorted(keys, values), max(len(keys) - 1, 0))] == values if len(keys) else \
            np.zeros(values.shape, bool)
        counts[kind] = int((~found).sum())
    return counts


def _version_of(model_spec) -> int | None:
    return model_spec.version.value if model_spec.HasField("version") else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata over a :class:`ModelStore`."""

    def __init__(self, store: ModelStore, errors: ErrorCounts, max_rows: int = MAX_ROWS,
                 admission: Admission | None = None, metrics: ServingMetrics | None = None):
        self.store = store
        self.errors = errors
        self.metrics = metrics
        self.max_rows = int(max_rows)
        self.admission = admission or Admission(16, 64)

    def _resolve(self, model_spec):
        return self.store.get(model_spec.name, _version_of(model_spec), model_spec.version_label or None)

    def Predict(self, request, context):
        def admitted():
            with self.admission.admit(context):
                return self._predict(request)
        return _run("Predict", context, self.errors, admitted, self.metrics)

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
        if self.metrics:
            self.metrics.rows.inc(next(iter(arrays.values())).shape[0] if arrays else 0)
            for kind, count in unknown_ids(arrays, servable.known_ids).items():
                self.metrics.unknown_ids.labels(kind).inc(count)
        return response

    def GetModelMetadata(self, request, context):
        return _run("GetModelMetadata", context, self.errors, lambda: self._metadata(request), self.metrics)

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
        return _run(method, context, self.errors, refuse, self.metrics)

    def Classify(self, request, context):
        return self._unimplemented("Classify", context)

    def Regress(self, request, context):
        return self._unimplemented("Regress", context)

    def MultiInference(self, request, context):
        return self._unimplemented("MultiInference", context)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus over a :class:`ModelStore`."""

    def __init__(self, store: ModelStore, errors: ErrorCounts, metrics: ServingMetrics | None = None):
        self.store = store
        self.errors = errors
        self.metrics = metrics

    def GetModelStatus(self, request, context):
        return _run("GetModelStatus", context, self.errors, lambda: self._status(request), self.metrics)

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
        return _run("HandleReloadConfigRequest", context, self.errors, refuse, self.metrics)


def server_credentials(cert_path: str, key_path: str, client_ca_path: str | None = None) -> grpc.ServerCredentials:
    """TLS credentials from PEM files: the server's certificate chain and private key; with ``client_ca_path``,
    mutual TLS (every client must present a certificate signed by that CA), as TF Serving's ssl_config
    (server_cert, server_key, custom_ca, client_verify)."""
    def read(path):
        with open(path, "rb") as f:
            return f.read()
    ca = read(client_ca_path) if client_ca_path else None
    return grpc.ssl_server_credentials([(read(key_path), read(cert_path))], root_certificates=ca,
                                       require_client_auth=ca is not None)


def set_health(servicer: health.HealthServicer, serving: bool) -> None:
    """Every name of HEALTH_SERVICES SERVING or NOT_SERVING."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in HEALTH_SERVICES:
        servicer.set(service, status)


def build_server(store: ModelStore, host: str, port: int, *, max_workers: int = 16, max_in_flight: int | None = None,
                 errors: ErrorCounts | None = None, max_rows: int = MAX_ROWS, metrics: ServingMetrics | None = None,
                 health_servicer: health.HealthServicer | None = None,
                 credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, int]:
    """A started-not-yet gRPC server with both services (and ``health_servicer`` when given), bound to ``host:port``
    (0: any free port), over TLS with ``credentials``. Predict takes at most ``max_rows`` rows per request;
    ``max_workers`` Predicts compute at once and ``max_in_flight`` (default 4 × max_workers) are admitted
    (:class:`Admission`). Returns (server, bound port)."""
    errors = errors or ErrorCounts()
    max_in_flight = max_in_flight or 4 * max_workers
    admission = Admission(max_workers, max_in_flight, metrics)
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
        PredictionServicer(store, errors, max_rows, admission, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(store, errors, metrics), server)
    if health_servicer is not None:
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{host}:{port}"
    try:  # grpcio raises where older versions returned 0
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise OSError(f"could not bind gRPC port {address} (is another server listening on it?)")
    return server, bound


def serve(store: ModelStore, host: str = "127.0.0.1", port: int = 8500, *, max_workers: int = 16,
          max_in_flight: int | None = None, grace_seconds: float = 10.0, max_rows: int = MAX_ROWS,
          credentials: grpc.ServerCredentials | None = None, metrics_port: int | None = None,
          drain_seconds: float = 2.0, error_log_interval: float = 1.0) -> int:
    """Serve ``store`` until SIGTERM/SIGINT; then report NOT_SERVING for ``drain_seconds`` while still answering,
    stop accepting, finish in-flight RPCs and return 0.
    ``credentials``: TLS (:func:`server_credentials`); ``metrics_port``: serve Prometheus metrics over HTTP on
    ``host:metrics_port`` (0: any free port; the address is printed); ``error_log_interval``: the log rate limit
    of :class:`ErrorCounts`. Must run in the main thread (signal handlers)."""
    errors = ErrorCounts(error_log_interval)
    if host not in LOOPBACK and credentials is None:
        log.warning("binding %s without TLS: anyone who can reach this address can call the model and read its "
                    "answers in the clear; keep it on a private network or pass --ssl-cert and --ssl-key", host)
    metrics = ServingMetrics()
    health_servicer = health.HealthServicer()
    set_health(health_servicer, False)
    server, bound = build_server(store, host, port, max_workers=max_workers, max_in_flight=max_in_flight,
                                 errors=errors, max_rows=max_rows, metrics=metrics, health_servicer=health_servicer,
                                 credentials=credentials)
    stop = threading.Event()
    received = []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    metrics_server = None
    try:
        if metrics_port is not None:
            metrics_server, _ = prometheus_client.start_http_server(metrics_port, addr=host, registry=metrics.registry)
            print(f"mtin serve: metrics on http://{host}:{metrics_server.server_port}/metrics", flush=True)
        server.start()
        store.start()
        log.info("serving model %r from %s on %s:%d (gRPC: PredictionService, ModelService, Health; %s)",
                 store.name, store.base_path, host, bound, "TLS" if credentials else "plaintext")
        print(f"mtin serve: listening on {host}:{bound}", flush=True)
        while not stop.wait(0.5):
            available = [s.version for s in store.statuses() if s.state == "AVAILABLE"]
            set_health(health_servicer, bool(available))
            metrics.model_version.set(max(available, default=0))
        health_servicer.enter_graceful_shutdown()  # NOT_SERVING from now on
        log.info("%s received: health NOT_SERVING; still answering for %.1f s, then no new RPCs and up to %.0f s for "
                 "those in flight", received[0], drain_seconds, grace_seconds)
        time.sleep(max(0.0, drain_seconds))
        server.stop(grace_seconds).wait()
        store.stop(timeout=grace_seconds)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if metrics_server is not None:
            metrics_server.shutdown()
    log.info("stopped; failed requests by (method, code): %s", errors.snapshot() or "none")
    return 0
