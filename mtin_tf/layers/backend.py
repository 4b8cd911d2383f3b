"""Which Keras MTIN's layers are built on: the one the process's ``tf.keras`` is.

TensorFlow 2.16 makes ``tf.keras`` tf_keras (Keras 2) when the environment variable ``TF_USE_LEGACY_KERAS`` is "1",
"true" or "True", and Keras 3 otherwise. The layers follow the same rule, read when ``mtin_tf.layers`` is first
imported (importing mtin_tf before TensorFlow sets its default, "1": mtin_tf/__init__.py), so they subclass the Layer
of the Keras a model around them uses, and register for serialization there under the same names
(``mtin>InterestGroupRouting``, ...). Keras 3 must run on its TensorFlow backend: the layers are TensorFlow code.

``keras`` is that module; ``Layer`` is the base of every MTIN layer: its call refuses the symbolic tensors of the
other Keras with an error naming both ways out, where Keras itself would fail further in with a message about
converting a KerasTensor.

The mask convention of every MTIN layer: a layer that needs masks takes them in its ``mask=`` call argument (one
bool tensor, or a documented tuple when it needs two), and only there. A mask is used only when the caller passes
it: Keras's automatic masking never reaches the layers (a Keras mask attached to an input, e.g. by
``Embedding(mask_zero=True)``, is not filled in for ``mask``), and no layer attaches a Keras mask to its outputs
(``compute_mask`` is None), so the layers never start or stop masking anything behind their caller's back.
"""
from __future__ import annotations

import functools
import inspect
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


NO_MASK = False  # the mask= of a call given none (see Layer.__call__)


@functools.lru_cache(maxsize=None)
def _takes_mask(cls) -> bool:
    return "mask" in inspect.signature(cls.call).parameters


class Layer(keras.layers.Layer):
    """keras.layers.Layer of the process's Keras, refusing the other Keras's symbolic tensors, with the mask
    convention of the module: masks only through an explicit ``mask=``, none attached to the outputs."""

    def __call__(self, *args, **kwargs):
        _check_same_keras(self, (args, kwargs))
        if _takes_mask(type(self)) and kwargs.get("mask") is None:
            # No mask given: say so with False, which neither Keras replaces by the Keras masks of the inputs (both
            # fill in a mask that is absent, and Keras 3 one that is None too). The call reads it as None.
            kwargs["mask"] = NO_MASK
        return super().__call__(*args, **kwargs)

    def given_mask(self, mask):
        """The ``mask`` the caller passed to the call, or None when it passed none."""
        if mask is NO_MASK or all(m is None for m in tf.nest.flatten(mask)):
            return None
        return mask

    def compute_mask(self, inputs, mask=None):
        """No Keras mask on the outputs: masks travel only as explicit ``mask=`` arguments (see the module)."""
        return None


def split_mask(layer, inputs, mask, legacy_size: int):
    """(inputs, mask) of a call taking its mask as ``mask=``: the call's own, when the caller gave one; else the
    form models saved before that convention recorded, the mask as the second of ``legacy_size`` inputs
    [x, mask, *rest], split into ([x, *rest], or x alone when there is no rest; mask). ValueError otherwise."""
    mask = layer.given_mask(mask)
    if mask is not None:
        return inputs, mask
    if isinstance(inputs, (list, tuple)) and len(inputs) == legacy_size:
        first, mask, *rest = inputs
        return ([first, *rest] if rest else first), mask
    raise ValueError(f"{type(layer).__name__} {layer.name!r} needs mask= (see its docstring)")


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
