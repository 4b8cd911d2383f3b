"""``mtin pipeline``: run the TFX pipeline locally, compile it for Kubeflow, or write its Airflow DAG.

  mtin pipeline run --data DIR [--run-dir runs/pipeline] [--set key=value ...] [--beam-arg ARG ...]
  mtin pipeline compile-kubeflow --output FILE [--image IMAGE] --pipeline-root URI --inputs URI --serving-dir URI
                                 [--gpus N --gpu-type TYPE]
  mtin pipeline airflow-dag --dags-folder DIR [--data DIR] [--run-dir DIR]

DIR holds canonical data: interactions.parquet (or *.csv with user_id,item_id,timestamp,click) and item_features.npz.
``run`` prints the evaluation metrics, the blessing and the pushed model's path; rerunning with the same data is
served from the ML Metadata cache, and rerunning after a killed run resumes it.

The three subcommands share the run settings' options, one per field of :class:`mtin_tf.pipeline.config.PipelineConfig`
(generated from the fields: add a setting there), checked before anything runs (a bad value: one error line, exit 2).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from mtin_tf.pipeline.config import PipelineConfig, annotation_types

# PipelineConfig fields whose options are not generated from the field: mtin_config (--config FILE, --set
# KEY=VALUE ...) and gpu_request (compile-kubeflow's --gpus, --gpu-type). Every other field is one option.
COMPOSED_FIELDS = ("mtin_config", "gpu_request")


def add_config_options(p) -> None:
    """The options of every PipelineConfig field, generated from the fields: ``--kebab-case`` (or the field's
    ``flag``), type, default, choices and help from the field; plus --config / --set for ``mtin_config``."""
    p.add_argument("--config", help="JSON file of MTINConfig fields for the Trainer (default: the paper's settings)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="MTINConfig overrides (JSON values)")
    hints = typing.get_type_hints(PipelineConfig)
    for field in dataclasses.fields(PipelineConfig):
        if field.name in COMPOSED_FIELDS:
            continue
        flag = field.metadata.get("flag", "--" + field.name.replace("_", "-"))
        kind, help_text = _option_type(field.name, hints[field.name]), field.metadata["help"].replace("%", "%%")
        if kind is bool:  # a switch that flips the default
            p.add_argument(flag, dest=field.name, action="store_false" if field.default else "store_true",
                           help=help_text)
        elif kind is tuple:
            p.add_argument(flag, dest=field.name, action="append", default=list(field.default), metavar="ARG",
                           help=f"{help_text} (repeatable)")
        else:
            p.add_argument(flag, dest=field.name, type=kind, default=field.default,
                           choices=field.metadata.get("choices"),
                           help=help_text + ("" if field.default is None else " (default: %(default)s)"))


def _option_type(name: str, hint):
    """The option's type for a field annotation: Optional[X] → X; int, float, str, bool; Tuple[str, ...] → tuple."""
    kinds = [t for t in annotation_types(hint) if t is not type(None)]
    kind = kinds[0] if len(kinds) == 1 else None
    if kind not in (int, float, str, bool, tuple):
        raise TypeError(f"PipelineConfig.{name}: no option for {hint}; declare its options and add it to "
                        "COMPOSED_FIELDS")
    return kind


def pipeline_config(args) -> PipelineConfig:
    """The validated PipelineConfig of the parsed options (ValueError, TypeError or OSError: the message to print)."""
    from mtin_tf.config import MTINConfig

    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(PipelineConfig)
              if field.name not in COMPOSED_FIELDS}
    gpus = getattr(args, "gpus", 0)  # compile-kubeflow only
    return PipelineConfig(mtin_config=MTINConfig.overrides(args.config, args.set),
                          gpu_request={"type": args.gpu_type, "count": gpus} if gpus > 0 else None,
                          **values).validate()


def _checked_config(args):
    """pipeline_config(args), or None after printing its error as one line (the command then exits 2)."""
    try:
        return pipeline_config(args)
    except (OSError, TypeError, ValueError) as exc:
        print(f"mtin pipeline: {exc}", file=sys.stderr)
        return None


def register(subparsers) -> None:
    parser = subparsers.add_parser("pipeline", help="the TFX pipeline: run locally, compile for Kubeflow, write the "
                                   "Airflow DAG", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="pipeline_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    run = sub.add_parser("run", help="run the pipeline locally (LocalDagRunner, Beam DirectRunner, SQLite MLMD)")
    run.add_argument("--data", required=True, help="canonical data directory")
    run.add_argument("--run-dir", default="runs/pipeline", help="artifacts, metadata.sqlite, serving/ (pushed models)")
    run.add_argument("--direct-num-workers", type=int, default=0,
                     help="> 1: Beam DirectRunner in multi-process mode with this many workers")
    run.add_argument("--strict", action="store_true",
                     help="stop at the first CSV line of the wrong shape (default: skip it, count it in "
                          "RUN_DIR/inputs/staging_report.json)")
    add_config_options(run)
    run.set_defaults(func=run_command)

    kfp = sub.add_parser("compile-kubeflow", help="write the Kubeflow (KFP v2) pipeline spec")
    kfp.add_argument("--output", required=True, help="pipeline spec file (.json)")
    kfp.add_argument("--image", default=None, help="container image built from the Dockerfile")
    kfp.add_argument("--pipeline-root", default="gs://YOUR_BUCKET/mtin/root",
                     help="artifact root, as the cluster sees it")
    kfp.add_argument("--inputs", default="gs://YOUR_BUCKET/mtin/inputs",
                     help="staged inputs (interactions/*.csv, items/*.tfrecord; see `mtin pipeline run`'s inputs/)")
    kfp.add_argument("--serving-dir", default="gs://YOUR_BUCKET/mtin/serving", help="Pusher's model base directory")
    kfp.add_argument("--gpus", type=int, default=1, help="GPUs requested by the Trainer (0: none)")
    kfp.add_argument("--gpu-type", default="NVIDIA_TESLA_T4", help="accelerator type of the Trainer's GPUs")
    add_config_options(kfp)
    kfp.set_defaults(func=compile_kubeflow_command)

    af = sub.add_parser("airflow-dag", help="write an Airflow DAG file (AirflowDagRunner) into a dags folder")
    af.add_argument("--dags-folder", required=True, help="Airflow's dags folder")
    af.add_argument("--run-dir", default="runs/pipeline", help="artifacts, metadata.sqlite, serving/")
    af.add_argument("--data", help="canonical data directory to stage into RUN_DIR/inputs now")
    af.add_argument("--strict", action="store_true", help="stop staging at the first CSV line of the wrong shape")
    add_config_options(af)
    af.set_defaults(func=airflow_dag_command)


def run_command(args) -> int:
    from mtin_tf.data.report import BadInputError
    from mtin_tf.pipeline.runners.local import run_local, run_summary
    from mtin_tf.pipeline.validation import DataValidationError

    config = _checked_config(args)
    if config is None:
        return 2
    try:
        dirs = run_local(args.data, args.run_dir, config, direct_num_workers=args.direct_num_workers,
                         strict=args.strict)
    except (BadInputError, DataValidationError) as e:
        print(f"mtin pipeline: data validation stopped the run:\n{e}", file=sys.stderr)
        return 1
    print_run_summary(run_summary(dirs))
    return 0


def print_run_summary(summary: dict) -> None:
    """Print a run's summary (mtin_tf.pipeline.runners.local.run_summary): per-component state and wall time, the
    overall test metrics, the blessing and the pushed model."""
    print("\n== mtin pipeline run ==")
    for node, seconds, state in summary["components"]:
        print(f"  {node:<22} {state:<9} {seconds:7.1f}s")
    if "Evaluator" not in summary["outputs"]:
        print(f"  stopped after {summary['components'][-1][0] if summary['components'] else '(nothing)'} "
              f"(--stop-after): no evaluation, nothing pushed")
        print(f"  ML Metadata: {summary['metadata']}")
        return
    print("  test metrics (overall, Evaluator):")
    for name, value in sorted(summary["metrics"].get("", {}).items()):
        print(f"    {name:>14}: {value:.4f}" if isinstance(value, float) else f"    {name:>14}: {value}")
    print(f"  blessed: {summary['blessed']}")
    print(f"  pushed model: {summary['pushed'] or '(none: not blessed)'}")
    print(f"  ML Metadata: {summary['metadata']}")


def compile_kubeflow_command(args) -> int:
    from mtin_tf.pipeline.runners.kubeflow import DEFAULT_IMAGE, compile_kubeflow

    config = _checked_config(args)
    if config is None:
        return 2
    path = compile_kubeflow(args.output, config, image=args.image or DEFAULT_IMAGE, pipeline_root=args.pipeline_root,
                            inputs_dir=args.inputs, serving_model_dir=args.serving_dir)
    print(f"mtin pipeline: Kubeflow pipeline spec written to {path}")
    return 0


def airflow_dag_command(args) -> int:
    from mtin_tf.pipeline.runners.airflow import write_dag_file
    from mtin_tf.pipeline.runners.local import RunDirs, beam_args

    config = _checked_config(args)
    if config is None:
        return 2
    dirs = RunDirs.at(args.run_dir)
    if args.data:
        from mtin_tf.pipeline.inputs import stage_inputs

        stage_inputs(args.data, dirs.inputs, strict=args.strict)
    config = dataclasses.replace(config, beam_pipeline_args=beam_args(config.beam_pipeline_args))
    path = write_dag_file(args.dags_folder, {"run_dir": dirs.run_dir, "config": config.to_dict()})
    print(f"mtin pipeline: Airflow DAG file written to {path} (DAG id mtin; inputs expected in {dirs.inputs})")
    return 0
