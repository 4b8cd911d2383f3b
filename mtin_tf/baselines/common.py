"""Pieces every baseline shares: the item table, user embeddings, masked pooling, MLP heads and the output dict.

All baselines take MTIN's inputs (mtin_tf.features.MODEL_INPUTS via mtin_tf.model.model_inputs), look items up in the
frozen feature table (mtin_tf.layers.tables.ItemEmbedding, so new items are scored from their features), and return
{logit [B], click_probability [B]}. They train with mtin_tf.train.train_mtin(builder=...).
"""
from __future__ import annotations

import numpy as np
import tf_keras

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.layers.click_level import ClickLevel
from mtin_tf.layers.pooling import MaskedPooling
from mtin_tf.layers.tables import UserMemory
from mtin_tf.model import compile_model, item_bias, item_embedding, model_inputs

USER_EMBEDDING = "user_embedding"


def inputs_and_items(config: MTINConfig, item_ids, item_features):
    """(model inputs dict, ItemEmbedding layer) for ``config``: the frozen feature table (+ optional id embedding)."""
    return model_inputs(config.max_history), item_embedding(config, item_ids, item_features)


def user_vector(config: MTINConfig, user_ids, user_input):
    """Trainable user embedding [B, d] keyed by raw user id (UserMemory with one row; unknown users share row 0)."""
    user_ids = np.zeros([0], np.int64) if user_ids is None else np.asarray(user_ids)
    memory = UserMemory(len(user_ids), 1, config.embedding_dim, user_ids=user_ids, row_l2=config.l2,
                        name=USER_EMBEDDING)(user_input)
    return tf_keras.layers.Reshape((config.embedding_dim,), name="user_vector")(memory)


def mlp_score(x, units, prefix="mlp"):
    """Dense ReLU layers of ``units`` then Dense(1): [B, k] → score [B] (``finish`` turns it into the logit)."""
    for i, n in enumerate(units):
        x = tf_keras.layers.Dense(n, activation="relu", name=f"{prefix}_{i}")(x)
    return tf_keras.layers.Reshape((), name=f"{prefix}_score")(tf_keras.layers.Dense(1, name=f"{prefix}_out")(x))


def finish(inputs, score, name: str, config: MTINConfig, item_ids, *, compile: bool = True,
           compile_fn=compile_model):
    """The model {logit = score [B] (+ the per-item bias b_i when config.use_item_bias, + the user's recent click level
    when config.click_level, as MTIN's), click_probability = σ(logit)} named ``name``; compiled with
    ``compile_fn(model, config)``."""
    terms = [score]
    if config.use_item_bias:
        terms.append(item_bias(config, item_ids)(inputs[F.ITEM_ID]))
    if config.click_level:
        terms.append(ClickLevel(config.click_level, name=F.OUTPUT_CLICK_LEVEL)(
            [inputs[key] for pair in F.HISTORY_PAIRS for key in pair]))
    if len(terms) > 1:
        logit = tf_keras.layers.Add(name=F.OUTPUT_LOGIT)(terms)
    else:
        logit = tf_keras.layers.Activation("linear", name=F.OUTPUT_LOGIT)(score)
    prob = tf_keras.layers.Activation("sigmoid", dtype="float32", name=F.OUTPUT_PROBABILITY)(logit)
    model = tf_keras.Model(inputs, {F.OUTPUT_LOGIT: logit, F.OUTPUT_PROBABILITY: prob}, name=name)
    if compile:
        compile_fn(model, config)
    return model


def history_model(name: str, encode, config: MTINConfig, item_ids, item_features, *, compile: bool = True):
    """A baseline that differs from the others only in how it encodes the histories.

    ``encode(clicked [B, L, d], clicked_known [B, L], browsed [B, L, d], browsed_known [B, L], candidate [B, d])``
    returns the user interest h [B, d']. The shared head: n = mean of browsed items [B, d];
    logit = MLP([h, n, x_e, h ⊙ x_e]) with one hidden layer of config.embedding_dim units (needs d' = d for ⊙).
    """
    inputs, embed = inputs_and_items(config, item_ids, item_features)
    candidate, _ = embed(inputs[F.ITEM_ID])
    clicked, clicked_known = embed(inputs[F.CLICKED_ITEMS])
    browsed, browsed_known = embed(inputs[F.BROWSED_ITEMS])
    interest = encode(clicked, clicked_known, browsed, browsed_known, candidate)
    negative = MaskedPooling("mean", name="browsed_mean")(browsed, mask=browsed_known)
    cross = tf_keras.layers.Multiply(name="interest_x_candidate")([interest, candidate])
    head_input = tf_keras.layers.Concatenate(name="mlp_input")([interest, negative, candidate, cross])
    return finish(inputs, mlp_score(head_input, (config.embedding_dim,)), name, config, item_ids, compile=compile)
