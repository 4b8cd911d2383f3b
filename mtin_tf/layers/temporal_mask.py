"""Item-level temporal mask network (paper section 4.2, eq. 5–7).

Shapes: B batch, L history length, s groups, d embedding size, p parallel masks.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from mtin_tf.layers.backend import Layer, keras, register

from mtin_tf.layers.grouped_matmul import grouped_matmul


@register
class ParallelTemporalMask(Layer):
    """p parallel temporal masks over each interest group, then an MLP: the group representations r_g.

    For group g and mask k, with i, j items **of the same group** and i − j their distance within the group (time
    order):
      eq. 5:  Q_ij = x_i^T W_g^k x_j                       W_g^k ∈ R^{d×d}, one per (group, mask)
      eq. 6:  P_ij = exp(−(i − j) ω_k) for i > j, else 0    ω_k > 0, one time scale per mask
      eq. 7:  m_i = Σ_j P_ij Q_ij x_j;  r_g^k = Σ_i m_i;  r_g = MLP([r_g^1, ..., r_g^p])

    Computed on the history as it is, without packing the groups: r_g^k = Σ_{j ∈ g} (Σ_i P_ij Q_ij) x_j, where P_ij
    is 0 unless i and j share a group, the same sum without the [L, L, d] tensor M. Each item is multiplied by its own
    group's W_g^k only (mtin_tf.layers.grouped_matmul), so eq. 5 costs p·d² per routed item, not s·p·d² per slot as
    it would over groups padded to L; Q_ij = x_i^T (W_g^k x_j) is one [L, d] × [d, p·L] product per history.

    Options: ``learnable_decay`` (ω_k trainable, initialised log-spaced over [omega_min, omega_max]; else fixed there);
    ``use_time_gaps`` replaces the in-group distance i − j by the time gap t_i − t_j (from ``ages``, already scaled);
    ``include_self`` sets P_ii = 1 (i ≥ j instead of eq. 6's strict i > j): with the strict mask a group of one item
    has r_g^k = 0 and r_g = MLP(0), the same constant for every such group.

    Inputs: items float [B, L, d] (the history in time order); assignment int32 [B, L], each item's group in [0, s) or
    −1 for items in no group (padding, unknown or unrouted items; they are ignored); ages float [B, L] (how long
    before the candidate each item was seen), needed with ``use_time_gaps``; weights float [B, L] (optional), a factor
    on each item's term of r_g^k = Σ_j w_j (Σ_i P_ij Q_ij) x_j (MTIN's routing gate; linear, where scaling x_j itself
    would act as w_j³).
    Output: r float [B, s, d]; rows of empty groups are 0.
    """

    def __init__(self, num_groups=6, num_masks=8, omega_min=0.05, omega_max=2.0, learnable_decay=True,
                 use_time_gaps=False, include_self=False, activation="relu", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.include_self = bool(include_self)
        self.num_groups = int(num_groups)
        self.num_masks = int(num_masks)
        self.omega_min, self.omega_max = float(omega_min), float(omega_max)
        if not 0.0 < self.omega_min <= self.omega_max:
            raise ValueError(f"need 0 < omega_min <= omega_max, got {omega_min}, {omega_max}")
        self.learnable_decay = bool(learnable_decay)
        self.use_time_gaps = bool(use_time_gaps)
        self.activation = keras.activations.get(activation)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        d = int(input_shape[-1])
        init = np.log(np.geomspace(self.omega_min, self.omega_max, self.num_masks)).astype("float32")
        self.log_omega = self.add_weight(
            name="log_omega", shape=[self.num_masks], initializer=keras.initializers.Constant(init),
            trainable=self.learnable_decay)
        self.w = self.add_weight(
            name="w_gk", shape=[self.num_groups, self.num_masks, d, d], regularizer=self.kernel_regularizer,
            initializer=keras.initializers.TruncatedNormal(stddev=1.0 / d))
        self.mlp_hidden = keras.layers.Dense(d, activation=self.activation, name="mlp_hidden",
                                                kernel_regularizer=self.kernel_regularizer)
        self.mlp_out = keras.layers.Dense(d, name="mlp_out", kernel_regularizer=self.kernel_regularizer)
        super().build(input_shape)

    @property
    def omega(self):
        return tf.exp(self.log_omega)

    def call(self, items, assignment=None, ages=None, weights=None):
        if assignment is None:
            raise ValueError("ParallelTemporalMask needs assignment (int32 [B, L], each item's group or -1)")
        shape = tf.shape(items)
        batch, length, d = shape[0], shape[1], items.shape[-1]
        s, p = self.num_groups, self.num_masks
        assignment = tf.cast(assignment, tf.int32)
        member = tf.one_hot(assignment, s, dtype=items.dtype)  # [B, L, s], zeros for −1
        x = items * tf.reduce_sum(member, axis=-1, keepdims=True)  # items in no group → 0
        same = tf.einsum("big,bjg->bij", member, member)  # 1 where i, j share a group, [B, L(i), L(j)]
        pos = tf.range(length)
        lower = pos[:, None] >= pos[None, :] if self.include_self else pos[:, None] > pos[None, :]
        lower = tf.cast(lower, items.dtype)  # i > j (or ≥): time order is the order within the group
        if self.use_time_gaps:
            if ages is None:
                raise ValueError("use_time_gaps=True needs ages [B, L]")
            ages = tf.cast(ages, items.dtype)
            gaps = ages[:, None, :] - ages[:, :, None]  # t_i − t_j = age_j − age_i, [B, L(i), L(j)]
        else:
            rank = tf.reduce_sum(tf.cumsum(member, axis=1) * member, axis=-1)  # 1-based position within the group
            gaps = rank[:, :, None] - rank[:, None, :]  # i − j within the group, [B, L(i), L(j)]
        # Eq. 6: P^k_ij = exp(−gap_ij ω_k) for same-group i > j, else 0; [B, L(i), L(j), p].
        p_mat = tf.exp(-tf.maximum(gaps, 0.0)[..., None] * self.omega) * (same * lower)[..., None]
        # Eq. 5 for each item's own group: y^k_j = W_{g_j}^k x_j, [B, L, p, d]; then Q^k_ij = x_i^T y^k_j.
        w = tf.reshape(tf.transpose(self.w, [0, 3, 1, 2]), [s, d, p * d])  # [s, d(e), p·d]: x_j @ w = W x_j
        y = grouped_matmul(tf.reshape(x, [-1, d]), tf.reshape(assignment, [-1]), w)
        y = tf.reshape(y, [batch, length * p, d])  # rows (j, k)
        q = tf.reshape(tf.matmul(x, y, transpose_b=True), [batch, length, length, p])  # Q^k_ij, [B, L(i), L(j), p]
        coef = tf.reduce_sum(p_mat * q, axis=1)  # Σ_i P_ij Q_ij, [B, L(j), p]
        if weights is not None:  # each item's term of r_g^k scaled once, linearly
            coef = coef * tf.cast(weights, coef.dtype)[..., None]
        r_k = tf.einsum("bjg,bjk,bjd->bgkd", member, coef, x)  # r_g^k, [B, s, p, d]
        r = self.mlp_out(self.mlp_hidden(tf.reshape(r_k, [batch, s, p * d])))
        nonempty = tf.reduce_sum(member, axis=1) > 0  # [B, s]
        return r * tf.cast(nonempty, r.dtype)[..., None]

    def get_config(self):
        config = super().get_config()
        config.update(num_groups=self.num_groups, num_masks=self.num_masks, omega_min=self.omega_min,
                      omega_max=self.omega_max, learnable_decay=self.learnable_decay,
                      use_time_gaps=self.use_time_gaps, include_self=self.include_self, activation=keras.activations.serialize(self.activation),
                      kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer))
        return config
