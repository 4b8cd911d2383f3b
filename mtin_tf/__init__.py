"""mtin-tf: MTIN (Jiang et al., ACM MM 2020) as reusable tf_keras layers and a trainable, saveable model.

Public API: ``mtin_tf.MTINConfig``, ``mtin_tf.build_mtin``, ``mtin_tf.pretrain_memory`` and the layers in
``mtin_tf.layers``. TensorFlow is imported only when one of them is first used, so ``mtin --help`` stays fast.
"""
import importlib as _importlib
import os as _os

# TF 2.16's tf.keras is Keras 3, but TFT, TFMA and TFRS need Keras 2: select tf_keras before TensorFlow is imported.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"

_EXPORTS = {"MTINConfig": "mtin_tf.config", "build_mtin": "mtin_tf.model", "pretrain_memory": "mtin_tf.pretrain"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(_importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mtin_tf' has no attribute {name!r}")
