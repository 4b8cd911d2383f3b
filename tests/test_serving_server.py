"""End to end through a real `mtin serve` subprocess: scores equal the Keras model's for both signatures, the CLI,
bad requests get TF Serving's status codes and the server keeps serving, version / label selection, a new version
rolls over under 32 concurrent clients without a failed request, and SIGTERM stops the process with exit code 0
after the request in flight."""
import json
import threading
import time

import grpc
import numpy as np
import pytest
from serving_support import L, exported, install_version, start_server
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    prediction_service_pb2_grpc,
)

from mtin_tf import features as F
from mtin_tf.cli import main as mtin
from mtin_tf.data.examples import serialize_example
from mtin_tf.serving.client import MTINClient, candidate_inputs, predict_request, prediction_from_response, raw_inputs
from mtin_tf.signatures import DEFAULT_SIGNATURE, EXAMPLES_INPUT, RAW_SIGNATURE, SCORE_SIGNATURE

USER = 21
HISTORY = dict(clicked=[3000, 9000, 12000, 5000], clicked_times=[100, 200, 300, 400],
               browsed=[1000 * i for i in range(10, 10 + L + 2)], browsed_times=list(range(10, 10 + L + 2)))
CANDIDATES = [2000, 4000, 17000, 33000, 40000, 8000]
NOW = 1_000


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two `mtin serve` processes, started together while the test process exports the models:
    "main" over versions 1 (model seed 1) and 2 (seed 2), serving both, labels stable=1 and canary=2;
    "rollover" over version 1 with the default policy (newest version only); its test installs version 2."""
    bases = {name: str(tmp_path_factory.mktemp(name)) for name in ("main", "rollover")}
    procs = {"main": start_server(bases["main"], "--num-versions", "2", "--version-labels", "stable=1,canary=2"),
             "rollover": start_server(bases["rollover"])}
    try:
        for name, versions in (("main", (1, 2)), ("rollover", (1,))):
            for version in versions:
                install_version(version, bases[name], version)
            procs[name].base = bases[name]
        for name, version in (("main", 2), ("main", 1), ("rollover", 1)):
            procs[name].wait_available(version)
        yield procs
    finally:
        for proc in procs.values():
            proc.kill()


@pytest.fixture(scope="module")
def server(servers):
    return servers["main"]


def _keras(seed, inputs):
    model, _ = exported(seed)
    return {k: v.numpy() for k, v in model(inputs).items()}


def _assert_close(prediction, want):
    np.testing.assert_allclose(prediction.click_probability, want[F.OUTPUT_PROBABILITY], atol=1e-5)
    np.testing.assert_allclose(prediction.logit, want[F.OUTPUT_LOGIT], atol=1e-5)
    np.testing.assert_allclose(prediction.group_weights, want[F.OUTPUT_GROUP_WEIGHTS], atol=1e-5)
    np.testing.assert_array_equal(prediction.group_assignment, want[F.OUTPUT_GROUP_ASSIGNMENT])


def test_every_signature_scores_like_the_in_process_keras_model(server):
    inputs = raw_inputs(USER, CANDIDATES, NOW, L, **HISTORY)
    want = _keras(1, inputs)
    with MTINClient(server.target, version=1) as client:
        assert client.max_history == L
        prediction = client.predict(USER, CANDIDATES, NOW, **HISTORY)  # score_candidates: the user encoded once
        assert prediction.model_version == 1
        np.testing.assert_array_equal(prediction.item_ids, CANDIDATES)
        _assert_close(prediction, want)
        assert prediction.group_weights.shape == (len(CANDIDATES), 3, 3)
        by_rows = prediction_from_response(client.call("Predict", predict_request(
            "mtin", RAW_SIGNATURE, inputs, version=1)))  # predict_raw: one row per candidate
        _assert_close(by_rows, want)

        examples = [serialize_example({F.USER_ID: USER, F.ITEM_ID: c, F.TIMESTAMP: NOW, F.LABEL: 0,
                                       F.CLICKED_ITEMS: HISTORY["clicked"], F.CLICKED_TIMES: HISTORY["clicked_times"],
                                       F.BROWSED_ITEMS: HISTORY["browsed"], F.BROWSED_TIMES: HISTORY["browsed_times"]})
                    for c in CANDIDATES]
        by_example = client.predict_examples(examples)
        assert by_example.model_version == 1 and by_example.item_ids is None
        _assert_close(by_example, want)


def test_cli_predict_and_recommend(server, capsys):
    query = ["--target", server.target, "--version", "1", "--user", str(USER), "--timestamp", str(NOW),
             "--candidates", ",".join(map(str, CANDIDATES)),
             "--clicked", ",".join(map(str, HISTORY["clicked"])),
             "--clicked-times", ",".join(map(str, HISTORY["clicked_times"])),
             "--browsed", ",".join(map(str, HISTORY["browsed"])),
             "--browsed-times", ",".join(map(str, HISTORY["browsed_times"]))]
    want = _keras(1, raw_inputs(USER, CANDIDATES, NOW, L, **HISTORY))[F.OUTPUT_PROBABILITY]

    assert mtin(["predict", *query]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model_version"] == 1 and doc["user_id"] == USER
    assert [c["item_id"] for c in doc["candidates"]] == CANDIDATES
    np.testing.assert_allclose([c["click_probability"] for c in doc["candidates"]], want, atol=1e-5)
    np.testing.assert_allclose(doc["group_weights"], _keras(1, raw_inputs(USER, CANDIDATES, NOW, L, **HISTORY))[
        F.OUTPUT_GROUP_WEIGHTS][0], atol=1e-5)  # the user's, once

    assert mtin(["recommend", *query, "--top-k", "3"]) == 0
    top = json.loads(capsys.readouterr().out)["candidates"]
    assert [c["item_id"] for c in top] == [CANDIDATES[i] for i in np.argsort(-want, kind="stable")[:3]]

    assert mtin(["predict", *query[:2], "--model-name", "nope", *query[4:]]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_recommend_from_the_catalogue_through_the_client_and_the_cli(server, capsys):
    """Without candidates, `mtin recommend` and MTINClient.recommend answer through the `recommend` signature:
    the items and probabilities of the model's own recommender, the clicked history left out, empty slots dropped."""
    import tensorflow as tf

    from mtin_tf.retrieval import recommender
    from mtin_tf.serving.client import user_inputs

    model, _ = exported(1)
    users = user_inputs(USER, NOW, L, **HISTORY)
    want = recommender(model)({k: tf.constant(v) for k, v in users.items()}, tf.constant([5]),
                              tf.constant(users[F.CLICKED_ITEMS]))
    with MTINClient(server.target, version=1) as client:
        got = client.recommend(USER, timestamp=NOW, k=5, **HISTORY)
        np.testing.assert_array_equal(got.item_ids, want[F.OUTPUT_ITEM_IDS].numpy()[0])
        np.testing.assert_allclose(got.click_probability, want[F.OUTPUT_PROBABILITY].numpy()[0], atol=1e-5)
        np.testing.assert_array_equal(got.interest_row, want[F.OUTPUT_INTEREST_ROW].numpy()[0])
        assert not set(got.item_ids.tolist()) & set(HISTORY["clicked"])
        # 40 items, 4 clicked: asked for 1000, 36 come back (the empty slots are dropped), each once.
        everything = client.recommend(USER, timestamp=NOW, k=1000, **HISTORY)
        assert len(everything.item_ids) == len(set(everything.item_ids.tolist())) == 36
        with pytest.raises(grpc.RpcError) as error:  # k over the served limit: the model's own message
            client.recommend(USER, timestamp=NOW, k=1001, **HISTORY)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "k must be at most" in error.value.details()

    query = ["--target", server.target, "--version", "1", "--user", str(USER), "--timestamp", str(NOW),
             "--clicked", ",".join(map(str, HISTORY["clicked"])),
             "--clicked-times", ",".join(map(str, HISTORY["clicked_times"])), "--top-k", "5"]
    assert mtin(["recommend", *query]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["item_id"] for c in doc["candidates"]] != []
    assert all(c["interest_row"] in range(3) for c in doc["candidates"]) and len(doc["candidates"]) == 5


def _good_request(**spec):
    return predict_request("mtin", RAW_SIGNATURE, raw_inputs(USER, CANDIDATES, NOW, L, **HISTORY), **spec)


def _without(request, name):
    del request.inputs[name]
    return request


def _replace(request, name, value):
    import tensorflow as tf

    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def _renamed(request, name):
    request.model_spec.name = name
    return request


def _signature(request, name):
    request.model_spec.signature_name = name
    return request


def _declared_beyond_payload():
    # 100 M candidates declared, one value sent: TensorFlow would fill 800 MB from a message of a few hundred bytes.
    import tensorflow as tf

    request = predict_request("mtin", SCORE_SIGNATURE, candidate_inputs(USER, CANDIDATES, NOW, L, **HISTORY))
    request.inputs[F.CANDIDATE_IDS].CopyFrom(tf.make_tensor_proto(7, dtype=tf.int64, shape=[1, 100_000_000]))
    return request


def _misaligned_example():
    import tensorflow as tf

    example = tf.train.Example()
    for spec in F.MODEL_INPUTS:
        example.features.feature[spec.name].int64_list.value.extend([1] if not spec.is_history else [])
    example.features.feature[F.CLICKED_ITEMS].int64_list.value.extend([3000, 9000, 12000])
    example.features.feature[F.CLICKED_TIMES].int64_list.value.extend([100, 200])
    return predict_request("mtin", DEFAULT_SIGNATURE,
                           {EXAMPLES_INPUT: np.array([example.SerializeToString()], dtype=object)})


BAD_REQUESTS = {
    "declared shape beyond its payload": (_declared_beyond_payload, grpc.StatusCode.INVALID_ARGUMENT,
                                          ["'candidate_ids'", "declares shape [1, 100000000]", "carries 1"]),
    "more rows than --max-rows": (lambda: predict_request("mtin", RAW_SIGNATURE, raw_inputs(
        USER, list(range(1, 1026)), NOW, L, **HISTORY)), grpc.StatusCode.INVALID_ARGUMENT,
        ["has 1025 rows", "at most 1024", "--max-rows"]),
    "tf.Example history and timestamps of different lengths": (
        _misaligned_example, grpc.StatusCode.INVALID_ARGUMENT,
        ["tf.Example features clicked_item_ids and clicked_timestamps differ in length"]),
    "missing input": (lambda: _without(_good_request(), F.CLICKED_TIMES), grpc.StatusCode.INVALID_ARGUMENT,
                      ["missing input 'clicked_timestamps'"]),
    "wrong dtype": (lambda: _replace(_good_request(), F.ITEM_ID, np.array(CANDIDATES, np.float32)),
                    grpc.StatusCode.INVALID_ARGUMENT, ["'item_id'", "expected dtype int64, got float32"]),
    "wrong rank": (lambda: _replace(_good_request(), F.BROWSED_ITEMS, np.zeros(len(CANDIDATES), np.int64)),
                   grpc.StatusCode.INVALID_ARGUMENT, ["'browsed_item_ids'", "expected shape [-1, 8]", "(rank 1)"]),
    "wrong L": (lambda: _replace(_good_request(), F.CLICKED_ITEMS, np.zeros((len(CANDIDATES), L + 2), np.int64)),
                grpc.StatusCode.INVALID_ARGUMENT, ["'clicked_item_ids'", "got [6, 10]"]),
    "unknown model": (lambda: _renamed(_good_request(), "other"), grpc.StatusCode.NOT_FOUND, ["'other'"]),
    "unknown version": (lambda: _good_request(version=999), grpc.StatusCode.NOT_FOUND, ["version 999"]),
    "unknown label": (lambda: _good_request(version_label="beta"), grpc.StatusCode.NOT_FOUND, ["'beta'"]),
    "empty candidates": (lambda: predict_request("mtin", RAW_SIGNATURE, {k: v[:0] for k, v in raw_inputs(
        USER, CANDIDATES, NOW, L, **HISTORY).items()}), grpc.StatusCode.INVALID_ARGUMENT, ["empty batch"]),
    "score_candidates without candidates": (lambda: predict_request("mtin", SCORE_SIGNATURE, {
        **candidate_inputs(USER, CANDIDATES, NOW, L, **HISTORY), F.CANDIDATE_IDS: np.zeros([1, 0], np.int64)}),
        grpc.StatusCode.INVALID_ARGUMENT, ["'candidate_ids'", "[1, 0]", "no candidates"]),
    "score_candidates with two users but one history": (lambda: predict_request("mtin", SCORE_SIGNATURE, {
        **candidate_inputs(USER, CANDIDATES, NOW, L, **HISTORY), F.USER_ID: np.array([USER, USER], np.int64)}),
        grpc.StatusCode.INVALID_ARGUMENT, ["disagree on the batch size", "user_id has 2"]),
    "unknown signature": (lambda: _signature(_good_request(), "classify"), grpc.StatusCode.INVALID_ARGUMENT,
                          ["'classify' not found"]),
    "malformed tf.Example": (lambda: predict_request("mtin", DEFAULT_SIGNATURE,
                                                     {EXAMPLES_INPUT: np.array([b"\xff not a proto"], dtype=object)}),
                             grpc.StatusCode.INVALID_ARGUMENT, []),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_its_status_code_and_the_server_keeps_serving(server, case):
    build, code, words = BAD_REQUESTS[case]
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.client.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(build(), timeout=10)
    assert info.value.code() == code, info.value.details()
    for word in words:
        assert word in info.value.details()
    response = stub.Predict(_good_request(version=1), timeout=10)
    assert response.model_spec.version.value == 1
    assert response.outputs[F.OUTPUT_PROBABILITY].tensor_shape.dim[0].size == len(CANDIDATES)


def test_other_methods_answer_like_tf_serving(server):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.client.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(classification_pb2.ClassificationRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["nope"])
    request.model_spec.name = "mtin"
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelMetadata(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        server.client.model_status(version=12345)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _load(target, stop_when, results, max_requests=1000, deadline=120.0):
    """One client thread: requests until ``stop_when(count, versions)`` or the bounds; records versions / errors."""
    # No retries: every failure counts. The bounds are generous (a request takes ~10 ms, a version load under load
    # tens of seconds, so the count bound must outlast it): a shared 2-core machine can stall a request for
    # seconds while the server loads the new version, and latency is not what this test measures.
    with MTINClient(target, max_attempts=1, timeout=60) as client:
        end = time.monotonic() + deadline
        count = 0
        while count < max_requests and time.monotonic() < end and not stop_when(count, results["versions"]):
            start = time.monotonic()
            try:
                results["versions"].append(client.predict(USER, CANDIDATES, NOW, **HISTORY).model_version)
            except Exception as exc:  # noqa: BLE001 - any failure is a test failure, reported below
                results["errors"].append(repr(exc))
            results["seconds"].append(time.monotonic() - start)
            count += 1


def test_version_and_label_pick_the_version(server):
    inputs = raw_inputs(USER, CANDIDATES, NOW, L, **HISTORY)
    for spec, version in ((dict(), 2), (dict(version=1), 1), (dict(version_label="stable"), 1),
                          (dict(version_label="canary"), 2)):
        with MTINClient(server.target, **spec) as client:
            prediction = client.predict(USER, CANDIDATES, NOW, **HISTORY)
            assert prediction.model_version == version, spec
            _assert_close(prediction, _keras(version, inputs))  # version v holds the model of seed v
    states = {s.version: s.state for s in server.client.model_status().model_version_status}
    assert states == {1: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
                      2: get_model_status_pb2.ModelVersionStatus.AVAILABLE}


def test_new_version_rolls_over_under_32_concurrent_clients_without_a_failed_request(servers):
    server = servers["rollover"]
    threads, results = [], [{"versions": [], "errors": [], "seconds": []} for _ in range(32)]
    # Each client sends at least 20 requests and keeps going (bounded) until it has been answered by version 2.
    stop_when = lambda count, versions: count >= 20 and 2 in versions
    for r in results:
        threads.append(threading.Thread(target=_load, args=(server.target, stop_when, r)))
        threads[-1].start()
    while sum(len(r["versions"]) + len(r["errors"]) for r in results) < 64:  # load is on
        time.sleep(0.05)
    install_version(2, server.base, 2)  # the export's last step: an atomic rename into the base dir
    for thread in threads:
        thread.join(180)
    errors = [e for r in results for e in r["errors"]]
    slowest = max(t for r in results for t in r["seconds"])
    assert errors == [], f"{len(errors)} failed requests, e.g. {errors[:3]}\n{server.log()[-3000:]}"
    print(f"rollover under load: {sum(len(r['seconds']) for r in results)} requests, slowest {slowest:.2f} s")
    versions = [v for r in results for v in r["versions"]]
    assert set(versions) == {1, 2} and all(2 in r["versions"] for r in results)
    assert sum(v == 1 for v in versions) >= 64  # version 1 served under load before the swap

    # The new version answers; the old one is unloaded (latest-1 policy) and reported so.
    with MTINClient(server.target) as client:
        assert client.metadata().model_spec.version.value == 2
        latest = client.predict(USER, CANDIDATES, NOW, **HISTORY)
        assert latest.model_version == 2
        _assert_close(latest, _keras(2, raw_inputs(USER, CANDIDATES, NOW, L, **HISTORY)))
    with MTINClient(server.target, version=1) as client, pytest.raises(grpc.RpcError) as info:
        client.predict(USER, CANDIDATES, NOW, **HISTORY)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    states = {s.version: s.state for s in server.client.model_status().model_version_status}
    assert states == {1: get_model_status_pb2.ModelVersionStatus.END,
                      2: get_model_status_pb2.ModelVersionStatus.AVAILABLE}


def test_unavailable_until_a_version_appears_and_sigterm_exits_0_after_in_flight_requests(tmp_path):
    proc = start_server(str(tmp_path), "--max-rows", "20000")  # room for the large request below
    try:
        end = time.monotonic() + 120
        while True:  # up, but no version yet: GetModelStatus says NOT_FOUND, Predict UNAVAILABLE
            try:
                proc.client.model_status()
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    break
                assert time.monotonic() < end and proc.proc.poll() is None, proc.log()
                time.sleep(0.3)
        with MTINClient(proc.target, max_attempts=1) as client, pytest.raises(grpc.RpcError) as info:
            client.predict(USER, CANDIDATES, NOW)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        install_version(1, str(tmp_path), 7)
        proc.wait_available(7)

        # A large request (20k rows, each its own impression time: 20k user encodings) is in flight when SIGTERM
        # arrives: it completes, then the process exits 0.
        many = np.arange(20_000) % 40 * 1000 + 1000
        rows = raw_inputs(USER, many, NOW, L, **HISTORY)
        rows[F.TIMESTAMP] = rows[F.TIMESTAMP] + np.arange(len(many))
        with MTINClient(proc.target, max_attempts=1, timeout=60) as client:
            assert client.predict(USER, CANDIDATES, NOW).model_version == 7
            future = client.stub.Predict.future(predict_request("mtin", RAW_SIGNATURE, rows), timeout=60)
            time.sleep(0.3)
            assert not future.done()  # else this test would not show that in-flight requests finish
            start = time.monotonic()
            code = proc.terminate(timeout=30)
            response = future.result()
        assert code == 0, proc.log()
        assert time.monotonic() - start < 30
        assert response.outputs[F.OUTPUT_PROBABILITY].tensor_shape.dim[0].size == len(many)
        assert "SIGTERM received" in proc.log()
    finally:
        proc.kill()
