"""ATRank-style self-attention (Zhou et al., AAAI 2018) over heterogeneous behaviours.

  z = [P_click x_clicked ; P_browse x_browsed]        each behaviour type projected to its own space   [B, 2L, d]
  z' = LayerNorm(z + MHA(z, z, z)); z'' = LayerNorm(z' + FFN(z'))    masked multi-head self-attention  [B, 2L, d]
  u = MHA(query=x_e, key=value=z'')                   vanilla attention of the candidate              [B, d]
Built from tf_keras' own MultiHeadAttention in the functional graph (nested inside a custom layer, MHA's lazily
created weights were not restored by load_model).
  logit = the shared head of common.history_model
Simplified from ATRank: one self-attention block and no time-bucket embeddings (positions carry order implicitly only
through the behaviour-type projection).
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from mtin_tf.baselines.common import history_model
from mtin_tf.config import MTINConfig
from mtin_tf.layers.backend import Layer, register


def _heads(dim: int) -> int:
    return 4 if dim % 4 == 0 else 1


@register
class AttentionMask(Layer):
    """ATRank's attention masks: a sequence's key mask → the attention mask of its self-attention or of one query.

      self-attention: M_ij = known_i ∧ known_j  [B, T, T];   one query (the candidate): M_0j = known_j  [B, 1, T]
    Padded queries see nothing; their outputs are never used. The key mask is this layer's input, the data it turns
    into MultiHeadAttention's ``attention_mask``, not a mask applied to other inputs: the layer takes no ``mask=``.

    Args:
      self_attention: True (default) for the [B, T, T] self-attention mask, False for the [B, 1, T] one.
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      known: bool [B, T], the key mask: True for real behaviours.

    Input shape:
      (B, T).

    Output shape:
      (B, T, T) or (B, 1, T), bool.

    Example:

    >>> import numpy as np
    >>> AttentionMask(self_attention=False)(np.array([[True, False]])).numpy()
    array([[[ True, False]]])
    >>> AttentionMask()(np.array([[True, False]])).shape
    TensorShape([1, 2, 2])
    """

    def __init__(self, self_attention=True, **kwargs):
        super().__init__(**kwargs)
        self.self_attention = bool(self_attention)

    def call(self, known):
        known = tf.cast(known, tf.bool)
        return known[:, :, None] & known[:, None, :] if self.self_attention else known[:, None, :]

    def get_config(self):
        return {**super().get_config(), "self_attention": self.self_attention}


def build_atrank(config: MTINConfig, item_ids, item_features, user_ids=None, *, compile: bool = True):
    """ATRank-style model with MTIN's inputs and outputs (logit [B], click_probability [B])."""
    del user_ids
    d = config.embedding_dim
    layers = tf_keras.layers

    def encode(clicked, clicked_known, browsed, browsed_known, candidate):
        seq = layers.Concatenate(axis=1, name="behaviours")([layers.Dense(d, name="click_space")(clicked),
                                                             layers.Dense(d, name="browse_space")(browsed)])
        mask = layers.Concatenate(axis=1, name="behaviour_mask")([clicked_known, browsed_known])
        attended = layers.MultiHeadAttention(_heads(d), d // _heads(d), name="self_attention")(
            seq, seq, attention_mask=AttentionMask(True, name="self_mask")(mask))
        x = layers.LayerNormalization(name="norm1")(layers.Add()([seq, attended]))
        ffn = layers.Dense(d, name="ffn_out")(layers.Dense(d, activation="relu", name="ffn_hidden")(x))
        x = layers.LayerNormalization(name="norm2")(layers.Add()([x, ffn]))
        query = layers.Reshape((1, d), name="candidate_query")(candidate)
        pooled = layers.MultiHeadAttention(_heads(d), d // _heads(d), name="candidate_attention")(
            query, x, attention_mask=AttentionMask(False, name="candidate_mask")(mask))
        return layers.Reshape((d,), name="user_interest")(pooled)

    return history_model("atrank", encode, config, item_ids, item_features, compile=compile)
