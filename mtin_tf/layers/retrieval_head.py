"""The retrieval head (ours, beyond the paper): the interest rows' own map into the space that ranks the catalogue.

MTIN's positive branch ends in s updated memory rows u_p [s, d] (eq. 10). Eq. 11's readout turns them into the
click logit; the retrieval objective (mtin_tf.retrieval_task) asks the same rows to be queries against the item table,
max_p u_p · x_j. With the head, the query of row p is

  q_p = u_p (I + W_r) (+ b_r)  W_r [d, d], initialised at 0 and L2-regularised: the head starts as the identity,
                               and the penalty pulls it back towards it; b_r [d] (``use_bias``, from 0, under
                               the same penalty) is the same for every user and row

and retrieval scores q_p · x_j = u_p (I + W_r) x_jᵀ (+ b_r · x_j), a bilinear form: the two objectives share the
rows and the item table but not the metric they compare them in. b_r · x_j is a per-item score offset, the same for
every user: how readily an item is retrieved at all (a two-tower's query bias does the same). Only the queries are
mapped (s per user), never the N items, so the served catalogue is scanned as it is stored. One W_r for all s rows (a
row's index is not the same interest across users).
"""
from __future__ import annotations

import tensorflow as tf

from mtin_tf.layers.backend import Layer, keras, register


@register
class RetrievalHead(Layer):
    """q_p = u_p (I + W_r) (+ b_r), the retrieval queries of the interest rows (module docstring).

    Args:
      kernel_regularizer: the penalty on W_r and b_r (e.g. L2), or None.
      use_bias: add b_r [d] (from 0) to every query.
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      rows: float [B, s, d], the updated memory rows u_p.

    Input shape:
      (B, s, d).

    Output shape:
      [B, s, d]: the queries q_p.

    Example:

    >>> import numpy as np
    >>> head = RetrievalHead()
    >>> rows = np.ones([1, 2, 3], np.float32)
    >>> bool(np.allclose(head(rows).numpy(), rows))  # W_r starts at 0: the identity
    True
    """

    def __init__(self, kernel_regularizer=None, use_bias=False, **kwargs):
        super().__init__(**kwargs)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=[d, d], initializer="zeros",
                                      regularizer=self.kernel_regularizer)
        self.bias = (self.add_weight(name="bias", shape=[d], initializer="zeros", regularizer=self.kernel_regularizer)
                     if self.use_bias else None)
        super().build(input_shape)

    def call(self, rows):
        queries = rows + tf.einsum("bsd,de->bse", rows, tf.cast(self.kernel, rows.dtype))
        return queries if self.bias is None else queries + tf.cast(self.bias, rows.dtype)

    def get_config(self):
        return {**super().get_config(), "use_bias": self.use_bias,
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer)}
