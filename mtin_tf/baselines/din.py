"""DIN-style target attention (Zhou et al., KDD 2018): the candidate attends over the clicked history.

  a_j = MLP([x_j, x_e, x_j − x_e, x_j ⊙ x_e])  (masked softmax over real items)   [B, L]
  u = Σ_j a_j x_j                                                                  [B, d]
  logit = the shared head of common.history_model: MLP([u, mean browsed, x_e, u ⊙ x_e])
Same inputs, item table and outputs (logit, click_probability) as MTIN, so it trains with mtin_tf.train.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from mtin_tf.baselines.common import history_model
from mtin_tf.config import MTINConfig
from mtin_tf.layers.interest_mask import masked_softmax


@tf_keras.saving.register_keras_serializable(package="mtin")
class TargetAttention(tf_keras.layers.Layer):
    """Inputs [history [B, L, d], known bool [B, L], candidate [B, d]] → attention-pooled history [B, d]."""

    def __init__(self, hidden=80, **kwargs):
        super().__init__(**kwargs)
        self.hidden = int(hidden)
        self.att_hidden = tf_keras.layers.Dense(self.hidden, activation="sigmoid", name="att_hidden")
        self.att_out = tf_keras.layers.Dense(1, name="att_out")

    def call(self, inputs):
        history, known, candidate = inputs
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
        return TargetAttention(name="target_attention")([clicked, clicked_known, candidate])

    return history_model("din", encode, config, item_ids, item_features, compile=compile)
