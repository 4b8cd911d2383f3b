"""gRPC client of an MTIN model behind TF Serving (or the local server of :mod:`mtin_tf.serving.server`).

:class:`MTINClient` scores one user's candidates:

- :meth:`MTINClient.predict` sends raw ids through the ``score_candidates`` signature: the user's histories (oldest
  first) cut to the most recent L and right-padded with 0, once, and the N candidate ids; the model encodes the user
  once. L is read once from GetModelMetadata (the signature's ``clicked_item_ids`` shape [-1, L]) and cached.
- :meth:`MTINClient.recommend`: the k most probable items, best first: of the candidates given (the same query as
  :meth:`MTINClient.predict`), or, without candidates, of the model's whole catalogue through the ``recommend``
  signature (MTIN's interest rows retrieve, MTIN ranks; the user's clicked history is never recommended).
- :meth:`MTINClient.predict_examples` sends serialized tf.Example through ``serving_default``.

Both return a :class:`Prediction`. Calls failing with UNAVAILABLE (server starting, restarting or briefly
unreachable) or RESOURCE_EXHAUSTED (a server shedding load) are retried with exponential backoff, at most
``max_attempts`` times (by default about 13 s in all: long enough for a restart); other errors raise
``grpc.RpcError`` at once. Requests are ``PredictRequest`` protos built with ``tf.make_tensor_proto``; the module-level
builders (:func:`candidate_inputs`, :func:`raw_inputs`, :func:`predict_request`) are what the contract tests check
against the SavedModel.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from mtin_tf import features as F
from mtin_tf.data.examples import to_model_arrays
from mtin_tf.serving import DEFAULT_MODEL_NAME, GRPC_OPTIONS, METADATA_FIELD
from mtin_tf.signatures import DEFAULT_SIGNATURE, EXAMPLES_INPUT, RECOMMEND_SIGNATURE, SCORE_SIGNATURE


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Scores of N candidates from one Predict call.

    click_probability: float32 [N]; logit: float32 [N]; group_weights: float32 [N, s, s], the per-group interest
    weights w_{p,g} = softmax_g(c_p^T W_h r_g) of the clicked-history branch (eq. 8; row p: memory row, column g:
    interest group), the user's: the same for every candidate of one user;
    group_assignment: int32 [N, L], the interest group of each clicked-history item (-1: padding / no group);
    both None for a model without them (the baselines);
    item_ids: int64 [N] the candidates (None for tf.Example requests); model_version: the version that answered;
    interest_row: int32 [N], for items recommended from the catalogue, the interest row (memory row p of the
    clicked-history branch) that retrieved each (None otherwise).
    """
    click_probability: np.ndarray
    logit: np.ndarray
    group_weights: np.ndarray
    group_assignment: np.ndarray
    item_ids: np.ndarray | None
    model_version: int
    interest_row: np.ndarray | None = None

    def top(self, k: int) -> "Prediction":
        """The ``k`` most probable candidates, best first (ties keep request order)."""
        order = np.argsort(-self.click_probability, kind="stable")[:k]
        pick = lambda a: None if a is None else a[order]
        return dataclasses.replace(self, click_probability=pick(self.click_probability), logit=pick(self.logit),
                                   group_weights=pick(self.group_weights),
                                   group_assignment=pick(self.group_assignment), item_ids=pick(self.item_ids),
                                   interest_row=pick(self.interest_row))


def user_inputs(user_id: int, timestamp: int, max_history: int, *, clicked: Sequence[int] = (),
                clicked_times: Sequence[int] = (), browsed: Sequence[int] = (),
                browsed_times: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """One user's row of the user inputs (mtin_tf.features.USER_INPUT_NAMES): int64 [1] user_id and timestamp (the
    impression time), int64 [1, L] histories, the most recent L entries (oldest first), right-padded with 0.
    Each items list must be as long as its times list."""
    history = {F.CLICKED_ITEMS: clicked, F.CLICKED_TIMES: clicked_times,
               F.BROWSED_ITEMS: browsed, F.BROWSED_TIMES: browsed_times}
    for items_key, times_key in F.HISTORY_PAIRS:
        if len(history[items_key]) != len(history[times_key]):
            raise ValueError(f"{items_key} has {len(history[items_key])} entries but {times_key} has "
                             f"{len(history[times_key])}")
    # One example row (candidate and label are placeholders) gives the padded, truncated histories [1, L].
    row = to_model_arrays([{**history, F.USER_ID: user_id, F.ITEM_ID: F.PADDING_ID, F.TIMESTAMP: timestamp,
                            F.LABEL: 0}], max_history)
    return {key: np.asarray(row[key], np.int64) for key in F.USER_INPUT_NAMES}


def _candidate_ids(candidates) -> np.ndarray:
    candidates = np.asarray(candidates, np.int64).reshape(-1)
    if candidates.size == 0:
        raise ValueError("no candidates to score")
    return candidates


def candidate_inputs(user_id: int, candidates: Sequence[int], timestamp: int, max_history: int,
                     **histories) -> dict[str, np.ndarray]:
    """``score_candidates`` inputs for one user and N candidates: :func:`user_inputs` and candidate_ids int64 [1, N].
    ``histories``: clicked, clicked_times, browsed, browsed_times as for :func:`user_inputs`."""
    inputs = user_inputs(user_id, timestamp, max_history, **histories)
    inputs[F.CANDIDATE_IDS] = _candidate_ids(candidates)[None, :]
    return inputs


def recommend_inputs(user_id: int, timestamp: int, k: int, max_history: int, **histories) -> dict[str, np.ndarray]:
    """``recommend`` inputs for one user: :func:`user_inputs` and k int64 [1] (1 ≤ k ≤ the served model's limit,
    mtin_tf.retrieval.MAX_RECOMMEND_K)."""
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    inputs = user_inputs(user_id, timestamp, max_history, **histories)
    inputs[F.RECOMMEND_K] = np.array([int(k)], np.int64)
    return inputs


def raw_inputs(user_id: int, candidates: Sequence[int], timestamp: int, max_history: int,
               **histories) -> dict[str, np.ndarray]:
    """``predict_raw`` inputs for one user and N candidates: int64 [N] user_id, item_id, timestamp and int64 [N, L]
    histories (the user's row of :func:`user_inputs`, repeated per candidate)."""
    candidates = _candidate_ids(candidates)
    inputs = {key: np.repeat(value, len(candidates), axis=0)
              for key, value in user_inputs(user_id, timestamp, max_history, **histories).items()}
    inputs[F.ITEM_ID] = candidates
    return inputs


def set_model_spec(model_spec, model_name: str, *, version: int | None = None, version_label: str | None = None,
                   signature_name: str | None = None) -> None:
    """Fill a ModelSpec proto in place."""
    model_spec.name = model_name
    if version is not None:
        model_spec.version.value = int(version)
    elif version_label:
        model_spec.version_label = version_label
    if signature_name:
        model_spec.signature_name = signature_name


def predict_request(model_name: str, signature_name: str, inputs: Mapping[str, np.ndarray], *,
                    version: int | None = None, version_label: str | None = None) -> predict_pb2.PredictRequest:
    """A PredictRequest with one TensorProto (``tf.make_tensor_proto``) per input array."""
    request = predict_pb2.PredictRequest()
    set_model_spec(request.model_spec, model_name, version=version, version_label=version_label,
                   signature_name=signature_name)
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def prediction_from_response(response, item_ids=None) -> Prediction:
    """A Prediction from a PredictResponse of any of the signatures: per-candidate outputs [N] (or [1, N] from
    score_candidates) flattened to [N]; the user's group outputs ([1, ...] from score_candidates) repeated per
    candidate."""
    out = {key: tf.make_ndarray(response.outputs[key]) for key in response.outputs}
    probability = out[F.OUTPUT_PROBABILITY].reshape(-1)
    n = probability.shape[0]

    def per_candidate(key):
        value = out.get(key)
        return None if value is None else np.broadcast_to(value, (n,) + value.shape[1:])

    prediction = Prediction(probability, out[F.OUTPUT_LOGIT].reshape(-1), per_candidate(F.OUTPUT_GROUP_WEIGHTS),
                            per_candidate(F.OUTPUT_GROUP_ASSIGNMENT), item_ids, int(response.model_spec.version.value))
    if F.OUTPUT_ITEM_IDS in out:  # recommend: the items come with the answer; empty slots (id 0) are dropped
        ids = out[F.OUTPUT_ITEM_IDS].reshape(-1)
        prediction = dataclasses.replace(prediction, item_ids=ids, interest_row=out[F.OUTPUT_INTEREST_ROW].reshape(-1))
        keep = prediction.item_ids != F.PADDING_ID
        pick = lambda a: None if a is None else a[keep]
        prediction = dataclasses.replace(prediction, **{field.name: pick(getattr(prediction, field.name))
                                                        for field in dataclasses.fields(prediction)
                                                        if field.name != "model_version"})
    return prediction


RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)  # what the client retries with backoff


def channel_credentials(root_ca: str | None = None, client_cert: str | None = None,
                        client_key: str | None = None) -> grpc.ChannelCredentials:
    """TLS credentials for :class:`MTINClient` from PEM files: the CA that signed the server's certificate (None: the
    system's roots) and, for mutual TLS, the client's certificate chain and key (both or neither)."""
    if bool(client_cert) != bool(client_key):
        raise ValueError("a client certificate needs its key, and a key its certificate")

    def read(path):
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()
    return grpc.ssl_channel_credentials(read(root_ca), read(client_key), read(client_cert))


class MTINClient:
    """Client of model ``model_name`` at ``target`` ("host:port").

    Args:
      timeout: seconds per RPC attempt.
      version / version_label: pin requests to a model version (default: the newest the server has).
      max_attempts, initial_backoff, max_backoff: retries on UNAVAILABLE and RESOURCE_EXHAUSTED, sleeping
        initial_backoff·2^k seconds (capped at max_backoff) between attempts; the defaults (12, 0.05, 2.0) sleep
        13.15 s in all, which rides through a restart of `mtin serve` (about 10 s: TensorFlow import, load, warm-up).
      credentials: grpc.ChannelCredentials for TLS (:func:`channel_credentials`); None: plaintext.
      metadata: (key, value) pairs sent with every RPC (e.g. an authorization header for a gateway).
    Attributes ``channel``, ``stub`` (PredictionService) and ``model_stub`` (ModelService) are there for calls this
    class has no method for.
    """

    def __init__(self, target: str, model_name: str = DEFAULT_MODEL_NAME, timeout: float = 10.0, *,
                 version: int | None = None, version_label: str | None = None, max_attempts: int = 12,
                 initial_backoff: float = 0.05, max_backoff: float = 2.0,
                 credentials: grpc.ChannelCredentials | None = None, metadata: Sequence[tuple[str, str]] = ()):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.target, self.model_name, self.timeout = target, model_name, timeout
        self.version, self.version_label = version, version_label
        self.max_attempts, self.initial_backoff, self.max_backoff = max_attempts, initial_backoff, max_backoff
        self.call_metadata = tuple(metadata)
        self.channel = (grpc.secure_channel(target, credentials, options=GRPC_OPTIONS) if credentials is not None
                        else grpc.insecure_channel(target, options=GRPC_OPTIONS))
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self._max_history: int | None = None

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "MTINClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, method: str, request):
        """``stub.<method>(request)`` with the timeout and the bounded retries on UNAVAILABLE / RESOURCE_EXHAUSTED."""
        rpc = getattr(self.stub, method)
        for attempt in range(self.max_attempts):
            try:
                return rpc(request, timeout=self.timeout, metadata=self.call_metadata)
            except grpc.RpcError as exc:
                if exc.code() not in RETRIED or attempt == self.max_attempts - 1:
                    raise
                time.sleep(min(self.max_backoff, self.initial_backoff * 2 ** attempt))
        raise AssertionError("unreachable")

    def model_status(self, version: int | None = None) -> get_model_status_pb2.GetModelStatusResponse:
        """ModelService.GetModelStatus of the model (one version, or every version the server knows); no retries."""
        request = get_model_status_pb2.GetModelStatusRequest()
        set_model_spec(request.model_spec, self.model_name, version=version)
        return self.model_stub.GetModelStatus(request, timeout=self.timeout, metadata=self.call_metadata)

    def health(self, service: str = "") -> str:
        """grpc.health.v1 Check of ``service`` ("" = the whole server): "SERVING", "NOT_SERVING", ...; no retries."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout,
                              metadata=self.call_metadata)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_available(self, version: int | None = None, timeout: float = 120.0, poll: float = 0.3) -> int:
        """Poll GetModelStatus until ``version`` (default: any version) is AVAILABLE; returns that version.
        Raises TimeoutError with the last status or error after ``timeout`` seconds."""
        available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        end = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                statuses = self.model_status(version).model_version_status
                ready = [s.version for s in statuses if s.state == available]
                if ready:
                    return max(ready)
                last = str(list(statuses))
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            if time.monotonic() >= end:
                raise TimeoutError(f"model {self.model_name!r} version {version if version is not None else 'any'} "
                                   f"at {self.target} not available after {timeout} s; last: {last}")
            time.sleep(poll)

    def metadata(self) -> get_model_metadata_pb2.GetModelMetadataResponse:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[METADATA_FIELD])
        set_model_spec(request.model_spec, self.model_name, version=self.version, version_label=self.version_label)
        return self.call("GetModelMetadata", request)

    def signature_defs(self) -> dict:
        """{signature name: SignatureDef} of the served version."""
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        self.metadata().metadata[METADATA_FIELD].Unpack(signature_map)
        return dict(signature_map.signature_def)

    @property
    def max_history(self) -> int:
        """L of the served model: dimension 1 of ``score_candidates``' clicked_item_ids (fetched once, then cached)."""
        if self._max_history is None:
            defs = self.signature_defs()
            if SCORE_SIGNATURE not in defs or F.CLICKED_ITEMS not in defs[SCORE_SIGNATURE].inputs:
                raise RuntimeError(f"model {self.model_name!r} at {self.target} has no {SCORE_SIGNATURE!r} signature "
                                   f"with input {F.CLICKED_ITEMS!r} (its signatures: {sorted(defs)}); re-export it "
                                   f"with this version of mtin_tf")
            dims = defs[SCORE_SIGNATURE].inputs[F.CLICKED_ITEMS].tensor_shape.dim
            self._max_history = int(dims[1].size)
        return self._max_history

    def predict(self, user_id: int, candidates: Sequence[int], timestamp: int, *, clicked: Sequence[int] = (),
                clicked_times: Sequence[int] = (), browsed: Sequence[int] = (),
                browsed_times: Sequence[int] = ()) -> Prediction:
        """Click probabilities of ``candidates`` (N item ids) for ``user_id`` at ``timestamp``, given the user's
        clicked and browsed-not-clicked histories (item ids and their timestamps, oldest first). One request; the
        model encodes the user once for all N."""
        candidates = _candidate_ids(candidates)
        inputs = candidate_inputs(user_id, candidates, timestamp, self.max_history, clicked=clicked,
                                  clicked_times=clicked_times, browsed=browsed, browsed_times=browsed_times)
        request = predict_request(self.model_name, SCORE_SIGNATURE, inputs, version=self.version,
                                  version_label=self.version_label)
        return prediction_from_response(self.call("Predict", request), candidates)

    def recommend(self, user_id: int, candidates: Sequence[int] | None = None, timestamp: int | None = None,
                  k: int = 10, **histories) -> Prediction:
        """The ``k`` most probable items for ``user_id`` at ``timestamp``, best first.

        With ``candidates``: the k most probable of them (:meth:`predict`, then :meth:`Prediction.top`). Without:
        of the model's whole catalogue, through the ``recommend`` signature (MTIN only): the user's interest rows
        retrieve, the model ranks, items of the clicked history are left out; the Prediction's ``interest_row``
        says which row retrieved each item. Fewer than k items come back when the catalogue has fewer to offer. A
        model without that signature (the baselines, or an MTIN exported before it existed) answers with the
        server's "signature not found" error (grpc.RpcError), which lists the signatures it has."""
        if timestamp is None:
            raise ValueError("recommend needs the impression time (timestamp)")
        if candidates is not None:
            return self.predict(user_id, candidates, timestamp, **histories).top(k)
        inputs = recommend_inputs(user_id, timestamp, k, self.max_history, **histories)
        request = predict_request(self.model_name, RECOMMEND_SIGNATURE, inputs, version=self.version,
                                  version_label=self.version_label)
        return prediction_from_response(self.call("Predict", request))

    def predict_examples(self, serialized: Sequence[bytes]) -> Prediction:
        """Scores of serialized tf.Example (``mtin_tf.data.examples.serialize_example``) via ``serving_default``."""
        if len(serialized) == 0:
            raise ValueError("no examples to score")
        request = predict_request(self.model_name, DEFAULT_SIGNATURE,
                                  {EXAMPLES_INPUT: np.asarray(list(serialized), dtype=object)},
                                  version=self.version, version_label=self.version_label)
        return prediction_from_response(self.call("Predict", request))
