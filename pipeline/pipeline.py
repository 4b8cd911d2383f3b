"""create_pipeline: the MTIN TFX pipeline, one definition for the local, Kubeflow and Airflow runners.

  InteractionsGen (CsvExampleGen) ─┬─ InteractionsStats ─ InteractionsValidator ─┐
  InteractionsSchema ──────────────┘            (ImportSchemaGen, schemas/)      │
  ItemsGen (ImportExampleGen) ─────────────────────────────────────────────── HistoryGen (Beam)
  ExamplesSchema (ImportSchemaGen) ─ Transform ─ Trainer (GPU-ready) ─ Evaluator (+ latest blessed baseline) ─ Pusher

Component ids are the task ids of the Airflow DAG and the task names of the Kubeflow spec.
"""
from __future__ import annotations

import os
from typing import Optional

from mtin_tf.data.schema import schemas_dir
from mtin_tf.pipeline.config import PipelineConfig

SCHEMAS_DIR = schemas_dir()  # the package's (mtin_tf.schemas), wherever mtin-tf is installed
INTERACTIONS_SCHEMA, EXAMPLES_SCHEMA = "interactions/schema.pbtxt", "examples/schema.pbtxt"  # under schemas_dir
PIPELINE_NAME = "mtin"
ALL_SPLIT = "all"

COMPONENT_IDS = ("InteractionsGen", "ItemsGen", "InteractionsSchema", "ExamplesSchema", "InteractionsStats",
                 "InteractionsValidator", "HistoryGen", "Transform", "Trainer", "LatestBlessedModel", "Evaluator",
                 "Pusher")


def create_pipeline(config: PipelineConfig, *, pipeline_root: str, inputs_dir: str, serving_model_dir: str,
                    pipeline_name: str = PIPELINE_NAME, metadata_path: Optional[str] = None,
                    schemas_dir: str = SCHEMAS_DIR):
    """The pipeline as a ``tfx.dsl.Pipeline``, with the run settings of ``config`` (validated first: ValueError
    before any component is built).

    Args:
      config: every setting that is not a location (:class:`mtin_tf.pipeline.config.PipelineConfig`, each field's
        help says what it does). ``mtin_config``'s ``max_history`` is always ``config.max_history`` (L), shared by
        HistoryGen, Transform and the model. HistoryGen makes the ``train``, ``validation`` and ``test`` splits; the
        Trainer fits on ``train`` (streaming both splits: pipeline/trainer.py) and early-stops on ``validation``; the
        Evaluator blesses and reports on ``test`` only. ``gpu_request`` is platform config (Kubeflow); ``stop_after``
        builds the pipeline only up to that component.
      pipeline_root: where artifacts go; inputs_dir: holds ``interactions/*.csv`` and ``items/*.tfrecord``
        (:func:`mtin_tf.pipeline.inputs.stage_inputs`); serving_model_dir: Pusher's target (``<dir>/<version>/``).
      metadata_path: SQLite ML Metadata file (local runs); None for orchestrators that bring their own MLMD.
      schemas_dir: the package's schema files (mtin_tf.schemas) as the orchestrator's workers see them (in the
        image: the installed package's, mtin_tf.pipeline.runners.kubeflow.IMAGE_SCHEMAS_DIR).
    """
    config.validate()  # before TFX is even imported
    from tfx import v1 as tfx
    from tfx.proto import example_gen_pb2

    from mtin_tf.config import MTINConfig
    from mtin_tf.pipeline.components.history import TEST_SPLIT, TRAIN_SPLIT, VALIDATION_SPLIT, HistoryGen
    from mtin_tf.pipeline.evaluation import eval_config

    build = lambda components: _pipeline(pipeline_name, pipeline_root, components, metadata_path, config)
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
    if config.stop_after == "InteractionsValidator":
        return build(components)

    # Memory pretraining runs in HistoryGen's Beam pipeline (mtin_tf.data.beam_pretrain), with the Trainer's settings.
    trained = MTINConfig.from_dict({**config.mtin_config, "max_history": config.max_history})
    pretraining = dict(num_groups=trained.num_groups, memory_anchors=trained.memory_anchors,
                       pretrain_memory=int(trained.pretrain_memory), seed=trained.seed,
                       refit=int(config.refit))  # with refit, anchors over train + validation for the refit model
    history = HistoryGen(
        interactions=interactions.outputs["examples"], items=items.outputs["examples"],
        anomalies=validator.outputs["anomalies"], max_history=config.max_history,
        test_fraction=config.test_fraction, time_cut=config.time_cut,
        validation_fraction=config.validation_fraction, validation_cut=config.validation_cut,
        max_anomalous_features=config.max_anomalous_features,
        max_bad_row_fraction=config.max_bad_row_fraction, **pretraining).with_id("HistoryGen")
    components.append(history)
    if config.stop_after == "HistoryGen":
        return build(components)

    examples_schema = tfx.components.ImportSchemaGen(
        schema_file=os.path.join(schemas_dir, EXAMPLES_SCHEMA)).with_id("ExamplesSchema")
    transform = tfx.components.Transform(
        examples=history.outputs["examples"], schema=examples_schema.outputs["schema"],
        preprocessing_fn="mtin_tf.pipeline.transform.preprocessing_fn",
        custom_config={"max_history": config.max_history},
        # No TFDV statistics of the data before and after Transform: nothing reads them (InteractionsStats checks
        # the raw data), and at 1 M interactions they took Transform from 1.3 GB to 8.2 GB of peak memory.
        disable_statistics=True)
    if config.stop_after == "Transform":
        components += [examples_schema, transform]
        return build(components)
    model_config = {k: v for k, v in config.mtin_config.items() if k != "max_history"}
    trainer_config = {"mtin_config": model_config}
    if config.shuffle_buffer is not None:
        trainer_config["shuffle_buffer"] = config.shuffle_buffer
    if config.refit:
        trainer_config["refit"] = True
    trainer = tfx.components.Trainer(
        run_fn="mtin_tf.pipeline.trainer.run_fn", examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"], schema=examples_schema.outputs["schema"],
        hyperparameters=history.outputs["training_inputs"],
        train_args=tfx.proto.TrainArgs(splits=[TRAIN_SPLIT], num_steps=config.train_steps or None),
        eval_args=tfx.proto.EvalArgs(splits=[VALIDATION_SPLIT], num_steps=config.eval_steps or None),
        custom_config=trainer_config)
    if config.gpu_request:
        trainer = trainer.with_platform_config(accelerator_resource_spec(**config.gpu_request))
    baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing)).with_id("LatestBlessedModel")
    evaluator = tfx.components.Evaluator(
        examples=history.outputs["examples"], model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        example_splits=[TEST_SPLIT],
        eval_config=eval_config(auc_floor=config.auc_floor, max_auc_drop=config.max_auc_drop))
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))
    components += [examples_schema, transform, trainer, baseline, evaluator, pusher]
    return build(components)


def accelerator_resource_spec(type: str = "NVIDIA_TESLA_T4",  # noqa: A002 - KFP's own name for it
                              count: int = 1, cpu_limit: float = 0.0, memory_limit: float = 0.0):
    """The Kubeflow (KFP v2) resource request for a component: GPUs of ``type`` × ``count`` (platform config)."""
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec(
        cpu_limit=cpu_limit, memory_limit=memory_limit)
    spec.accelerator.type = type
    spec.accelerator.count = count
    return spec


def _pipeline(name, root, components, metadata_path, config: PipelineConfig):
    from tfx import v1 as tfx

    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path) if metadata_path else None
    return tfx.dsl.Pipeline(pipeline_name=name, pipeline_root=root, components=components,
                            metadata_connection_config=metadata, enable_cache=config.enable_cache,
                            beam_pipeline_args=list(config.beam_pipeline_args))

