"""``mtin train``: train MTIN (or a baseline) on examples built by ``mtin data build``, evaluate, export.

  mtin train --examples DIR --items item_features.npz --out DIR
             [--model mtin|bpr|lstm|cnn|ncf|atrank|din|mind|thacil|alpine] [--variant MTIN|MTIN-I|MTIN-P]
             [--config config.json] [--set key=value ...]
  mtin evaluate --model-dir OUT/model/<version> --examples DIR [--split test|validation|train]
             [--signature keras|predict_raw] [--out metrics.json]

Reads DIR/train.tfrecord, DIR/validation.tfrecord and DIR/test.tfrecord (``mtin data build``), trains on train with
early stopping on validation AUC (the restored epoch is the best on validation), then scores test once. Writes
OUT/metrics.json — ``validation`` and ``test`` blocks (AUC, gAUC, Precision/Recall/F1@10,50 with the protocol of
docs/EVALUATION.md; the test metrics also at the top level), ``floors`` (the popularity floors' test metrics, fitted
on the training rows: mtin_tf.floors) and ``below_floor`` (test AUC under the best floor's) — plus OUT/config.json,
TensorBoard logs in OUT/logs and the SavedModel in OUT/model/<version>/. Baselines (mtin_tf.baselines) read the same
MTINConfig fields (embedding_dim, max_history, num_groups for MIND's interests and THACIL's blocks, time_scale for
ALPINE's edges, training settings) and ignore the rest.
`mtin evaluate` scores an exported SavedModel on built examples with the same metrics.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from mtin_tf.config import VARIANTS as _VARIANTS

MODELS = ("mtin", "bpr", "lstm", "cnn", "ncf", "atrank", "din", "mind", "thacil", "alpine")
VARIANTS = tuple(_VARIANTS)
SIGNATURES = ("keras", "predict_raw")
ROUTING_METRICS = ("_dropped", "_groups_used", "_largest_group")


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train MTIN (or a baseline) on built examples without TFX",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", required=True,
                   help="directory with train.tfrecord, validation.tfrecord and test.tfrecord (mtin data build)")
    p.add_argument("--items", required=True, help="item features (.npz from mtin data convert/generate)")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="mtin", choices=MODELS)
    p.add_argument("--variant", default="MTIN", choices=VARIANTS)
    p.add_argument("--config", help="JSON file of MTINConfig fields")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="MTINConfig overrides (JSON values)")
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


def train_and_evaluate(examples_dir, items_path, out_dir, *, model_name="mtin", variant="MTIN", overrides=None,
                       verbose=2) -> dict:
    """The whole standalone run; returns the metrics dict (also written to out_dir/metrics.json).

    Early stopping and the restored epoch are decided on the validation split; test is scored once, at the end.
    """
    import numpy as np

    from mtin_tf import features as F
    from mtin_tf import floors, metrics
    from mtin_tf.baselines import BUILDERS
    from mtin_tf.config import MTINConfig
    from mtin_tf.data.canonical import read_item_features
    from mtin_tf.data.examples import read_split_arrays
    from mtin_tf.export import export_saved_model
    from mtin_tf.model import build_mtin, is_mtin
    from mtin_tf.retrieval import catalogue_metrics, popularity_floor_metrics
    from mtin_tf.train import EVAL_AUC, predict_probabilities, train_mtin

    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; known: {MODELS}")
    config = MTINConfig.variant(variant, **(overrides or {}))
    try:
        data = read_split_arrays(examples_dir, config.max_history)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"mtin train: {e}") from None
    train, validation, test = data["train"], data["validation"], data["test"]
    items = read_item_features(items_path)
    builder = build_mtin if model_name == "mtin" else BUILDERS[model_name]
    os.makedirs(out_dir, exist_ok=True)
    model, history = train_mtin(config, train, items.item_ids, items.features, eval_arrays=validation,
                                builder=builder, log_dir=os.path.join(out_dir, "logs"), verbose=verbose)
    curve = [float(v) for v in history.history.get(EVAL_AUC, [])]
    blocks = {name: metrics.summary(arrays[F.USER_ID], arrays[F.LABEL], predict_probabilities(model, arrays),
                                    ks=(10, 50)) for name, arrays in (("validation", validation), ("test", test))}
    floor = floors.floor_metrics(train, test, ks=(10, 50))
    result = dict(blocks["test"])  # top level: the test metrics, as before the validation split
    result.update(model=model_name, variant=variant if model_name == "mtin" else model_name, **blocks,
                  floors=floor, below_floor=bool(blocks["test"]["auc"] < floors.best_floor_auc(floor)),
                  train_examples=int(len(train[F.LABEL])), validation_examples=int(len(validation[F.LABEL])),
                  test_examples=int(len(test[F.LABEL])), epochs_run=len(history.history["loss"]),
                  # EarlyStopping(restore_best_weights) restores the first epoch with the best validation AUC
                  best_epoch=int(np.argmax(curve)) + 1 if curve else len(history.history["loss"]),
                  curves={"validation_auc": curve})
    # Routing diagnostics at the chosen epoch (validation): share of real items dropped, groups used, largest group.
    best = result["best_epoch"] - 1
    result["routing"] = {k[len("val_"):]: float(v[best]) for k, v in history.history.items()
                         if k.startswith("val_") and k.endswith(ROUTING_METRICS) and len(v) > best}
    # Item identity fits data whose test items recur in training; cold-start data wants features only.
    seen = float(np.isin(test[F.ITEM_ID], train[F.ITEM_ID]).mean())
    result["test_items_seen_in_training"] = seen
    if seen < 0.5 and (config.use_id_embedding or config.use_item_bias):
        result["hint"] = (f"only {seen:.0%} of the test candidates occur in training: id embeddings and item biases "
                          "cannot help here; try --set use_id_embedding=false use_item_bias=false")
    if is_mtin(model):  # recommending from the whole catalogue (the recommend signature's path), next to its floor
        result["retrieval"] = {"model": catalogue_metrics(model, [train, validation], test),
                               floors.POPULAR: popularity_floor_metrics([train, validation], test)}
        result["validation"].update(catalogue_metrics(model, [train], validation))
    result["model_path"] = export_saved_model(model, os.path.join(out_dir, "model"))
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2)
    return result


def floor_report(result: dict) -> str:
    """Human-readable lines: the model's validation and test AUC/gAUC next to the popularity floors' test numbers."""
    from mtin_tf.floors import LABELS

    val, test = result["validation"], result["test"]
    lines = [f"{result['variant']}: test AUC {test['auc']:.4f} gAUC {test['gauc']:.4f} (epoch {result['best_epoch']} "
             f"of {result['epochs_run']}, chosen on validation: AUC {val['auc']:.4f} gAUC {val['gauc']:.4f})"]
    for name, m in result["floors"].items():
        lines.append(f"  {LABELS[name]}: test AUC {m['auc']:.4f} gAUC {m['gauc']:.4f}")
    if result.get("retrieval"):
        got, floor = (result["retrieval"][key] for key in ("model", "popular"))
        lines.append(f"  catalogue retrieval (test, {got['retrieval_users']} users): Recall@50 "
                     f"{got['retrieval_recall@50']:.4f} HitRate@50 {got['retrieval_hit_rate@50']:.4f}; "
                     f"{LABELS['popular']}: Recall@50 {floor['retrieval_recall@50']:.4f} "
                     f"HitRate@50 {floor['retrieval_hit_rate@50']:.4f}")
    for name, value in result.get("routing", {}).items():
        lines.append(f"  routing {name}: {value:.3f} (validation)")
    if result.get("hint"):
        lines.append(f"  hint: {result['hint']}")
    if result["below_floor"]:
        lines.append("  ▽ below floor: the model's test AUC is under the best popularity floor's")
    return "\n".join(lines)


def run(args) -> int:
    from mtin_tf.config import MTINConfig
    from mtin_tf.output import summary_line

    try:
        overrides = MTINConfig.overrides(args.config, args.set)
    except (ValueError, TypeError) as exc:
        print(f"mtin train: {exc}", file=sys.stderr)
        return 2
    result = train_and_evaluate(args.examples, args.items, args.out, model_name=args.model, variant=args.variant,
                                overrides=overrides, verbose=args.verbose)
    print(json.dumps(result, indent=2))
    print(floor_report(result))
    print(summary_line("mtin train", result))
    return 0


def score_saved_model(model_dir: str, arrays, *, signature: str = "keras", batch_size: int = 1024):
    """Click probabilities [N] of an exported SavedModel on model-input arrays.

    signature "keras" reloads the Keras model (tf_keras.models.load_model, needs the registered layers);
    "predict_raw" calls the raw-tensor serving signature, as a server would (max_history from its input spec).
    """
    import numpy as np
    import tensorflow as tf

    from mtin_tf import features as F
    from mtin_tf.signatures import RAW_SIGNATURE

    if signature == "keras":
        import tf_keras

        from mtin_tf.train import predict_probabilities

        return predict_probabilities(tf_keras.models.load_model(model_dir), arrays, batch_size)
    if signature != "predict_raw":
        raise ValueError(f"signature must be one of {SIGNATURES}, got {signature!r}")
    fn = tf.saved_model.load(model_dir).signatures[RAW_SIGNATURE]
    n = len(arrays[F.LABEL])
    scores = [fn(**{k: tf.constant(np.asarray(arrays[k][i:i + batch_size], np.int64)) for k in F.MODEL_INPUT_NAMES})
              [F.OUTPUT_PROBABILITY].numpy().reshape(-1) for i in range(0, n, batch_size)]
    return np.concatenate(scores) if scores else np.zeros([0], np.float32)


def saved_model_max_history(model_dir: str) -> int:
    """L of an exported model, read from its raw-tensor signature (no Keras reload)."""
    import tensorflow as tf

    from mtin_tf import features as F
    from mtin_tf.signatures import RAW_SIGNATURE

    spec = tf.saved_model.load(model_dir).signatures[RAW_SIGNATURE].structured_input_signature[1]
    return int(spec[F.CLICKED_ITEMS].shape[-1])


def evaluate_saved_model(model_dir: str, examples_dir: str, *, split: str = "test", signature: str = "keras",
                         ks=(10, 50)) -> dict:
    """Metrics (docs/EVALUATION.md protocol) of an exported model on DIR/<split>.tfrecord; for an MTIN on the test
    split (signature "keras"), also Recall@K / HitRate@K of recommending from its whole catalogue, next to the
    most-clicked-items floor (``retrieval``; mtin_tf.retrieval.catalogue_metrics)."""
    from mtin_tf import features as F
    from mtin_tf import metrics
    from mtin_tf.data.examples import read_split_arrays, read_tfrecords, split_path, to_model_arrays

    if not os.path.isdir(model_dir):
        raise SystemExit(f"mtin evaluate: no SavedModel directory at {model_dir}")
    try:
        path = split_path(examples_dir, split)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"mtin evaluate: {e}") from None
    arrays = to_model_arrays(read_tfrecords(path), saved_model_max_history(model_dir))
    if len(arrays[F.LABEL]) == 0:
        raise SystemExit(f"mtin evaluate: {path} holds no examples")
    model = None
    if signature == "keras":
        import tf_keras

        from mtin_tf.train import predict_probabilities

        model = tf_keras.models.load_model(model_dir)
        scores = predict_probabilities(model, arrays)
    else:
        scores = score_saved_model(model_dir, arrays, signature=signature)
    result = metrics.summary(arrays[F.USER_ID], arrays[F.LABEL], scores, ks=tuple(ks))
    result.update(model_path=os.path.abspath(model_dir), examples=path, signature=signature,
                  num_examples=int(len(scores)))
    from mtin_tf.model import is_mtin

    if model is not None and is_mtin(model) and split == "test":
        from mtin_tf.floors import POPULAR
        from mtin_tf.retrieval import catalogue_metrics, popularity_floor_metrics

        data = read_split_arrays(examples_dir, saved_model_max_history(model_dir), splits=("train", "validation"))
        before = [data["train"], data["validation"]]
        result["retrieval"] = {"model": catalogue_metrics(model, before, arrays),
                               POPULAR: popularity_floor_metrics(before, arrays)}
    return result


def run_evaluate(args) -> int:
    result = evaluate_saved_model(args.model_dir, args.examples, split=args.split, signature=args.signature,
                                  ks=args.ks)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0
