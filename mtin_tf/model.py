"""build_mtin: the MTIN model from its layers — the one model builder shared by the TFX Trainer and `mtin train`."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.layers.branch import BRANCH_SETTINGS, InterestBranch
from mtin_tf.layers.tables import AnchoredMemory, ItemBias, ItemEmbedding, UserMemory

POSITIVE_MEMORY, NEGATIVE_MEMORY = "positive_memory", "negative_memory"
POSITIVE_BRANCH, NEGATIVE_BRANCH = "positive_branch", "negative_branch"
ITEM_EMBEDDING = "item_embedding"
ITEM_BIAS = "item_bias"


@tf_keras.saving.register_keras_serializable(package="mtin")
class ClickCombiner(tf_keras.layers.Layer):
    """ŷ = α·P(x_e|H_pos) + β·P(x_e|H_neg) (+ b_item) (section 4.4): the click logit. α, β learnable (init 1) or fixed
    at 1. Inputs: [positive [B], negative [B]] or [positive, negative, item bias [B]]. Output: logit [B]."""

    def __init__(self, learnable=True, **kwargs):
        super().__init__(**kwargs)
        self.learnable = bool(learnable)

    def build(self, input_shape):
        self.alpha = self.add_weight("alpha", shape=[], initializer="ones", trainable=self.learnable)
        self.beta = self.add_weight("beta", shape=[], initializer="ones", trainable=self.learnable)
        super().build(input_shape)

    def call(self, inputs):
        positive, negative, *bias = inputs
        return self.alpha * positive + self.beta * negative + sum(bias)

    def get_config(self):
        return {**super().get_config(), "learnable": self.learnable}


def model_inputs(max_history: int) -> dict:
    """Keras inputs named after mtin_tf.features: int64 scalars [B] and int64 histories [B, L]."""
    return {spec.name: tf_keras.Input(shape=(max_history,) if spec.is_history else (), dtype=tf.int64,
                                      name=spec.name)
            for spec in F.MODEL_INPUTS}


def regularizer(config: MTINConfig):
    """λ‖·‖² of eq. 12 for dense kernels and tables (None when λ = 0)."""
    return tf_keras.regularizers.L2(config.l2) if config.l2 else None


def item_embedding(config: MTINConfig, item_ids, item_features) -> ItemEmbedding:
    """The ItemEmbedding layer every model shares: the caller's frozen table (not copied), W_e (+ id embedding)."""
    item_features = np.asarray(item_features, np.float32)
    return ItemEmbedding(len(item_ids), item_features.shape[1], config.embedding_dim,
                         use_id_embedding=config.use_id_embedding, item_ids=item_ids, item_features=item_features,
                         kernel_regularizer=regularizer(config), id_l2=config.l2, name=ITEM_EMBEDDING)


def _branch(config: MTINConfig, name: str, regularizer) -> InterestBranch:
    return InterestBranch(**{key: getattr(config, key) for key in BRANCH_SETTINGS}, kernel_regularizer=regularizer,
                          name=name)


def user_memory(config: MTINConfig, user_ids, user_input, embed: ItemEmbedding, name: str):
    """A branch's interest memory M_u [B, s, d]: free rows, or (after pretraining) rows anchored to history items."""
    anchors = config.memory_anchors if config.pretrain_memory else 0
    memory = UserMemory(len(user_ids), config.num_groups, config.embedding_dim, user_ids=user_ids,
                        row_l2=config.l2, anchor_size=anchors, name=name)(user_input)
    if not anchors:
        return memory
    residual, anchor_ids = memory
    return AnchoredMemory(name=f"{name}_anchored")([residual, *embed(anchor_ids)])


def build_mtin(config: MTINConfig, item_ids, item_features, user_ids=None, *, compile: bool = True):
    """The MTIN model as a tf_keras functional Model.

    Args:
      config: hyperparameters (MTINConfig).
      item_ids: int [N] raw ids of every item the model may meet; item_features: float [N, F], their feature vectors.
        The table is frozen and saved inside the model; histories and candidates are looked up by raw id.
      user_ids: int [U] raw ids of the users that get their own interest memory; other users share an OOV memory.
      compile: compile with Adam, the eq. 12 loss (sigmoid cross-entropy on the logit) and AUC.

    Inputs (dict, names from mtin_tf.features): user_id [B], item_id [B] (candidate), timestamp [B] (candidate time),
    clicked_item_ids / clicked_timestamps [B, L], browsed_item_ids / browsed_timestamps [B, L] — int64, histories in
    time order, padded with 0. Outputs (dict): logit [B], click_probability [B], group_weights [B, s, s] (w_{p,g} of
    the positive branch, Fig. 6), group_assignment int32 [B, L] (S_j of the clicked history, −1 = no group).
    """
    user_ids = np.zeros([0], np.int64) if user_ids is None else np.asarray(user_ids)
    reg = regularizer(config)
    inputs = model_inputs(config.max_history)
    embed = item_embedding(config, item_ids, item_features)
    candidate, _ = embed(inputs[F.ITEM_ID])
    scores, outputs = [], {}
    for (ids_key, times_key), memory_name, branch_name in zip(
            F.HISTORY_PAIRS, (POSITIVE_MEMORY, NEGATIVE_MEMORY), (POSITIVE_BRANCH, NEGATIVE_BRANCH)):
        memory = user_memory(config, user_ids, inputs[F.USER_ID], embed, memory_name)
        items, known = embed(inputs[ids_key])
        score, weights, assignment = _branch(config, branch_name, reg)(
            [items, known, inputs[times_key], inputs[F.TIMESTAMP], memory, candidate])
        scores.append(score)
        if branch_name == POSITIVE_BRANCH:
            outputs[F.OUTPUT_GROUP_WEIGHTS], outputs[F.OUTPUT_GROUP_ASSIGNMENT] = weights, assignment
    if config.use_item_bias:
        scores.append(ItemBias(len(item_ids), item_ids=item_ids, name=ITEM_BIAS)(inputs[F.ITEM_ID]))
    logit = ClickCombiner(config.learnable_branch_weights, dtype="float32", name=F.OUTPUT_LOGIT)(scores)
    outputs[F.OUTPUT_LOGIT] = logit
    outputs[F.OUTPUT_PROBABILITY] = tf_keras.layers.Activation("sigmoid", dtype="float32", name=F.OUTPUT_PROBABILITY)(logit)
    model = tf_keras.Model(inputs, outputs, name="mtin")
    if compile:
        compile_model(model, config)
    return model


def compile_model(model, config: MTINConfig):
    """Adam (or config.optimizer), eq. 12's sigmoid cross-entropy on the logit output, AUC on the same output."""
    optimizer = tf_keras.optimizers.get({"class_name": config.optimizer,
                                        "config": {"learning_rate": config.learning_rate}})
    model.compile(optimizer=optimizer,
                  loss={F.OUTPUT_LOGIT: tf_keras.losses.BinaryCrossentropy(from_logits=True)},
                  metrics={F.OUTPUT_LOGIT: [tf_keras.metrics.AUC(from_logits=True, name="auc")]},
                  jit_compile=config.jit_compile)
    return model
