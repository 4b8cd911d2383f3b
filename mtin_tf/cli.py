"""The ``mtin`` command. Each subcommand lives beside the mechanism it drives and registers itself here.

Each entry names ``module`` or ``module:function``; that function (default ``register``) takes the argparse
subparsers, adds the subcommand's parser and sets ``func`` to a callable taking the parsed arguments and returning
an exit code. Modules are imported lazily only when needed, so ``mtin --help``
stays fast and a missing optional dependency only affects its own subcommand.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# (subcommand, module that registers it, one-line help shown by `mtin --help`)
SUBCOMMANDS = (
    ("data", "mtin_tf.data.cli", "convert, fetch, generate and build training examples from click logs"),
    ("train", "mtin_tf.train_cli", "train MTIN (or a baseline) on built examples without TFX"),
    ("evaluate", "mtin_tf.train_cli:register_evaluate",
     "score an exported model on built examples: AUC, gAUC, P/R/F1@K"),
    ("experiment", "mtin_tf.experiment.cli", "models x datasets x seeds from a config file: tables and plots"),
    ("pipeline", "mtin_tf.pipeline.cli", "the TFX pipeline: run locally, compile for Kubeflow, write the Airflow DAG"),
    ("demo", "mtin_tf.pipeline.demo",
     "the README's main job: planted data through the local TFX pipeline to a pushed model"),
    ("serve", "mtin_tf.serving.cli:register_serve",
     "serve a versioned SavedModel directory over TF Serving's gRPC API"),
    ("predict", "mtin_tf.serving.cli:register_predict",
     "score one user's candidates through a TF Serving gRPC endpoint"),
    ("recommend", "mtin_tf.serving.cli:register_recommend", "top-k candidates for one user through a gRPC endpoint"),
)


def _set_env() -> None:
    # TF_USE_LEGACY_KERAS is set by importing mtin_tf (this module's package), before any TensorFlow import.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


VERBOSE_FLAGS = ("-v", "--verbose")


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtin", description="MTIN: multi-scale time-aware user interest network.")
    parser.add_argument(*VERBOSE_FLAGS, action="store_true", dest="show_all_output",
                        help="also print third-party messages (TensorFlow, absl, Beam, TFX INFO and warnings), "
                             "filtered by default; put it before COMMAND")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in SUBCOMMANDS:
        if name == load:
            module_name, _, function = module.partition(":")
            getattr(importlib.import_module(module_name), function or "register")(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The console entry point (argv None: sys.argv, and this process's output is set up by mtin_tf.output before
    anything imports TensorFlow); with argv, a library call (tests, `mtin demo`'s steps) that leaves it as it is."""
    _set_env()
    entry_point = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while argv and argv[0] in VERBOSE_FLAGS:
        verbose = True
        argv.pop(0)
    if entry_point:
        from mtin_tf import output

        output.configure(verbose=verbose)
    names = {name for name, _, _ in SUBCOMMANDS}
    command = argv[0] if argv and argv[0] in names else None
    parser = build_parser(load=command)
    args = parser.parse_args(argv)
    if command is None:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
