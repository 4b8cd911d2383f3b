"""The user's recent click level (ours, beyond the paper): a per-user logit offset from the last impressions.

How often a user clicks what they are shown drifts over time, and an AUC over many users' impressions rewards
knowing where each user stands now. Both histories already hold the answer for the latest impressions: the clicked
history (clicks) and the browsed history (impressions not clicked), each with its times. The K most recent
impressions before the candidate are the K latest of the two histories together, and

  n = the real impressions among them (≤ K),  c = the clicked ones,  ρ = (c + 1) / (n + 2)   (Laplace's rule)
  offset = w₁ · logit ρ + w₂ · n / K + b                                                      [B]

with w₁, w₂, b trained (initially 0, so training starts from the model without it). The offset is the same for
every candidate of a user: it moves a user's click probabilities together and never the order of their
candidates, so it changes AUC over users and leaves gAUC, top-k lists and recommend's ranking as they are. It reads
the histories only, so a user is still encoded once (mtin_tf.model.encode_user) for any number of candidates.
"""
from __future__ import annotations

import tensorflow as tf

from mtin_tf.layers.backend import Layer, keras, register


@register
class ClickLevel(Layer):
    """A per-user logit offset from the click share of the last K impressions (module docstring).

      n = Σ_{j ∈ last K} 1,  c = Σ_{j ∈ last K} clicked_j,  ρ = (c + 1) / (n + 2)
      offset = Dense_1([logit ρ, n / K])
    over the K latest items of the clicked and browsed histories together (by time; a click and a browse at the
    same second: the click first), with clicked_j = 1 for an item of the clicked history.

    Args:
      last: K, the number of latest impressions (at most the two histories' lengths together, 2L).
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      inputs: [clicked_ids, clicked_times, browsed_ids, browsed_times], int [B, L] each (mtin_tf.features'
        HISTORY_PAIRS): an item id of 0 is padding; any other id is an impression, known to the item table or not.

    Input shape:
      [(B, L), (B, L), (B, L'), (B, L')].

    Output shape:
      (B,): the logit offset.

    Example:

    >>> import numpy as np
    >>> histories = [np.array([[5, 6, 7]]), np.array([[1, 2, 3]]), np.array([[9, 0, 0]]), np.array([[4, 0, 0]])]
    >>> layer = ClickLevel(2)
    >>> layer.features(histories).numpy()  # the last 2 impressions: one browse (t=4), one click (t=3)
    array([[0., 1.]], dtype=float32)
    >>> layer(histories).numpy()  # w = 0, b = 0 before training
    array([0.], dtype=float32)
    """

    def __init__(self, last=20, **kwargs):
        super().__init__(**kwargs)
        self.last = int(last)
        if self.last < 1:
            raise ValueError(f"last must be >= 1, got {last}")
        self.dense = keras.layers.Dense(1, kernel_initializer="zeros", name="offset")

    def features(self, histories):
        """[logit ρ, n / K] float [B, 2] (the class docstring's ρ and n) of [clicked_ids, clicked_times, browsed_ids,
        browsed_times]."""
        clicked_ids, clicked_times, browsed_ids, browsed_times = histories
        known = tf.concat([tf.not_equal(tf.cast(ids, tf.int64), 0) for ids in (clicked_ids, browsed_ids)], axis=1)
        times = tf.concat([tf.cast(clicked_times, tf.int64), tf.cast(browsed_times, tf.int64)], axis=1)  # [B, 2L]
        clicked = tf.concat([tf.ones_like(clicked_times, tf.float32), tf.zeros_like(browsed_times, tf.float32)], 1)
        # Latest first; padding (and nothing else) sorts last. top_k keeps the lower index first among equal keys,
        # so a click precedes a browse of the same second.
        key = tf.where(known, times, tf.int64.min)
        k = min(self.last, int(key.shape[1])) if key.shape[1] is not None else self.last
        latest = tf.math.top_k(key, k=k).indices  # [B, K]
        real = tf.cast(tf.gather(known, latest, batch_dims=1), tf.float32)
        n = tf.reduce_sum(real, axis=1)
        c = tf.reduce_sum(tf.gather(clicked, latest, batch_dims=1) * real, axis=1)
        rho = (c + 1.0) / (n + 2.0)
        return tf.stack([tf.math.log(rho) - tf.math.log1p(-rho), n / self.last], axis=-1)

    def call(self, inputs):
        return self.dense(self.features(inputs))[..., 0]

    def get_config(self):
        return {**super().get_config(), "last": self.last}
