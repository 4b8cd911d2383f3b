"""Which Keras MTIN's layers are built on: the one the process's ``tf.keras`` is.

TensorFlow 2.16 makes ``tf.keras`` tf_keras (Keras 2) when the environment variable ``TF_USE_LEGACY_KERAS`` is "1",
"true" or "True", and Keras 3 otherwise. The layers follow the same rule, read when ``mtin_tf.layers`` is first
imported (importing mtin_tf before TensorFlow sets its default, "1": mtin_tf/__init__.py), so they subclass the Layer
of the Keras a model around them uses, and register for serialization there under the same names
(``mtin>InterestGroupRouting``, ...). Keras 3 must run on its TensorFlow backend: the layers are TensorFlow code.

``keras`` is that module; ``Layer`` is the base of every MTIN layer: its call refuses the symbolic tensors of the
other Keras with an error naming both ways out, where Keras itself would fail further in with a message about
converting a KerasTensor.
"""
from __future__ import annotations

import os

import tensorflow as tf

LEGACY_VALUES = ("true", "True", "1")  # exactly TensorFlow 2.16's test for TF_USE_LEGACY_KERAS


def uses_legacy_keras() -> bool:
    """True when this process's tf.keras is tf_keras (Keras 2), by TensorFlow's own rule."""
    return os.environ.get("TF_USE_LEGACY_KERAS") in LEGACY_VALUES


LEGACY = uses_legacy_keras()
_SETTING = os.environ.get("TF_USE_LEGACY_KERAS")  # as it was at import, which is what LEGACY followed
if LEGACY:
    import tf_keras as keras
else:
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ImportError(f"mtin_tf.layers are TensorFlow layers and need Keras 3's TensorFlow backend, but "
                          f"KERAS_BACKEND is {keras.backend.backend()!r}: set KERAS_BACKEND=tensorflow")

KERAS_NAME = "tf_keras (Keras 2)" if LEGACY else f"Keras {keras.__version__}"
_FOREIGN = "keras." if LEGACY else "tf_keras."  # module prefix of the other Keras's KerasTensor
_FOREIGN_NAME = "Keras 3 (keras / tf.keras)" if LEGACY else "tf_keras (Keras 2)"


def _check_same_keras(layer, args) -> None:
    for value in tf.nest.flatten(args):
        kind = type(value)
        if kind.__name__ == "KerasTensor" and kind.__module__.startswith(_FOREIGN):
            switch = ("set TF_USE_LEGACY_KERAS=0 (or import keras first)" if LEGACY
                      else 'set TF_USE_LEGACY_KERAS=1')
            raise TypeError(
                f"{type(layer).__name__} {layer.name!r} is a {KERAS_NAME} layer, but it was called on a "
                f"{_FOREIGN_NAME} tensor. mtin_tf.layers use the Keras that tf.keras is in this process "
                f"(TF_USE_LEGACY_KERAS={_SETTING!r} when mtin_tf.layers was imported). "
                f"Either build the model with {'tf_keras' if LEGACY else 'keras (Keras 3)'}, or {switch} before "
                f"TensorFlow and mtin_tf are imported, so that the layers are {_FOREIGN_NAME} layers.")


class Layer(keras.layers.Layer):
    """keras.layers.Layer of the process's Keras, refusing the other Keras's symbolic tensors (see the module)."""

    def __call__(self, *args, **kwargs):
        _check_same_keras(self, (args, kwargs))
        return super().__call__(*args, **kwargs)


def register(cls):
    """Register ``cls`` for serialization as ``mtin>ClassName`` in the process's Keras."""
    return keras.saving.register_keras_serializable(package="mtin")(cls)


def require_legacy_keras(what: str) -> None:
    """The model builder, trainer and pipeline are tf_keras code (TFT and TFMA need Keras 2): fail clearly when the
    layers were imported under Keras 3."""
    if not LEGACY:
        raise RuntimeError(
            f"{what} builds a tf_keras (Keras 2) model, as the TFX Trainer, TFT and TFMA need, but mtin_tf.layers were "
            f"imported as Keras 3 layers (TF_USE_LEGACY_KERAS={_SETTING!r}). Set "
            f"TF_USE_LEGACY_KERAS=1 before TensorFlow is imported (importing mtin_tf first does), or use the layers "
            f"of mtin_tf.layers in your own Keras 3 model.")
