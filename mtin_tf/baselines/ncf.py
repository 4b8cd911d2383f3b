"""NCF / NeuMF (He et al., WWW 2017): GMF and MLP paths over user and item embeddings, fused into the logit.

  g = u ⊙ x_e                       (GMF)   [B, d]
  m = MLP([u, x_e])                 (MLP)   [B, d/2]
  logit = Dense(1)([g, m])
Histories are not used (NCF is a collaborative model); the item side comes from features, so new items still score.
"""
from __future__ import annotations

import tf_keras

from mtin_tf import features as F
from mtin_tf.baselines.common import finish, inputs_and_items, mlp_score, user_vector
from mtin_tf.config import MTINConfig


def build_ncf(config: MTINConfig, item_ids, item_features, user_ids=None, *, compile: bool = True):
    """NeuMF with MTIN's inputs and outputs (logit [B], click_probability [B])."""
    inputs, embed = inputs_and_items(config, item_ids, item_features)
    candidate, _ = embed(inputs[F.ITEM_ID])
    user = user_vector(config, user_ids, inputs[F.USER_ID])
    gmf = tf_keras.layers.Multiply(name="gmf")([user, candidate])
    d = config.embedding_dim
    hidden = tf_keras.layers.Concatenate(name="mlp_input")([user, candidate])
    for i, n in enumerate((d, max(d // 2, 1))):
        hidden = tf_keras.layers.Dense(n, activation="relu", name=f"ncf_mlp_{i}")(hidden)
    score = mlp_score(tf_keras.layers.Concatenate(name="neumf")([gmf, hidden]), (), prefix="neumf")
    return finish(inputs, score, "ncf", config, item_ids, compile=compile)
