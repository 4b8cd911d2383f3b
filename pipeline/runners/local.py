"""Local run: LocalDagRunner, Beam DirectRunner, SQLite ML Metadata under the run directory.

Run directory layout::

  <run_dir>/inputs/        ExampleGen inputs staged from the data directory (mtin_tf.pipeline.inputs)
  <run_dir>/root/          pipeline root: every component's artifacts
  <run_dir>/metadata.sqlite   ML Metadata (executions, artifacts, lineage; the cache)
  <run_dir>/serving/<version>/  models pushed by Pusher (blessed only), a TF Serving model base path

Rerunning with the same data and settings is served from the MLMD cache (enable_cache); after a killed run, rerunning
the same command resumes: the components that completed are cached, the rest run.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, NamedTuple, Optional, Sequence

if TYPE_CHECKING:
    from mtin_tf.pipeline.config import PipelineConfig

# The DirectRunner ignores the container image; setting it keeps TFX from building an sdist of itself for every Beam
# component whenever Beam arguments are given (tfx.utils.dependency_utils.make_beam_dependency_flags).
_NO_EPHEMERAL_PACKAGE = "--sdk_container_image=apache/beam_python3.10_sdk:2.59.0"


class RunDirs(NamedTuple):
    """The run directory's layout (see the module docstring)."""

    run_dir: str
    inputs: str
    root: str
    metadata: str
    serving: str

    @classmethod
    def at(cls, run_dir: str) -> "RunDirs":
        run_dir = os.path.abspath(run_dir)
        return cls(run_dir, *(os.path.join(run_dir, name) for name in ("inputs", "root", "metadata.sqlite", "serving")))


def beam_args(extra: Sequence[str] = (), direct_num_workers: int = 0) -> list:
    """DirectRunner arguments: in-memory by default, multi-process with ``direct_num_workers`` > 1, plus ``extra``."""
    args = list(extra)
    if direct_num_workers and direct_num_workers > 1:
        args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={direct_num_workers}"]
    if args and not any(a.startswith(("--sdk_container_image", "--extra_package", "--setup_file",
                                      "--requirements_file")) for a in args):
        args.append(_NO_EPHEMERAL_PACKAGE)
    return args


def run_local(data_dir: str, run_dir: str, config: Optional[PipelineConfig] = None, *, direct_num_workers: int = 0,
              strict: bool = False) -> RunDirs:
    """Stage ``data_dir`` and run the pipeline with LocalDagRunner; returns the run directory layout.

    ``config``: the run settings (default: PipelineConfig()), validated before anything is staged; its
    ``beam_pipeline_args`` get the DirectRunner's (:func:`beam_args` with ``direct_num_workers``).
    ``strict``: stop at the first CSV line of the wrong shape while staging (mtin_tf.pipeline.inputs.stage_inputs),
    instead of skipping and counting it.
    """
    from mtin_tf.pipeline.config import PipelineConfig

    config = (config or PipelineConfig()).validate()  # before TFX is imported or anything staged
    from tfx import v1 as tfx

    from mtin_tf.pipeline.inputs import stage_inputs
    from mtin_tf.pipeline.pipeline import create_pipeline

    config = dataclasses.replace(config, beam_pipeline_args=beam_args(config.beam_pipeline_args, direct_num_workers))
    dirs = RunDirs.at(run_dir)
    os.makedirs(dirs.run_dir, exist_ok=True)
    stage_inputs(data_dir, dirs.inputs, strict=strict)
    pipe = create_pipeline(config, pipeline_root=dirs.root, inputs_dir=dirs.inputs, serving_model_dir=dirs.serving,
                           metadata_path=dirs.metadata)
    tfx.orchestration.LocalDagRunner().run(pipe)
    return dirs


def latest_pushed(serving_dir: str) -> Optional[str]:
    """The highest numeric version folder under ``serving_dir`` (None if nothing was pushed)."""
    from mtin_tf.export import latest_version

    try:
        return latest_version(serving_dir)
    except FileNotFoundError:
        return None


def run_summary(dirs: RunDirs) -> dict:
    """What ML Metadata recorded about the latest run in ``dirs``: ``components`` [(node, seconds, state)], the
    Evaluator's ``metrics`` (mtin_tf.pipeline.evaluation.load_metrics), ``blessed``, the ``pushed`` model directory
    (None when not blessed), every component's ``outputs`` (mtin_tf.pipeline.metadata.run_outputs) and the
    ``metadata`` path."""
    import tensorflow as tf

    from mtin_tf.pipeline.evaluation import load_metrics
    from mtin_tf.pipeline.metadata import component_timings, run_outputs

    outputs = run_outputs(dirs.metadata)
    evaluator = outputs.get("Evaluator")  # none when the run stopped early (stop_after)
    blessed = bool(evaluator) and tf.io.gfile.exists(os.path.join(evaluator["blessing"][0], "BLESSED"))
    return {"components": component_timings(dirs.metadata),
            "metrics": load_metrics(evaluator["evaluation"][0]) if evaluator else {}, "blessed": blessed,
            "pushed": latest_pushed(dirs.serving) if blessed else None, "outputs": outputs, "metadata": dirs.metadata}
