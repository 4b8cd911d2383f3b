"""The verified TFX 1.16 stack imports together, and tf.keras resolves to Keras 2 (tf_keras)."""
import importlib
import subprocess
import sys

import pytest

STACK = [
    "tensorflow",
    "tf_keras",
    "tfx.v1",
    "tensorflow_transform",
    "tensorflow_model_analysis",
    "tensorflow_recommenders",
    "apache_beam",
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.prediction_service_pb2_grpc",
]


@pytest.mark.parametrize("module", STACK)
def test_stack_module_imports(module):
    importlib.import_module(module)


def test_tf_keras_is_keras_2():
    import tensorflow as tf
    import tf_keras

    assert tf_keras.__version__.startswith("2.16")
    # With TF_USE_LEGACY_KERAS=1, tf.keras is tf_keras (Keras 2), not Keras 3.
    assert tf.keras.layers.Dense is tf_keras.layers.Dense
    assert tf.__version__.startswith("2.16")


def test_pinned_versions():
    from importlib.metadata import version

    assert version("tfx") == "1.16.0"
    assert version("apache-beam") == "2.59.0"
    assert version("protobuf") == "3.20.3"


def test_pip_inside_environment():
    # TFX installs a pipeline's module-file wheel with pip at run time.
    out = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, check=True)
    assert "pip" in out.stdout


def test_cli_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "mtin_tf.cli", "--help"], capture_output=True, text=True, check=True)
    for name in ("data", "train", "evaluate", "experiment", "pipeline", "demo", "serve", "predict", "recommend"):
        assert name in out.stdout


@pytest.mark.parametrize("name", ["data", "train", "evaluate", "experiment", "pipeline", "demo", "serve", "predict",
                                  "recommend"])
def test_every_subcommand_registers_a_runnable_parser(name):
    from mtin_tf.cli import build_parser

    parser = build_parser(load=name)
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "command")
    registered = sub.choices[name]
    # The placeholder parser has no func; the registered one has func directly or on its sub-subcommands.
    funcs = [registered.get_default("func")]
    if registered._subparsers:
        funcs += [p.get_default("func") for a in registered._subparsers._group_actions if hasattr(a, "choices")
                  for p in a.choices.values()]
    assert any(callable(f) for f in funcs), f"`mtin {name}` has no command to run"
