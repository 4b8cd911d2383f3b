"""``mtin experiment``: parse the arguments, run the experiment (mtin_tf.experiment.runner), print results.md."""
from __future__ import annotations

import argparse
import os

from mtin_tf import experiment


def register(subparsers) -> None:
    p = subparsers.add_parser("experiment", help="models x datasets x seeds from a config file: tables and plots",
                              description=experiment.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment config (JSON)")
    p.add_argument("--out", help="results directory (overrides the config's out)")
    p.add_argument("--only", nargs="*", default=None, help="run only these tables (by name)")
    p.add_argument("--datasets", nargs="*", default=None, help="run only these datasets")
    p.add_argument("--seeds", nargs="*", type=int, default=None,
                   help="run only these seeds of each table's (processes sharing the results directory's run cache "
                        "can split the seeds between them; a last run without --seeds then trains nothing and writes "
                        "the whole tables)")
    p.add_argument("--refit", action="store_true",
                   help="after choosing each run's epoch on validation, train it again on train + validation for "
                        "that many epochs and score test with it; floors fitted on the same rows — for every table (a "
                        "table's own \"refit\": true does the same for that table)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mtin_tf.experiment.runner import load_config, run_experiment

    config = load_config(args.config, args.out)
    if args.refit:
        config["refit"] = True
    run_experiment(config, only=args.only, datasets=args.datasets, seeds=args.seeds)
    with open(os.path.join(config["out"], "results.md")) as f:
        print(f.read())
    return 0
