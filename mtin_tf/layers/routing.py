"""Interest group routing unit (paper section 4.1): item–group co-attention (eq. 2–4) and Algorithm 1.

Shapes: B batch, L history length, s interest groups, d embedding size.
"""
from __future__ import annotations

import tensorflow as tf

from mtin_tf.layers.backend import Layer, keras, register
from mtin_tf.layers.grouped_matmul import in_xla_context

UNASSIGNED = -1


def _first_argmax(values, axis=-1):
    """argmax along ``axis``, lowest index on ties (tf.argmax does not promise which). Returns (index, max)."""
    best = tf.reduce_max(values, axis=axis, keepdims=True)
    n = tf.shape(values)[axis]
    shape = [1] * len(values.shape)
    shape[axis] = -1
    idx = tf.where(values == best, tf.reshape(tf.range(n), shape), n)
    return tf.reduce_min(idx, axis=axis), tf.squeeze(best, axis)


def _discount(p, count, total, base):
    """Lines 6–7 of Algorithm 1: p^(d)_{g←j} = p_{g←j} / ξ_g with ξ_g = log_b(b + max(avg_g − p_{g←j}, 0)).

    p: scores of the item(s) being routed; count, total: each group's member count and the float64 sum of its
    members' p_{g←i}, broadcastable against p. avg_g = total_g / count_g; ξ_g = 1 for an empty group, and exactly 1
    where the excess is 0 (a computed log_b(b) can be 1 ± ulp, which would break exact ties differently from
    Algorithm 1). Computed in p's dtype.
    """
    avg = tf.cast(total / tf.cast(tf.maximum(count, 1.0), tf.float64), p.dtype)
    excess = tf.maximum(avg - p, 0.0)
    log_b = tf.math.log(tf.cast(base, p.dtype))
    xi = tf.where((count > 0) & (excess > 0), tf.math.log(base + excess) / log_b, tf.ones_like(excess))
    return p / xi


def _route_sequential(scores, mask, iterations, epsilon, base):
    """Algorithm 1 with running group counts and sums, each pass stopped at the longest real history of the batch,
    and no pass after one that moved no item (the next would not move any either).

    scores [B, L, s]; mask bool [B, L]. Returns int32 [B, L]. The loop runs group-major ([s, B] state, [L, s, B]
    scores), so that every step is a handful of vector operations over the batch and visiting item j reads one
    contiguous row and writes one in place.
    """
    batch, length, groups = tf.shape(scores)[0], tf.shape(scores)[1], tf.shape(scores)[2]
    last = tf.reduce_max(tf.where(mask, tf.range(length)[None, :] + 1, 0))
    scores_t, mask_t = tf.transpose(scores, [1, 2, 0]), tf.transpose(mask)  # [L, s, B], [L, B]
    group_ids = tf.range(groups)[:, None]  # [s, 1]
    state = (tf.fill([length, batch], tf.constant(UNASSIGNED, tf.int32)),  # S, time-major
             tf.zeros([groups, batch], scores.dtype),  # members per group (whole numbers: exact)
             tf.zeros([groups, batch], tf.float64))  # Σ p_{g←i} over members: exact for float32 scores

    def visit(j, assign, count, total, moved):
        p_j, current = scores_t[j], assign[j]  # [s, B], [B]
        g_star, pd_star = _first_argmax(_discount(p_j, count, total, base), axis=0)
        move = mask_t[j] & (g_star != current) & (pd_star > epsilon)  # line 8
        # Line 9: pop j from its group S_j (none while S_j = −1) and add it to g*.
        delta = (tf.cast((group_ids == g_star) & move, scores.dtype)
                 - tf.cast((group_ids == current) & move, scores.dtype))  # [s, B]
        assign = tf.tensor_scatter_nd_update(assign, [[j]], tf.where(move, g_star, current)[None])
        total = total + tf.cast(delta, tf.float64) * tf.cast(p_j, tf.float64)
        return j + 1, assign, count + delta, total, moved | tf.reduce_any(move)

    def one_pass(i, assign, count, total, _):
        _, assign, count, total, moved = tf.while_loop(
            lambda j, *_: j < last, visit, (tf.constant(0), assign, count, total, tf.constant(False)))
        return i + 1, assign, count, total, moved

    _, assign, *_ = tf.while_loop(lambda i, _s, _c, _t, moved: (i < iterations) & moved, one_pass,
                                  (tf.constant(0), *state, tf.constant(True)))
    return tf.transpose(assign)


def _route_parallel(scores, mask, iterations, epsilon, base):
    """The data-parallel approximation: every item of a pass is routed against the groups as they stood when the
    pass began, and all moves are applied at once. scores [B, L, s]; mask bool [B, L]. Returns int32 [B, L]."""
    def one_pass(i, assign, _):
        members = tf.one_hot(assign, tf.shape(scores)[-1], dtype=scores.dtype)  # zeros where unassigned
        count = tf.reduce_sum(members, axis=1, keepdims=True)  # [B, 1, s]
        total = tf.reduce_sum(tf.cast(members * scores, tf.float64), axis=1, keepdims=True)
        g_star, pd_star = _first_argmax(_discount(scores, count, total, base))  # [B, L]
        move = mask & (g_star != assign) & (pd_star > epsilon)
        return i + 1, tf.where(move, g_star, assign), tf.reduce_any(move)

    assign0 = tf.fill(tf.shape(mask), tf.constant(UNASSIGNED, tf.int32))
    _, assign, _ = tf.while_loop(lambda i, _, moved: (i < iterations) & moved, one_pass,
                                 (tf.constant(0), assign0, tf.constant(True)))
    return assign


_ROUTERS = {}


def _router(parallel: bool, jit_compile: bool):
    """The routing function, traced once per (variant, XLA) and reused by every layer and call."""
    key = (parallel, jit_compile)
    if key not in _ROUTERS:
        fn = _route_parallel if parallel else _route_sequential
        _ROUTERS[key] = tf.function(fn, jit_compile=True) if jit_compile else fn
    return _ROUTERS[key]


def route_interest_groups(scores, mask, *, iterations=3, epsilon=0.0, base=2.0, parallel=False, jit_compile=False):
    """Algorithm 1 (interest group routing) as a TF function.

    Args:
      scores: float [B, L, s], the matching scores p_{g←j} exactly as given (no activation applied here).
      mask: bool [B, L], True for real (non-padding) history items, in time order.
      iterations: number of passes over the history (fewer are run when a pass moves no item: the next would not
        either).
      epsilon: threshold ε; an item moves to g* only when p^(d)_{g*←j} > ε.
      base: b > 1 of the discount ξ_g = log_b(b + max(avg_g − p_{g←j}, 0)).
      parallel: False (default) is Algorithm 1 exactly: each pass visits j = 1..L in order and a move made for item j
        changes the groups item j+1 sees. True is a data-parallel approximation: every item of a pass is routed against
        the groups as they stood at the start of that pass, and all moves are applied at once.
      jit_compile: run the routing loop as one XLA computation (much faster: the loop is 3·L tiny steps).

    The sequential routing keeps each group's member count and score sum as running sums updated at every move
    (O(B·s) per step instead of recomputing every group mean, O(B·L·s)). The sums are float64, where a sum of up
    to 64 float32 scores in [2⁻²⁴, 1) is exact, so a move out of a group restores the sum bit for bit and ties break
    as in Algorithm 1.

    Returns:
      int32 [B, L]: the group S_j of each item, or -1 for an item never assigned (padding is always -1).
      An item once assigned is never unassigned.
    """
    scores = tf.convert_to_tensor(scores)
    if not scores.dtype.is_floating:
        raise TypeError(f"scores must be floating point, got {scores.dtype}")
    route = _router(bool(parallel), bool(jit_compile))
    return route(scores, tf.cast(mask, tf.bool), tf.constant(int(iterations)),
                 tf.constant(float(epsilon), scores.dtype), tf.constant(float(base), scores.dtype))


@register
class InterestGroupRouting(Layer):
    """Item–group co-attention (eq. 2–4) followed by interest group routing (Algorithm 1).

    Eq. 2: s_{j,g} = W_s σ(W_v x_j + b_v + W_u c_g + b_u) + b_s                 → [B, L, s, d]
    Eq. 3: x̂_j = s_{j,g} ⊙ x_j,  ĉ_g = s_{j,g} ⊙ c_g                           → [B, L, s, d] each
    Eq. 4: p_{g←j} = W_p^h σ(W_p^l [x̂_j, ĉ_g] + b_p^l) + b_p^h                  → [B, L, s]
    Algorithm 1 on σ(p) → S [B, L].
    (B batch, L history length, s interest groups, d embedding size.)

    Eq. 4 ends in a linear layer, so p can be negative, and dividing a negative score by the discount ξ_g ≥ 1 would
    *raise* it, the opposite of the paper's intent. Routing therefore runs on the matching probability σ(p) ∈ (0, 1),
    which keeps Algorithm 1's discount a penalty and makes ε a threshold on a probability-like score.
    Routing is discrete, so no gradient reaches the co-attention through S. To let W_s, W_v, W_u, W_p learn, each
    item entering its group is scaled by its gate σ(p_{S_j←j}); items never assigned are dropped (the paper's
    false-positive filter). Only the gate carries a gradient, so the [B, L, s, d] co-attention runs forward only
    (under stop_gradient), and eq. 2–4 are evaluated a second time, with gradient, for each item's own group
    ([B, L, d]): the same values for s× less backward work.

    With ``similarity`` (ours), p_{g←j} = eq. 4 + x_j·c_g/√d: eq. 2–4 start from random weights and learn only
    through the gates, so on their own they route items almost at random with respect to what the items are; the
    scaled dot product starts routing from the similarity of item and memory row (a pretrained row is the mean of one
    k-means cluster of the user's items), and eq. 2–4 learn a correction to it.

    With ``center`` (ours), routing runs on σ(p − p̄) instead, p̄ the mean of p over the history's real (item, group)
    pairs: the level of p is arbitrary (eq. 4 ends in a bias), so an absolute ε on σ(p) either drops nothing or,
    as the level drifts in training, everything; relative to p̄ it drops the items that match the user's groups worse
    than the user's items do on average.

    Args:
      num_groups: s, the number of interest groups (= memory rows).
      iterations: Algorithm 1's passes over the history.
      epsilon: ε, the threshold on the routed score an item must pass to move into a group.
      base: b > 1 of the discount ξ_g = log_b(b + max(avg_g − p_{g←j}, 0)).
      parallel_routing: the data-parallel approximation of Algorithm 1 (see route_interest_groups).
      jit_compile: run the routing loop under XLA (the co-attention is never compiled: XLA's CPU matmuls are
        slower than TensorFlow's).
      center: route σ(p − p̄) (above).
      similarity: add x_j·c_g/√d to p (above).
      activation: σ of eq. 2 and eq. 4's hidden layer.
      kernel_regularizer: regularizer of every Dense kernel, or None.
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      inputs: [items, memory] or [items, memory, scores]: items float [B, L, d], the history's item embeddings x_j
        (time order, padded); memory float [B, s, d], the user's interest memory M_u = [c_1..c_s]; scores float
        [B, L, s], ``matching_scores(items, memory, mask)`` already computed by the caller (the branch's routing
        loss needs them with gradient): routing then does not score again.
      mask: bool [B, L], True for real items (required). Padding is never routed.

    Input shape:
      [(B, L, d), (B, s, d)] or [(B, L, d), (B, s, d), (B, L, s)]; mask (B, L).

    Output shape:
      A dict: "assignment" int32 (B, L), each item's group S_j or −1 (never assigned, padding); "scores" p
      (B, L, s) (eq. 4); "matching" σ(p) or σ(p − p̄) (B, L, s) (what is routed); "gate" (B, L), σ(p_{S_j←j}) for
      assigned items and 0 for the rest (differentiable).

    Example:

    >>> import numpy as np
    >>> items, memory = np.ones([2, 5, 4], np.float32), np.ones([2, 3, 4], np.float32)
    >>> known = np.array([[True] * 5, [True, True, False, False, False]])
    >>> routed = InterestGroupRouting(num_groups=3, epsilon=0.0)([items, memory], mask=known)
    >>> routed["assignment"].shape, routed["scores"].shape, routed["gate"].shape
    (TensorShape([2, 5]), TensorShape([2, 5, 3]), TensorShape([2, 5]))
    >>> routed["assignment"].numpy()[1, 2:]  # padding is in no group
    array([-1, -1, -1], dtype=int32)
    """

    def __init__(self, num_groups, iterations=3, epsilon=0.1, base=2.0, parallel_routing=False, jit_compile=False,
                 center=False, similarity=False, activation="relu", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.center = bool(center)
        self.similarity = bool(similarity)
        self.num_groups = int(num_groups)
        self.iterations = int(iterations)
        self.epsilon = float(epsilon)
        self.base = float(base)
        self.parallel_routing = bool(parallel_routing)
        self.jit_compile = bool(jit_compile)
        self.activation = keras.activations.get(activation)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        if self.base <= 1.0:
            raise ValueError(f"routing base b must be > 1, got {base}")

    def build(self, input_shape):
        d = int(input_shape[0][-1])
        dense = lambda units, name, bias=True: keras.layers.Dense(
            units, use_bias=bias, kernel_regularizer=self.kernel_regularizer, name=name)
        self.w_v, self.w_u, self.w_s = dense(d, "w_v"), dense(d, "w_u"), dense(d, "w_s")
        # W_p^l [x̂, ĉ] is split into its x̂ and ĉ halves (same product, no [B, L, s, 2d] concat).
        self.w_pl_x, self.w_pl_c = dense(d, "w_pl_x"), dense(d, "w_pl_c", bias=False)
        self.w_ph = dense(1, "w_ph")
        super().build(input_shape)

    def coattention(self, x, c, w_u_c=None):
        """Eq. 2–4 for item embeddings x [..., d] and group embeddings c [..., d] (broadcast): p [...].
        ``w_u_c``: W_u c + b_u when already computed (same shape as c)."""
        w_u_c = self.w_u(c) if w_u_c is None else w_u_c
        s_jg = self.w_s(self.activation(self.w_v(x) + w_u_c))  # eq. 2
        x_hat, c_hat = s_jg * x, s_jg * c  # eq. 3
        hidden = self.activation(self.w_pl_x(x_hat) + self.w_pl_c(c_hat))  # eq. 4 inner
        p = self.w_ph(hidden)[..., 0]
        if self.similarity:  # ours: + x_j·c_g/√d, so that routing starts from how alike item and memory row are
            p = p + tf.reduce_sum(x * c, -1) * tf.math.rsqrt(tf.cast(tf.shape(x)[-1], p.dtype))
        return p

    def matching_scores(self, items, memory, mask=None):
        """Eq. 2–4 for every (item, group): p_{g←j}, float [B, L, s].

        With ``mask`` (bool [B, L]) only the real items are scored (0 elsewhere), except under XLA, whose static
        shapes need every slot."""
        if mask is None or in_xla_context():
            return self.coattention(items[:, :, None, :], memory[:, None, :, :])
        where = tf.where(mask)  # [N, 2]
        user = where[:, 0]
        scores = self.coattention(tf.gather_nd(items, where)[:, None, :], tf.gather(memory, user),
                                  tf.gather(self.w_u(memory), user))  # [N, s]
        shape = tf.concat([tf.shape(items, out_type=tf.int64)[:2], tf.shape(memory, out_type=tf.int64)[1:2]], 0)
        return tf.scatter_nd(where, scores, shape)  # [B, L, s]

    def call(self, inputs, mask=None):
        items, memory, *given = inputs
        mask = self.given_mask(mask)
        if mask is None:
            raise ValueError("InterestGroupRouting needs mask= (bool [B, L], True for real history items)")
        mask = tf.cast(mask, tf.bool)
        # The scores p may come from the caller, who computed matching_scores(items, memory, mask) for a loss of its
        # own (the routing loss): the assignment takes them without gradient either way.
        scores = tf.stop_gradient(given[0] if given else self.matching_scores(items, memory, mask))
        offset = self._offset(scores, mask) if self.center else tf.zeros([1, 1], scores.dtype)  # [B, 1] or [1, 1]
        matching = tf.sigmoid(scores - offset[..., None])
        assignment = route_interest_groups(
            matching, mask, iterations=self.iterations, epsilon=self.epsilon, base=self.base,
            parallel=self.parallel_routing, jit_compile=self.jit_compile)
        own = tf.gather(memory, tf.maximum(assignment, 0), batch_dims=1)  # c_{S_j}, [B, L, d]
        gate = tf.sigmoid(self.coattention(items, own) - offset) * tf.cast(assignment >= 0, items.dtype)  # [B, L]
        return {"assignment": assignment, "scores": scores, "matching": matching, "gate": gate}

    @staticmethod
    def _offset(scores, mask):
        """p̄ [B, 1]: the mean score over a history's real (item, group) pairs (0 for an empty history)."""
        real = tf.cast(mask, scores.dtype)  # [B, L]
        total = tf.reduce_sum(scores * real[..., None], axis=[1, 2])
        return tf.math.divide_no_nan(total, tf.reduce_sum(real, axis=1) * scores.shape[-1])[:, None]

    def get_config(self):
        config = super().get_config()
        config.update(num_groups=self.num_groups, iterations=self.iterations, epsilon=self.epsilon, base=self.base,
                      parallel_routing=self.parallel_routing, jit_compile=self.jit_compile, center=self.center,
                      similarity=self.similarity,
                      activation=keras.activations.serialize(self.activation),
                      kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer))
        return config
