"""The one training loop: `mtin train`, the demo and the TFX Trainer's run_fn all call train_mtin / fit_mtin.

GPU-ready: the tf.distribute strategy comes from TF_CONFIG and the visible devices (select_strategy:
MultiWorkerMirroredStrategy when TF_CONFIG names more than one worker, else MirroredStrategy over every GPU, the default
strategy on CPU), the global batch is config.batch_size × replicas, and config.mixed_precision turns on mixed_float16
where a GPU is present (the logit and probability outputs stay float32).

Multi-worker (docs/PIPELINE.md, "Multi-worker training"): every worker runs the same program on the same data; fit_mtin
shards each tf.data input by DATA (every worker reads all of it and keeps its part of each global batch),
build_for_training checks that every worker built the same model, and only the chief writes (chief_path /
remove_worker_path: the other workers write to a temporary directory that is removed, Keras's documented pattern).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
from typing import Mapping

import numpy as np
import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.model import NEGATIVE_MEMORY, POSITIVE_MEMORY, build_mtin, compile_model, set_exposure_prior
from mtin_tf.pretrain import assign_anchors, pretrain_memory, read_anchor_records, user_histories_from_arrays

log = logging.getLogger(__name__)
EVAL_AUC = f"val_{F.OUTPUT_LOGIT}_auc"


_MULTI_WORKER: dict = {}  # TF_CONFIG → its MultiWorkerMirroredStrategy: one per process (it starts a gRPC server)
WORKER_JOBS = ("chief", "worker")  # TF_CONFIG's task types that train (not "ps" / "evaluator")


def _training_tasks(cluster: dict) -> int:
    return sum(len(cluster.get(job) or ()) for job in WORKER_JOBS)


def multi_worker_resolver():
    """TF_CONFIG's cluster resolver (tf.distribute.cluster_resolver.TFConfigClusterResolver) when the cluster it names
    has more than one training task (chief / worker), else None."""
    if not os.environ.get("TF_CONFIG", "").strip():
        return None
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    cluster = resolver.cluster_spec().as_dict()
    if _training_tasks(cluster) < 2:
        return None
    if cluster.get("ps"):
        raise ValueError("TF_CONFIG names parameter servers: ParameterServerStrategy needs a coordinator program, "
                         "which mtin_tf does not have (docs/PIPELINE.md, \"Multi-worker training\")")
    if resolver.task_type not in WORKER_JOBS:
        raise ValueError(f"TF_CONFIG's task type {resolver.task_type!r} does not train; expected one of {WORKER_JOBS}")
    return resolver


def select_strategy(devices=None) -> tf.distribute.Strategy:
    """The training strategy of this process.

    - MultiWorkerMirroredStrategy when the TF_CONFIG environment variable names a cluster of more than one training
      task (chief / worker): synchronous data parallelism, the gradients all-reduced over gRPC (collective ops)
      across the workers, each worker mirroring over its visible GPUs (or its CPU). It must be created before
      TensorFlow initializes its runtime (the first op or device query): call select_strategy first thing; it is
      created once per process and returned again by later calls.
    - Otherwise MirroredStrategy over ``devices`` (or every visible GPU); the default strategy when there is no GPU.
    """
    resolver = multi_worker_resolver()
    if resolver is not None:
        key = json.dumps(resolver.cluster_spec().as_dict(), sort_keys=True) + f"{resolver.task_type}:{resolver.task_id}"
        if key not in _MULTI_WORKER:
            try:
                _MULTI_WORKER[key] = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
            except RuntimeError as e:
                raise RuntimeError("MultiWorkerMirroredStrategy must be created before TensorFlow initializes its "
                                   "runtime: call mtin_tf.train.select_strategy() before any TensorFlow op") from e
            log.info("multi-worker training: task %s:%s of %s, %d replica(s) in sync", resolver.task_type,
                     resolver.task_id, resolver.cluster_spec().as_dict(),
                     _MULTI_WORKER[key].num_replicas_in_sync)
        return _MULTI_WORKER[key]
    if devices is None:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if devices:
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def is_multi_worker(strategy) -> bool:
    """Whether ``strategy`` is a MultiWorkerMirroredStrategy over more than one worker."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        _training_tasks(strategy.cluster_resolver.cluster_spec().as_dict()) > 1


def is_chief(strategy=None) -> bool:
    """Whether this process writes the run's outputs: True without a multi-worker cluster; with one, for the task of
    type chief, else (no chief in the cluster) worker 0 — tf.distribute's rule, ``strategy.extended.should_checkpoint``.
    """
    strategy = strategy or tf.distribute.get_strategy()
    return not is_multi_worker(strategy) or bool(strategy.extended.should_checkpoint)


def chief_path(path: str, strategy=None) -> str:
    """Where this process writes what belongs at ``path``: ``path`` itself on the chief (or without a multi-worker
    cluster); on another worker ``dirname(path)/workertemp_<task id>/basename(path)``, removed afterwards by
    remove_worker_path — Keras's multi-worker saving pattern: every worker runs the same saving code (saving may read
    variables that need all workers), only the chief's copy stays."""
    strategy = strategy or tf.distribute.get_strategy()
    if is_chief(strategy):
        return path
    parent, base = os.path.split(os.path.normpath(path))
    return os.path.join(parent, f"workertemp_{strategy.cluster_resolver.task_id}", base)


def remove_worker_path(path: str, strategy=None) -> None:
    """Removes a non-chief worker's temporary directory of chief_path(path) (nothing on the chief)."""
    strategy = strategy or tf.distribute.get_strategy()
    written = chief_path(path, strategy)
    if written != path and tf.io.gfile.exists(os.path.dirname(written)):
        tf.io.gfile.rmtree(os.path.dirname(written))


@contextlib.contextmanager
def chief_writes(path: str, strategy=None):
    """``with chief_writes(out_dir, strategy) as where:`` write under ``where``; on a non-chief worker it is a
    temporary directory, removed at the end of the block; every worker then waits for the others (barrier), so that
    when one returns the chief's files are complete."""
    strategy = strategy or tf.distribute.get_strategy()
    try:
        yield chief_path(path, strategy)
    finally:
        remove_worker_path(path, strategy)
    barrier(strategy)


def barrier(strategy) -> None:
    """Blocks until every worker of a multi-worker strategy reaches it (an all-reduce of one number); no-op else."""
    if is_multi_worker(strategy):
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)


def fingerprint(model, *tables) -> np.ndarray:
    """float64 [n]: the sum of each of ``model``'s weights and of each array in ``tables`` (ids, features), then their
    sizes — equal on two workers that built the same model from the same data and seed."""
    sums = [float(tf.reduce_sum(tf.cast(w, tf.float64))) for w in model.weights]  # no NumPy copy of the tables
    sums += [float(np.sum(t, dtype=np.float64)) for t in tables]
    sizes = [int(np.prod(w.shape)) for w in model.weights] + [int(np.size(t)) for t in tables]
    return np.asarray(sums + sizes, np.float64)


def check_same_model(strategy, model, *tables) -> None:
    """Raises (on every worker alike) unless every worker of a multi-worker strategy built the same model — same
    weights after pretraining, the same item table and vocabularies (``tables``); data parallelism needs it. No-op
    without a multi-worker cluster."""
    if not is_multi_worker(strategy):
        return
    local = tf.constant(fingerprint(model, *tables)[None])
    values = strategy.experimental_distribute_values_from_function(lambda ctx: local)
    every = strategy.gather(values, axis=0).numpy()  # [replicas, n], the same on every worker
    differ = ~np.isclose(every, every[:1], rtol=1e-9, atol=1e-6).all(axis=0)
    if differ.any():
        raise ValueError(f"the workers built different models ({int(differ.sum())} of {differ.size} weight / table "
                         "checksums differ): every worker must read the same data, vocabularies and seed")


def make_dataset(arrays: Mapping[str, np.ndarray], batch_size: int, *, shuffle: bool = False, seed: int = 0):
    """tf.data of (features dict, {logit: label}) from model-input arrays (mtin_tf.data.examples.to_model_arrays)."""
    inputs = {name: np.asarray(arrays[name], np.int64) for name in F.MODEL_INPUT_NAMES}
    labels = {F.OUTPUT_LOGIT: np.asarray(arrays[F.LABEL], np.float32)}
    ds = tf.data.Dataset.from_tensor_slices((inputs, labels))
    if shuffle:
        ds = ds.shuffle(len(labels[F.OUTPUT_LOGIT]), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def shard_by_data(ds):
    """``ds`` (a tf.data.Dataset of global batches) with the DATA auto-shard policy: under a multi-worker strategy
    every worker reads all of it and keeps its replicas' part of each global batch — so the global batches are the
    single-process run's, whatever the number of files (FILE sharding would need at least one file per worker and
    would give workers unequal step counts). Other inputs, and other strategies, are unaffected."""
    if not isinstance(ds, tf.data.Dataset):
        return ds
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def fit_mtin(model, config: MTINConfig, train_ds, eval_ds=None, *, epochs=None, steps_per_epoch=None,
             validation_steps=None, log_dir=None, patience=2, verbose=1, callbacks=()):
    """model.fit with early stopping on eval AUC (best weights restored) and optional TensorBoard logs.

    tf.data inputs are sharded by DATA (shard_by_data). Under a multi-worker strategy Keras's TensorBoard callback
    writes the chief's logs to ``log_dir`` and the other workers' to a temporary directory it removes.

    verbose None or "auto": Keras's progress bar within each epoch on a terminal, one line per epoch otherwise."""
    if verbose is None or verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    train_ds, eval_ds = (shard_by_data(ds) for ds in (train_ds, eval_ds))
    cbs = list(callbacks)
    if eval_ds is not None:
        cbs.append(tf_keras.callbacks.EarlyStopping(monitor=EVAL_AUC, mode="max", patience=patience,
                                                    restore_best_weights=True))
    if log_dir:
        cbs.append(tf_keras.callbacks.TensorBoard(log_dir=str(log_dir), update_freq="epoch"))
    return model.fit(train_ds, validation_data=eval_ds, epochs=epochs or config.epochs, callbacks=cbs,
                     steps_per_epoch=steps_per_epoch, validation_steps=validation_steps, verbose=verbose)


def build_for_training(config: MTINConfig, item_ids, item_features, user_ids, history_arrays, candidate_share, *,
                       strategy=None, builder=build_mtin, anchor_files=None):
    """train_mtin's steps before fit, shared with the TFX Trainer's streaming run_fn: the precision policy, the seed,
    the model built under the strategy (wrapped for the retrieval task when config.retrieval_weight > 0) and MTIN's
    memories pretrained (unless MTIN-P). Returns (model, model to fit, strategy, pretraining) — pretraining:
    {"source": "beam", "in_memory" or None (not pretrained), "users": users given to it, each memory's name: users
    whose rows were set} (:func:`pretrain_memories`).

    history_arrays: model-input arrays whose rows hold the users' histories for in-memory pretraining — all training
    rows (train_mtin), or each user's latest training row (mtin_tf.pipeline.trainer, streaming); unused (may be None)
    with ``anchor_files``: file patterns of the anchor records memory pretraining computed in Beam (HistoryGen,
    mtin_tf.data.beam_pretrain), streamed into the anchored memories instead. candidate_share: a callable returning
    (candidate ids, impression share) of the training candidates, called for the retrieval task and the exposure
    prior. strategy: default select_strategy(). Under a multi-worker strategy every worker must pass the same
    arguments (the same data, vocabularies and config.seed): check_same_model raises otherwise.
    """
    strategy = strategy or select_strategy()  # first: a multi-worker strategy must precede TensorFlow's runtime
    if config.mixed_precision:
        if tf.config.list_logical_devices("GPU"):
            tf_keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            log.warning("mixed_precision requested but no GPU is visible: training in float32")
    tf_keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = builder(config, item_ids, item_features, user_ids)
        fitted = model
        if builder is build_mtin and (config.exposure_prior or config.retrieval_weight):
            shares = candidate_share()  # one pass over the candidates for both
            if config.exposure_prior:
                set_exposure_prior(model, *shares)
            if config.retrieval_weight:  # fit on ranking + retrieval; the ranker is returned
                from mtin_tf.retrieval_task import MultiTaskTraining

                multitask = MultiTaskTraining(model, config.retrieval_weight, *shares,
                                              negatives=config.retrieval_negatives,
                                              temperature=config.retrieval_temperature)
                fitted = compile_model(multitask, config)
    pretraining = {"source": None, "users": 0}
    if config.pretrain_memory and builder is build_mtin:
        pretraining = pretrain_memories(model, config, history_arrays, anchor_files)
    check_same_model(strategy, model, item_ids, item_features, user_ids)
    return model, fitted, strategy, pretraining


def pretrain_memories(model, config: MTINConfig, history_arrays=None, anchor_files=None) -> dict:
    """MTIN's two memories pretrained (after the model is built, outside the strategy's scope: the writes go to every
    replica) — from Beam's anchor records when ``anchor_files`` is given and the memories are anchored
    (mtin_tf.pretrain.assign_anchors), else in memory from ``history_arrays`` (mtin_tf.pretrain.pretrain_memory; the
    only path for memory_anchors = 0, which needs the model's embeddings). Returns build_for_training's
    ``pretraining`` dict."""
    if anchor_files and config.memory_anchors:
        batches = read_anchor_records(anchor_files, config.num_groups, config.memory_anchors)
        result = {"source": "beam", **assign_anchors(model, batches.as_numpy_iterator())}
        if result["unknown_users"]:
            log.warning("%d users of the anchor records are not in the memory table: skipped", result["unknown_users"])
    else:
        if history_arrays is None:
            raise ValueError("in-memory memory pretraining needs history_arrays (anchor records serve anchored "
                             "memories only: config.memory_anchors > 0)")
        result = {"source": "in_memory", "users": int(np.unique(history_arrays[F.USER_ID]).size)}
        for layer, (key, times_key) in zip((POSITIVE_MEMORY, NEGATIVE_MEMORY), F.HISTORY_PAIRS):
            result[layer] = pretrain_memory(model, user_histories_from_arrays(history_arrays, key, times_key),
                                            memory_layer=layer, seed=config.seed)
    log.info("memory pretraining (%s): %s", result["source"], result)
    return result


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

    model, fitted, strategy, _ = build_for_training(config, item_ids, item_features, user_ids, train_arrays,
                                                    candidate_share, strategy=strategy, builder=builder)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    train_ds = make_dataset(train_arrays, global_batch, shuffle=True, seed=config.seed)
    eval_ds = make_dataset(eval_arrays, global_batch) if eval_arrays is not None else None
    history = fit_mtin(fitted, config, train_ds, eval_ds, log_dir=log_dir, verbose=verbose, patience=patience,
                       callbacks=callbacks)
    return model, history


def refit_mtin(config: MTINConfig, train_arrays, validation_arrays, epochs: int, item_ids, item_features,
               **kwargs):
    """The refit protocol's second fit (docs/EVALUATION.md): the same model and seed trained on train + validation
    (train's rows first) for ``epochs``, the count validation chose, with no early stopping. kwargs: train_mtin's
    (builder, strategy, log_dir, verbose, ...). Returns (model, the train + validation arrays it was fitted on)."""
    from mtin_tf.data.examples import join_arrays

    fit = join_arrays(train_arrays, validation_arrays)
    model, _ = train_mtin(dataclasses.replace(config, epochs=epochs), fit, item_ids, item_features, **kwargs)
    return model, fit


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
                       verbose=2, refit=False) -> dict:
    """The whole standalone run; returns the metrics dict (also written to out_dir/metrics.json).

    Early stopping and the restored epoch are decided on the validation split; test is scored once, at the end.
    refit: then train the model again from the same seed on train + validation for the chosen number of epochs (no
    early stopping; TensorBoard logs in out_dir/logs/refit) and score test, fit the floors and export with that
    model — the refit protocol of ``mtin experiment --refit``; the ``validation`` block stays the first model's, which
    chose the epoch (``refit``: {"epochs", "examples"} in the result).
    Under TF_CONFIG naming several workers (select_strategy), every worker runs this on the same data and only the
    chief's out_dir stays (chief_writes); a non-chief worker's result has ``model_path`` None.
    """
    strategy = select_strategy()  # first: a multi-worker strategy must precede TensorFlow's runtime
    with chief_writes(out_dir, strategy) as write_dir:
        result = _train_and_evaluate(examples_dir, items_path, write_dir, strategy, model_name=model_name,
                                     variant=variant, overrides=overrides, verbose=verbose, refit=refit)
    if write_dir != out_dir:
        result["model_path"] = None  # removed: the chief's model is the run's
    return result


def _train_and_evaluate(examples_dir, items_path, out_dir, strategy, *, model_name, variant, overrides, verbose,
                        refit):
    from mtin_tf import floors, metrics
    from mtin_tf.baselines import BUILDERS, MODELS
    from mtin_tf.data.canonical import read_item_features
    from mtin_tf.data.examples import read_split_arrays
    from mtin_tf.export import export_saved_model
    from mtin_tf.model import is_mtin
    from mtin_tf.retrieval import catalogue_metrics, catalogue_queries, popularity_floor_metrics

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
                                builder=builder, strategy=strategy, log_dir=os.path.join(out_dir, "logs"),
                                verbose=verbose)
    curve = [float(v) for v in history.history.get(EVAL_AUC, [])]
    # EarlyStopping(restore_best_weights) restores the first epoch with the best validation AUC
    best_epoch = int(np.argmax(curve)) + 1 if curve else len(history.history["loss"])
    blocks = {"validation": metrics.summary(validation[F.USER_ID], validation[F.LABEL],
                                            predict_probabilities(model, validation), ks=(10, 50))}
    queries = catalogue_queries([train], validation)  # the model's catalogue retrieval and its floor share them
    if is_mtin(model):
        blocks["validation"].update(catalogue_metrics(model, [train], validation, queries=queries))
    # The floors of the split the epoch (and any setting) is chosen on: fitted on train, as the model was.
    validation_floors = {**floors.floor_metrics(train, validation, ks=(10, 50)),
                         floors.POPULAR: popularity_floor_metrics([train], validation, queries=queries)}
    fit = train
    if refit:  # the same model and seed on every row before test, for the epochs validation chose
        model, fit = refit_mtin(config, train, validation, best_epoch, items.item_ids, items.features,
                                builder=builder, strategy=strategy, log_dir=os.path.join(out_dir, "logs", "refit"),
                                verbose=verbose)
    blocks["test"] = metrics.summary(test[F.USER_ID], test[F.LABEL], predict_probabilities(model, test), ks=(10, 50))
    floor = floors.floor_metrics(fit, test, ks=(10, 50))
    result = dict(blocks["test"])  # top level: the test metrics, as before the validation split
    result.update(model=model_name, variant=variant if model_name == "mtin" else model_name, **blocks,
                  floors=floor, below_floor=bool(blocks["test"]["auc"] < floors.best_floor_auc(floor)),
                  validation_floors=validation_floors,
                  train_examples=int(len(train[F.LABEL])), validation_examples=int(len(validation[F.LABEL])),
                  test_examples=int(len(test[F.LABEL])), epochs_run=len(history.history["loss"]),
                  best_epoch=best_epoch, curves={"validation_auc": curve})
    if refit:
        result["refit"] = {"epochs": best_epoch, "examples": int(len(fit[F.LABEL]))}
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
        queries = catalogue_queries([train, validation], test)
        result["retrieval"] = {"model": catalogue_metrics(model, [train, validation], test, queries=queries),
                               floors.POPULAR: popularity_floor_metrics([train, validation], test, queries=queries)}
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
    if result.get("refit"):
        lines.append(f"  refit: trained again on train + validation ({result['refit']['examples']} examples) for "
                     f"{result['refit']['epochs']} epochs; test and the floors (fitted on the same rows) use it")
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
