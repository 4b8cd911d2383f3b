"""Export a trained model as a versioned SavedModel: ``<base>/<unix seconds>/`` as TF Serving and TFX's Pusher expect.

The version directory is written under a temporary name and renamed into place when complete, so a server watching
``<base>`` never loads a half-written model.
"""
from __future__ import annotations

import os
import shutil
import time


def export_saved_model(model, base_dir: str, version: int | None = None) -> str:
    """Save ``model`` (tf_keras) to ``base_dir/<version>`` (default: unix seconds, bumped past existing versions)
    with the serving signatures of mtin_tf.signatures (tf.Example ``serving_default`` and raw-tensor
    ``predict_raw``). The directory also reloads as the Keras model (tf_keras.models.load_model)."""
    from mtin_tf.signatures import serving_signatures

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
    os.replace(staging, final)
    return final


def _max_history(model) -> int:
    from mtin_tf import features as F

    return int(model.input[F.CLICKED_ITEMS].shape[-1])


def latest_version(base_dir: str) -> str:
    """Path of the highest numeric version under ``base_dir``."""
    versions = sorted(int(d) for d in os.listdir(base_dir) if d.isdigit())
    if not versions:
        raise FileNotFoundError(f"no numeric model version under {base_dir}")
    return os.path.join(base_dir, str(versions[-1]))
