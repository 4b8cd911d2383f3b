"""Retries, backoff and version loading against real `mtin serve` processes (127.0.0.1, free ports): a version that
arrives while a client is retrying, corrupt versions that the server reports and skips while the previous version
keeps serving, and a server restart that a client rides through with its retries. No fakes: the client is
mtin_tf.serving.client.MTINClient over a real gRPC channel, the server loads real SavedModels with
tf.saved_model.load."""
import os
import re
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
from serving_support import L, exported, install_version, start_server
from tensorflow_serving.apis import get_model_status_pb2

from mtin_tf import features as F
from mtin_tf.serving.client import MTINClient, raw_inputs

USER = 21
HISTORY = dict(clicked=[3000, 9000, 12000], clicked_times=[100, 200, 300], browsed=[4000], browsed_times=[250])
CANDIDATES = [2000, 7000, 17000, 33000]
NOW = 1_000
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END


def _keras_probabilities(seed):
    model, _ = exported(seed)
    return model(raw_inputs(USER, CANDIDATES, NOW, L, **HISTORY))[F.OUTPUT_PROBABILITY].numpy()


def _unavailable_answers(server) -> int:
    """How many requests the server has answered UNAVAILABLE so far (it logs every failed request)."""
    return len(re.findall(r"-> UNAVAILABLE: .*failed requests so far", server.log()))


def _unavailable_answers_reaching(server, count, timeout=10.0) -> int:
    """The UNAVAILABLE answers logged so far, once they reach ``count`` or ``timeout`` passes: the server writes its
    log line after the answer has left, so a client can see the error before the line is flushed."""
    end = time.monotonic() + timeout
    while (seen := _unavailable_answers(server)) < count and time.monotonic() < end:
        time.sleep(0.05)
    return seen


def _wait_answering(server, timeout=120.0):
    """Until the process answers RPCs (GetModelStatus: NOT_FOUND while it has seen no version)."""
    end = time.monotonic() + timeout
    while True:
        try:
            return server.client.model_status()
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            assert time.monotonic() < end and server.proc.poll() is None, server.log()
            time.sleep(0.3)


def _max_attempts_within(seconds, initial, cap):
    """The most attempts a client backing off initial·2^k (capped) can make in ``seconds``: its sleeps alone
    between attempt k and k+1 add up to more than ``seconds`` after that."""
    attempts, slept = 1, 0.0
    while True:
        slept += min(cap, initial * 2 ** (attempts - 1))
        if slept > seconds:
            return attempts
        attempts += 1


def test_client_retries_with_backoff_until_a_late_version_is_served(tmp_path):
    base = str(tmp_path)
    exported(1)  # built and exported before the clock starts
    server = start_server(base, "--error-log-interval", "0")  # a log line per failure: the test counts them
    try:
        _wait_answering(server)
        # Bounded: with no version, a client of 3 attempts gets UNAVAILABLE after exactly 3 requests.
        before = _unavailable_answers(server)
        with MTINClient(server.target, max_attempts=3, initial_backoff=0.01) as client, \
                pytest.raises(grpc.RpcError) as info:
            client.predict(USER, CANDIDATES, NOW, **HISTORY)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _unavailable_answers_reaching(server, before + 3) - before == 3

        # A version arrives 1.5 s into a call: the client keeps retrying, backing off, until it is served.
        before = _unavailable_answers(server)
        timer = threading.Timer(1.5, install_version, args=(1, base, 5))
        start = time.monotonic()
        timer.start()
        with MTINClient(server.target, max_attempts=60, initial_backoff=0.05, max_backoff=1.0) as client:
            prediction = client.predict(USER, CANDIDATES, NOW, **HISTORY)
        elapsed = time.monotonic() - start
        timer.join()
        assert prediction.model_version == 5
        np.testing.assert_allclose(prediction.click_probability, _keras_probabilities(1), atol=1e-5)
        retried = _unavailable_answers(server) - before
        assert elapsed > 1.5 and retried >= 2, (elapsed, retried)
        # Backoff, not a busy loop: no more attempts than the sleeps leave room for.
        assert retried < _max_attempts_within(elapsed, 0.05, 1.0), (elapsed, retried)
    finally:
        server.kill()


def _copy_version(seed, base, version, damage=None):
    """Model ``seed`` at ``base/<version>``, optionally damaged before it is renamed into place (atomically)."""
    _, path = exported(seed)
    staging = os.path.join(base, f".tmp-{version}")
    shutil.copytree(path, staging)
    if damage:
        damage(staging)
    os.replace(staging, os.path.join(base, str(version)))


def _truncate_saved_model_pb(path):
    pb = os.path.join(path, "saved_model.pb")
    data = open(pb, "rb").read()
    with open(pb, "wb") as f:
        f.write(data[: len(data) // 2])


def _remove_variables(path):
    shutil.rmtree(os.path.join(path, "variables"))


def _statuses(server):
    return {s.version: s for s in server.client.model_status().model_version_status}


def _wait_statuses(server, done, timeout=90.0):
    end = time.monotonic() + timeout
    while True:
        statuses = _statuses(server)
        if done(statuses):
            return statuses
        assert time.monotonic() < end and server.proc.poll() is None, (statuses, server.log()[-3000:])
        time.sleep(0.3)


def test_corrupt_versions_are_reported_and_skipped_while_the_previous_version_keeps_serving(tmp_path):
    base = str(tmp_path)
    install_version(1, base, 1)
    server = start_server(base, "--load-retry-seconds", "600")  # no timed retry within the test: only on changes
    try:
        server.wait_available(1)
        want = _keras_probabilities(1)
        _copy_version(1, base, 2, damage=_truncate_saved_model_pb)
        _copy_version(1, base, 3, damage=_remove_variables)
        # Being written: everything but saved_model.pb (which the Pusher copies last) -- not a version yet.
        _copy_version(1, base, 4, damage=lambda p: os.replace(os.path.join(p, "saved_model.pb"),
                                                              os.path.join(base, ".saved_model.pb-4")))
        shutil.copytree(exported(1)[1], os.path.join(base, "notaversion"))
        statuses = _wait_statuses(server, lambda s: s.get(2) and s.get(3) and s[2].state == s[3].state == END)
        assert set(statuses) == {1, 2, 3} and statuses[1].state == AVAILABLE
        for version in (2, 3):
            message = statuses[version].status.error_message
            assert message.startswith(f"failed to load {os.path.join(base, str(version))}")
        with MTINClient(server.target) as client:  # the newest healthy version serves
            prediction = client.predict(USER, CANDIDATES, NOW, **HISTORY)
            assert prediction.model_version == 1
            np.testing.assert_allclose(prediction.click_probability, want, atol=1e-5)
            assert client.metadata().model_spec.version.value == 1
        with MTINClient(server.target, version=3, max_attempts=1) as client, pytest.raises(grpc.RpcError) as info:
            client.predict(USER, CANDIDATES, NOW, **HISTORY)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        # saved_model.pb arrives (atomically): version 4 loads and takes over; the broken ones, unchanged on disk,
        # are not retried before their retry time.
        os.replace(os.path.join(base, ".saved_model.pb-4"), os.path.join(base, "4", "saved_model.pb"))
        statuses = _wait_statuses(server, lambda s: s.get(4) and s[4].state == AVAILABLE)
        assert statuses[1].state == statuses[2].state == statuses[3].state == END
        with MTINClient(server.target) as client:
            prediction = client.predict(USER, CANDIDATES, NOW, **HISTORY)
        assert prediction.model_version == 4
        np.testing.assert_allclose(prediction.click_probability, want, atol=1e-5)

        # A non-atomic copy (gsutil cp, a slow volume): saved_model.pb lands before variables/. The load fails, and
        # is retried as soon as the directory changes: the completed version 5 takes over without a restart.
        _, source = exported(1)
        os.makedirs(os.path.join(base, "5"))
        shutil.copy(os.path.join(source, "saved_model.pb"), os.path.join(base, "5", "saved_model.pb"))
        statuses = _wait_statuses(server, lambda s: s.get(5) and s[5].state == END)
        assert "attempt 1 of 6" in statuses[5].status.error_message
        for name in os.listdir(source):
            if name != "saved_model.pb":
                copy = shutil.copytree if os.path.isdir(os.path.join(source, name)) else shutil.copy
                copy(os.path.join(source, name), os.path.join(base, "5", name))
        statuses = _wait_statuses(server, lambda s: s[5].state == AVAILABLE)
        with MTINClient(server.target) as client:
            assert client.predict(USER, CANDIDATES, NOW, **HISTORY).model_version == 5
        log = server.log()
        for version in (2, 3):
            assert len(re.findall(rf"version {version} failed to load", log)) == 1, log[-3000:]
        assert "version 5 changed on disk since it failed to load: retrying" in log
        assert "notaversion" not in log
    finally:
        server.kill()


def test_client_rides_through_a_server_restart_with_its_retries(tmp_path):
    base = str(tmp_path)
    install_version(1, base, 1)
    first = start_server(base)
    second = None
    try:
        first.wait_available(1)
        want = _keras_probabilities(1)
        with MTINClient(first.target, max_attempts=60, initial_backoff=0.05, max_backoff=1.0) as client:
            np.testing.assert_allclose(client.predict(USER, CANDIDATES, NOW, **HISTORY).click_probability, want,
                                       atol=1e-5)
            assert first.terminate() == 0
            second = start_server(base, port=first.port)  # the same address; it takes seconds to import and load
            with MTINClient(first.target, max_attempts=1) as probe, pytest.raises(grpc.RpcError) as info:
                probe.predict(USER, CANDIDATES, NOW, **HISTORY)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # down: nobody listens, or no version yet
            up = {}
            watcher = threading.Thread(target=lambda: up.setdefault("at", (second.wait_available(1),
                                                                            time.monotonic())[1]))
            start = time.monotonic()
            watcher.start()
            prediction = client.predict(USER, CANDIDATES, NOW, **HISTORY)  # same client, same channel
            answered = time.monotonic()
            watcher.join(120)
            elapsed = answered - start
        assert prediction.model_version == 1
        np.testing.assert_allclose(prediction.click_probability, want, atol=1e-5)
        assert second.proc.poll() is None and "listening on" in second.log()
        lag = answered - up["at"]
        print(f"rode through the restart in {elapsed:.1f} s; answered {lag:.1f} s after the new server was available")
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_a_flood_beyond_max_in_flight_is_shed_with_resource_exhausted_and_counted(tmp_path):
    # One worker, two admitted: of 8 heavy requests sent at once, the ones beyond two in flight are refused at once
    # (RESOURCE_EXHAUSTED, each logged and counted by the server), the admitted ones are answered, and the server
    # serves normally afterwards. Each request scores 100 users × 2 000 candidates, far longer than the sending.
    from mtin_tf.serving.client import candidate_inputs, predict_request
    from mtin_tf.signatures import SCORE_SIGNATURE

    base = str(tmp_path)
    install_version(1, base, 1)
    server = start_server(base, "--max-workers", "1", "--max-in-flight", "2", "--error-log-interval", "0")
    try:
        server.client.wait_until_available(1)
        one = candidate_inputs(USER, list(range(1, 2001)), NOW, L, **HISTORY)
        heavy = predict_request("mtin", SCORE_SIGNATURE, {k: np.repeat(v, 100, axis=0) for k, v in one.items()})
        barrier, codes = threading.Barrier(8), []

        def send():
            with MTINClient(server.target, max_attempts=1, timeout=120) as client:
                barrier.wait()
                try:
                    client.call("Predict", heavy)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())

        threads = [threading.Thread(target=send) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        shed = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert len(codes) == 8 and set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        assert shed >= 1 and codes.count(grpc.StatusCode.OK) >= 1, codes
        logged = re.findall(r"Predict -> RESOURCE_EXHAUSTED: server busy: 2 requests in flight", server.log())
        assert len(logged) == shed, server.log()
        prediction = server.client.predict(USER, CANDIDATES, NOW, **HISTORY)
        np.testing.assert_allclose(prediction.click_probability, _keras_probabilities(1), atol=1e-5)
    finally:
        server.kill()


def test_a_second_server_on_a_port_in_use_fails_to_bind_and_the_first_keeps_it(tmp_path):
    base = str(tmp_path)
    install_version(1, base, 1)
    first = start_server(base)
    try:
        first.client.wait_until_available(1)
        second = start_server(base, port=first.port)
        try:
            assert second.proc.wait(120) == 1, second.log()
            assert f"could not bind gRPC port 127.0.0.1:{first.port}" in second.log()
        finally:
            second.kill()
        for _ in range(20):  # every connection still reaches the first server
            with MTINClient(first.target, max_attempts=1) as client:
                assert client.predict(USER, CANDIDATES, NOW, **HISTORY).model_version == 1
    finally:
        first.kill()
