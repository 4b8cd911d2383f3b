"""Masked pooling: the mean or max of a sequence over its real positions, 0 for a sequence with none.

The baselines pool histories and hidden states with it, the two-tower pools the clicked history into its user tower,
and MTIN's history query (config.history_query) pools the clicked history into one more retrieval query.
"""
from __future__ import annotations

import tensorflow as tf

from mtin_tf.layers.backend import Layer, register, split_mask


@register
class MaskedPooling(Layer):
    """Mean or max of a sequence over its real positions (the baselines' pooling of histories and hidden states).

      mean: y = Σ_j m_j v_j / Σ_j m_j;   max: y = max_{j: m_j} v_j;   0 for a row with no real position   [B, d]

    Args:
      mode: "mean" (default) or "max".
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      inputs: values float [B, L, d].
      mask: bool [B, L], True at the real positions (required). The form models saved before the ``mask=``
        convention recorded, [values, mask] as the inputs and no mask, is still accepted.

    Input shape:
      (B, L, d); mask (B, L).

    Output shape:
      (B, d).

    Example:

    >>> import numpy as np
    >>> values = np.array([[[1.0], [5.0], [9.0]]], np.float32)
    >>> MaskedPooling("mean")(values, mask=np.array([[True, True, False]])).numpy()
    array([[3.]], dtype=float32)
    >>> MaskedPooling("max")(values, mask=np.array([[False, False, False]])).numpy()
    array([[0.]], dtype=float32)
    """

    def __init__(self, mode="mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("mean", "max"):
            raise ValueError(f"MaskedPooling mode must be 'mean' or 'max', got {mode!r}")
        self.mode = mode

    def call(self, inputs, mask=None):
        values, mask = split_mask(self, inputs, mask, 2)
        m = tf.cast(mask, values.dtype)[..., None]
        if self.mode == "mean":
            return tf.math.divide_no_nan(tf.reduce_sum(values * m, 1), tf.reduce_sum(m, 1))
        lowest = tf.fill(tf.shape(values), tf.constant(values.dtype.min, values.dtype))
        pooled = tf.reduce_max(tf.where(m > 0, values, lowest), 1)
        return tf.where(tf.reduce_any(tf.cast(mask, tf.bool), 1)[:, None], pooled, tf.zeros_like(pooled))

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
