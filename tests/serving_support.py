"""Shared pieces of the serving tests (no tests here): small exported models, cached per test process, and a real
``mtin serve`` subprocess (mtin_tf.serving.local.LocalServer) on a free localhost port."""
from __future__ import annotations

import atexit
import functools
import itertools
import os
import shutil
import tempfile

import numpy as np

from mtin_tf.serving.local import LocalServer

L = 8
NUM_ITEMS, FEATURE_DIM, NUM_USERS = 40, 6, 10
_TMP = tempfile.mkdtemp(prefix="mtin-serving-tests-")
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
_SERVERS = itertools.count()


def tables():
    """(item_ids [40] raw ids 1000..40000, item_features [40, 6], user_ids [10])."""
    rng = np.random.default_rng(0)
    return np.arange(1, NUM_ITEMS + 1) * 1000, rng.normal(size=(NUM_ITEMS, FEATURE_DIM)).astype(np.float32), \
        np.arange(1, NUM_USERS + 1) * 7


@functools.lru_cache(maxsize=None)
def exported(seed: int):
    """(Keras model, path of its exported SavedModel version dir) for a small MTIN with weights from ``seed``;
    built and exported once per test process."""
    import tf_keras

    from mtin_tf.config import MTINConfig
    from mtin_tf.export import export_saved_model
    from mtin_tf.model import build_mtin

    tf_keras.utils.set_random_seed(seed)
    model = build_mtin(MTINConfig(embedding_dim=8, num_masks=2, num_groups=3, max_history=L, tau=0.2), *tables())
    path = export_saved_model(model, os.path.join(_TMP, f"export-{seed}"), version=seed)
    return model, path


def install_version(seed: int, base: str, version: int) -> str:
    """Put model ``seed`` at ``base/<version>`` the way export does: copy under a hidden name, then rename."""
    _, path = exported(seed)
    os.makedirs(base, exist_ok=True)
    staging = os.path.join(base, f".tmp-{version}")
    shutil.copytree(path, staging)
    final = os.path.join(base, str(version))
    os.replace(staging, final)
    return final


def start_server(base: str, *extra_args: str, port: int | None = None, **client_options) -> LocalServer:
    """`mtin serve` over ``base`` in a subprocess on localhost (a free port unless ``port``), polling for versions
    every 0.5 s; ``client_options`` for its MTINClient."""
    return LocalServer(base, "--poll-seconds", "0.5", *extra_args, port=port,
                       log_path=os.path.join(_TMP, f"serve-{next(_SERVERS)}.log"), client_options=client_options)
