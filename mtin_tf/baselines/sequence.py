"""Sequence baselines over the clicked history: LSTM (Zhang et al., AAAI 2014) and CNN (max pooling + MLP).

Both encode the clicked history into h [B, d] and use the shared head of common.history_model
(logit = MLP([h, mean browsed, x_e, h ⊙ x_e])).
- LSTM: the masked mean of the LSTM's hidden states (the paper's "aggregation of hidden states of each unit").
- CNN: Conv1D (kernel 3, same padding, ReLU) over the history, masked max pooling over time.
"""
from __future__ import annotations

import tf_keras

from mtin_tf.baselines.common import history_model
from mtin_tf.config import MTINConfig
from mtin_tf.layers.pooling import MaskedPooling


def build_lstm(config: MTINConfig, item_ids, item_features, user_ids=None, *, compile: bool = True):
    """LSTM over the clicked history; outputs logit [B], click_probability [B]."""
    del user_ids

    def encode(clicked, known, browsed, browsed_known, candidate):
        states = tf_keras.layers.LSTM(config.embedding_dim, return_sequences=True, name="lstm")(clicked, mask=known)
        return MaskedPooling("mean", name="hidden_mean")(states, mask=known)

    return history_model("lstm", encode, config, item_ids, item_features, compile=compile)


def build_cnn(config: MTINConfig, item_ids, item_features, user_ids=None, *, compile: bool = True):
    """1-D CNN + max pooling over the clicked history; outputs logit [B], click_probability [B]."""
    del user_ids

    def encode(clicked, known, browsed, browsed_known, candidate):
        conv = tf_keras.layers.Conv1D(config.embedding_dim, 3, padding="same", activation="relu", name="conv")(clicked)
        return MaskedPooling("max", name="max_pool")(conv, mask=known)

    return history_model("cnn", encode, config, item_ids, item_features, compile=compile)
