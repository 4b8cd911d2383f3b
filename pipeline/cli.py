"""``mtin pipeline``: run the TFX pipeline locally, compile it for Kubeflow, or write its Airflow DAG.

  mtin pipeline run --data DIR [--run-dir runs/pipeline] [--set key=value ...] [--beam-arg ARG ...]
  mtin pipeline compile-kubeflow --output FILE [--image IMAGE] --pipeline-root URI --inputs URI --serving-dir URI
                                 [--gpus N --gpu-type TYPE]
  mtin pipeline airflow-dag --dags-folder DIR [--data DIR] [--run-dir DIR]

DIR holds canonical data: interactions.parquet (or *.csv with user_id,item_id,timestamp,click) and item_features.npz.
``run`` prints the evaluation metrics, the blessing and the pushed model's path; rerunning with the same data is
served from the ML Metadata cache, and rerunning after a killed run resumes it.
"""
from __future__ import annotations

import argparse
import sys

from mtin_tf.data.history import TEST_FRACTION, VALIDATION_FRACTION
from mtin_tf.features import DEFAULT_MAX_HISTORY
from mtin_tf.pipeline.pipeline import STOP_POINTS


def _pipeline_options(p) -> None:
    p.add_argument("--config", help="JSON file of MTINConfig fields for the Trainer (default: the paper's settings)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="MTINConfig overrides (JSON values)")
    p.add_argument("--max-history", type=int, default=DEFAULT_MAX_HISTORY,
                   help=f"history length L (default {DEFAULT_MAX_HISTORY})")
    p.add_argument("--test-fraction", type=float, default=TEST_FRACTION,
                   help=f"per-user share of latest interactions in test (default {TEST_FRACTION})")
    p.add_argument("--time-cut", type=int, default=0, help="global time split: test = timestamp >= this (if > 0)")
    p.add_argument("--validation-fraction", type=float, default=VALIDATION_FRACTION,
                   help="per-user share of interactions just before test in validation (early stopping; default "
                        f"{VALIDATION_FRACTION})")
    p.add_argument("--validation-cut", type=int, default=0,
                   help="global cut instead: non-test interactions with timestamp >= this are validation (if > 0)")
    p.add_argument("--auc-floor", type=float, default=0.5, help="blessing: minimum test AUC")
    p.add_argument("--max-auc-drop", type=float, default=0.01, help="blessing: max AUC drop vs the last blessed model")
    p.add_argument("--max-anomalous-features", type=int, default=0, help="stop when more features are anomalous")
    p.add_argument("--max-bad-row-fraction", type=float, default=0.0, help="stop when more rows are unreadable")
    p.add_argument("--train-steps", type=int, default=0,
                   help="Trainer: total training steps (TrainArgs.num_steps; default 0: the config's epochs)")
    p.add_argument("--eval-steps", type=int, default=0,
                   help="Trainer: validation steps per epoch (EvalArgs.num_steps; default 0: the whole split)")
    p.add_argument("--shuffle-buffer", type=int, default=None,
                   help="Trainer: rows in the training shuffle buffer (default 10000)")
    p.add_argument("--beam-arg", action="append", default=[], metavar="ARG",
                   help="Beam pipeline argument, repeatable (e.g. --beam-arg=--direct_num_workers=2)")


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
    run.add_argument("--no-cache", action="store_true", help="rerun every component")
    run.add_argument("--strict", action="store_true",
                     help="stop at the first CSV line of the wrong shape (default: skip it, count it in "
                          "RUN_DIR/inputs/staging_report.json)")
    run.add_argument("--stop-after", choices=STOP_POINTS, default=None,
                     help="run the pipeline only up to this component (data checks without training)")
    _pipeline_options(run)
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
    _pipeline_options(kfp)
    kfp.set_defaults(func=compile_kubeflow_command)

    af = sub.add_parser("airflow-dag", help="write an Airflow DAG file (AirflowDagRunner) into a dags folder")
    af.add_argument("--dags-folder", required=True, help="Airflow's dags folder")
    af.add_argument("--run-dir", default="runs/pipeline", help="artifacts, metadata.sqlite, serving/")
    af.add_argument("--data", help="canonical data directory to stage into RUN_DIR/inputs now")
    af.add_argument("--strict", action="store_true", help="stop staging at the first CSV line of the wrong shape")
    _pipeline_options(af)
    af.set_defaults(func=airflow_dag_command)


def pipeline_kwargs(args) -> dict:
    """create_pipeline keywords from the shared options."""
    from mtin_tf.config import MTINConfig

    try:
        mtin_config = MTINConfig.overrides(args.config, args.set)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"mtin pipeline: {exc}") from None
    return dict(mtin_config=mtin_config, max_history=args.max_history,
                test_fraction=args.test_fraction, time_cut=args.time_cut,
                validation_fraction=args.validation_fraction, validation_cut=args.validation_cut,
                auc_floor=args.auc_floor, max_auc_drop=args.max_auc_drop,
                max_anomalous_features=args.max_anomalous_features, max_bad_row_fraction=args.max_bad_row_fraction,
                train_steps=args.train_steps, eval_steps=args.eval_steps,
                **({} if args.shuffle_buffer is None else {"shuffle_buffer": args.shuffle_buffer}))


def run_command(args) -> int:
    from mtin_tf.data.report import BadInputError
    from mtin_tf.pipeline.runners.local import run_local, run_summary
    from mtin_tf.pipeline.validation import DataValidationError

    try:
        dirs = run_local(args.data, args.run_dir, beam_pipeline_args=args.beam_arg,
                         direct_num_workers=args.direct_num_workers, enable_cache=not args.no_cache,
                         strict=args.strict, stop_after=args.stop_after, **pipeline_kwargs(args))
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

    path = compile_kubeflow(args.output, image=args.image or DEFAULT_IMAGE, pipeline_root=args.pipeline_root,
                            inputs_dir=args.inputs, serving_model_dir=args.serving_dir, gpu_type=args.gpu_type,
                            gpu_count=args.gpus, beam_pipeline_args=args.beam_arg, **pipeline_kwargs(args))
    print(f"mtin pipeline: Kubeflow pipeline spec written to {path}")
    return 0


def airflow_dag_command(args) -> int:
    from mtin_tf.pipeline.runners.airflow import write_dag_file
    from mtin_tf.pipeline.runners.local import RunDirs, beam_args

    dirs = RunDirs.at(args.run_dir)
    if args.data:
        from mtin_tf.pipeline.inputs import stage_inputs

        stage_inputs(args.data, dirs.inputs, strict=args.strict)
    settings = dict(run_dir=dirs.run_dir, beam_pipeline_args=beam_args(args.beam_arg), **pipeline_kwargs(args))
    path = write_dag_file(args.dags_folder, settings)
    print(f"mtin pipeline: Airflow DAG file written to {path} (DAG id mtin; inputs expected in {dirs.inputs})")
    return 0
