"""The one training loop: `mtin train`, the demo and the TFX Trainer's run_fn all call train_mtin / fit_mtin.

GPU-ready: the tf.distribute strategy comes from the visible devices (MirroredStrategy over every GPU, the default
strategy on CPU), the global batch is config.batch_size × replicas, and config.mixed_precision turns on mixed_float16
where a GPU is present (the logit and probability outputs stay float32).
"""
from __future__ import annotations

import logging
import sys
from typing import Mapping

import numpy as np
import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.model import NEGATIVE_MEMORY, POSITIVE_MEMORY, build_mtin, compile_model, set_exposure_prior
from mtin_tf.pretrain import pretrain_memory, user_histories_from_arrays

log = logging.getLogger(__name__)
EVAL_AUC = f"val_{F.OUTPUT_LOGIT}_auc"


def select_strategy(devices=None) -> tf.distribute.Strategy:
    """MirroredStrategy over ``devices`` (or every visible GPU); the default strategy when there is no GPU."""
    if devices is None:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if devices:
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def make_dataset(arrays: Mapping[str, np.ndarray], batch_size: int, *, shuffle: bool = False, seed: int = 0):
    """tf.data of (features dict, {logit: label}) from model-input arrays (mtin_tf.data.examples.to_model_arrays)."""
    inputs = {name: np.asarray(arrays[name], np.int64) for name in F.MODEL_INPUT_NAMES}
    labels = {F.OUTPUT_LOGIT: np.asarray(arrays[F.LABEL], np.float32)}
    ds = tf.data.Dataset.from_tensor_slices((inputs, labels))
    if shuffle:
        ds = ds.shuffle(len(labels[F.OUTPUT_LOGIT]), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def fit_mtin(model, config: MTINConfig, train_ds, eval_ds=None, *, epochs=None, steps_per_epoch=None,
             validation_steps=None, log_dir=None, patience=2, verbose=1, callbacks=()):
    """model.fit with early stopping on eval AUC (best weights restored) and optional TensorBoard logs.

    verbose None or "auto": Keras's progress bar within each epoch on a terminal, one line per epoch otherwise."""
    if verbose is None or verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    cbs = list(callbacks)
    if eval_ds is not None:
        cbs.append(tf_keras.callbacks.EarlyStopping(monitor=EVAL_AUC, mode="max", patience=patience,
                                                    restore_best_weights=True))
    if log_dir:
        cbs.append(tf_keras.callbacks.TensorBoard(log_dir=str(log_dir), update_freq="epoch"))
    return model.fit(train_ds, validation_data=eval_ds, epochs=epochs or config.epochs, callbacks=cbs,
                     steps_per_epoch=steps_per_epoch, validation_steps=validation_steps, verbose=verbose)


def build_for_training(config: MTINConfig, item_ids, item_features, user_ids, history_arrays, candidate_share, *,
                       strategy=None, builder=build_mtin):
    """train_mtin's steps before fit, shared with the TFX Trainer's streaming run_fn: the precision policy, the seed,
    the model built under the strategy (wrapped for the retrieval task when config.retrieval_weight > 0) and MTIN's
    memories pretrained (unless MTIN-P). Returns (model, model to fit, strategy).

    history_arrays: model-input arrays whose rows hold the users' histories for memory pretraining — all training rows
    (train_mtin), or each user's latest training row (mtin_tf.pipeline.trainer, streaming). candidate_share: a callable
    returning (candidate ids, impression share) of the training candidates, called for the retrieval task and the
    exposure prior.
    """
    if config.mixed_precision:
        if tf.config.list_logical_devices("GPU"):
            tf_keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            log.warning("mixed_precision requested but no GPU is visible: training in float32")
    tf_keras.utils.set_random_seed(config.seed)
    strategy = strategy or select_strategy()
    with strategy.scope():
        model = builder(config, item_ids, item_features, user_ids)
        fitted = model
        if builder is build_mtin and (config.exposure_prior or config.retrieval_weight):
            shares = candidate_share()  # one pass over the candidates for both
            if config.exposure_prior:
                set_exposure_prior(model, *shares)
            if config.retrieval_weight:  # fit on ranking + retrieval; the ranker is returned
                from mtin_tf.retrieval_task import MultiTaskTraining

                fitted = compile_model(MultiTaskTraining(model, config.retrieval_weight, *shares), config)
    if config.pretrain_memory and builder is build_mtin:
        for layer, (key, times_key) in zip((POSITIVE_MEMORY, NEGATIVE_MEMORY), F.HISTORY_PAIRS):
            n = pretrain_memory(model, user_histories_from_arrays(history_arrays, key, times_key), memory_layer=layer,
                                seed=config.seed)
            log.info("pretrained %s for %d users", layer, n)
    return model, fitted, strategy


def train_mtin(config: MTINConfig, train_arrays, item_ids, item_features, *, eval_arrays=None, user_ids=None,
               strategy=None, log_dir=None, verbose=1, patience=2, builder=build_mtin, callbacks=()):
    """Build the model under the strategy, pretrain MTIN's memories (unless MTIN-P), and fit. Returns (model, history).

    train_arrays / eval_arrays: model-input arrays with the label (features.LABEL). user_ids defaults to the users
    of the training data (every other user shares the out-of-vocabulary memory). builder: build_mtin, or a baseline
    builder with the same signature (its memories are pretrained only if it has MTIN's memory layers).
    callbacks: extra tf_keras callbacks for fit (e.g. progress reporting).
    """
    if user_ids is None:
        user_ids = np.unique(np.asarray(train_arrays[F.USER_ID]))

    def candidate_share():
        from mtin_tf.retrieval_task import impression_share

        return impression_share(train_arrays[F.ITEM_ID])

    model, fitted, strategy = build_for_training(config, item_ids, item_features, user_ids, train_arrays,
                                                 candidate_share, strategy=strategy, builder=builder)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    train_ds = make_dataset(train_arrays, global_batch, shuffle=True, seed=config.seed)
    eval_ds = make_dataset(eval_arrays, global_batch) if eval_arrays is not None else None
    history = fit_mtin(fitted, config, train_ds, eval_ds, log_dir=log_dir, verbose=verbose, patience=patience,
                       callbacks=callbacks)
    return model, history


def predict_probabilities(model, arrays, batch_size: int = 1024) -> np.ndarray:
    """Click probabilities [N] for model-input arrays, in their order. Rows are scored in (user, time) order through
    mtin_tf.signatures.row_scorer, so that for MTIN every (user, impression time, histories) of a batch — all the
    candidates of one impression — is encoded once."""
    from mtin_tf.signatures import raw_input_signature, row_scorer

    n = len(arrays[F.LABEL])
    order = np.lexsort((np.asarray(arrays[F.TIMESTAMP]), np.asarray(arrays[F.USER_ID])))
    max_history = np.asarray(arrays[F.CLICKED_ITEMS]).shape[1]
    score = tf.function(row_scorer(model), input_signature=[raw_input_signature(max_history)])
    out = np.empty([n], np.float32)
    for start in range(0, n, batch_size):
        rows = order[start:start + batch_size]
        batch = {name: tf.constant(np.asarray(arrays[name])[rows], tf.int64) for name in F.MODEL_INPUT_NAMES}
        out[rows] = score(batch)[F.OUTPUT_PROBABILITY].numpy().reshape(-1)
    return out


# Routing diagnostics of MTIN's branches that train_and_evaluate reports (validation, at the chosen epoch).
ROUTING_METRICS = ("_dropped", "_groups_used", "_largest_group")


def train_and_evaluate(examples_dir, items_path, out_dir, *, model_name="mtin", variant="MTIN", overrides=None,
                       verbose=2) -> dict:
    """The whole standalone run; returns the metrics dict (also written to out_dir/metrics.json).

    Early stopping and the restored epoch are decided on the validation split; test is scored once, at the end.
    """
    import dataclasses
    import json
    import os

    from mtin_tf import floors, metrics
    from mtin_tf.baselines import BUILDERS, MODELS
    from mtin_tf.data.canonical import read_item_features
    from mtin_tf.data.examples import read_split_arrays
    from mtin_tf.export import export_saved_model
    from mtin_tf.model import is_mtin
    from mtin_tf.retrieval import catalogue_metrics, popularity_floor_metrics

    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; known: {MODELS}")
    config = MTINConfig.variant(variant, **(overrides or {}))
    try:
        data = read_split_arrays(examples_dir, config.max_history)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from e
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
    if seen < 0.5 and (config.use_id_embedding or config.use_item_bias or config.exposure_prior):
        result["hint"] = (f"only {seen:.0%} of the test candidates occur in training: id embeddings, item biases and "
                          "the exposure prior cannot help here; try --set use_id_embedding=false use_item_bias=false "
                          "exposure_prior=false")
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
