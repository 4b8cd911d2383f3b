"""One interest branch of MTIN: a user's history (clicked, or browsed-not-clicked) → the updated memory rows u_p
(sections 4.1–4.3), which mtin_tf.layers.readout scores against candidates (section 4.4).

The positive and negative branches are two instances with separate weights. Nothing here depends on the candidate:
a user's rows are computed once per (user, histories, impression time) for any number of candidates.
"""
from __future__ import annotations

import tensorflow as tf

from mtin_tf.layers.aggregation import InterestAggregation
from mtin_tf.layers.backend import LEGACY, Layer, keras, register
from mtin_tf.layers.interest_mask import InterestMask
from mtin_tf.layers.routing import InterestGroupRouting
from mtin_tf.layers.temporal_mask import ParallelTemporalMask


def history_ages(history_times, candidate_time, time_scale):
    """How long before the candidate each history item was seen, in units of ``time_scale`` seconds: float [B, L]."""
    gap = tf.cast(candidate_time, tf.int64)[:, None] - tf.cast(history_times, tf.int64)
    return tf.cast(tf.maximum(gap, 0), tf.float32) / time_scale


# Every setting of a branch with its default; MTINConfig has a field of the same name for each (one place to add one).
BRANCH_SETTINGS = dict(
    num_groups=6, num_masks=8, use_routing=True, routing_iterations=3, routing_epsilon=0.45, routing_base=2.0,
    routing_center=True, routing_similarity=False, routing_loss=0.0, parallel_routing=False, jit_routing=False,
    omega_min=0.05, omega_max=2.0,
    learnable_decay=True, use_time_gaps=False, temporal_self=True, temporal_chunk=50, time_scale=86400.0, tau=None,
    straight_through=True, aggregation="concat_pool", gated_update=False, activation="relu")


ROUTING_METRICS = ("dropped", "groups_used", "largest_group")


def routing_contrast_loss(own_scores, own_known, other_scores, other_known):
    """The routing loss (ours): a class-balanced logistic loss that tells the branch's own history items (label 1)
    from the other history's items (label 0) by their best matching score against the branch's memory,
    z_j = max_g p_{g←j} (eq. 4):

      loss = mean_{own real j} softplus(−z_j) + mean_{other real j} softplus(z_j)

    own_scores [B, L, s], own_known bool [B, L]; other_scores [B, L', s], other_known bool [B, L'] → scalar. With it,
    σ(p) > 1/2 comes to mean "looks like an item of this history rather than of the other", so uncentred routing
    with ε = 1/2 leaves out the items that look like the other history's (the false-positive filter of section 4.1).
    """
    def mean_softplus(z, known):
        known = tf.cast(known, z.dtype)
        return tf.math.divide_no_nan(tf.reduce_sum(tf.nn.softplus(z) * known), tf.reduce_sum(known))

    return (mean_softplus(-tf.reduce_max(own_scores, -1), own_known)
            + mean_softplus(tf.reduce_max(other_scores, -1), other_known))


def group_normalized(gate, assignment, num_groups):
    """Each routed item's gate over the mean gate of its group, w_j = σ_j / mean_{i ∈ g(j)} σ_i: [B, L], 0 for items in
    no group. The weights of a group average 1, so only how an item matches relative to its group mates changes
    the group's representation: the scale of every gate gets no gradient, and the gates cannot drift down together
    until routing drops every item (which, with the raw gate, it did within two epochs on MovieLens-100K)."""
    member = tf.one_hot(assignment, num_groups, dtype=gate.dtype)  # [B, L, s]
    mean = tf.math.divide_no_nan(tf.einsum("bl,blg->bg", gate, member), tf.reduce_sum(member, axis=1))  # [B, s]
    return tf.math.divide_no_nan(gate, tf.einsum("bg,blg->bl", mean, member))


@register
class InterestBranch(Layer):
    """One history's interest branch (sections 4.1–4.3): routing → temporal masks → interest mask → memory update.

      groups:  S = Algorithm 1 on σ(p_{g←j}) (eq. 2–4), or one group holding every item when ``use_routing`` is False
      eq. 5–7: r_g from each group's items, each item's term scaled by its gate   [B, s, d]
               σ(p_{S_j←j}) over its group's mean gate (group_normalized)
      eq. 8–10: h_p, w_{p,g} from the memory rows c_p and the r_g                [B, s, d], [B, s, s]
      eq. 10:  u_p = c_p^{memory} + agg(r_p, h_p), the updated memory rows        [B, s, d]
               (× a learned γ started at 0 with ``gated_update``)
    (B batch, L history length, s groups = memory rows, d embedding size.) InterestReadout (mtin_tf.layers.readout)
    turns the rows and a candidate into P(x_e | H).

    An empty history is valid: every group is empty, r = h = 0, and the rows are the memory (plus, with a "concat"
    aggregation, its bias b_c, 0 until trained).
    With routing, the branch reports metrics (TensorBoard, fit history): ``<name>_dropped``, the fraction of real
    items routing left out of every group; ``<name>_groups_used``, the mean number of non-empty groups;
    ``<name>_largest_group``, the mean share of the routed items in the largest group.

    Args:
      kernel_regularizer: regularizer of every kernel of the sublayers (the model's λ‖·‖²), or None.
      **kwargs: the keys of BRANCH_SETTINGS, each with its default there (see MTINConfig for each; τ = None is
        1/s; ``routing_loss`` > 0 adds the routing loss in training, see Call arguments), and Layer arguments
        (name, dtype, ...).

    Call arguments:
      inputs: [items, history_times, impression_time, memory], or those and other_items with the routing loss:
        items float [B, L, d], the history's item embeddings in time order; history_times int64 [B, L], when each
        was seen; impression_time int64 [B], the candidate's time (ages are taken from it); memory float [B, s, d],
        the user's memory rows c_p; other_items float [B, L', d], the other history's items (clicked for the
        browsed branch and the reverse).
      mask: known bool [B, L], True for the real history items (required); with other_items, the pair
        (known, other_known bool [B, L']). In training, with ``routing_loss`` > 0 and the other history given, the
        branch adds routing_loss × routing_contrast_loss (own items against the other history's, scored against
        this branch's memory).
        Models saved before the ``mask=`` convention called the branch with the masks among the inputs,
        [items, known, history_times, impression_time, memory(, other_items, other_known)] and no mask: that form
        is still accepted, so they load and score as before.
      report_metrics: whether the call updates the routing metrics; False (the serving and scoring paths) computes
        the same outputs without touching their state, which also keeps a model trained under a distribution
        strategy callable outside ``strategy.run``.
      training: Keras's training flag (the routing loss is added only in training).

    Input shape:
      [(B, L, d), (B, L), (B,), (B, s, d)] (+ (B, L', d)); mask (B, L) (or ((B, L), (B, L'))).

    Output shape:
      (rows u (B, s, d), weights w (B, s, s), assignment int32 (B, L)).

    Example:

    >>> import numpy as np
    >>> items, memory = np.ones([2, 5, 4], np.float32), np.ones([2, 3, 4], np.float32)
    >>> times, now = np.tile(np.arange(1, 6, dtype=np.int64), [2, 1]), np.array([10, 10], np.int64)
    >>> known = np.array([[True] * 5, [False] * 5])  # the second history is empty
    >>> branch = InterestBranch(num_groups=3, num_masks=2)
    >>> rows, weights, assignment = branch([items, times, now, memory], mask=known, report_metrics=False)
    >>> rows.shape, weights.shape, assignment.shape
    (TensorShape([2, 3, 4]), TensorShape([2, 3, 3]), TensorShape([2, 5]))
    >>> bool(np.allclose(rows[1], memory[1]))  # an empty history: the memory rows (b_c is still 0)
    True
    """

    def __init__(self, kernel_regularizer=None, **kwargs):
        settings = {k: kwargs.pop(k, v) for k, v in BRANCH_SETTINGS.items()}
        super().__init__(**kwargs)
        self.settings = settings
        self.num_groups, self.use_routing = int(settings["num_groups"]), bool(settings["use_routing"])
        if not self.use_routing and self.num_groups != 1:
            raise ValueError("without routing (MTIN-I) there is exactly one group; set num_groups=1")
        self.time_scale = float(settings["time_scale"])
        tau = settings["tau"]
        self.tau = 1.0 / self.num_groups if tau is None else float(tau)
        self.kernel_regularizer = reg = keras.regularizers.get(kernel_regularizer)
        self.routing = InterestGroupRouting(
            self.num_groups, iterations=settings["routing_iterations"], epsilon=settings["routing_epsilon"],
            base=settings["routing_base"], parallel_routing=settings["parallel_routing"],
            jit_compile=settings["jit_routing"], center=settings["routing_center"],
            similarity=settings["routing_similarity"], activation=settings["activation"],
            kernel_regularizer=reg, name="routing") if self.use_routing else None
        self.temporal = ParallelTemporalMask(
            self.num_groups, settings["num_masks"], omega_min=settings["omega_min"], omega_max=settings["omega_max"],
            learnable_decay=settings["learnable_decay"], use_time_gaps=settings["use_time_gaps"],
            include_self=settings["temporal_self"], chunk_size=settings["temporal_chunk"],
            activation=settings["activation"], kernel_regularizer=reg,
            name="temporal_mask")
        self.interest = InterestMask(tau=self.tau, straight_through=settings["straight_through"],
                                     kernel_regularizer=reg, name="interest_mask")
        self.aggregate = InterestAggregation(settings["aggregation"], kernel_regularizer=reg, name="aggregation")
        self.gated_update = bool(settings["gated_update"])
        self.routing_loss = float(settings["routing_loss"])
        # Keras 3 has no Layer.add_metric: there the routing metrics are Mean trackers, which Model.metrics collects.
        self._trackers = {} if LEGACY or not self.use_routing else {
            key: keras.metrics.Mean(name=f"{self.name}_{key}") for key in ROUTING_METRICS}

    def build(self, input_shape):
        if self.gated_update:  # u_p = M_u[p] + γ·c_p, γ learned from 0: training starts from the memory rows alone
            self.update_gate = self.add_weight(name="update_gate", shape=[], initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, mask=None, report_metrics=True, training=None):
        items, known, history_times, impression_time, memory, other = self._unpack(inputs, self.given_mask(mask))
        known = tf.cast(known, tf.bool)
        own_scores = []  # the matching scores p of the own history, when the routing loss needs their gradient
        if self.use_routing and self.routing_loss and training and other:
            other_items, other_known = other
            own_scores = [self.routing.matching_scores(items, memory, known)]
            other_scores = self.routing.matching_scores(other_items, memory, tf.cast(other_known, tf.bool))
            self.add_loss(self.routing_loss * routing_contrast_loss(*own_scores, known, other_scores, other_known))
        ages = history_ages(history_times, impression_time, self.time_scale)
        gate = None
        if self.use_routing:
            routed = self.routing([items, memory, *own_scores], mask=known)
            assignment = routed["assignment"]
            gate = group_normalized(routed["gate"], assignment, self.num_groups)
            if report_metrics:
                self._routing_metrics(assignment, known)
        else:
            assignment = tf.where(known, 0, -1)
        r = self.temporal(items, assignment=assignment, ages=ages, weights=gate)  # eq. 5–7
        nonempty = tf.reduce_any(assignment[:, :, None] == tf.range(self.num_groups)[None, None, :], axis=1)
        h, weights = self.interest([memory, r], mask=nonempty)  # eq. 8–10
        update = self.aggregate([r, h])
        rows = memory + (self.update_gate * update if self.gated_update else update)  # u_p: memory updated by c_p
        return rows, weights, assignment

    @staticmethod
    def _unpack(inputs, mask):
        """(items, known, history times, impression time, memory, () or (other items, other known)) from the call's
        inputs and mask, or, with no mask, from the form models saved before the ``mask=`` convention recorded:
        [items, known, history_times, impression_time, memory(, other_items, other_known)]."""
        inputs = list(inputs)
        if mask is None:
            if len(inputs) not in (5, 7):
                raise ValueError("InterestBranch needs mask= (known bool [B, L], or (known, other_known) with the "
                                 "other history's items as a fifth input)")
            items, known, history_times, impression_time, memory, *other = inputs
            return items, known, history_times, impression_time, memory, tuple(other)
        masks = tuple(mask) if isinstance(mask, (tuple, list)) else (mask,)
        if len(inputs) != 3 + len(masks):
            raise ValueError(f"InterestBranch takes [items, history_times, impression_time, memory] with mask=known, "
                             f"or those and other_items with mask=(known, other_known); got {len(inputs)} inputs and "
                             f"{len(masks)} masks")
        items, history_times, impression_time, memory, *other_items = inputs
        other = (other_items[0], masks[1]) if other_items else ()
        return items, masks[0], history_times, impression_time, memory, other

    def _routing_metrics(self, assignment, known):
        real = tf.reduce_sum(tf.cast(known, tf.float32))
        routed = assignment >= 0
        sizes = tf.reduce_sum(tf.one_hot(assignment, self.num_groups), axis=1)  # [B, s]
        has_items = tf.reduce_any(known, axis=1)
        used = tf.reduce_sum(tf.cast(sizes > 0, tf.float32), axis=1)
        largest = tf.math.divide_no_nan(tf.reduce_max(sizes, axis=1), tf.reduce_sum(sizes, axis=1))
        rows = tf.maximum(tf.reduce_sum(tf.cast(has_items, tf.float32)), 1.0)
        values = {"dropped": 1.0 - tf.math.divide_no_nan(tf.reduce_sum(tf.cast(routed, tf.float32)), real),
                  "groups_used": tf.reduce_sum(tf.where(has_items, used, 0.0)) / rows,
                  "largest_group": tf.reduce_sum(tf.where(has_items, largest, 0.0)) / rows}
        for key in ROUTING_METRICS:
            if LEGACY:
                self.add_metric(values[key], name=f"{self.name}_{key}")
            else:
                self._trackers[key].update_state(values[key])

    def get_config(self):
        config = super().get_config()
        config.update(self.settings, kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer))
        return config
