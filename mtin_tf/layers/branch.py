"""One interest branch of MTIN: a user's history (clicked, or browsed-not-clicked) → P(x_e | H) (sections 4.1–4.4).

The positive and negative branches are two instances with separate weights.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from mtin_tf.layers.aggregation import InterestAggregation
from mtin_tf.layers.interest_mask import InterestMask
from mtin_tf.layers.routing import InterestGroupRouting
from mtin_tf.layers.temporal_mask import ParallelTemporalMask


def history_ages(history_times, candidate_time, time_scale):
    """How long before the candidate each history item was seen, in units of ``time_scale`` seconds: float [B, L]."""
    gap = tf.cast(candidate_time, tf.int64)[:, None] - tf.cast(history_times, tf.int64)
    return tf.cast(tf.maximum(gap, 0), tf.float32) / time_scale


@tf_keras.saving.register_keras_serializable(package="mtin")
class InterestBranch(tf_keras.layers.Layer):
    """Routing → parallel temporal masks → interest mask → aggregation → memory update → prediction, for one history.

      groups:  S = Algorithm 1 on p_{g←j} (eq. 2–4), or one group holding every item when ``use_routing`` is False
      eq. 5–7: r_g from each group's items                                  [B, s, d]
      eq. 8–10: h_p, w_{p,g} from the memory rows c_p and the r_g            [B, s, d], [B, s, s]
      eq. 10–11: c_p = agg(r_p, h_p); q = Σ_p (c_p^{memory} + c_p)           [B, d]
      P(x_e | H) = MLP([q, x_e]) (two layers)                                [B]

    Inputs: [items float [B, L, d], known bool [B, L], history_times int64 [B, L], candidate_time int64 [B],
    memory float [B, s, d], candidate float [B, d]]. Outputs: (score [B], weights w [B, s, s], assignment int32 [B, L]).
    An empty history is valid: every group is empty, r = h = 0, and q comes from the memory alone.
    """

    def __init__(self, num_groups=6, num_masks=8, use_routing=True, routing_iterations=3, routing_epsilon=0.1,
                 routing_base=2.0, parallel_routing=False, jit_routing=False, omega_min=0.05, omega_max=2.0,
                 learnable_decay=True, use_time_gaps=False, time_scale=86400.0, tau=0.1, straight_through=True, aggregation="concat_pool",
                 activation="relu", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_groups, self.use_routing = int(num_groups), bool(use_routing)
        if not self.use_routing and self.num_groups != 1:
            raise ValueError("without routing (MTIN-I) there is exactly one group; set num_groups=1")
        self.time_scale = float(time_scale)
        self.activation = tf_keras.activations.get(activation)
        self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
        reg = self.kernel_regularizer
        self._config = dict(
            num_groups=num_groups, num_masks=num_masks, use_routing=use_routing,
            routing_iterations=routing_iterations, routing_epsilon=routing_epsilon, routing_base=routing_base,
            parallel_routing=parallel_routing, jit_routing=jit_routing, omega_min=omega_min, omega_max=omega_max,
            learnable_decay=learnable_decay, use_time_gaps=use_time_gaps, time_scale=time_scale, tau=tau,
            straight_through=straight_through, aggregation=aggregation)
        self.routing = InterestGroupRouting(
            num_groups, iterations=routing_iterations, epsilon=routing_epsilon, base=routing_base,
            parallel_routing=parallel_routing, jit_compile=jit_routing, activation=activation,
            kernel_regularizer=reg, name="routing") if self.use_routing else None
        self.temporal = ParallelTemporalMask(num_groups, num_masks, omega_min=omega_min, omega_max=omega_max,
                                             learnable_decay=learnable_decay, use_time_gaps=use_time_gaps,
                                             activation=activation, kernel_regularizer=reg, name="temporal_mask")
        self.interest = InterestMask(tau=tau, straight_through=straight_through, kernel_regularizer=reg,
                                     name="interest_mask")
        self.aggregate = InterestAggregation(aggregation, kernel_regularizer=reg, name="aggregation")

    def build(self, input_shape):
        d = int(input_shape[0][-1])
        self.predict_hidden = tf_keras.layers.Dense(d, activation=self.activation, name="predict_hidden",
                                                    kernel_regularizer=self.kernel_regularizer)
        self.predict_out = tf_keras.layers.Dense(1, name="predict_out", kernel_regularizer=self.kernel_regularizer)
        super().build(input_shape)

    def call(self, inputs):
        items, known, history_times, candidate_time, memory, candidate = inputs
        known = tf.cast(known, tf.bool)
        ages = history_ages(history_times, candidate_time, self.time_scale)
        if self.use_routing:
            routed = self.routing([items, memory], mask=known)
            assignment = routed["assignment"]
            items = items * routed["gate"][..., None]
        else:
            assignment = tf.where(known, 0, -1)
        r = self.temporal(items, assignment=assignment, ages=ages)  # eq. 5–7
        nonempty = tf.reduce_any(assignment[:, :, None] == tf.range(self.num_groups)[None, None, :], axis=1)
        h, weights = self.interest([memory, r], group_mask=nonempty)  # eq. 8–10
        c = self.aggregate([r, h])
        q = tf.reduce_sum(memory + c, axis=1)  # eq. 11: memory rows updated by c_p, then sum pooling
        score = self.predict_out(self.predict_hidden(tf.concat([q, candidate], axis=-1)))[:, 0]
        return score, weights, assignment

    def get_config(self):
        config = super().get_config()
        config.update(self._config, activation=tf_keras.activations.serialize(self.activation),
                      kernel_regularizer=tf_keras.regularizers.serialize(self.kernel_regularizer))
        return config
