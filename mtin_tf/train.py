"""The one training loop: `mtin train`, the demo and the TFX Trainer's run_fn all call train_mtin / fit_mtin.

GPU-ready: the tf.distribute strategy comes from the visible devices (MirroredStrategy over every GPU, the default
strategy on CPU), the global batch is config.batch_size × replicas, and config.mixed_precision turns on mixed_float16
where a GPU is present (the logit and probability outputs stay float32).
"""
from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.model import NEGATIVE_MEMORY, POSITIVE_MEMORY, build_mtin, compile_model
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
    """model.fit with early stopping on eval AUC (best weights restored) and optional TensorBoard logs."""
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
    (train_mtin), or each user's latest training row (pipeline.trainer, streaming). candidate_share: a callable
    returning (candidate ids, impression share) of the training candidates, called only for the retrieval task.
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
        if config.retrieval_weight and builder is build_mtin:  # fit on ranking + retrieval; the ranker is returned
            from mtin_tf.retrieval_task import MultiTaskTraining

            fitted = compile_model(MultiTaskTraining(model, config.retrieval_weight,
                                                     *candidate_share()), config)
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
