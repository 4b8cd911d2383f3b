"""Export a trained model as a versioned SavedModel: ``<base>/<unix seconds>/`` as TF Serving and TFX's Pusher expect.

The version directory is written under a temporary name and renamed into place when complete, so a server watching
``<base>`` never loads a half-written model.

An exported model is scored again by :func:`score_saved_model` (reloaded Keras model or the raw-tensor signature) and
:func:`evaluate_saved_model` (the metrics of ``mtin evaluate`` on a split of ``mtin data build``).
"""
from __future__ import annotations

import os
import shutil
import time


def export_saved_model(model, base_dir: str, version: int | None = None, *, jit_routing: bool | None = None) -> str:
    """Save ``model`` (tf_keras) to ``base_dir/<version>`` (default: unix seconds, bumped past existing versions)
    with the serving signatures of mtin_tf.signatures (tf.Example ``serving_default``, raw-tensor ``predict_raw``
    and ``score_candidates``). The directory also reloads as the Keras model (tf_keras.models.load_model).

    What is saved is ``serving_model(model, jit_routing=jit_routing)``: the item table pre-projected, and MTIN's
    routing loop under XLA as the model was built (MTINConfig.jit_routing, default on) unless ``jit_routing`` says
    otherwise. TF Serving's CPU build runs XLA-compiled functions only with ``--xla_cpu_compilation_enabled=true``
    (set in serving/docker-compose.yml and serving/k8s/deployment.yaml); export with ``jit_routing=False`` for a
    server without it (docs/SERVING.md measures both)."""
    from mtin_tf.signatures import serving_signatures

    model = serving_model(model, jit_routing=jit_routing)
    os.makedirs(base_dir, exist_ok=True)
    existing = [int(d) for d in os.listdir(base_dir) if d.isdigit()]
    version = version if version is not None else max([int(time.time())] + [v + 1 for v in existing])
    final = os.path.join(base_dir, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"model version {final} already exists")
    staging = os.path.join(base_dir, f".tmp-{version}")
    shutil.rmtree(staging, ignore_errors=True)
    max_history = _max_history(model)
    model.save(staging, save_format="tf", include_optimizer=False,
               signatures=serving_signatures(model, max_history))
    write_known_ids(model, staging)
    os.replace(staging, final)
    return final


KNOWN_IDS_FILE = os.path.join("assets.extra", "mtin_known_ids.npz")  # TF Serving ignores assets.extra


def write_known_ids(model, saved_model_dir: str) -> str:
    """Write the raw ids the model has rows for — ``item`` (its item table) and ``user`` (MTIN's interest memory;
    absent for models without per-user rows) — to ``saved_model_dir/assets.extra/mtin_known_ids.npz`` (any
    filesystem TensorFlow writes), so that a server can count the unknown ids a request carries (they are scored from
    the out-of-vocabulary row). Returns the file's path."""
    import io

    import numpy as np
    import tensorflow as tf

    from mtin_tf.layers import ItemEmbedding
    from mtin_tf.layers.tables import UserMemory

    ids = {}
    for layer in model.layers:
        if isinstance(layer, ItemEmbedding):
            ids["item"] = layer.keys.numpy()
        elif isinstance(layer, UserMemory) and "user" not in ids:
            ids["user"] = layer.keys.numpy()
    path = os.path.join(saved_model_dir, KNOWN_IDS_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.sort(np.asarray(v, np.int64)) for k, v in ids.items()})
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())
    return path


def serving_model(model, *, jit_routing: bool | None = None):
    """The same model for serving: equal outputs, with every ItemEmbedding's frozen feature table [N, F] and W_e
    replaced by the pre-projected table [N, d] of x_j = W_e f_j + b_e (+ e_j) (mtin_tf.layers.ItemEmbedding), and
    MTIN's routing run with or without XLA as ``jit_routing`` says (None: as in ``model``). Every other weight is
    copied as it is; the
    compile arguments (loss, metrics) are kept so that TFMA's Keras reload finds them."""
    import tf_keras

    from mtin_tf.layers import InterestBranch, ItemEmbedding
    from mtin_tf.layers.tables import assign_rows

    config = model.get_config()
    for layer in config["layers"]:
        name = layer.get("registered_name")
        if name == tf_keras.saving.get_registered_name(ItemEmbedding):
            layer["config"].update(projected=True, feature_dim=layer["config"]["embedding_dim"])
        elif name == tf_keras.saving.get_registered_name(InterestBranch) and jit_routing is not None:
            layer["config"]["jit_routing"] = bool(jit_routing)
    served = model.__class__.from_config(config)
    for new in served.layers:
        old = model.get_layer(new.name)
        if isinstance(old, ItemEmbedding):
            table, unknown = old.projected_table()
            new.keys.assign(old.keys)
            new.table_rows.assign(old.table_rows)
            new.table_ids.assign(old.table_ids)
            assign_rows(new.table, table)
            del table
            new.unknown.assign(unknown)
        else:
            new.set_weights(old.get_weights())
    if getattr(model, "compiled_loss", None) is not None:
        args = model._get_compile_args()  # the arguments Keras itself uses to clone a compiled model
        served.compile(loss=args["loss"], metrics=_fresh(args["metrics"]))  # never trained: no optimizer state
    return served


def _fresh(metrics):
    """New metric objects with the same configuration (a metric's state must not be shared by two models)."""
    import tensorflow as tf
    import tf_keras

    def clone(m):
        if isinstance(m, tf_keras.metrics.Metric):
            return tf_keras.metrics.deserialize(tf_keras.metrics.serialize(m))
        return m

    return tf.nest.map_structure(clone, metrics)


def _max_history(model) -> int:
    from mtin_tf import features as F

    return int(model.input[F.CLICKED_ITEMS].shape[-1])


def latest_version(base_dir: str) -> str:
    """Path of the highest numeric version under ``base_dir``."""
    versions = sorted(int(d) for d in os.listdir(base_dir) if d.isdigit())
    if not versions:
        raise FileNotFoundError(f"no numeric model version under {base_dir}")
    return os.path.join(base_dir, str(versions[-1]))


# ----------------------------------------------------------------------------- scoring an exported model
SIGNATURES = ("keras", "predict_raw")  # how score_saved_model / evaluate_saved_model call the SavedModel


def load_keras_model(model_dir: str):
    """tf_keras.models.load_model(model_dir), with a ValueError saying what to do when the SavedModel's weights are
    not those this version's layers create (a model exported by an older mtin-tf; e.g. ItemEmbedding's
    ``item_table_ids``): its serving signatures still work (``predict_raw``, TF Serving), the Keras object does not."""
    import tf_keras

    try:
        return tf_keras.models.load_model(model_dir)
    except AssertionError as e:
        if "not bound to checkpointed values" not in str(e):
            raise
        raise ValueError(f"{model_dir} was saved with other weights than this version of mtin_tf's layers create, "
                         f"so it cannot be loaded as a Keras model ({e}); score it through its serving signature "
                         "(--signature predict_raw) or export it again") from None


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
        from mtin_tf.train import predict_probabilities

        return predict_probabilities(load_keras_model(model_dir), arrays, batch_size)
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
        raise ValueError(f"no SavedModel directory at {model_dir}")
    try:
        path = split_path(examples_dir, split)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from e
    arrays = to_model_arrays(read_tfrecords(path), saved_model_max_history(model_dir))
    if len(arrays[F.LABEL]) == 0:
        raise ValueError(f"{path} holds no examples")
    model = None
    if signature == "keras":
        from mtin_tf.train import predict_probabilities

        model = load_keras_model(model_dir)
        scores = predict_probabilities(model, arrays)
    else:
        scores = score_saved_model(model_dir, arrays, signature=signature)
    result = metrics.summary(arrays[F.USER_ID], arrays[F.LABEL], scores, ks=tuple(ks))
    result.update(model_path=os.path.abspath(model_dir), examples=path, signature=signature,
                  num_examples=int(len(scores)))
    from mtin_tf.model import is_mtin

    if model is not None and is_mtin(model) and split == "test":
        from mtin_tf.floors import POPULAR
        from mtin_tf.retrieval import catalogue_metrics, catalogue_queries, popularity_floor_metrics

        data = read_split_arrays(examples_dir, saved_model_max_history(model_dir), splits=("train", "validation"))
        before = [data["train"], data["validation"]]
        queries = catalogue_queries(before, arrays)
        result["retrieval"] = {"model": catalogue_metrics(model, before, arrays, queries=queries),
                               POPULAR: popularity_floor_metrics(before, arrays, queries=queries)}
    return result
