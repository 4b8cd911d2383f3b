"""BPR (Rendle et al., UAI 2009) in the pointwise CTR setting: logit = u·x_e + b_e, trained with a pairwise loss.

  u = user embedding [B, d];  x_e = item embedding from features (+ id) [B, d];  b_e = Dense(1)(x_e) a feature bias
  (+ the id bias b_i that baselines.common.finish adds when use_item_bias)
  loss = mean over (clicked i, not clicked j) pairs of the batch of softplus(ŝ_j − ŝ_i) = −log σ(ŝ_i − ŝ_j)

Adaptation: the examples are impressions (user, item, click), not (user, positive, sampled negative) triples, so the
pairs are every (clicked, not clicked) pair inside a training batch, across users (a batch of 256 shuffled rows
rarely holds two rows of one user). This is BPR's objective applied to the logged negatives, i.e. a smooth surrogate of
the AUC; the logit is a ranking score, not a calibrated log-odds. TFRS 0.7 has no pairwise loss (its Ranking task is
pointwise), hence the small tf_keras Loss below.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf.baselines.common import finish, inputs_and_items, user_vector
from mtin_tf.config import MTINConfig


@tf_keras.saving.register_keras_serializable(package="mtin")
class PairwiseLogisticLoss(tf_keras.losses.Loss):
    """BPR loss over all (y=1, y=0) pairs of the batch: y_true [B] in {0, 1}, y_pred logits [B] → scalar.

    A batch with no pair contributes 0 (and no gradient).
    """

    def call(self, y_true, y_pred):
        y = tf.reshape(tf.cast(y_true, y_pred.dtype), [-1])
        s = tf.reshape(y_pred, [-1])
        pair = y[:, None] * (1.0 - y[None, :])  # [B, B]: row clicked, column not clicked
        losses = tf.nn.softplus(s[None, :] - s[:, None]) * pair
        return tf.math.divide_no_nan(tf.reduce_sum(losses), tf.reduce_sum(pair))


def compile_bpr(model, config: MTINConfig):
    """Adam (config.optimizer, learning_rate) with the pairwise loss on the logit and AUC."""
    optimizer = tf_keras.optimizers.get({"class_name": config.optimizer,
                                        "config": {"learning_rate": config.learning_rate}})
    model.compile(optimizer=optimizer, loss={F.OUTPUT_LOGIT: PairwiseLogisticLoss(reduction="none")},
                  metrics={F.OUTPUT_LOGIT: [tf_keras.metrics.AUC(from_logits=True, name="auc")]},
                  jit_compile=config.jit_compile)
    return model


def build_bpr(config: MTINConfig, item_ids, item_features, user_ids=None, *, compile: bool = True):
    """BPR matrix factorisation over MTIN's inputs; histories are ignored. Outputs logit [B], click_probability [B]."""
    inputs, embed = inputs_and_items(config, item_ids, item_features)
    candidate, _ = embed(inputs[F.ITEM_ID])
    user = user_vector(config, user_ids, inputs[F.USER_ID])
    dot = tf_keras.layers.Dot(axes=1, name="user_item_dot")([user, candidate])
    bias = tf_keras.layers.Dense(1, use_bias=False, name="feature_bias")(candidate)
    score = tf_keras.layers.Reshape((), name="bpr_score")(tf_keras.layers.Add(name="score")([dot, bias]))
    return finish(inputs, score, "bpr", config, item_ids, compile=compile, compile_fn=compile_bpr)
