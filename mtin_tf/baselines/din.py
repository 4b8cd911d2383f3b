"""DIN-style target attention (Zhou et al., KDD 2018): the candidate attends over the clicked history.

  a_j = MLP([x_j, x_e, x_j − x_e, x_j ⊙ x_e])  (masked softmax over real items)   [B, L]
  u = Σ_j a_j x_j                                                                  [B, d]
  logit = the shared head of common.history_model: MLP([u, mean browsed, x_e, u ⊙ x_e])
Same inputs, item table and outputs (logit, click_probability) as MTIN, so it trains with mtin_tf.train.
"""
from __future__ import annotations

import tensorflow as tf

from mtin_tf.baselines.common import history_model
from mtin_tf.config import MTINConfig
from mtin_tf.layers.backend import Layer, keras, register, split_mask
from mtin_tf.layers.interest_mask import masked_softmax


@register
class TargetAttention(Layer):
    """DIN's target attention (module docstring): the candidate attends over the clicked history.

      a_j = MLP([x_j, x_e, x_j − x_e, x_j ⊙ x_e]), softmax over the real items;  u = Σ_j a_j x_j
    with x [B, L, d], x_e [B, d] → u [B, d]; the MLP has ``hidden`` sigmoid units and a linear output.

    Args:
      hidden: the units of the attention MLP's hidden layer.
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      inputs: [history x float [B, L, d], candidate x_e float [B, d]].
      mask: known bool [B, L], True for real items (required); a history with none pools to 0. The form models
        saved before the ``mask=`` convention recorded, [history, known, candidate] and no mask, is still accepted.

    Input shape:
      [(B, L, d), (B, d)]; mask (B, L).

    Output shape:
      (B, d).

    Example:

    >>> import numpy as np
    >>> history, candidate = np.ones([2, 5, 4], np.float32), np.ones([2, 4], np.float32)
    >>> known = np.array([[True] * 5, [False] * 5])
    >>> TargetAttention(hidden=8)([history, candidate], mask=known).numpy()[1]  # an empty history
    array([0., 0., 0., 0.], dtype=float32)
    """

    def __init__(self, hidden=80, **kwargs):
        super().__init__(**kwargs)
        self.hidden = int(hidden)
        self.att_hidden = keras.layers.Dense(self.hidden, activation="sigmoid", name="att_hidden")
        self.att_out = keras.layers.Dense(1, name="att_out")

    def call(self, inputs, mask=None):
        (history, candidate), known = split_mask(self, inputs, mask, 3)
        cand = tf.broadcast_to(candidate[:, None, :], tf.shape(history))
        logits = self.att_out(self.att_hidden(tf.concat([history, cand, history - cand, history * cand], -1)))[..., 0]
        weights = masked_softmax(logits, known)
        return tf.einsum("bl,bld->bd", weights, history)

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden}


def build_din(config: MTINConfig, item_ids, item_features, user_ids=None, *, compile: bool = True):
    """DIN with MTIN's inputs and outputs; uses config's embedding_dim, max_history and training settings."""
    del user_ids  # DIN keeps no per-user state

    def encode(clicked, clicked_known, browsed, browsed_known, candidate):
        return TargetAttention(name="target_attention")([clicked, candidate], mask=clicked_known)

    return history_model("din", encode, config, item_ids, item_features, compile=compile)
