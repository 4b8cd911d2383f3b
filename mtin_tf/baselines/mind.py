"""MIND (Li et al., CIKM 2019): multi-interest extraction by behaviour-to-interest (B2I) capsule routing.

  û_j = S x_j                      shared bilinear map of each clicked item (low-level capsule)    [B, L, d]
  repeat r times:  w = softmax_k(b) over interests, masked to real items;  z_k = Σ_j w_kj û_j;
                   u_k = squash(z_k);  b_kj += u_k · û_j                                             [B, K, d]
  v_k = ReLU(W u_k)                                                                                 [B, K, d]
  label-aware attention: h = Σ_k softmax_k(p · v_k·x_e) v_k                                         [B, d]
  logit = the shared head of common.history_model
K = config.num_groups interests (fixed K, not MIND's adaptive K); b starts from a fixed random normal draw made at
build time and saved with the model (MIND draws it at random; a fixed draw keeps serving deterministic). p = 2.
Trained pointwise on impressions (MIND's sampled softmax is a retrieval objective).
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from mtin_tf.baselines.common import history_model
from mtin_tf.config import MTINConfig
from mtin_tf.layers.backend import Layer, keras, register, split_mask


def squash(z, axis=-1):
    """Capsule squash: ‖z‖²/(1+‖z‖²) · z/‖z‖ (0 for z = 0)."""
    sq = tf.reduce_sum(tf.square(z), axis=axis, keepdims=True)
    return sq / (1.0 + sq) * z * tf.math.rsqrt(sq + 1e-9)


@register
class CapsuleRouting(Layer):
    """MIND's behaviour-to-interest (B2I) dynamic routing: a history → K interest capsules (module docstring).

      û_j = S x_j;  r times: w = softmax_k(b) masked to real items, z_k = Σ_j w_kj û_j, u_k = squash(z_k),
      b_kj += u_k · û_j                                                     û [B, L, d] → u [B, K, d]
    The routing logits b start from a fixed random draw (a non-trainable weight of [K, L], so L must be static);
    the agreement updates use û without gradient, the last pass with it.

    Args:
      num_interests: K.
      iterations: r, the routing passes.
      seed: the seed of the initial logits' draw.
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      inputs: history float [B, L, d], the item embeddings x_j.
      mask: known bool [B, L], True for real items (required); padding takes no part in any capsule. The form
        models saved before the ``mask=`` convention recorded, [history, known] and no mask, is still accepted.

    Input shape:
      (B, L, d) with L static; mask (B, L).

    Output shape:
      (B, K, d).

    Example:

    >>> import numpy as np
    >>> history, known = np.ones([2, 5, 4], np.float32), np.array([[True] * 5, [True] * 2 + [False] * 3])
    >>> CapsuleRouting(num_interests=3)(history, mask=known).shape
    TensorShape([2, 3, 4])
    """

    def __init__(self, num_interests, iterations=3, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.num_interests, self.iterations, self.seed = int(num_interests), int(iterations), int(seed)

    def build(self, input_shape):
        shape = input_shape[0] if isinstance(input_shape[0], (list, tuple, tf.TensorShape)) else input_shape
        length, dim = int(shape[1]), int(shape[2])
        self.bilinear = self.add_weight(name="bilinear", shape=[dim, dim], initializer="glorot_uniform")
        self.initial_logits = self.add_weight(
            name="initial_logits", shape=[self.num_interests, length], trainable=False,
            initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed))
        super().build(input_shape)

    def call(self, inputs, mask=None):
        history, known = split_mask(self, inputs, mask, 2)
        mask = tf.cast(known, history.dtype)[:, None, :]  # [B, 1, L]
        u_hat = tf.einsum("bld,de->ble", history, self.bilinear)
        u_fixed = tf.stop_gradient(u_hat)
        logits = tf.broadcast_to(self.initial_logits[None], [tf.shape(history)[0], self.num_interests,
                                                             tf.shape(history)[1]])
        for i in range(self.iterations):
            w = tf.nn.softmax(logits, axis=1) * mask  # each item splits itself over the K interests
            last = i == self.iterations - 1
            caps = squash(tf.einsum("bkl,ble->bke", w, u_hat if last else u_fixed))
            if not last:
                logits = logits + tf.einsum("bke,ble->bkl", caps, u_fixed)
        return caps

    def get_config(self):
        return {**super().get_config(), "num_interests": self.num_interests, "iterations": self.iterations,
                "seed": self.seed}


@register
class LabelAwareAttention(Layer):
    """MIND's label-aware attention: the candidate reads the interest capsules.

      h = Σ_k softmax_k(p · v_k·x_e) v_k                                    v [B, K, d], x_e [B, d] → h [B, d]

    Args:
      power: p, the attention's sharpness (MIND's 2).
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      inputs: [interests v float [B, K, d], candidate x_e float [B, d]]. No mask: every interest is real.

    Input shape:
      [(B, K, d), (B, d)].

    Output shape:
      (B, d).

    Example:

    >>> import numpy as np
    >>> interests = np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32)
    >>> np.round(LabelAwareAttention(power=100.0)([interests, np.array([[1.0, 0.0]], np.float32)]).numpy(), 3)
    array([[1., 0.]], dtype=float32)
    """

    def __init__(self, power=2.0, **kwargs):
        super().__init__(**kwargs)
        self.power = float(power)

    def call(self, inputs):
        interests, candidate = inputs
        weights = tf.nn.softmax(self.power * tf.einsum("bkd,bd->bk", interests, candidate), axis=-1)
        return tf.einsum("bk,bkd->bd", weights, interests)

    def get_config(self):
        return {**super().get_config(), "power": self.power}


def build_mind(config: MTINConfig, item_ids, item_features, user_ids=None, *, compile: bool = True):
    """MIND with MTIN's inputs and outputs (logit [B], click_probability [B]); K = config.num_groups."""
    del user_ids

    def encode(clicked, clicked_known, browsed, browsed_known, candidate):
        capsules = CapsuleRouting(config.num_groups, config.routing_iterations, seed=config.seed,
                                  name="capsule_routing")(clicked, mask=clicked_known)
        interests = tf_keras.layers.Dense(config.embedding_dim, activation="relu", name="interest_layer")(capsules)
        return LabelAwareAttention(name="label_aware_attention")([interests, candidate])

    return history_model("mind", encode, config, item_ids, item_features, compile=compile)
