"""Interest group routing unit (paper section 4.1): item–group co-attention (eq. 2–4) and Algorithm 1.

Shapes: B batch, L history length, s interest groups, d embedding size.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras

UNASSIGNED = -1


def _discounted_scores(p_j, assign, scores, live, base):
    """Lines 6–7 of Algorithm 1 for one item (or, vectorised, for every item of a pass).

    Group means are recomputed from the assignment at every step (O(L·s), small next to eq. 2–7) rather than kept as
    running sums, which would drift by rounding and could flip exact ties against Algorithm 1.

    p_j: [B, ..., s] scores p_{g←j} of the item(s) being routed; assign: [B, L] current S; scores: [B, L, s];
    live: [B, L] bool, items that may belong to a group. Returns p^(d): same shape as p_j.
    avg_g is the mean of p_{g←i} over the items i currently in group g; ξ_g = 1 when the group is empty.
    """
    members = tf.one_hot(assign, tf.shape(scores)[-1], dtype=scores.dtype) * tf.cast(live, scores.dtype)[..., None]
    count = tf.reduce_sum(members, axis=1)  # [B, s]
    total = tf.reduce_sum(members * scores, axis=1)  # [B, s]
    avg = total / tf.maximum(count, 1.0)
    rank_extra = len(p_j.shape) - 2
    for _ in range(rank_extra):
        avg, count = avg[:, None], count[:, None]
    log_b = tf.math.log(tf.cast(base, scores.dtype))
    excess = tf.maximum(avg - p_j, 0.0)
    # log_b(b + 0) is exactly 1; computing it would give 1 ± ulp (vectorised log), which can break exact ties.
    xi = tf.where((count > 0) & (excess > 0), tf.math.log(base + excess) / log_b, tf.ones_like(excess))
    return p_j / xi


def _first_argmax(values):
    """argmax over the last axis, lowest index on ties (tf.argmax does not promise which). Returns (index, max)."""
    best = tf.reduce_max(values, axis=-1, keepdims=True)
    s = tf.shape(values)[-1]
    idx = tf.where(values == best, tf.range(s), s)
    return tf.reduce_min(idx, axis=-1), best[..., 0]


def route_interest_groups(scores, mask, *, iterations=3, epsilon=0.0, base=2.0, parallel=False):
    """Algorithm 1 (interest group routing) as a TF function.

    Args:
      scores: float [B, L, s], the matching scores p_{g←j} exactly as given (no activation applied here).
      mask: bool [B, L], True for real (non-padding) history items, in time order.
      iterations: number of passes over the history.
      epsilon: threshold ε; an item moves to g* only when p^(d)_{g*←j} > ε.
      base: b > 1 of the discount ξ_g = log_b(b + max(avg_g − p_{g←j}, 0)).
      parallel: False (default) is Algorithm 1 exactly: each pass visits j = 1..L in order and a move made for item j
        changes the groups item j+1 sees. True is a data-parallel approximation: every item of a pass is routed against
        the groups as they stood at the start of that pass, and all moves are applied at once.

    Returns:
      int32 [B, L]: the group S_j of each item, or -1 for an item never assigned (padding is always -1).
      An item once assigned is never unassigned.
    """
    scores = tf.convert_to_tensor(scores)
    if not scores.dtype.is_floating:
        raise TypeError(f"scores must be floating point, got {scores.dtype}")
    mask = tf.cast(mask, tf.bool)
    batch, length = tf.shape(scores)[0], tf.shape(scores)[1]
    assign0 = tf.fill([batch, length], tf.constant(UNASSIGNED, tf.int32))
    base = tf.cast(base, scores.dtype)
    epsilon = tf.cast(epsilon, scores.dtype)

    if parallel:
        def one_pass(_, assign):
            pd = _discounted_scores(scores, assign, scores, mask, base)  # [B, L, s]
            g_star, pd_star = _first_argmax(pd)
            g_star = tf.cast(g_star, tf.int32)
            move = mask & (g_star != assign) & (pd_star > epsilon)
            return _ + 1, tf.where(move, g_star, assign)

        _, assign = tf.while_loop(lambda i, _: i < iterations, one_pass, (tf.constant(0), assign0))
        return assign

    positions = tf.range(length)

    def step(t, assign):
        j = t % length
        p_j = tf.gather(scores, j, axis=1)  # [B, s]
        pd = _discounted_scores(p_j, assign, scores, mask, base)
        g_star, pd_star = _first_argmax(pd)
        g_star = tf.cast(g_star, tf.int32)
        current = tf.gather(assign, j, axis=1)
        move = tf.gather(mask, j, axis=1) & (g_star != current) & (pd_star > epsilon)  # [B]
        at_j = (positions == j)[None, :] & move[:, None]
        return t + 1, tf.where(at_j, g_star[:, None], assign)

    _, assign = tf.while_loop(lambda t, _: t < iterations * length, step, (tf.constant(0), assign0))
    return assign


def group_sequences(assignment, num_groups, values):
    """Line 13 of Algorithm 1: each group's items in time order, packed to the front and padded.

    assignment: int32 [B, L] (−1 = no group); values: list of tensors [B, L, ...] to regroup.
    Returns (grouped values, each [B, s, L, ...], group mask bool [B, s, L]). Position q of group g holds the q-th item
    (in time order) assigned to g. Differentiable with respect to the values.
    """
    length = tf.shape(assignment)[1]
    member = tf.one_hot(assignment, num_groups, dtype=tf.float32)  # [B, L, s]
    position = tf.cast(tf.cumsum(member, axis=1) - 1.0, tf.int32)  # [B, L, s], position within the group
    slot = tf.one_hot(position, length, dtype=tf.float32) * member[..., None]  # [B, L(j), s, L(q)]
    grouped = []
    for v in values:
        v = tf.convert_to_tensor(v)
        extra = "d" if len(v.shape) == 3 else ""
        grouped.append(tf.einsum(f"bjgq,bj{extra}->bgq{extra}", tf.cast(slot, v.dtype), v))
    group_mask = tf.reduce_sum(slot, axis=1) > 0.5  # [B, s, L]
    return grouped, group_mask


@tf_keras.saving.register_keras_serializable(package="mtin")
class InterestGroupRouting(tf_keras.layers.Layer):
    """Item–group co-attention (eq. 2–4) followed by interest group routing (Algorithm 1).

    Inputs:
      items: float [B, L, d], history item embeddings x_j (time order, padded).
      memory: float [B, s, d], the user's interest memory M_u = [c_1..c_s].
      mask: bool [B, L], True for real items.
      ages (optional): float [B, L], how long before the candidate each item was seen (scaled time units).

    Eq. 2: s_{j,g} = W_s σ(W_v x_j + b_v + W_u c_g + b_u) + b_s                 → [B, L, s, d]
    Eq. 3: x̂_j = s_{j,g} ⊙ x_j,  ĉ_g = s_{j,g} ⊙ c_g                           → [B, L, s, d] each
    Eq. 4: p_{g←j} = W_p^h σ(W_p^l [x̂_j, ĉ_g] + b_p^l) + b_p^h                  → [B, L, s]
    Algorithm 1 on stop_gradient(σ(p)) → S [B, L].

    Eq. 4 ends in a linear layer, so p can be negative, and dividing a negative score by the discount ξ_g ≥ 1 would
    *raise* it, the opposite of the paper's intent. Routing therefore runs on the matching probability σ(p) ∈ (0, 1),
    which keeps Algorithm 1's discount a penalty and makes ε a threshold on a probability-like score.
    Routing is discrete, so no gradient reaches the co-attention through S. To let W_s, W_v, W_u, W_p learn, each
    item entering its group is scaled by its gate σ(p_{S_j←j}); items never assigned are dropped (the paper's
    false-positive filter).

    Returns a dict: "assignment" int32 [B, L]; "scores" p [B, L, s] (eq. 4); "matching" σ(p) [B, L, s] (what is
    routed); "grouped" [B, s, L, d] (gated items per group, time order, packed to the front); "group_mask" bool
    [B, s, L]; "grouped_ages" [B, s, L] (zeros if no ages).
    """

    def __init__(self, num_groups, iterations=3, epsilon=0.1, base=2.0, parallel_routing=False,
                 activation="relu", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_groups = int(num_groups)
        self.iterations = int(iterations)
        self.epsilon = float(epsilon)
        self.base = float(base)
        self.parallel_routing = bool(parallel_routing)
        self.activation = tf_keras.activations.get(activation)
        self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
        if self.base <= 1.0:
            raise ValueError(f"routing base b must be > 1, got {base}")

    def build(self, input_shape):
        d = int(input_shape[0][-1])
        dense = lambda units, name, bias=True: tf_keras.layers.Dense(  # noqa: E731
            units, use_bias=bias, kernel_regularizer=self.kernel_regularizer, name=name)
        self.w_v, self.w_u, self.w_s = dense(d, "w_v"), dense(d, "w_u"), dense(d, "w_s")
        # W_p^l [x̂, ĉ] is split into its x̂ and ĉ halves (same product, no [B, L, s, 2d] concat).
        self.w_pl_x, self.w_pl_c = dense(d, "w_pl_x"), dense(d, "w_pl_c", bias=False)
        self.w_ph = dense(1, "w_ph")
        super().build(input_shape)

    def matching_scores(self, items, memory):
        """Eq. 2–4: p_{g←j}, float [B, L, s]."""
        x = items[:, :, None, :]  # [B, L, 1, d]
        c = memory[:, None, :, :]  # [B, 1, s, d]
        s_jg = self.w_s(self.activation(self.w_v(x) + self.w_u(c)))  # eq. 2, [B, L, s, d]
        x_hat, c_hat = s_jg * x, s_jg * c  # eq. 3
        hidden = self.activation(self.w_pl_x(x_hat) + self.w_pl_c(c_hat))  # eq. 4 inner, [B, L, s, d]
        return self.w_ph(hidden)[..., 0]

    def call(self, inputs, mask=None, ages=None):
        items, memory = inputs
        if mask is None:
            raise ValueError("InterestGroupRouting needs mask (bool [B, L], True for real history items)")
        mask = tf.cast(mask, tf.bool)
        scores = self.matching_scores(items, memory)
        matching = tf.sigmoid(scores)
        assignment = route_interest_groups(
            tf.stop_gradient(matching), mask, iterations=self.iterations, epsilon=self.epsilon, base=self.base,
            parallel=self.parallel_routing)
        member = tf.one_hot(assignment, self.num_groups, dtype=scores.dtype)  # zeros where unassigned
        gate = tf.reduce_sum(member * matching, axis=-1)  # σ(p_{S_j←j}), 0 where unassigned, [B, L]
        if ages is None:
            ages = tf.zeros_like(gate)
        (grouped, grouped_ages), group_mask = group_sequences(
            assignment, self.num_groups, [items * gate[..., None], tf.cast(ages, items.dtype)])
        return {"assignment": assignment, "scores": scores, "matching": matching, "grouped": grouped, "group_mask": group_mask,
                "grouped_ages": grouped_ages}

    def get_config(self):
        config = super().get_config()
        config.update(num_groups=self.num_groups, iterations=self.iterations, epsilon=self.epsilon, base=self.base,
                      parallel_routing=self.parallel_routing,
                      activation=tf_keras.activations.serialize(self.activation),
                      kernel_regularizer=tf_keras.regularizers.serialize(self.kernel_regularizer))
        return config
