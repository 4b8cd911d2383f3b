"""DIN-style target attention (Zhou et al., KDD 2018): the candidate attends over the clicked history.

  a_j = MLP([x_j, x_e, x_j − x_e, x_j ⊙ x_e])  (masked softmax over real items)   [B, L]
  u = Σ_j a_j x_j;  n = mean of the browsed-not-clicked items                       [B, d]
  logit = MLP([u, n, x_e])
Same inputs, item table and outputs (logit, click_probability) as MTIN, so it trains with mtin_tf.train.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.layers.interest_mask import masked_softmax
from mtin_tf.layers.tables import ItemEmbedding
from mtin_tf.model import compile_model, model_inputs


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
    item_features = np.asarray(item_features, np.float32)
    inputs = model_inputs(config.max_history)
    embed = ItemEmbedding(len(item_ids), item_features.shape[1], config.embedding_dim, item_ids=item_ids,
                          item_features=item_features, use_id_embedding=config.use_id_embedding, name="item_embedding")
    candidate, _ = embed(inputs[F.ITEM_ID])
    clicked, clicked_known = embed(inputs[F.CLICKED_ITEMS])
    browsed, browsed_known = embed(inputs[F.BROWSED_ITEMS])
    interest = TargetAttention(name="target_attention")([clicked, clicked_known, candidate])
    negative = tf_keras.layers.GlobalAveragePooling1D(name="browsed_mean")(browsed, mask=browsed_known)
    hidden = tf_keras.layers.Dense(config.embedding_dim, activation="relu", name="mlp_hidden")(
        tf_keras.layers.Concatenate()([interest, negative, candidate]))
    logit = tf_keras.layers.Reshape((), name=F.OUTPUT_LOGIT)(tf_keras.layers.Dense(1, name="mlp_out")(hidden))
    prob = tf_keras.layers.Activation("sigmoid", dtype="float32", name=F.OUTPUT_PROBABILITY)(logit)
    model = tf_keras.Model(inputs, {F.OUTPUT_LOGIT: logit, F.OUTPUT_PROBABILITY: prob}, name="din")
    if compile:
        compile_model(model, config)
    return model
