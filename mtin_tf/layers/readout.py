"""Interest readout (section 4.4, eq. 11): a branch's updated memory rows u_p and a candidate x_e → P(x_e | H).

The rows depend on the user, the histories and the impression time only, so one user's rows can be computed once and
scored against any number of candidates: ``candidate`` [B, d] gives one score per row, [B, N, d] scores N candidates
against the same rows.
"""
from __future__ import annotations

import tensorflow as tf

from mtin_tf.config import READOUTS
from mtin_tf.layers.backend import Layer, keras, register


@register
class InterestReadout(Layer):
    """P(x_e | H) from a branch's updated memory rows u and candidates x_e (section 4.4, eq. 11).

      readout "paper" (eq. 11):  q = Σ_p u_p;  P(x_e | H) = MLP([q, x_e])
      readout "attention" (ours): a_p = softmax_p(u_p·x_e / √d), q = Σ_p a_p u_p;
                                  P(x_e | H) = MLP([q, x_e, q ⊙ x_e])
      readout "target" (ours):    a_p = softmax_p(v^T σ(A [u_p, x_e, u_p − x_e, u_p ⊙ x_e] + a) + c), DIN's
                                  activation unit (Zhou et al., KDD 2018) of ``attention_units`` sigmoid units over
                                  the s rows instead of the history items; q and the MLP as in "attention"
    with u [B, s, d], x_e [B, d] or [B, N, d]. The MLP has one hidden layer of d units (``activation``) and a linear
    output: the score is a logit-scale value, not a probability (ClickCombiner adds the branches' scores).

    Args:
      readout: "paper", "attention" (default) or "target" (mtin_tf.config.READOUTS).
      activation: the hidden layer's activation.
      kernel_regularizer: regularizer of every Dense kernel, or None.
      attention_units: the hidden units of the "target" readout's activation unit.
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      inputs: [u, x_e]: the rows u float [B, s, d] (InterestBranch) and one candidate per row x_e float [B, d], or
        N candidates per row float [B, N, d], each scored against its row's u. No mask: every row is real.

    Input shape:
      [(B, s, d), (B, d)] or [(B, s, d), (B, N, d)].

    Output shape:
      (B,) or (B, N): P(x_e | H) on the logit scale.

    Example:

    >>> import numpy as np
    >>> rows, candidates = np.ones([2, 3, 4], np.float32), np.ones([2, 5, 4], np.float32)
    >>> readout = InterestReadout("attention")
    >>> readout([rows, candidates]).shape, readout([rows, candidates[:, 0]]).shape
    (TensorShape([2, 5]), TensorShape([2]))
    """

    def __init__(self, readout="attention", activation="relu", kernel_regularizer=None, attention_units=32, **kwargs):
        super().__init__(**kwargs)
        self.attention_units = int(attention_units)
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.readout = readout
        self.activation = keras.activations.get(activation)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        d = int(input_shape[0][-1])
        self.hidden = keras.layers.Dense(d, activation=self.activation, name="hidden",
                                            kernel_regularizer=self.kernel_regularizer)
        self.out = keras.layers.Dense(1, name="out", kernel_regularizer=self.kernel_regularizer)
        if self.readout == "target":
            self.unit_hidden = keras.layers.Dense(self.attention_units, activation="sigmoid", name="unit_hidden",
                                                  kernel_regularizer=self.kernel_regularizer)
            self.unit_out = keras.layers.Dense(1, name="unit_out", kernel_regularizer=self.kernel_regularizer)
        super().build(input_shape)

    def call(self, inputs):
        rows, candidate = inputs
        if candidate.shape.rank == rows.shape.rank:  # N candidates per row of rows: [B, N, d] against [B, s, d]
            rows = rows[:, None]  # [B, 1, s, d]
        if self.readout == "paper":
            q = tf.broadcast_to(tf.reduce_sum(rows, axis=-2), tf.shape(candidate))  # eq. 11
            head = tf.concat([q, candidate], axis=-1)
        else:
            if self.readout == "target":  # [.., s, 4d] → [.., s]
                cand = tf.broadcast_to(candidate[..., None, :], tf.shape(rows * candidate[..., None, :]))
                rows = tf.broadcast_to(rows, tf.shape(cand))
                unit = tf.concat([rows, cand, rows - cand, rows * cand], axis=-1)
                logits = self.unit_out(self.unit_hidden(unit))[..., 0]
            else:
                scale = tf.sqrt(tf.cast(tf.shape(rows)[-1], rows.dtype))
                logits = tf.reduce_sum(rows * candidate[..., None, :], -1) / scale
            attention = tf.nn.softmax(logits, axis=-1)
            q = tf.reduce_sum(attention[..., None] * rows, axis=-2)
            head = tf.concat([q, candidate, q * candidate], axis=-1)
        return self.out(self.hidden(head))[..., 0]

    def get_config(self):
        return {**super().get_config(), "readout": self.readout, "attention_units": self.attention_units,
                "activation": keras.activations.serialize(self.activation),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer)}
