"""mtin-tf: MTIN (Jiang et al., ACM MM 2020) as reusable Keras layers and a trainable, saveable model.

Public API: ``mtin_tf.MTINConfig``, ``mtin_tf.build_mtin``, ``mtin_tf.pretrain_memory`` and the layers in
``mtin_tf.layers``. TensorFlow is imported only when one of them is first used, so ``mtin --help`` stays fast.
Importing mtin_tf never changes the process environment: the layers are built on whichever Keras tf.keras is
(tf_keras when TF_USE_LEGACY_KERAS=1, else Keras 3; mtin_tf.layers.backend); the model builder, trainer and
pipeline are tf_keras code and need TF_USE_LEGACY_KERAS=1, which the ``mtin`` command and the pipeline's entry
points set for themselves.
"""
import importlib as _importlib

__version__ = "0.1.0"

_EXPORTS = {"MTINConfig": "mtin_tf.config", "build_mtin": "mtin_tf.model", "pretrain_memory": "mtin_tf.pretrain"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(_importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mtin_tf' has no attribute {name!r}")
