"""Operability of `mtin serve` through real subprocesses and real clients: TLS and mutual TLS with certificates made
at test time, the grpc.health.v1 service through its own stub, Prometheus metrics scraped over HTTP and parsed with
prometheus_client's parser, and the rate limit of failure log lines."""
import datetime
import ipaddress
import logging
import signal
import time
import urllib.request

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families
from serving_support import exported, install_version, start_server

from mtin_tf import features as F
from mtin_tf.serving.client import MTINClient, channel_credentials, predict_request
from mtin_tf.serving.errors import ServingError
from mtin_tf.serving.local import free_port
from mtin_tf.serving.server import ErrorCounts

USER, NOW = 21, 1_000
CANDIDATES = [2000, 4000, 17000]


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject_key, name, issuer_key=None, issuer_name=None, *, ca=False, hosts=()):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]) if issuer_name else subject
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(h)) if h[0].isdigit() else x509.DNSName(h) for h in hosts]),
            critical=False)
    return builder.sign(issuer_key or subject_key, hashes.SHA256())


def _write(path, key=None, cert=None):
    if key is not None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    else:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and localhost, a client certificate from the same CA, and a client
    certificate from another CA: PEM file paths."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, rogue_key, server_key, client_key = _key(), _key(), _key(), _key()
    ca = _cert(ca_key, "mtin test CA", ca=True)
    return {
        "ca": _write(d / "ca.pem", cert=ca),
        "server_cert": _write(d / "server.pem", cert=_cert(server_key, "mtin serve", ca_key, "mtin test CA",
                                                           hosts=("127.0.0.1", "localhost"))),
        "server_key": _write(d / "server.key", key=server_key),
        "client_cert": _write(d / "client.pem", cert=_cert(client_key, "client", ca_key, "mtin test CA")),
        "client_key": _write(d / "client.key", key=client_key),
        "rogue_cert": _write(d / "rogue.pem", cert=_cert(client_key, "client", rogue_key, "another CA")),
    }


def _keras_probability(seed):
    from mtin_tf.serving.client import candidate_inputs
    model, _ = exported(seed)
    inputs = candidate_inputs(USER, CANDIDATES, NOW, 8)
    rows = {k: np.repeat(v, len(CANDIDATES), axis=0) for k, v in inputs.items() if k != F.CANDIDATE_IDS}
    rows[F.ITEM_ID] = np.asarray(CANDIDATES)
    return model(rows)[F.OUTPUT_PROBABILITY].numpy()


def test_mutual_tls_serves_clients_with_a_certificate_of_its_ca_and_refuses_the_rest(tmp_path, pki):
    trusted = channel_credentials(pki["ca"], pki["client_cert"], pki["client_key"])
    proc = start_server(str(tmp_path), "--ssl-cert", pki["server_cert"], "--ssl-key", pki["server_key"],
                        "--ssl-client-ca", pki["ca"], credentials=trusted)
    try:
        install_version(1, str(tmp_path), 1)
        proc.wait_available(1)
        with MTINClient(proc.target, credentials=trusted, metadata=[("x-request-source", "test")]) as client:
            prediction = client.predict(USER, CANDIDATES, NOW)
        np.testing.assert_allclose(prediction.click_probability, _keras_probability(1), atol=1e-5)
        refused = {
            "plaintext": {},
            "TLS without a client certificate": dict(credentials=channel_credentials(pki["ca"])),
            "a client certificate of another CA": dict(
                credentials=channel_credentials(pki["ca"], pki["rogue_cert"], pki["client_key"])),
        }
        for name, options in refused.items():
            with MTINClient(proc.target, max_attempts=1, timeout=5, **options) as client, \
                    pytest.raises(grpc.RpcError) as info:
                client.predict(USER, CANDIDATES, NOW)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, name  # the handshake fails: no RPC runs
        assert proc.proc.poll() is None
    finally:
        proc.kill()


def test_the_cli_talks_tls_and_refuses_half_a_key_pair(tmp_path, pki, capsys):
    from mtin_tf.cli import main as mtin

    proc = start_server(str(tmp_path), "--ssl-cert", pki["server_cert"], "--ssl-key", pki["server_key"],
                        credentials=channel_credentials(pki["ca"]))
    try:
        install_version(2, str(tmp_path), 2)
        proc.wait_available(2)
        args = ["predict", "--target", proc.target, "--user", str(USER), "--candidates",
                ",".join(map(str, CANDIDATES)), "--timestamp", str(NOW)]
        assert mtin(args + ["--ssl-root-ca", pki["ca"], "--metadata", "x-tenant=a"]) == 0
        assert '"model_version": 2' in capsys.readouterr().out
        assert mtin(args + ["--ssl-root-ca", pki["ca"], "--ssl-client-cert", pki["client_cert"]]) == 2
        assert "needs its key" in capsys.readouterr().err
    finally:
        proc.kill()
    assert mtin(["serve", "--model-base-path", str(tmp_path), "--ssl-cert", pki["server_cert"]]) == 2
    assert "go together" in capsys.readouterr().err


def _scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_health_follows_loading_serving_and_draining_and_metrics_count_every_answer(tmp_path):
    metrics_port = free_port()
    proc = start_server(str(tmp_path), "--metrics-port", str(metrics_port), "--drain-seconds", "3")
    try:
        end = time.monotonic() + 120
        while True:  # up, nothing loaded yet
            try:
                status = proc.client.health()
                break
            except grpc.RpcError:
                assert time.monotonic() < end and proc.proc.poll() is None, proc.log()
                time.sleep(0.3)
        assert status == "NOT_SERVING"
        assert proc.client.health("tensorflow.serving.PredictionService") == "NOT_SERVING"
        with pytest.raises(grpc.RpcError) as info:
            proc.client.health("no.such.Service")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        install_version(1, str(tmp_path), 3)
        proc.wait_available(3)
        end = time.monotonic() + 10
        while proc.client.health() != "SERVING":  # the health status follows within a poll of the store
            assert time.monotonic() < end
            time.sleep(0.2)

        with MTINClient(proc.target, max_attempts=1) as client:
            for _ in range(2):
                client.predict(USER, CANDIDATES, NOW)
            # An unknown user, two unknown candidates and one unknown clicked item: scored, and counted.
            client.predict(999, CANDIDATES + [5, 6], NOW, clicked=[3000, 7], clicked_times=[1, 2])
            bad = predict_request("mtin", "score_candidates", {"user_id": np.array([1], np.int64)})
            with pytest.raises(grpc.RpcError):
                client.stub.Predict(bad, timeout=10)
        samples = _scrape(metrics_port)
        ok = samples[("mtin_serving_requests_total", (("code", "OK"), ("method", "Predict")))]
        assert ok == 3
        assert samples[("mtin_serving_requests_total", (("code", "INVALID_ARGUMENT"), ("method", "Predict")))] == 1
        assert samples[("mtin_serving_request_seconds_count", (("method", "Predict"),))] == 4
        assert samples[("mtin_serving_predict_rows_total", ())] == 3  # score_candidates: one user row each
        assert samples[("mtin_serving_model_version", ())] == 3
        assert samples[("mtin_serving_in_flight", ())] == 0
        assert samples[("mtin_serving_unknown_ids_total", (("kind", "user"),))] == 1
        assert samples[("mtin_serving_unknown_ids_total", (("kind", "item"),))] == 3
        assert samples[("mtin_serving_requests_total", (("code", "OK"), ("method", "GetModelStatus")))] >= 1

        # Draining: from SIGTERM on, health says NOT_SERVING while the server still answers for --drain-seconds.
        proc.proc.send_signal(signal.SIGTERM)
        seen = []
        end = time.monotonic() + 30
        while proc.proc.poll() is None and time.monotonic() < end:
            try:
                seen.append(proc.client.health())
            except grpc.RpcError:
                seen.append("no answer")  # the port closes once the server stops
            time.sleep(0.05)
        assert "NOT_SERVING" in seen and "SERVING" not in seen[seen.index("NOT_SERVING"):], (seen, proc.log())
        assert proc.proc.wait(30) == 0
    finally:
        proc.kill()


def test_failure_logs_are_rate_limited_but_every_failure_is_counted(caplog):
    errors = ErrorCounts(log_interval=60.0)
    error = ServingError(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
    other = ServingError(grpc.StatusCode.NOT_FOUND, "no such model")
    with caplog.at_level(logging.WARNING, logger="mtin_tf.serving.server"):
        for _ in range(100):
            errors.log_failure("Predict", error, errors.add("Predict", error.code))
        errors.log_failure("Predict", other, errors.add("Predict", other.code))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "INVALID_ARGUMENT" in lines[0] and "NOT_FOUND" in lines[1]
    assert errors.snapshot() == {("Predict", "INVALID_ARGUMENT"): 100, ("Predict", "NOT_FOUND"): 1}
    errors.log_interval = 0.0  # the next line names how many were held back
    with caplog.at_level(logging.WARNING, logger="mtin_tf.serving.server"):
        errors.log_failure("Predict", error, errors.add("Predict", error.code))
    assert "99 similar lines held back" in caplog.records[-1].getMessage()


def test_unknown_ids_are_counted_by_binary_search_over_the_sorted_vocabulary():
    from mtin_tf.serving.server import unknown_ids

    known = {"user": np.array([7, 14]), "item": np.array([1000, 2000, 40000])}
    arrays = {F.USER_ID: np.array([7, 8]), F.ITEM_ID: np.array([1000, 1500, 99999]),
              F.CLICKED_ITEMS: np.array([[2000, 0, 0], [3, 40000, 0]]), F.BROWSED_ITEMS: np.zeros([2, 3], np.int64)}
    assert unknown_ids(arrays, known) == {"user": 1, "item": 3}  # padding (0) is not an id
    assert unknown_ids(arrays, {"item": np.zeros([0], np.int64)}) == {"item": 6}
    assert unknown_ids(arrays, {}) == {}  # a SavedModel without the file: nothing counted
