"""Aggregation of item-level and group-level interests into c_p (paper eq. 10–11 and Table 3)."""
from __future__ import annotations

import tensorflow as tf

from mtin_tf.config import AGGREGATIONS
from mtin_tf.layers.backend import Layer, keras, register


@register
class InterestAggregation(Layer):
    """c_p from the item-level r_p and the group-level h_p, for every memory row p (eq. 10–11, Table 3).

      ``sum``:         c_p = r_p + h_p                                 (the paper's sum pooling)
      ``concat``:      c_p = W_c [r_p, h_p] + b_c
      ``concat_pool``: c_p = W_c [r_p, h_p] + b_c + r_p + h_p           (their combination, the paper's best in Table 3)
    with r, h, c [B, s, d] (B batch, s memory rows = interest groups, d embedding size).

    Args:
      method: "sum", "concat" or "concat_pool" (default; mtin_tf.config.AGGREGATIONS).
      kernel_regularizer: regularizer of W_c (the model's λ‖·‖²), or None.
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      inputs: [r, h]: r float [B, s, d], the item-level interests (ParallelTemporalMask); h float [B, s, d], the
        group-level interests (InterestMask). No mask: rows of empty groups are 0 in both.

    Input shape:
      [(B, s, d), (B, s, d)].

    Output shape:
      (B, s, d): c.

    Example:

    >>> import numpy as np
    >>> r, h = np.ones([2, 3, 4], np.float32), np.full([2, 3, 4], 2.0, np.float32)
    >>> InterestAggregation("sum")([r, h])[0, 0].numpy()
    array([3., 3., 3., 3.], dtype=float32)
    >>> InterestAggregation("concat_pool")([r, h]).shape
    TensorShape([2, 3, 4])
    """

    def __init__(self, method="concat_pool", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if method not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {method!r}")
        self.method = method
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        d = int(input_shape[0][-1])
        if self.method != "sum":
            self.combine = keras.layers.Dense(d, name="combine", kernel_regularizer=self.kernel_regularizer)
        super().build(input_shape)

    def call(self, inputs):
        r, h = inputs
        if self.method == "sum":
            return r + h
        c = self.combine(tf.concat([r, h], axis=-1))
        return c + r + h if self.method == "concat_pool" else c

    def get_config(self):
        config = super().get_config()
        config.update(method=self.method,
                      kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer))
        return config
