"""``mtin train``: train MTIN (or a baseline) on examples built by ``mtin data build``, evaluate, export.

  mtin train --examples DIR --items item_features.npz --out DIR [--model mtin|din] [--variant MTIN|MTIN-I|MTIN-P]
             [--config config.json] [--set key=value ...]

Reads DIR/train.tfrecord and DIR/test.tfrecord, trains with early stopping on test AUC, writes OUT/metrics.json
(AUC, gAUC, Precision/Recall/F1@10,50 with the protocol of docs/EVALUATION.md), OUT/config.json, TensorBoard logs in
OUT/logs and the SavedModel in OUT/model/<version>/.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os

MODELS = ("mtin", "din")


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train MTIN (or a baseline) on built examples without TFX",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", required=True, help="directory with train.tfrecord and test.tfrecord")
    p.add_argument("--items", required=True, help="item features (.npz from mtin data convert/generate)")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="mtin", choices=MODELS)
    p.add_argument("--variant", default="MTIN", choices=("MTIN", "MTIN-I", "MTIN-P"))
    p.add_argument("--config", help="JSON file of MTINConfig fields")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="MTINConfig overrides (JSON values)")
    p.add_argument("--verbose", type=int, default=2)
    p.set_defaults(func=run)


def parse_overrides(config_file: str | None, pairs) -> dict:
    values = {}
    if config_file:
        with open(config_file) as f:
            values.update(json.load(f))
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"mtin train: --set expects KEY=VALUE, got {pair!r}")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def train_and_evaluate(examples_dir, items_path, out_dir, *, model_name="mtin", variant="MTIN", overrides=None,
                       verbose=2) -> dict:
    """The whole standalone run; returns the metrics dict (also written to out_dir/metrics.json)."""
    from mtin_tf import features as F
    from mtin_tf import metrics
    from mtin_tf.baselines import build_din
    from mtin_tf.config import MTINConfig
    from mtin_tf.data.canonical import read_item_features
    from mtin_tf.data.examples import TEST_FILE, TRAIN_FILE, read_tfrecords, to_model_arrays
    from mtin_tf.export import export_saved_model
    from mtin_tf.model import build_mtin
    from mtin_tf.train import predict_probabilities, train_mtin

    config = MTINConfig.variant(variant, **(overrides or {}))
    items = read_item_features(items_path)
    train = to_model_arrays(read_tfrecords(os.path.join(examples_dir, TRAIN_FILE)), config.max_history)
    test = to_model_arrays(read_tfrecords(os.path.join(examples_dir, TEST_FILE)), config.max_history)
    if len(train[F.LABEL]) == 0 or len(test[F.LABEL]) == 0:
        raise SystemExit(f"mtin train: {examples_dir} has {len(train[F.LABEL])} train and {len(test[F.LABEL])} test "
                         "examples; both must be non-empty")
    builder = {"mtin": build_mtin, "din": build_din}[model_name]
    os.makedirs(out_dir, exist_ok=True)
    model, history = train_mtin(config, train, items.item_ids, items.features, eval_arrays=test, builder=builder,
                                log_dir=os.path.join(out_dir, "logs"), verbose=verbose)
    scores = predict_probabilities(model, test)
    result = metrics.summary(test[F.USER_ID], test[F.LABEL], scores, ks=(10, 50))
    result.update(model=model_name, variant=variant if model_name == "mtin" else model_name,
                  train_examples=int(len(train[F.LABEL])), test_examples=int(len(test[F.LABEL])),
                  epochs_run=len(history.history["loss"]))
    result["model_path"] = export_saved_model(model, os.path.join(out_dir, "model"))
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2)
    return result


def run(args) -> int:
    result = train_and_evaluate(args.examples, args.items, args.out, model_name=args.model, variant=args.variant,
                                overrides=parse_overrides(args.config, args.set), verbose=args.verbose)
    print(json.dumps(result, indent=2))
    return 0
