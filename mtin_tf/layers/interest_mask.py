"""Group-level interest mask network (paper section 4.3, eq. 8–10).

Shapes: B batch, s memory rows (= interest groups), d embedding size.
"""
from __future__ import annotations

import tensorflow as tf

from mtin_tf.layers.backend import Layer, keras, register


def masked_softmax(logits, mask):
    """Softmax over the last axis restricted to mask; rows with no True entry give all zeros (never NaN)."""
    mask = tf.cast(mask, tf.bool)
    neg = tf.fill(tf.shape(logits), tf.constant(logits.dtype.min, logits.dtype))
    weights = tf.nn.softmax(tf.where(mask, logits, neg), axis=-1)
    return weights * tf.cast(mask, logits.dtype)


@register
class InterestMask(Layer):
    """Attention of each memory row over the group representations, a hard interest mask, and the masked sum.

      eq. 8:   w_{p,g} = softmax_g(c_p^T W_h r_g)                         [B, s, s]
      eq. 9:   ŵ_{p,g} = 1[w_{p,g} > τ]                                    (0/1 interest mask)
      eq. 10:  h_p = Σ_g ŵ_{p,g} r_g                                        [B, s, d]
    (B batch, s memory rows = interest groups, d embedding size.)

    The step function of eq. 9 has zero gradient, which would leave W_h untrained. With ``straight_through=True``
    (default) the forward value is exactly the 0/1 mask and the backward pass treats ŵ as w (straight-through
    estimator: ŵ + w − stop_gradient(w)). With False, no gradient reaches W_h through ŵ.

    Args:
      tau: τ, the threshold of eq. 9 (MTIN uses 1/s).
      straight_through: the straight-through gradient for ŵ (above).
      kernel_regularizer: regularizer of W_h, or None.
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      inputs: [c, r]: the memory rows c float [B, s, d] and the group representations r float [B, s', d].
      mask: optional bool [B, s'], False for empty groups, which then get w = 0 (a row of w whose groups are all
        empty is 0, never NaN). Without it every group takes part in the softmax.

    Input shape:
      [(B, s, d), (B, s', d)]; mask (B, s').

    Output shape:
      (h (B, s, d), w (B, s, s')).

    Example:

    >>> import numpy as np
    >>> memory, groups = np.ones([2, 3, 4], np.float32), np.ones([2, 3, 4], np.float32)
    >>> h, w = InterestMask(tau=0.25)([memory, groups], mask=np.array([[True, True, False]] * 2))
    >>> h.shape, w.shape
    (TensorShape([2, 3, 4]), TensorShape([2, 3, 3]))
    >>> w[0, 0].numpy()  # equal logits: the two real groups share the weight, the empty one gets none
    array([0.5, 0.5, 0. ], dtype=float32)
    """

    def __init__(self, tau=0.1, straight_through=True, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.tau = float(tau)
        self.straight_through = bool(straight_through)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        d_c, d_r = int(input_shape[0][-1]), int(input_shape[1][-1])
        self.w_h = self.add_weight(name="w_h", shape=[d_c, d_r], initializer="glorot_uniform",
                                   regularizer=self.kernel_regularizer)
        super().build(input_shape)

    def call(self, inputs, mask=None):
        memory, groups = inputs
        mask = self.given_mask(mask)
        logits = tf.einsum("bpd,de,bge->bpg", memory, self.w_h, groups)  # c_p^T W_h r_g
        if mask is None:
            weights = tf.nn.softmax(logits, axis=-1)
        else:
            weights = masked_softmax(logits, tf.broadcast_to(tf.cast(mask, tf.bool)[:, None, :], tf.shape(logits)))
        hard = tf.cast(weights > self.tau, weights.dtype)
        if self.straight_through:
            hard = hard + weights - tf.stop_gradient(weights)
        h = tf.einsum("bpg,bgd->bpd", hard, groups)
        return h, weights

    def get_config(self):
        config = super().get_config()
        config.update(tau=self.tau, straight_through=self.straight_through,
                      kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer))
        return config
