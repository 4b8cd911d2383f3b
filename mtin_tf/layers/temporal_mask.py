"""Item-level temporal mask network (paper section 4.2, eq. 5–7).

Shapes: B batch, s groups, L positions within a group, d embedding size, p parallel masks.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras


def decay_matrix(omega, gaps, lower):
    """Eq. 6: P_ij = exp(−gap_ij · ω_k) where i > j, else 0.

    omega: [p]; gaps: [..., L, L] (i − j, or t_i − t_j); lower: bool [..., L, L], True where i > j.
    Returns [..., p, L, L] (p inserted before the two position axes).
    """
    gaps = gaps[..., None, :, :]
    lower = lower[..., None, :, :]
    omega = tf.reshape(omega, [-1, 1, 1])
    return tf.where(lower, tf.exp(-tf.maximum(gaps, 0.0) * omega), tf.zeros_like(gaps * omega))


@tf_keras.saving.register_keras_serializable(package="mtin")
class ParallelTemporalMask(tf_keras.layers.Layer):
    """p parallel temporal masks over each interest group, then an MLP: the group representations r_g.

    For group g and mask k, with i, j positions **within the group** (time order):
      eq. 5:  Q_ij = x_i^T W_g^k x_j                       W_g^k ∈ R^{d×d}, one per (group, mask)
      eq. 6:  P_ij = exp(−(i − j) ω_k) for i > j, else 0    ω_k > 0, one time scale per mask
      eq. 7:  m_i = Σ_j P_ij Q_ij x_j;  r_g^k = Σ_i m_i;  r_g = MLP([r_g^1, ..., r_g^p])
    computed as r_g^k = Σ_j (a_j^T W_g^k x_j) x_j with a_j = Σ_i P_ij x_i, which is the same sum without the
    [L, L, d] tensor M.

    Options: ``learnable_decay`` (ω_k trainable, initialised log-spaced over [omega_min, omega_max]; else fixed there);
    ``use_time_gaps`` replaces the position gap i − j by the time gap t_i − t_j (from ``ages``, already scaled).

    Inputs: grouped float [B, s, L, d]; mask bool [B, s, L]; ages float [B, s, L] (how long before the candidate).
    Output: r float [B, s, d]; rows of empty groups are 0.
    """

    def __init__(self, num_masks=8, omega_min=0.05, omega_max=2.0, learnable_decay=True, use_time_gaps=False,
                 activation="relu", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_masks = int(num_masks)
        self.omega_min, self.omega_max = float(omega_min), float(omega_max)
        if not 0.0 < self.omega_min <= self.omega_max:
            raise ValueError(f"need 0 < omega_min <= omega_max, got {omega_min}, {omega_max}")
        self.learnable_decay = bool(learnable_decay)
        self.use_time_gaps = bool(use_time_gaps)
        self.activation = tf_keras.activations.get(activation)
        self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        groups, d = int(input_shape[1]), int(input_shape[-1])
        init = np.log(np.geomspace(self.omega_min, self.omega_max, self.num_masks)).astype("float32")
        self.log_omega = self.add_weight(
            "log_omega", shape=[self.num_masks], initializer=tf_keras.initializers.Constant(init),
            trainable=self.learnable_decay)
        self.w = self.add_weight(
            "w_gk", shape=[groups, self.num_masks, d, d], regularizer=self.kernel_regularizer,
            initializer=tf_keras.initializers.TruncatedNormal(stddev=1.0 / d))
        self.mlp_hidden = tf_keras.layers.Dense(d, activation=self.activation, name="mlp_hidden",
                                                kernel_regularizer=self.kernel_regularizer)
        self.mlp_out = tf_keras.layers.Dense(d, name="mlp_out", kernel_regularizer=self.kernel_regularizer)
        super().build(input_shape)

    @property
    def omega(self):
        return tf.exp(self.log_omega)

    def call(self, grouped, mask=None, ages=None):
        shape = tf.shape(grouped)
        batch, groups, length = shape[0], shape[1], shape[2]
        d = grouped.shape[-1]
        if mask is None:
            mask = tf.ones([batch, groups, length], tf.bool)
        mask = tf.cast(mask, tf.bool)
        x = grouped * tf.cast(mask, grouped.dtype)[..., None]  # [B, s, L, d]
        pos = tf.range(length)
        lower = pos[:, None] > pos[None, :]  # [L, L], i > j
        if self.use_time_gaps:
            if ages is None:
                raise ValueError("use_time_gaps=True needs ages [B, s, L]")
            ages = tf.cast(ages, grouped.dtype)
            gaps = ages[..., None, :] - ages[..., :, None]  # t_i − t_j = age_j − age_i, [B, s, L(i), L(j)]
            p_mat = decay_matrix(self.omega, gaps, tf.broadcast_to(lower, tf.shape(gaps)))  # [B, s, p, L, L]
            a = tf.einsum("bgkij,bgid->bgkjd", p_mat, x)
        else:
            gaps = tf.cast(pos[:, None] - pos[None, :], grouped.dtype)
            p_mat = decay_matrix(self.omega, gaps, lower)  # [p, L, L]
            a = tf.einsum("kij,bgid->bgkjd", p_mat, x)  # a_j = Σ_i P_ij x_i, [B, s, p, L, d]
        wx = tf.einsum("bgje,gkde->bgkjd", x, self.w)  # W_g^k x_j, [B, s, p, L, d]
        coef = tf.reduce_sum(a * wx, axis=-1)  # Σ_i P_ij Q_ij, [B, s, p, L]
        r_k = tf.einsum("bgkj,bgjd->bgkd", coef, x)  # r_g^k, [B, s, p, d]
        r = self.mlp_out(self.mlp_hidden(tf.reshape(r_k, [batch, groups, self.num_masks * d])))
        nonempty = tf.reduce_any(mask, axis=-1)
        return r * tf.cast(nonempty, r.dtype)[..., None]

    def get_config(self):
        config = super().get_config()
        config.update(num_masks=self.num_masks, omega_min=self.omega_min, omega_max=self.omega_max,
                      learnable_decay=self.learnable_decay, use_time_gaps=self.use_time_gaps,
                      activation=tf_keras.activations.serialize(self.activation),
                      kernel_regularizer=tf_keras.regularizers.serialize(self.kernel_regularizer))
        return config
