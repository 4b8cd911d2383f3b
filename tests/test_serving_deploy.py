"""The deployment files for the real tensorflow/serving image parse and agree on names, ports and paths."""
import os
import re

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from mtin_tf import serving
from mtin_tf.cli import build_parser

HERE = os.path.dirname(serving.__file__)


def _read(name):
    with open(os.path.join(HERE, name)) as f:
        return f.read()


def _flags(args):
    """["--a=1", "--b=x"] -> {"a": "1", "b": "x"}."""
    out = {}
    for arg in args:
        match = re.fullmatch(r"--([a-z_]+)=(.*)", arg)
        assert match, f"flag {arg!r} is not --name=value"
        out[match.group(1)] = match.group(2)
    return out


def test_models_config_names_the_model_and_the_mounted_base_path():
    config = text_format.Parse(_read("models.config"), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == serving.DEFAULT_MODEL_NAME
    assert model.base_path == serving.CONTAINER_MODEL_BASE_PATH
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 1


def _check_server_flags(flags, mounts):
    """Flags of tensorflow_model_server against the container's mounts {container path: source}."""
    assert flags["port"] == str(serving.GRPC_PORT) and flags["rest_api_port"] == str(serving.REST_PORT)
    # The exported routing loop is XLA-compiled (MTINConfig.jit_routing, on by default): TF Serving's CPU build
    # refuses it without this flag. No batching: score_candidates requests of different N would not concatenate.
    assert flags["xla_cpu_compilation_enabled"] == "true"
    assert "enable_batching" not in flags
    assert os.path.basename(flags["model_config_file"]) == "models.config"
    assert flags["model_config_file"] in mounts or os.path.dirname(flags["model_config_file"]) in mounts
    assert serving.CONTAINER_MODEL_BASE_PATH in mounts


def test_docker_compose_runs_the_pinned_image_with_the_config_and_model_mounted():
    compose = yaml.safe_load(_read("docker-compose.yml"))
    (service,) = compose["services"].values()
    assert service["image"] == serving.TF_SERVING_IMAGE
    assert service["entrypoint"] == ["tensorflow_model_server"]
    assert sorted(service["ports"]) == sorted(f"{p}:{p}" for p in (serving.GRPC_PORT, serving.REST_PORT))
    mounts = {v["target"]: v["source"] for v in service["volumes"]}
    _check_server_flags(_flags(service["command"]), mounts)
    for target, source in mounts.items():
        if not source.startswith("$"):
            assert os.path.isfile(os.path.join(HERE, source)), source  # the config files beside the compose file
    assert "MTIN_MODEL_DIR" in mounts[serving.CONTAINER_MODEL_BASE_PATH]


def test_kubernetes_deployment_and_service_agree():
    deployment = yaml.safe_load(_read("k8s/deployment.yaml"))
    service = yaml.safe_load(_read("k8s/service.yaml"))
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["image"] == serving.TF_SERVING_IMAGE
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": serving.GRPC_PORT, "http": serving.REST_PORT}
    assert {p["targetPort"]: p["port"] for p in service["spec"]["ports"]} == ports
    volumes = {v["name"] for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts.values()) == volumes
    _check_server_flags(_flags(container["args"]), mounts)
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{serving.DEFAULT_MODEL_NAME}"


def test_local_server_defaults_match_the_deployment():
    args = build_parser(load="serve").parse_args(["serve", "--model-base-path", "x"])
    assert args.port == serving.GRPC_PORT and args.model_name == serving.DEFAULT_MODEL_NAME
    assert args.num_versions == 1  # models.config's latest { num_versions: 1 }
