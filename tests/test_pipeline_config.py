"""PipelineConfig (pipeline/config.py), the one place of the pipeline's run settings: its defaults are the project's
constants and the CLI's, every field is reachable from `mtin pipeline`, validate() rejects each out-of-range value by
name, a bad setting stops `mtin pipeline` and create_pipeline before anything runs, and it round-trips through JSON.
No pipeline runs here (nothing imports TFX)."""
import dataclasses
import json
import os

import numpy as np
import pytest

from mtin_tf.cli import build_parser
from mtin_tf.cli import main as mtin
from mtin_tf.config import MTINConfig
from mtin_tf.data.history import TEST_FRACTION, VALIDATION_FRACTION
from mtin_tf.features import DEFAULT_MAX_HISTORY
from mtin_tf.pipeline.cli import COMPOSED_FIELDS, pipeline_config
from mtin_tf.pipeline.config import STOP_POINTS, PipelineConfig

FIELDS = dataclasses.fields(PipelineConfig)
# The required options of each subcommand; every other option at its default.
SUBCOMMANDS = {"run": ["--data", "d"], "compile-kubeflow": ["--output", "spec.json"],
               "airflow-dag": ["--dags-folder", "dags"]}
KUBEFLOW_GPUS = {"type": "NVIDIA_TESLA_T4", "count": 1}  # compile-kubeflow's --gpus / --gpu-type defaults


def _subparser(name: str):
    parser = build_parser(load="pipeline")
    pipeline = parser._subparsers._group_actions[0].choices["pipeline"]
    return pipeline._subparsers._group_actions[0].choices[name]


def _config(subcommand: str, *argv) -> PipelineConfig:
    args = build_parser(load="pipeline").parse_args(["pipeline", subcommand, *SUBCOMMANDS[subcommand], *argv])
    return pipeline_config(args)


def test_defaults_are_the_projects_constants():
    config = PipelineConfig()
    assert (config.max_history, config.test_fraction, config.validation_fraction) == (
        DEFAULT_MAX_HISTORY, TEST_FRACTION, VALIDATION_FRACTION)
    assert config.mtin_config == {} and config.shuffle_buffer is None  # MTINConfig's / the Trainer's own defaults
    assert config.validate() is config


@pytest.mark.parametrize("subcommand", sorted(SUBCOMMANDS))
def test_cli_defaults_equal_the_dataclass_defaults(subcommand):
    options = {action.dest: action for action in _subparser(subcommand)._actions}
    assert all(field.metadata["help"] for field in FIELDS)
    for field in FIELDS:
        if field.name in COMPOSED_FIELDS:
            continue
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        got = options[field.name].default
        assert (tuple(got) if isinstance(got, list) else got) == default, field.name
        assert options[field.name].help.startswith(field.metadata["help"][:20]), field.name
    expected = PipelineConfig(gpu_request=KUBEFLOW_GPUS if subcommand == "compile-kubeflow" else None)
    assert _config(subcommand) == expected


def _non_default_option(field, action):
    """(argv, expected value) that sets ``field`` to a valid value other than its default through ``action``."""
    flag = action.option_strings[0]
    if action.const is False:  # store_false
        return [flag], False
    if action.const is True:  # store_true
        return [flag], True
    if action.choices:
        return [flag, action.choices[-1]], action.choices[-1]
    if isinstance(action.default, list):  # append
        return [f"{flag}=--runner=DirectRunner"], ("--runner=DirectRunner",)
    if action.type is int:
        return [flag, str((action.default or 0) + 3)], (action.default or 0) + 3
    assert action.type is float, field.name
    value = round(action.default * 0.5 + 0.01, 4)  # a valid fraction or threshold, not the default
    return [flag, str(value)], value


def test_every_field_is_reachable_from_the_cli():
    options = {action.dest: action for action in _subparser("compile-kubeflow")._actions}
    composed = {"mtin_config": (["--set", "epochs=2", "readout=paper"], {"epochs": 2, "readout": "paper"}),
                "gpu_request": (["--gpus", "2", "--gpu-type", "NVIDIA_TESLA_V100"],
                                {"type": "NVIDIA_TESLA_V100", "count": 2})}
    assert set(composed) == set(COMPOSED_FIELDS)
    for field in FIELDS:
        argv, value = composed[field.name] if field.name in composed else _non_default_option(field,
                                                                                             options[field.name])
        config = _config("compile-kubeflow", *argv)
        assert getattr(config, field.name) == value != getattr(PipelineConfig(), field.name), (field.name, argv)
        assert config == dataclasses.replace(_config("compile-kubeflow"), **{field.name: value}), field.name
    assert _config("compile-kubeflow", "--gpus", "0").gpu_request is None
    # The generated options are the same on every subcommand (mtin_config: --config / --set everywhere).
    generated = {f.name for f in FIELDS} - set(COMPOSED_FIELDS) | {"config", "set"}
    for subcommand in SUBCOMMANDS:
        assert generated <= {action.dest for action in _subparser(subcommand)._actions}, subcommand


@pytest.mark.parametrize("overrides, message", [
    ({"max_history": 0}, "max_history must be >= 1"),
    ({"test_fraction": 1.0}, r"test_fraction must be in \[0, 1\)"),
    ({"test_fraction": -0.1}, r"test_fraction must be in \[0, 1\)"),
    ({"validation_fraction": 1.2}, r"validation_fraction must be in \[0, 1\)"),
    ({"test_fraction": 0.5, "validation_fraction": 0.5}, "test_fraction \\+ validation_fraction must be below 1"),
    ({"time_cut": -1}, "time_cut must be >= 0"),
    ({"validation_cut": -1}, "validation_cut must be >= 0"),
    ({"time_cut": 100, "validation_cut": 100}, r"validation_cut \(100\) must be before time_cut \(100\)"),
    ({"train_steps": -1}, "train_steps must be >= 0"),
    ({"eval_steps": -5}, "eval_steps must be >= 0"),
    ({"max_anomalous_features": -1}, "max_anomalous_features must be >= 0"),
    ({"max_bad_row_fraction": -0.1}, "max_bad_row_fraction must be >= 0"),
    ({"max_bad_row_fraction": 1.5}, r"max_bad_row_fraction must be in \[0, 1\]"),
    ({"auc_floor": -0.5}, "auc_floor must be >= 0"),
    ({"max_auc_drop": float("nan")}, "max_auc_drop must be >= 0"),
    ({"shuffle_buffer": 0}, "shuffle_buffer must be >= 1"),
    ({"stop_after": "Trainer"}, "stop_after must be None or one of"),
    ({"gpu_request": {"type": "T4", "gpus": 1}}, r"gpu_request: unknown keys \['gpus'\]"),
    ({"mtin_config": {"num_groups": 0}}, "mtin_config: num_groups must be >= 1, got 0"),
    ({"mtin_config": {"embeding_dim": 8}}, r"mtin_config: unknown MTINConfig fields: \['embeding_dim'\]"),
    ({"max_history": 0, "mtin_config": {"max_history": 5}}, "max_history must be >= 1"),
    ({"train_steps": 1.5}, "train_steps must be int, got 1.5"),
    ({"enable_cache": 1}, "enable_cache must be bool, got 1"),
    ({"auc_floor": True}, "auc_floor must be float or int, got True"),
    ({"beam_pipeline_args": ["--runner=X", 2]}, "beam_pipeline_args must be tuple"),
])
def test_validate_rejects_each_out_of_range_value_with_a_message_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig(**overrides).validate()


def test_validate_accepts_the_edges_of_each_range():
    PipelineConfig(test_fraction=0.0, validation_fraction=0.0, max_bad_row_fraction=1.0, auc_floor=1.01,
                   max_auc_drop=0, shuffle_buffer=1, time_cut=200, validation_cut=100, stop_after=STOP_POINTS[0],
                   gpu_request={"type": "NVIDIA_TESLA_T4", "count": 2}, mtin_config={"max_history": 7}).validate()


def test_the_model_config_is_checked_with_the_pipelines_history_length():
    """The Trainer's MTINConfig is mtin_config with max_history replaced by the pipeline's (create_pipeline drops
    mtin_config's own), so that is the one checked."""
    with pytest.raises(ValueError, match="max_history must be >= 1"):
        MTINConfig.from_dict({"max_history": 0})
    config = PipelineConfig(max_history=3, mtin_config={"max_history": 0, "num_groups": 2})
    assert config.validate() is config


def _tiny_data(path):
    from mtin_tf.data.canonical import write_item_features

    os.makedirs(path)
    with open(os.path.join(path, "interactions.csv"), "w") as f:
        f.write("user_id,item_id,timestamp,click\n1,1,100,1\n1,2,200,0\n2,1,150,1\n2,3,300,0\n")
    write_item_features(os.path.join(path, "item_features.npz"), item_ids=np.arange(1, 4), features=np.ones((3, 2)))
    return str(path)


def test_a_bad_setting_stops_mtin_pipeline_with_one_error_line_and_exit_2_before_anything_runs(tmp_path, capsys):
    """The data are fine and the run would stop after the first components, so a missed check would make a
    metadata.sqlite (and stage the inputs)."""
    data, run = _tiny_data(tmp_path / "data"), tmp_path / "run"
    for argv, message in ((["--set", "num_groups=0"], "num_groups must be >= 1, got 0"),
                          (["--test-fraction", "1.5"], "test_fraction must be in [0, 1), got 1.5"),
                          (["--shuffle-buffer", "0"], "shuffle_buffer must be >= 1"),
                          (["--set", "epochs"], "--set expects KEY=VALUE")):
        code = mtin(["pipeline", "run", "--data", data, "--run-dir", str(run), "--stop-after", STOP_POINTS[0],
                     *argv])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("mtin pipeline: ") and message in lines[0], lines
        assert not os.path.exists(run / "metadata.sqlite") and not os.path.exists(run / "inputs")
    spec, dags = tmp_path / "spec.json", tmp_path / "dags"
    assert mtin(["pipeline", "compile-kubeflow", "--output", str(spec), "--set", "num_groups=0"]) == 2
    assert mtin(["pipeline", "airflow-dag", "--dags-folder", str(dags), "--run-dir", str(run), "--data", data,
                 "--max-history", "0"]) == 2
    assert "max_history must be >= 1" in capsys.readouterr().err
    assert not spec.exists() and not dags.exists() and not os.path.exists(run / "inputs")


def test_create_pipeline_and_run_local_validate_before_building_or_staging_anything(tmp_path):
    from mtin_tf.pipeline.pipeline import create_pipeline
    from mtin_tf.pipeline.runners.local import run_local

    with pytest.raises(ValueError, match="mtin_config: num_groups must be >= 1"):
        create_pipeline(PipelineConfig(mtin_config={"num_groups": 0}), pipeline_root=str(tmp_path / "root"),
                        inputs_dir=str(tmp_path / "inputs"), serving_model_dir=str(tmp_path / "serving"))
    data = _tiny_data(tmp_path / "data")
    with pytest.raises(ValueError, match="eval_steps must be >= 0"):
        run_local(data, str(tmp_path / "run"), PipelineConfig(eval_steps=-1, stop_after=STOP_POINTS[0]))
    assert not os.path.exists(tmp_path / "run")


def test_a_config_round_trips_through_json_and_is_frozen():
    config = PipelineConfig(max_history=7, test_fraction=0.3, time_cut=5, validation_fraction=0.2, validation_cut=2,
                            max_anomalous_features=1, max_bad_row_fraction=0.25, mtin_config={"epochs": 2, "l2": 0.0},
                            train_steps=9, eval_steps=4, shuffle_buffer=64, gpu_request={"type": "T4", "count": 1},
                            auc_floor=0.6, max_auc_drop=0.02, beam_pipeline_args=["--direct_num_workers=2"],
                            enable_cache=False, stop_after="Transform", refit=True)
    assert all(getattr(config, f.name) != getattr(PipelineConfig(), f.name) for f in FIELDS)
    values = json.loads(json.dumps(config.to_dict()))
    assert PipelineConfig.from_dict(values) == config and PipelineConfig.from_dict({}) == PipelineConfig()
    assert config.beam_pipeline_args == ("--direct_num_workers=2",)
    with pytest.raises(ValueError, match=r"unknown PipelineConfig fields: \['max_histroy'\]"):
        PipelineConfig.from_dict({"max_histroy": 7})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_history = 8
    values["mtin_config"]["epochs"] = 3  # a copy: the caller's dict does not change the config
    again = PipelineConfig.from_dict(values)
    values["mtin_config"]["epochs"] = 4
    assert again.mtin_config == {"epochs": 3, "l2": 0.0}
