"""create_pipeline: the MTIN TFX pipeline, one definition for the local, Kubeflow and Airflow runners.

  InteractionsGen (CsvExampleGen) ─┬─ InteractionsStats ─ InteractionsValidator ─┐
  InteractionsSchema ──────────────┘            (ImportSchemaGen, schemas/)      │
  ItemsGen (ImportExampleGen) ─────────────────────────────────────────────── HistoryGen (Beam)
  ExamplesSchema (ImportSchemaGen) ─ Transform ─ Trainer (GPU-ready) ─ Evaluator (+ latest blessed baseline) ─ Pusher

Component ids are the task ids of the Airflow DAG and the task names of the Kubeflow spec.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from mtin_tf.data.history import TEST_FRACTION, VALIDATION_FRACTION
from mtin_tf.data.schema import schemas_dir
from mtin_tf.features import DEFAULT_MAX_HISTORY

SCHEMAS_DIR = schemas_dir()  # the package's (mtin_tf.schemas), wherever mtin-tf is installed
INTERACTIONS_SCHEMA, EXAMPLES_SCHEMA = "interactions/schema.pbtxt", "examples/schema.pbtxt"  # under schemas_dir
STOP_POINTS = ("InteractionsValidator", "HistoryGen", "Transform")  # stop_after's values (None: the whole pipeline)
PIPELINE_NAME = "mtin"
ALL_SPLIT = "all"

COMPONENT_IDS = ("InteractionsGen", "ItemsGen", "InteractionsSchema", "ExamplesSchema", "InteractionsStats",
                 "InteractionsValidator", "HistoryGen", "Transform", "Trainer", "LatestBlessedModel", "Evaluator",
                 "Pusher")


def create_pipeline(*, pipeline_root: str, inputs_dir: str, serving_model_dir: str,
                    pipeline_name: str = PIPELINE_NAME, metadata_path: Optional[str] = None,
                    mtin_config: Optional[dict] = None, max_history: int = DEFAULT_MAX_HISTORY,
                    test_fraction: float = TEST_FRACTION, time_cut: int = 0,
                    validation_fraction: float = VALIDATION_FRACTION, validation_cut: int = 0,
                    max_anomalous_features: int = 0, max_bad_row_fraction: float = 0.0,
                    auc_floor: float = 0.5, max_auc_drop: float = 0.01, enable_cache: bool = True,
                    beam_pipeline_args: Sequence[str] = (), gpu_request: Optional[dict] = None,
                    schemas_dir: str = SCHEMAS_DIR, stop_after: Optional[str] = None, train_steps: int = 0,
                    eval_steps: int = 0, shuffle_buffer: Optional[int] = None):
    """The pipeline as a ``tfx.dsl.Pipeline``.

    Args:
      pipeline_root: where artifacts go; inputs_dir: holds ``interactions/*.csv`` and ``items/*.tfrecord``
        (:func:`mtin_tf.pipeline.inputs.stage_inputs`); serving_model_dir: Pusher's target (``<dir>/<version>/``).
      metadata_path: SQLite ML Metadata file (local runs); None for orchestrators that bring their own MLMD.
      mtin_config: MTINConfig fields for the Trainer (default: MTINConfig's, the paper's settings); its
        ``max_history`` is always ``max_history`` (L), shared by HistoryGen, Transform and the model.
      test_fraction / time_cut: HistoryGen's test split (time_cut > 0: global cut, else per-user last fraction);
        validation_fraction / validation_cut: its validation split, carved from the training period just before test
        (validation_cut > 0: global cut, else per-user fraction). The Trainer fits on ``train`` and early-stops on
        ``validation``; the Evaluator blesses and reports on ``test`` only.
      max_anomalous_features / max_bad_row_fraction: data validation thresholds that stop the run.
      auc_floor / max_auc_drop: blessing thresholds. gpu_request: e.g. ``{"type": "NVIDIA_TESLA_T4", "count": 1}``,
        the Trainer's accelerator request on Kubeflow (platform config; ignored by local runs).
      schemas_dir: the package's schema files (mtin_tf.schemas) as the orchestrator's workers see them (in the
        image: the installed package's, mtin_tf.pipeline.runners.kubeflow.IMAGE_SCHEMAS_DIR).
      train_steps / eval_steps: the Trainer's TrainArgs / EvalArgs ``num_steps`` (0: the config's epochs over the whole
        train split / the whole validation split each epoch); shuffle_buffer: rows in the Trainer's training shuffle
        buffer (None: mtin_tf.pipeline.trainer.SHUFFLE_BUFFER). The Trainer streams both splits (pipeline/trainer.py).
      stop_after: ``"InteractionsValidator"``, ``"HistoryGen"`` or ``"Transform"`` builds only the pipeline up to
        that component (data checks without training).
    """
    from tfx import v1 as tfx
    from tfx.proto import example_gen_pb2

    from mtin_tf.config import MTINConfig
    from mtin_tf.pipeline.components.history import TEST_SPLIT, TRAIN_SPLIT, VALIDATION_SPLIT, HistoryGen
    from mtin_tf.pipeline.evaluation import eval_config

    split_all = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name=ALL_SPLIT, pattern="*")])
    interactions = tfx.components.CsvExampleGen(
        input_base=os.path.join(inputs_dir, "interactions"), input_config=split_all).with_id("InteractionsGen")
    items = tfx.components.ImportExampleGen(
        input_base=os.path.join(inputs_dir, "items"), input_config=split_all).with_id("ItemsGen")
    interactions_schema = tfx.components.ImportSchemaGen(
        schema_file=os.path.join(schemas_dir, INTERACTIONS_SCHEMA)).with_id("InteractionsSchema")
    stats = tfx.components.StatisticsGen(
        examples=interactions.outputs["examples"], schema=interactions_schema.outputs["schema"]
    ).with_id("InteractionsStats")
    validator = tfx.components.ExampleValidator(
        statistics=stats.outputs["statistics"], schema=interactions_schema.outputs["schema"]
    ).with_id("InteractionsValidator")
    components = [interactions, items, interactions_schema, stats, validator]
    if stop_after == "InteractionsValidator":
        return _pipeline(pipeline_name, pipeline_root, components, metadata_path, enable_cache, beam_pipeline_args)

    # Memory pretraining runs in HistoryGen's Beam pipeline (mtin_tf.data.beam_pretrain), with the Trainer's settings.
    model_config = MTINConfig.from_dict({**(mtin_config or {}), "max_history": max_history})
    pretraining = dict(num_groups=model_config.num_groups, memory_anchors=model_config.memory_anchors,
                       pretrain_memory=int(model_config.pretrain_memory), seed=model_config.seed)
    history = HistoryGen(
        interactions=interactions.outputs["examples"], items=items.outputs["examples"],
        anomalies=validator.outputs["anomalies"], max_history=max_history, test_fraction=test_fraction,
        time_cut=time_cut, validation_fraction=validation_fraction, validation_cut=validation_cut,
        max_anomalous_features=max_anomalous_features,
        max_bad_row_fraction=max_bad_row_fraction, **pretraining).with_id("HistoryGen")
    components.append(history)
    if stop_after == "HistoryGen":
        return _pipeline(pipeline_name, pipeline_root, components, metadata_path, enable_cache, beam_pipeline_args)
    if stop_after not in (None, *STOP_POINTS):
        raise ValueError(f"stop_after must be None or one of {STOP_POINTS}, got {stop_after!r}")

    examples_schema = tfx.components.ImportSchemaGen(
        schema_file=os.path.join(schemas_dir, EXAMPLES_SCHEMA)).with_id("ExamplesSchema")
    transform = tfx.components.Transform(
        examples=history.outputs["examples"], schema=examples_schema.outputs["schema"],
        preprocessing_fn="mtin_tf.pipeline.transform.preprocessing_fn", custom_config={"max_history": max_history})
    if stop_after == "Transform":
        components += [examples_schema, transform]
        return _pipeline(pipeline_name, pipeline_root, components, metadata_path, enable_cache, beam_pipeline_args)
    config = {k: v for k, v in (mtin_config or {}).items() if k != "max_history"}
    trainer_config = {"mtin_config": config}
    if shuffle_buffer is not None:
        trainer_config["shuffle_buffer"] = int(shuffle_buffer)
    trainer = tfx.components.Trainer(
        run_fn="mtin_tf.pipeline.trainer.run_fn", examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"], schema=examples_schema.outputs["schema"],
        hyperparameters=history.outputs["training_inputs"],
        train_args=tfx.proto.TrainArgs(splits=[TRAIN_SPLIT], num_steps=train_steps or None),
        eval_args=tfx.proto.EvalArgs(splits=[VALIDATION_SPLIT], num_steps=eval_steps or None),
        custom_config=trainer_config)
    if gpu_request:
        trainer = trainer.with_platform_config(accelerator_resource_spec(**gpu_request))
    baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing)).with_id("LatestBlessedModel")
    evaluator = tfx.components.Evaluator(
        examples=history.outputs["examples"], model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        example_splits=[TEST_SPLIT], eval_config=eval_config(auc_floor=auc_floor, max_auc_drop=max_auc_drop))
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))
    components += [examples_schema, transform, trainer, baseline, evaluator, pusher]
    return _pipeline(pipeline_name, pipeline_root, components, metadata_path, enable_cache, beam_pipeline_args)


def accelerator_resource_spec(type: str = "NVIDIA_TESLA_T4",  # noqa: A002 - KFP's own name for it
                              count: int = 1, cpu_limit: float = 0.0, memory_limit: float = 0.0):
    """The Kubeflow (KFP v2) resource request for a component: GPUs of ``type`` × ``count`` (platform config)."""
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec(
        cpu_limit=cpu_limit, memory_limit=memory_limit)
    spec.accelerator.type = type
    spec.accelerator.count = count
    return spec


def _pipeline(name, root, components, metadata_path, enable_cache, beam_pipeline_args):
    from tfx import v1 as tfx

    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path) if metadata_path else None
    return tfx.dsl.Pipeline(pipeline_name=name, pipeline_root=root, components=components,
                            metadata_connection_config=metadata, enable_cache=enable_cache,
                            beam_pipeline_args=list(beam_pipeline_args))

