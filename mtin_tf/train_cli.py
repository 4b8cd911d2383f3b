"""``mtin train``: train MTIN (or a baseline) on examples built by ``mtin data build``, evaluate, export.

  mtin train --examples DIR --items item_features.npz --out DIR
             [--model mtin|bpr|lstm|cnn|ncf|atrank|din|mind|thacil|alpine] [--variant MTIN|MTIN-I|MTIN-P]
             [--config config.json] [--set key=value ...] [--refit]
  mtin evaluate --model-dir OUT/model/<version> --examples DIR [--split test|validation|train]
             [--signature keras|predict_raw] [--out metrics.json]

Reads DIR/train.tfrecord, DIR/validation.tfrecord and DIR/test.tfrecord (``mtin data build``), trains on train with
early stopping on validation AUC (the restored epoch is the best on validation), then scores test once (--refit: with
the model trained again on train + validation for the epoch count validation chose). Writes OUT/metrics.json —
``validation`` and ``test`` blocks (AUC, gAUC, Precision/Recall/F1@10,50 with the protocol of docs/EVALUATION.md; the
test metrics also at the top level), ``floors`` (the popularity floors' test metrics, fitted on the training rows,
--refit: train + validation; mtin_tf.floors) and ``below_floor`` (test AUC under the best floor's) — plus
OUT/config.json, TensorBoard logs in OUT/logs and the SavedModel in OUT/model/<version>/. Baselines
(mtin_tf.baselines) read the same MTINConfig fields (embedding_dim, max_history, num_groups for MIND's interests and
THACIL's blocks, time_scale for ALPINE's edges, training settings) and ignore the rest.
`mtin evaluate` scores an exported SavedModel on built examples with the same metrics.
"""
# This module parses the arguments and prints; the run itself is mtin_tf.train.train_and_evaluate (and floor_report),
# the evaluation mtin_tf.export.evaluate_saved_model. Their ValueErrors become a message and exit code 1.
from __future__ import annotations

import argparse
import json
import os
import sys

from mtin_tf.baselines import MODELS
from mtin_tf.config import VARIANTS, MTINConfig
from mtin_tf.export import SIGNATURES


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train MTIN (or a baseline) on built examples without TFX",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", required=True,
                   help="directory with train.tfrecord, validation.tfrecord and test.tfrecord (mtin data build)")
    p.add_argument("--items", required=True, help="item features (.npz from mtin data convert/generate)")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="mtin", choices=MODELS)
    p.add_argument("--variant", default="MTIN", choices=tuple(VARIANTS))
    p.add_argument("--config", help="JSON file of MTINConfig fields")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="MTINConfig overrides (JSON values)")
    p.add_argument("--refit", action="store_true",
                   help="after choosing the epoch count on validation, train again from the same seed on train + "
                        "validation for that many epochs; test, the floors and the exported model use that model")
    p.add_argument("--verbose", type=int, default=None,
                   help="Keras fit verbosity (default: a progress bar on a terminal, one line per epoch otherwise)")
    p.set_defaults(func=run)


def register_evaluate(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score an exported model on built examples: AUC, gAUC, P/R/F1@K",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True, help="an exported SavedModel version directory (OUT/model/<version>)")
    p.add_argument("--examples", required=True, help="directory of mtin data build (train/validation/test.tfrecord)")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--signature", default="keras", choices=SIGNATURES,
                   help="keras: tf_keras.models.load_model; predict_raw: the raw-tensor serving signature")
    p.add_argument("--ks", type=int, nargs="+", default=[10, 50], help="K of Precision/Recall/F1@K")
    p.add_argument("--out", help="write the metrics JSON here too")
    p.set_defaults(func=run_evaluate)


def run(args) -> int:
    from mtin_tf.output import summary_line
    from mtin_tf.train import floor_report, train_and_evaluate

    try:
        overrides = MTINConfig.overrides(args.config, args.set)
    except (ValueError, TypeError) as exc:
        print(f"mtin train: {exc}", file=sys.stderr)
        return 2
    try:
        result = train_and_evaluate(args.examples, args.items, args.out, model_name=args.model, variant=args.variant,
                                    overrides=overrides, verbose=args.verbose, refit=args.refit)
    except ValueError as exc:
        print(f"mtin train: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    print(floor_report(result))
    print(summary_line("mtin train", result))
    return 0


def run_evaluate(args) -> int:
    from mtin_tf.export import evaluate_saved_model

    try:
        result = evaluate_saved_model(args.model_dir, args.examples, split=args.split, signature=args.signature,
                                      ks=args.ks)
    except ValueError as exc:
        print(f"mtin evaluate: {exc}", file=sys.stderr)
        return 1
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0
