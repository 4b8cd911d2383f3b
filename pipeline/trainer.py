"""Trainer's run_fn: the shared mtin_tf training loop on Transform's output, exported with both serving signatures.

Hyperparameters come from ``custom_config["mtin_config"]`` (MTINConfig.from_dict; ``max_history`` comes from the
HistoryGen/Transform settings); HistoryGen's ``training_inputs`` (``fn_args.hyperparameters``) points at the
item-feature
examples, which become the frozen item table inside the model. The strategy is chosen from the visible devices
(:func:`mtin_tf.train.select_strategy`: MirroredStrategy over every GPU, else the default strategy), interest memories
are pretrained from the training examples and keyed by Transform's user vocabulary, training stops early on the AUC
of the eval files — the ``validation`` split (the pipeline's EvalArgs); the test split is the Evaluator's alone —
and TensorBoard logs go to ``fn_args.model_run_dir``.

The SavedModel in ``fn_args.serving_model_dir`` has the signatures and output keys of :mod:`mtin_tf.signatures`:
``serving_default`` takes serialized tf.Example and runs the Transform graph (TFT layer) before the model;
``predict_raw`` takes the dense model inputs.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from mtin_tf import features as F

log = logging.getLogger(__name__)
MTIN_CONFIG_KEY = "mtin_config"


def _matching(file_patterns) -> list:
    """The files matching any of ``file_patterns``, on any filesystem TensorFlow reads (gs://, s3://, hdfs://,
    local)."""
    return sorted({f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)})


def read_transformed(file_patterns, tf_transform_output, batch_size: int = 4096) -> dict:
    """Transformed examples (gzipped TFRecord) → {name: numpy array} of model inputs and label."""
    files = _matching(file_patterns)
    spec = tf_transform_output.transformed_feature_spec()
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size).map(
        lambda x: tf.io.parse_example(x, spec))
    chunks = {name: [] for name in spec}
    for batch in ds.as_numpy_iterator():
        for name, value in batch.items():
            chunks[name].append(value)
    return {name: (np.concatenate(parts) if parts else np.zeros([0], np.int64)) for name, parts in chunks.items()}


def read_item_table(file_patterns):
    """Item-feature tf.Examples (gzipped TFRecord) → (item_ids int64 [N], features float32 [N, F])."""
    files = _matching(file_patterns)
    ids, vectors = [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        feature = tf.train.Example.FromString(record).features.feature
        ids.append(feature[F.ITEM_ID].int64_list.value[0])
        vectors.append(np.asarray(feature[F.ITEM_FEATURES].float_list.value, np.float32))
    if not ids:
        raise ValueError(f"no item features in {file_patterns}")
    return np.asarray(ids, np.int64), np.stack(vectors)


def vocabulary_ids(tf_transform_output, name: str) -> np.ndarray:
    """A Transform vocabulary of int ids (stored as strings) → sorted int64 ids."""
    return np.sort(np.asarray([int(v) for v in tf_transform_output.vocabulary_by_name(name)], np.int64))


def transform_signatures(model, tf_transform_output, max_history: int) -> dict:
    """mtin_tf's signatures with ``serving_default`` running the Transform graph: {name: concrete function}."""
    from mtin_tf.signatures import serving_signatures

    model.tft_layer = tf_transform_output.transform_features_layer()  # tracked: the TFT assets travel with the model
    raw_spec = {k: v for k, v in tf_transform_output.raw_feature_spec().items() if k != F.LABEL}

    def parse(examples):
        transformed = model.tft_layer(tf.io.parse_example(examples, raw_spec))
        return {name: transformed[name] for name in F.MODEL_INPUT_NAMES}

    return serving_signatures(model, max_history, parse=parse)


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (``run_fn='pipeline.trainer.run_fn'``)."""
    from mtin_tf.config import MTINConfig
    from mtin_tf.export import serving_model, write_known_ids
    from mtin_tf.train import select_strategy, train_mtin
    from pipeline.transform import ITEM_VOCABULARY, USER_VOCABULARY

    inputs = fn_args.hyperparameters or {}
    if "item_examples" not in inputs:
        raise ValueError("run_fn needs HistoryGen's training_inputs as the Trainer's hyperparameters input")
    values = dict((fn_args.custom_config or {}).get(MTIN_CONFIG_KEY, {}))
    values["max_history"] = int(inputs["max_history"])
    config = MTINConfig.from_dict(values)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    train = read_transformed(fn_args.train_files, tf_transform_output)
    validation = read_transformed(fn_args.eval_files, tf_transform_output)
    if len(train[F.LABEL]) == 0 or len(validation[F.LABEL]) == 0:
        raise ValueError(f"need train and validation examples, got {len(train[F.LABEL])} and "
                         f"{len(validation[F.LABEL])}")
    item_ids, item_features = read_item_table(inputs["item_examples"])
    users = vocabulary_ids(tf_transform_output, USER_VOCABULARY)
    unseen = np.setdiff1d(item_ids, vocabulary_ids(tf_transform_output, ITEM_VOCABULARY)).size
    strategy = select_strategy()
    log.info("training MTIN on %d examples (%d validation), %d users, %d items (%d unseen in training), %d replica(s)",
             len(train[F.LABEL]), len(validation[F.LABEL]), len(users), len(item_ids), unseen,
             strategy.num_replicas_in_sync)
    model, history = train_mtin(config, train, item_ids, item_features, eval_arrays=validation, user_ids=users,
                                strategy=strategy, log_dir=fn_args.model_run_dir, verbose=2)
    served = serving_model(model)  # the pre-projected item table, as `mtin train` exports
    served.save(fn_args.serving_model_dir, save_format="tf", include_optimizer=False,
                signatures=transform_signatures(served, tf_transform_output, config.max_history))
    write_known_ids(served, fn_args.serving_model_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "training.json"), "w") as f:
        json.dump({"config": json.loads(config.to_json()), "epochs_run": len(history.history["loss"]),
                   "train_examples": int(len(train[F.LABEL])), "validation_examples": int(len(validation[F.LABEL])),
                   "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
                   "replicas": strategy.num_replicas_in_sync, "unseen_items": int(unseen)}, f, indent=2)
