"""The click combiner (paper section 4.4): the positive and the negative branch's scores → the click logit."""
from __future__ import annotations

from mtin_tf.layers.backend import Layer, register


@register
class ClickCombiner(Layer):
    """ŷ = α·P(x_e|H_pos) + β·P(x_e|H_neg) (+ b_item): the click logit from the two branches' scores.

    Section 4.4 (before eq. 12): the positive branch's P(x_e | H_pos) [...] and the negative branch's
    P(x_e | H_neg) [...] (InterestReadout, any shape [...]: [B], or [B, N] for N candidates) are added with the
    weights α and β, plus the candidate's item bias b_item [...] (ItemBias) when given. The result is a logit;
    the model's click probability is σ(ŷ), and eq. 12's loss is the sigmoid cross-entropy on it.

    Args:
      learnable: α and β trainable, started at 1 (default); False fixes both at 1.
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      inputs: [positive, negative] or [positive, negative, item_bias], float tensors of one shape [...].

    Input shape:
      A list of 2 or 3 tensors of the same shape, e.g. [(B,), (B,)] or [(B, N), (B, N), (B, N)].

    Output shape:
      That shape: the logit ŷ.

    Example:

    >>> import numpy as np
    >>> combine = ClickCombiner()
    >>> combine([np.array([0.5, -1.0], np.float32), np.array([0.25, 0.5], np.float32)]).numpy()
    array([ 0.75, -0.5 ], dtype=float32)
    >>> combine([np.ones([2, 3], np.float32), np.ones([2, 3], np.float32), np.full([2, 3], 0.5, np.float32)]).shape
    TensorShape([2, 3])
    """

    def __init__(self, learnable=True, **kwargs):
        super().__init__(**kwargs)
        self.learnable = bool(learnable)

    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=[], initializer="ones", trainable=self.learnable)
        self.beta = self.add_weight(name="beta", shape=[], initializer="ones", trainable=self.learnable)
        super().build(input_shape)

    def call(self, inputs):
        positive, negative, *bias = inputs
        return self.alpha * positive + self.beta * negative + sum(bias)

    def get_config(self):
        return {**super().get_config(), "learnable": self.learnable}
