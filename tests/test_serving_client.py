"""The client's requests against the real SavedModel signatures (what TF Serving checks), its history padding, and
the server-side request checks in process (no gRPC server). The client's retries and the server's version store run
against real `mtin serve` processes in tests/test_serving_server.py and tests/test_serving_resilience.py."""
import grpc
import numpy as np
import pytest
import tensorflow as tf
from serving_support import L, exported

from mtin_tf import features as F
from mtin_tf.data.examples import serialize_example, to_model_arrays
from mtin_tf.serving.client import MTINClient, candidate_inputs, predict_request, raw_inputs
from mtin_tf.serving.errors import ServingError
from mtin_tf.serving.validation import check_inputs, input_specs
from mtin_tf.signatures import DEFAULT_SIGNATURE, EXAMPLES_INPUT, RAW_SIGNATURE, SCORE_SIGNATURE

USER = 14
HISTORIES = {  # one longer than L (the most recent L count), one shorter, clicked and browsed of different lengths
    "long": dict(clicked=[1000 * i for i in range(1, L + 4)], clicked_times=list(range(100, 100 + L + 3)),
                 browsed=[5000, 6000], browsed_times=[50, 60]),
    "empty": dict(),
    "short": dict(clicked=[3000], clicked_times=[7], browsed=[], browsed_times=[]),
}


@pytest.fixture(scope="module")
def loaded():
    model, path = exported(1)
    return model, tf.saved_model.load(path)


def _assert_matches_signature(request, signature):
    """What TF Serving checks before running a signature: the same input names, dtypes, ranks and fixed dims."""
    args, specs = signature.structured_input_signature
    assert args == ()
    assert set(request.inputs) == set(specs)
    for name, spec in specs.items():
        proto = request.inputs[name]
        assert tf.dtypes.as_dtype(proto.dtype) == spec.dtype, name
        dims = [d.size for d in proto.tensor_shape.dim]
        assert len(dims) == spec.shape.rank, name
        assert all(want is None or want == got for want, got in zip(spec.shape.as_list(), dims)), (name, dims)


@pytest.mark.parametrize("history", sorted(HISTORIES))
def test_raw_request_matches_predict_raw_signature_and_scores_like_the_model(loaded, history):
    model, saved = loaded
    candidates = [2000, 7000, 40000]
    inputs = raw_inputs(USER, candidates, 10_000, L, **HISTORIES[history])
    request = predict_request("mtin", RAW_SIGNATURE, inputs, version=1)
    _assert_matches_signature(request, saved.signatures[RAW_SIGNATURE])
    assert request.model_spec.signature_name == RAW_SIGNATURE and request.model_spec.version.value == 1

    # The same rows as one tf.Example per candidate through the data pipeline's own padding (most recent L kept).
    h = HISTORIES[history]
    examples = [{F.USER_ID: USER, F.ITEM_ID: c, F.TIMESTAMP: 10_000, F.LABEL: 0,
                 F.CLICKED_ITEMS: h.get("clicked", []), F.CLICKED_TIMES: h.get("clicked_times", []),
                 F.BROWSED_ITEMS: h.get("browsed", []), F.BROWSED_TIMES: h.get("browsed_times", [])}
                for c in candidates]
    want = to_model_arrays(examples, L)
    for name in F.MODEL_INPUT_NAMES:
        np.testing.assert_array_equal(inputs[name], want[name], err_msg=name)
    decoded = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    served = saved.signatures[RAW_SIGNATURE](**{k: tf.constant(v) for k, v in decoded.items()})
    keras = model({k: want[k] for k in F.MODEL_INPUT_NAMES})
    np.testing.assert_allclose(served[F.OUTPUT_PROBABILITY].numpy(), keras[F.OUTPUT_PROBABILITY].numpy(), atol=1e-5)
    if history == "long":
        assert inputs[F.CLICKED_ITEMS][0, -1] == 1000 * (L + 3)  # the newest item survives truncation


@pytest.mark.parametrize("history", sorted(HISTORIES))
def test_candidates_request_matches_score_candidates_and_scores_like_predict_raw(loaded, history):
    model, saved = loaded
    candidates = [2000, 7000, 40000, 123]  # 123 is no item: scored from the unknown-item embedding, as in the model
    inputs = candidate_inputs(USER, candidates, 10_000, L, **HISTORIES[history])
    request = predict_request("mtin", SCORE_SIGNATURE, inputs)
    _assert_matches_signature(request, saved.signatures[SCORE_SIGNATURE])
    rows = raw_inputs(USER, candidates, 10_000, L, **HISTORIES[history])
    for name in F.USER_INPUT_NAMES:  # the user's row once, where predict_raw repeats it per candidate
        np.testing.assert_array_equal(np.repeat(inputs[name], len(candidates), axis=0), rows[name], err_msg=name)
    served = saved.signatures[SCORE_SIGNATURE](**{k: tf.constant(v) for k, v in inputs.items()})
    per_row = saved.signatures[RAW_SIGNATURE](**{k: tf.constant(v) for k, v in rows.items()})
    keras = model(rows)
    assert served[F.OUTPUT_LOGIT].shape == (1, len(candidates))
    for key in (F.OUTPUT_LOGIT, F.OUTPUT_PROBABILITY):
        np.testing.assert_allclose(served[key].numpy()[0], per_row[key].numpy(), atol=1e-5)
        np.testing.assert_allclose(served[key].numpy()[0], keras[key].numpy(), atol=1e-5)
    np.testing.assert_allclose(served[F.OUTPUT_GROUP_WEIGHTS].numpy()[0], keras[F.OUTPUT_GROUP_WEIGHTS].numpy()[0],
                               atol=1e-5)
    np.testing.assert_array_equal(served[F.OUTPUT_GROUP_ASSIGNMENT].numpy()[0],
                                  keras[F.OUTPUT_GROUP_ASSIGNMENT].numpy()[0])


def test_examples_request_matches_serving_default_signature(loaded):
    _, saved = loaded
    ex = {F.USER_ID: USER, F.ITEM_ID: 2000, F.TIMESTAMP: 5, F.LABEL: 0, F.CLICKED_ITEMS: [1000], F.CLICKED_TIMES: [1],
          F.BROWSED_ITEMS: [], F.BROWSED_TIMES: []}
    request = predict_request("mtin", DEFAULT_SIGNATURE, {EXAMPLES_INPUT: np.array([serialize_example(ex)] * 2,
                                                                                    dtype=object)})
    _assert_matches_signature(request, saved.signatures[DEFAULT_SIGNATURE])


def test_raw_inputs_rejects_mismatched_history_lengths():
    with pytest.raises(ValueError, match="clicked_timestamps"):
        raw_inputs(USER, [1], 0, L, clicked=[1, 2], clicked_times=[1])


def test_client_refuses_an_empty_candidate_list_before_any_rpc():
    # Retries, backoff and version loading run against real `mtin serve` processes: tests/test_serving_resilience.py.
    with MTINClient("127.0.0.1:1") as client, pytest.raises(ValueError, match="no candidates"):
        client.predict(USER, [], 0)
    with pytest.raises(ValueError, match="max_attempts"):
        MTINClient("127.0.0.1:1", max_attempts=0)


# -- request checks of the server (mtin_tf.serving.validation), on the real signature ----------------------------
def _raw_protos(n=3, **changes):
    inputs = raw_inputs(USER, list(range(1000, 1000 * (max(n, 1) + 1), 1000)), 10, L, **HISTORIES["short"])
    inputs = {k: v[:n] for k, v in inputs.items()}
    inputs.update(changes)
    return predict_request("mtin", RAW_SIGNATURE, {k: v for k, v in inputs.items() if v is not None}).inputs


@pytest.mark.parametrize("changes, words", [
    ({F.BROWSED_TIMES: None}, ["missing input 'browsed_timestamps'", "int64 [-1, 8]"]),
    ({"surprise": np.zeros(3, np.int64)}, ["'surprise' is not an input", "predict_raw"]),
    ({F.USER_ID: np.zeros(3, np.int32)}, ["'user_id'", "expected dtype int64, got int32"]),
    ({F.CLICKED_ITEMS: np.zeros(3, np.int64)}, ["'clicked_item_ids'", "expected shape [-1, 8] (rank 2)",
                                                "got [3] (rank 1)"]),
    ({F.BROWSED_ITEMS: np.zeros((3, L + 1), np.int64)}, ["'browsed_item_ids'", "got [3, 9]"]),
    ({F.ITEM_ID: np.zeros(4, np.int64)}, ["disagree on the batch size", "item_id has 4", "user_id has 3"]),
])
def test_validation_names_the_input_and_the_expected_and_received(loaded, changes, words):
    specs = input_specs(loaded[1].signatures[RAW_SIGNATURE])
    with pytest.raises(ServingError) as info:
        check_inputs(_raw_protos(**changes), specs, RAW_SIGNATURE)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    for word in words:
        assert word in info.value.message


def test_validation_rejects_an_empty_batch_and_accepts_a_good_one(loaded):
    specs = input_specs(loaded[1].signatures[RAW_SIGNATURE])
    with pytest.raises(ServingError, match="empty batch"):
        check_inputs(_raw_protos(n=0), specs, RAW_SIGNATURE)
    no_candidates = candidate_inputs(USER, [1000], 10, L)
    no_candidates[F.CANDIDATE_IDS] = np.zeros([1, 0], np.int64)
    with pytest.raises(ServingError, match=r"'candidate_ids' is empty \(shape \[1, 0\]\)"):
        check_inputs(predict_request("mtin", SCORE_SIGNATURE, no_candidates).inputs,
                     input_specs(loaded[1].signatures[SCORE_SIGNATURE]), SCORE_SIGNATURE)
    arrays = check_inputs(_raw_protos(n=3), specs, RAW_SIGNATURE)
    assert arrays[F.CLICKED_ITEMS].shape == (3, L) and arrays[F.USER_ID].dtype == np.int64


def test_validation_caps_rows_and_checks_the_payload_against_the_declared_shape(loaded):
    specs = input_specs(loaded[1].signatures[RAW_SIGNATURE])
    with pytest.raises(ServingError, match=r"'\w+' of signature 'predict_raw' has 5 rows; this server takes at most 4"):
        check_inputs(_raw_protos(n=5), specs, RAW_SIGNATURE, max_rows=4)
    assert check_inputs(_raw_protos(n=4), specs, RAW_SIGNATURE, max_rows=4)[F.ITEM_ID].shape == (4,)
    # TensorFlow would fill a declared [1 000 000] from one value (8 MB here, gigabytes for a wider shape).
    broadcast = _raw_protos(n=3)
    broadcast[F.ITEM_ID].CopyFrom(tf.make_tensor_proto(7, dtype=tf.int64, shape=[1_000_000]))
    assert len(broadcast[F.ITEM_ID].int64_val) == 1
    with pytest.raises(ServingError, match=r"'item_id' .* declares shape \[1000000\] \(1000000 values\) but "
                                           r"carries 1"):
        check_inputs(broadcast, specs, RAW_SIGNATURE, max_rows=2_000_000)
    # The same for packed bytes (tensor_content): a history of 3 × 8 declared, 23 values sent.
    packed = _raw_protos(n=3)
    proto = packed[F.CLICKED_ITEMS]
    assert proto.tensor_content
    proto.tensor_content = proto.tensor_content[:-8]
    with pytest.raises(ServingError, match=r"'clicked_item_ids' .* declares shape \[3, 8\] \(24 values\) but "
                                           r"carries 23"):
        check_inputs(packed, specs, RAW_SIGNATURE)


def test_a_missing_base_path_is_logged_and_named_in_unavailable(tmp_path, caplog):
    from mtin_tf.serving.model_store import ModelStore

    store = ModelStore("mtin", str(tmp_path / "not-yet"))
    with caplog.at_level("WARNING", logger="mtin_tf.serving.model_store"):
        assert store.poll() is False
        store.poll()
    assert sum("does not exist" in r.getMessage() for r in caplog.records) == 1  # once, not every poll
    with pytest.raises(ServingError) as info:
        store.get("mtin")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and "which does not exist" in info.value.message
    (tmp_path / "not-yet").mkdir()
    store.poll()
    with pytest.raises(ServingError, match="no version has loaded"):
        store.get("mtin")


# -- admission of the server (mtin_tf.serving.server.Admission): load shedding and deadlines --------------------
class _Deadline:
    """What Admission reads of a grpc.ServicerContext: the seconds left before the client's deadline (None: none)."""

    def __init__(self, remaining):
        self.remaining = remaining

    def time_remaining(self):
        return self.remaining


def test_admission_sheds_beyond_the_cap_and_drops_requests_whose_deadline_passes_before_compute():
    import threading
    import time

    from mtin_tf.serving.server import Admission

    admission = Admission(workers=1, max_in_flight=2)
    computing, release = threading.Event(), threading.Event()

    def hold_the_worker():
        with admission.admit(_Deadline(None)):
            computing.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_worker)
    holder.start()
    assert computing.wait(10)
    waited = {}

    def wait_for_the_worker():
        start = time.monotonic()
        try:
            with admission.admit(_Deadline(0.5)):
                waited["ran"] = True
        except ServingError as exc:
            waited["error"], waited["seconds"] = exc, time.monotonic() - start

    waiter = threading.Thread(target=wait_for_the_worker)
    waiter.start()
    deadline = time.monotonic() + 5
    while admission.in_flight < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert admission.in_flight == 2
    with pytest.raises(ServingError) as shed:  # a third request while two are in flight: refused at once
        with admission.admit(_Deadline(30)):
            pass
    assert shed.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-in-flight 2" in shed.value.message
    waiter.join(10)
    assert "ran" not in waited and waited["error"].code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "waiting for one of 1 workers" in waited["error"].message and 0.4 < waited["seconds"] < 5
    release.set()
    holder.join(10)
    with pytest.raises(ServingError, match="deadline passed before the request ran"):
        with admission.admit(_Deadline(0.0)):
            pass
    assert admission.in_flight == 0
    with admission.admit(_Deadline(5)):  # free again: admitted and computed
        assert admission.in_flight == 1
    with pytest.raises(ValueError, match="workers <= max_in_flight"):
        Admission(workers=4, max_in_flight=2)
