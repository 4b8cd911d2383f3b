"""Trainer's run_fn: the shared mtin_tf model builder and fit loop on Transform's output, streamed, exported with both
serving signatures.

Hyperparameters come from ``custom_config["mtin_config"]`` (MTINConfig.from_dict; ``max_history`` comes from the
HistoryGen/Transform settings); HistoryGen's ``training_inputs`` (``fn_args.hyperparameters``) points at the
item-feature examples, which become the frozen item table inside the model. The strategy is chosen from TF_CONFIG and
the visible devices (:func:`mtin_tf.train.select_strategy`: MultiWorkerMirroredStrategy when TF_CONFIG names several
workers — only the chief's model and logs stay —, else MirroredStrategy over every GPU, else the default strategy).

The transformed splits are streamed with tf.data (:func:`transformed_dataset`; any filesystem TensorFlow reads), never
loaded whole: one summary pass over ``train`` counts the examples and impressions; the interest memories (keyed by
Transform's user vocabulary) are pretrained from the anchors HistoryGen computed in Beam (training_inputs'
``memory_anchors``, :func:`memory_anchor_files`), or, when there are none, the pass also keeps each user's latest row,
whose histories pretrain them in memory (``training.json`` records which: ``pretraining.source``); fit then reads
shuffled batches through a bounded buffer (``custom_config["shuffle_buffer"]`` rows, default
:data:`SHUFFLE_BUFFER`), honours ``fn_args.train_steps`` / ``eval_steps`` (TrainArgs / EvalArgs ``num_steps``) and
stops early on the AUC of the eval files — the ``validation`` split (the pipeline's EvalArgs); the test split is the
Evaluator's alone. With ``custom_config["refit"]`` (PipelineConfig.refit, ``mtin pipeline run --refit``) the model is
then trained again from the same seed on the train and validation files for the epoch count validation chose (its
memories pretrained from HistoryGen's anchors over train + validation, which PipelineConfig.refit has it compute),
and that model is exported. TensorBoard logs and ``training.json`` go to ``fn_args.model_run_dir``.

The SavedModel in ``fn_args.serving_model_dir`` has the signatures and output keys of :mod:`mtin_tf.signatures`:
``serving_default`` takes serialized tf.Example and runs the Transform graph (TFT layer) before the model;
``predict_raw`` takes the dense model inputs.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from mtin_tf import features as F
from mtin_tf.pretrain import latest_per_user

log = logging.getLogger(__name__)
MTIN_CONFIG_KEY = "mtin_config"
SHUFFLE_BUFFER_KEY = "shuffle_buffer"  # custom_config: rows in the training shuffle buffer
SHUFFLE_BUFFER = 10_000
REFIT_KEY = "refit"  # custom_config: train again on train + validation for the epoch count validation chose


def _matching(file_patterns) -> list:
    """The files matching any of ``file_patterns``, on any filesystem TensorFlow reads (gs://, s3://, hdfs://,
    local)."""
    return sorted({f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)})


def read_transformed(file_patterns, tf_transform_output, batch_size: int = 4096) -> dict:
    """Transformed examples (gzipped TFRecord) → {name: numpy array} of model inputs and label, all in memory (for
    inspection and tests; run_fn streams them instead: :func:`transformed_dataset`)."""
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
    from mtin_tf.pipeline.inputs import parse_item_example

    files = _matching(file_patterns)
    ids, vectors = [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        item, vector = parse_item_example(record)
        ids.append(item)
        vectors.append(vector)
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


def transformed_dataset(file_patterns, tf_transform_output, batch_size: int, *, shuffle_buffer: int = 0,
                        seed: int = 0, repeat: bool = False) -> tf.data.Dataset:
    """Transformed examples (gzipped TFRecord), streamed: tf.data of (model inputs {name: int64}, {logit: float32
    label}) batches, the element structure of :func:`mtin_tf.train.make_dataset`.

    Reads through tf.data (any filesystem TensorFlow reads) and parses with the Transform output's feature spec.
    ``shuffle_buffer`` > 0: the file order is shuffled and rows pass through a shuffle buffer of that many serialized
    examples, reshuffled each pass (memory: the buffer, not the data). ``repeat``: loop over the data forever (the
    caller bounds it with steps).
    """
    files = _matching(file_patterns)
    if not files:
        raise ValueError(f"no transformed examples match {list(file_patterns)}")
    spec = tf_transform_output.transformed_feature_spec()
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_buffer > 0:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"), cycle_length=min(len(files), 4),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle_buffer > 0:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def split(records):
        parsed = tf.io.parse_example(records, spec)
        inputs = {name: tf.cast(parsed[name], tf.int64) for name in F.MODEL_INPUT_NAMES}
        return inputs, {F.OUTPUT_LOGIT: tf.cast(parsed[F.LABEL], tf.float32)}

    return ds.batch(batch_size).map(split, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def count_examples(file_patterns) -> int:
    """The number of records in gzipped TFRecord files, streamed."""
    files = _matching(file_patterns)
    if not files:
        return 0
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096)
    return int(ds.reduce(tf.constant(0, tf.int64), lambda n, batch: n + tf.size(batch, tf.int64)).numpy())


_HISTORY_KEYS = (F.USER_ID, F.TIMESTAMP) + tuple(key for pair in F.HISTORY_PAIRS for key in pair)


class TrainingSummary:
    """What run_fn needs from one streaming pass over the training split, in memory that grows with users and items,
    not rows: the example count, each candidate item's impression count (for the retrieval task) and, with
    ``keep_latest``, each user's latest row (:func:`mtin_tf.pretrain.latest_per_user`) — its history arrays — for
    in-memory memory pretraining (the examples carry each user's history up to the impression, so the latest row holds
    the user's last L clicked and L browsed items). Not needed when HistoryGen pretrained the memories in Beam.

    Each batch is reduced to its users' latest rows and kept; the kept rows are merged (one row per user) whenever
    they exceed twice the users of the last merge plus ``compact_rows``, so at most about 3 rows per user plus
    ``compact_rows`` rows are held at any time."""

    def __init__(self, compact_rows: int = 65536, keep_latest: bool = True):
        self.compact_rows = int(compact_rows)
        self.keep_latest = bool(keep_latest)
        self.examples = 0
        self._impressions = collections.Counter()
        self._chunks, self._rows, self._kept = [], 0, 0

    def add(self, batch: dict) -> None:
        """One parsed batch ({name: array}) of transformed examples."""
        self.examples += len(batch[F.USER_ID])
        ids, counts = np.unique(batch[F.ITEM_ID], return_counts=True)
        self._impressions.update(dict(zip(ids.tolist(), counts.tolist())))
        if not self.keep_latest:
            return
        chunk = latest_per_user({name: np.asarray(batch[name], np.int64) for name in _HISTORY_KEYS})
        self._chunks.append(chunk)
        self._rows += len(chunk[F.USER_ID])
        if self._rows > 2 * self._kept + self.compact_rows:
            self._compact()

    def _compact(self) -> None:
        if len(self._chunks) > 1:
            merged = {name: np.concatenate([c[name] for c in self._chunks]) for name in _HISTORY_KEYS}
            self._chunks = [latest_per_user(merged)]
        self._rows = self._kept = len(self._chunks[0][F.USER_ID]) if self._chunks else 0

    def latest_rows(self) -> dict:
        """{name: array} with one row per user: user_id, timestamp and the four history arrays (none without
        ``keep_latest``)."""
        self._compact()
        if not self._chunks:
            return {name: np.zeros([0], np.int64) for name in _HISTORY_KEYS}
        return self._chunks[0]

    def candidate_share(self):
        """(sorted candidate item ids, each one's share of the training impressions) — retrieval_task's
        impression_share, from the counts."""
        ids = np.asarray(sorted(self._impressions), np.int64)
        counts = np.asarray([self._impressions[i] for i in ids.tolist()], np.float64)
        return ids, (counts / max(counts.sum(), 1)).astype(np.float32)


def summarize_training(file_patterns, tf_transform_output, batch_size: int = 4096,
                       compact_rows: int = 65536, keep_latest: bool = True) -> TrainingSummary:
    """One streaming pass over transformed training examples → :class:`TrainingSummary`."""
    files = _matching(file_patterns)
    summary = TrainingSummary(compact_rows, keep_latest)
    if not files:
        return summary
    spec = {name: value for name, value in tf_transform_output.transformed_feature_spec().items()
            if name in _HISTORY_KEYS + (F.ITEM_ID,)}
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size).map(
        lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE)
    for batch in ds.as_numpy_iterator():
        summary.add(batch)
    return summary


def training_plan(epochs: int, train_steps=None) -> tuple:
    """(epochs, steps_per_epoch) for fit. Without ``train_steps``: ``epochs`` full passes (steps_per_epoch None).
    With it (TFX's TrainArgs.num_steps, the total number of training steps): the data repeats and the steps are
    spread over at most ``epochs`` epochs of ceil(train_steps / epochs) steps — so early stopping still sees a
    validation AUC per epoch — and :class:`StopAtStep` ends the last one at exactly ``train_steps``."""
    if not train_steps:
        return epochs, None
    epochs = max(1, min(epochs, int(train_steps)))
    steps_per_epoch = math.ceil(int(train_steps) / epochs)
    return math.ceil(int(train_steps) / steps_per_epoch), steps_per_epoch


class StopAtStep(tf_keras.callbacks.Callback):
    """Stops fit after ``steps`` training batches (the last epoch is then shorter; it is still validated)."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps, self.seen = int(steps), 0

    def on_train_begin(self, logs=None):
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.steps:
            self.model.stop_training = True


def memory_anchor_files(training_inputs: dict, config, *, refit: bool = False):
    """(train anchors, refit anchors): the file patterns of the memory anchors HistoryGen computed in Beam
    (training_inputs' ``memory_anchors``), each None when there are none or the config does not pretrain anchored
    memories (in-memory pretraining then, or none). Raises when they were computed for another memory shape
    (num_groups, memory_anchors) than ``config``'s. The refit anchors (only with ``refit``, else None) are those of
    the refit model, computed over train + validation (``refit_files``, HistoryGen's ``refit``); a HistoryGen run
    without refit computed none, and then the train anchors serve, with a warning."""
    from mtin_tf.pipeline.components.history import MEMORY_ANCHORS_KEY

    entry = training_inputs.get(MEMORY_ANCHORS_KEY)
    if not entry or not (config.pretrain_memory and config.memory_anchors):
        return None, None
    shape, want = (entry["num_groups"], entry["anchor_size"]), (config.num_groups, config.memory_anchors)
    if tuple(shape) != want:
        raise ValueError(f"HistoryGen pretrained memories of {shape} (num_groups, memory_anchors); the Trainer's "
                         f"config has {want}: give both the same mtin_config")
    if entry.get("seed") != config.seed:
        log.warning("memory anchors were computed with seed %s, the Trainer's config.seed is %s", entry.get("seed"),
                    config.seed)
    files = list(entry["files"])
    if not refit:
        return files, None
    if "refit_files" not in entry:
        log.warning("HistoryGen computed no memory anchors over train + validation (its refit was off): the refit "
                    "model's memories start from the anchors of train")
    return files, list(entry.get("refit_files", files))


def fit_model(config, summary: TrainingSummary, files, tf_transform_output, items, users, anchors, strategy, *,
              shuffle_buffer: int, epochs: int, steps_per_epoch=None, train_steps=None, log_dir=None, eval_files=None,
              eval_steps=None):
    """Build the model from ``config.seed`` (build_for_training: memory pretraining from HistoryGen's ``anchors``,
    else from ``summary``'s latest row of each user) and fit it on ``files`` streamed through the shuffle buffer:
    ``epochs`` epochs of ``steps_per_epoch`` steps (None: full passes) and at most ``train_steps`` in all, early
    stopping on ``eval_files`` when given (``eval_steps`` batches each). ``summary``: summarize_training of ``files``;
    ``items``: (item ids, features). Returns (model, fitted model, pretraining, fit history)."""
    from mtin_tf.train import build_for_training, fit_mtin

    model, fitted, strategy, pretraining = build_for_training(
        config, *items, users, None if anchors else summary.latest_rows(), summary.candidate_share,
        strategy=strategy, anchor_files=anchors)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    train_ds = transformed_dataset(files, tf_transform_output, global_batch, shuffle_buffer=shuffle_buffer,
                                   seed=config.seed, repeat=train_steps is not None)
    eval_ds = None if eval_files is None else transformed_dataset(eval_files, tf_transform_output, global_batch,
                                                                  repeat=eval_steps is not None)
    history = fit_mtin(fitted, config, train_ds, eval_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
                       validation_steps=eval_steps, log_dir=log_dir, verbose="auto",
                       callbacks=[StopAtStep(train_steps)] if train_steps else [])
    return model, fitted, pretraining, history


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (``run_fn='mtin_tf.pipeline.trainer.run_fn'``).

    Streams the transformed splits (:func:`transformed_dataset`): one summary pass over ``train`` (example count,
    impressions; each user's latest history only when memory pretraining runs in memory: HistoryGen's anchors are
    streamed into the memories otherwise), then fit on shuffled batches (a buffer of
    ``custom_config["shuffle_buffer"]`` rows, default SHUFFLE_BUFFER) with early stopping on ``validation``.
    ``fn_args.train_steps`` (TrainArgs.num_steps) bounds the total training steps (:func:`training_plan`);
    ``fn_args.eval_steps`` (EvalArgs.num_steps) the validation steps of each epoch (the validation data then
    repeats). ``custom_config["refit"]``: then the model is built and fitted again (:func:`fit_model`) on the train
    and eval files for the epoch count with the best validation AUC, and that model is exported
    (``training.json``'s ``refit``: epochs, examples, steps_run, loss, pretraining_users, pretraining_anchors: the
    anchor files its memories started from, HistoryGen's over train + validation when it computed them). Peak
    memory does not grow with the number of examples (docs/PIPELINE.md).
    """
    from mtin_tf.config import MTINConfig
    from mtin_tf.export import serving_model, write_known_ids
    from mtin_tf.pipeline.transform import ITEM_VOCABULARY, USER_VOCABULARY
    from mtin_tf.train import EVAL_AUC, barrier, chief_path, remove_worker_path, select_strategy

    strategy = select_strategy()  # first: a multi-worker strategy (TF_CONFIG) must precede TensorFlow's runtime
    inputs = fn_args.hyperparameters or {}
    if "item_examples" not in inputs:
        raise ValueError("run_fn needs HistoryGen's training_inputs as the Trainer's hyperparameters input")
    custom = fn_args.custom_config or {}
    values = dict(custom.get(MTIN_CONFIG_KEY, {}))
    values["max_history"] = int(inputs["max_history"])
    config = MTINConfig.from_dict(values)
    shuffle_buffer = int(custom.get(SHUFFLE_BUFFER_KEY, SHUFFLE_BUFFER))
    if shuffle_buffer < 1:
        raise ValueError(f"{SHUFFLE_BUFFER_KEY} must be >= 1, got {shuffle_buffer}")
    train_steps, eval_steps = fn_args.train_steps or None, fn_args.eval_steps or None
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    anchors, refit_anchors = memory_anchor_files(inputs, config, refit=bool(custom.get(REFIT_KEY)))
    summary = summarize_training(fn_args.train_files, tf_transform_output, keep_latest=not anchors)
    validation_examples = count_examples(fn_args.eval_files)
    if summary.examples == 0 or validation_examples == 0:
        raise ValueError(f"need train and validation examples, got {summary.examples} and {validation_examples}")
    item_ids, item_features = read_item_table(inputs["item_examples"])
    users = vocabulary_ids(tf_transform_output, USER_VOCABULARY)
    unseen = np.setdiff1d(item_ids, vocabulary_ids(tf_transform_output, ITEM_VOCABULARY)).size
    log.info("training MTIN on %d examples (%d validation), %d users, %d items (%d unseen in training), %d replica(s)",
             summary.examples, validation_examples, len(users), len(item_ids), unseen, strategy.num_replicas_in_sync)
    epochs, steps_per_epoch = training_plan(config.epochs, train_steps)
    # Multi-worker: only the chief's outputs stay; the other workers write to temporary directories, removed below.
    serving_dir, run_dir = (chief_path(d, strategy) for d in (fn_args.serving_model_dir, fn_args.model_run_dir))
    plan = dict(shuffle_buffer=shuffle_buffer, steps_per_epoch=steps_per_epoch, train_steps=train_steps)
    model, fitted, pretraining, history = fit_model(
        config, summary, fn_args.train_files, tf_transform_output, (item_ids, item_features), users, anchors,
        strategy, epochs=epochs, log_dir=run_dir, eval_files=fn_args.eval_files, eval_steps=eval_steps, **plan)
    steps_run = int(fitted.optimizer.iterations.numpy())
    refitted = None
    if custom.get(REFIT_KEY):
        # The refit protocol: the same model and seed trained again on train + validation, without early stopping,
        # for the epochs validation chose (the first with the best validation AUC, which early stopping restored).
        best_epoch = int(np.argmax(history.history[EVAL_AUC])) + 1
        files = list(fn_args.train_files) + list(fn_args.eval_files)
        every = summarize_training(files, tf_transform_output, keep_latest=not refit_anchors)
        model, fitted, refit_pretraining, refit_history = fit_model(
            dataclasses.replace(config, epochs=best_epoch), every, files, tf_transform_output,
            (item_ids, item_features), users, refit_anchors, strategy, epochs=best_epoch,
            log_dir=os.path.join(run_dir, "refit"), **plan)
        refitted = {"epochs": best_epoch, "examples": every.examples,
                    "steps_run": int(fitted.optimizer.iterations.numpy()),
                    "loss": [float(v) for v in refit_history.history["loss"]],
                    "pretraining_users": int(refit_pretraining["users"]), "pretraining_anchors": refit_anchors}
    served = serving_model(model)  # the pre-projected item table, as `mtin train` exports
    served.save(serving_dir, save_format="tf", include_optimizer=False,
                signatures=transform_signatures(served, tf_transform_output, config.max_history))
    write_known_ids(served, serving_dir)
    with tf.io.gfile.GFile(os.path.join(run_dir, "training.json"), "w") as f:
        json.dump({"config": json.loads(config.to_json()), "epochs_run": len(history.history["loss"]),
                   "train_examples": summary.examples, "validation_examples": validation_examples,
                   "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
                   "replicas": strategy.num_replicas_in_sync, "unseen_items": int(unseen),
                   "train_steps": train_steps, "eval_steps": eval_steps, "steps_per_epoch": steps_per_epoch,
                   "steps_run": steps_run, "shuffle_buffer": shuffle_buffer,
                   "pretraining_users": int(pretraining["users"]), "pretraining": pretraining,
                   **({"refit": refitted} if refitted else {})}, f, indent=2)
    for path in (fn_args.serving_model_dir, fn_args.model_run_dir):
        remove_worker_path(path, strategy)
    barrier(strategy)  # when any worker returns, the chief's model is complete (TFX then checks that it exists)
