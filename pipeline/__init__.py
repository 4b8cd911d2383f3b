"""The MTIN TFX pipeline: raw click logs in, a blessed MTIN SavedModel pushed to a TF Serving directory out.

Modules, one per mechanism:

- :mod:`mtin_tf.pipeline.inputs` — stage canonical data (interactions parquet/CSV + item-feature .npz) as
  ExampleGen inputs.
- :mod:`mtin_tf.pipeline.validation` — read ExampleValidator anomalies and stop the run above a threshold.
- :mod:`mtin_tf.pipeline.components.history` — the HistoryGen component (Beam): mtin_tf's history building, time split.
- :mod:`mtin_tf.pipeline.transform` — Transform's ``preprocessing_fn`` (vocabularies, dense padded histories).
- :mod:`mtin_tf.pipeline.trainer` — Trainer's ``run_fn`` (the shared mtin_tf training loop) and the serving signatures.
- :mod:`mtin_tf.pipeline.evaluation` — TFMA EvalConfig and the per-user ranking metrics (gAUC, Precision/Recall@K).
- :mod:`mtin_tf.pipeline.config` — ``PipelineConfig``: every run setting that is not a location, validated.
- :mod:`mtin_tf.pipeline.pipeline` — ``create_pipeline(config, pipeline_root=..., ...)``.
- :mod:`mtin_tf.pipeline.metadata` — what ML Metadata recorded about the latest run (component states, timings,
  outputs).
- :mod:`mtin_tf.pipeline.runners` — local (LocalDagRunner), Kubeflow (KubeflowV2DagRunner) and Airflow
  (AirflowDagRunner).
- :mod:`mtin_tf.pipeline.cli` — ``mtin pipeline run | compile-kubeflow | airflow-dag``.
- :mod:`mtin_tf.pipeline.demo` — ``mtin demo``: planted data through the local pipeline (or, standalone, mtin_tf.demo).

Importing this package imports nothing heavy; TensorFlow/TFX load when a submodule needs them.
"""
