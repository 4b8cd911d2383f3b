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
    """p parallel temporal masks over each interest group, then an MLP: the group representations r_g (eq. 5–7).

    For group g and mask k, with i, j items **of the same group** and i − j their distance within the group (time
    order):
      eq. 5:  Q_ij = x_i^T W_g^k x_j                       W_g^k ∈ R^{d×d}, one per (group, mask)
      eq. 6:  P_ij = exp(−(i − j) ω_k) for i > j, else 0    ω_k > 0, one time scale per mask
      eq. 7:  m_i = Σ_j P_ij Q_ij x_j;  r_g^k = Σ_i m_i;  r_g = MLP([r_g^1, ..., r_g^p])   r: [B, s, d]
    (B batch, L history length, s groups, d embedding size, p parallel masks.)

    Computed on the history as it is, without packing the groups: r_g^k = Σ_{j ∈ g} (Σ_i P_ij Q_ij) x_j, where P_ij
    is 0 unless i and j share a group, the same sum without the [L, L, d] tensor M. Each item is multiplied by its own
    group's W_g^k only (mtin_tf.layers.grouped_matmul), so eq. 5 costs p·d² per routed item, not s·p·d² per slot as
    it would over groups padded to L. The pair sum is taken as Σ_i P_ij Q_ij = a_j^T (W_{g_j}^k x_j) with the decay
    sums a_j = Σ_i P_ij x_i, computed over chunks of ``chunk_size`` positions with a running state per (chunk,
    group) for pairs across chunks (``_decay_sums``): exact, and linear in L where the [L, L] form is quadratic.

    Args:
      num_groups: s, the number of groups (one W_g^k per group and mask).
      num_masks: p, the number of parallel masks (time scales ω_k).
      omega_min, omega_max: the range over which the ω_k start, log-spaced (0 < omega_min ≤ omega_max).
      learnable_decay: ω_k trainable (default); False keeps them fixed at their start.
      use_time_gaps: replace the in-group distance i − j by the time gap t_i − t_j (from ``ages``, already scaled).
      include_self: P_ii = 1 (i ≥ j instead of eq. 6's strict i > j): with the strict mask a group of one item has
        r_g^k = 0 and r_g = MLP(0), the same constant for every such group.
      activation: the hidden activation of the MLP of eq. 7.
      kernel_regularizer: regularizer of W_g^k and the MLP's kernels, or None.
      chunk_size: C of ``_decay_sums``; changes the cost only (histories of a static length up to it are one chunk;
        a history of unknown static length is always one).
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      items: float [B, L, d], the history in time order.
      assignment: int32 [B, L], each item's group in [0, s), or −1 for items in no group (padding, unknown or
        unrouted items: they are ignored). This is the grouping itself, not a Keras mask: the layer takes no
        ``mask`` (padding is −1 here).
      ages: float [B, L], how long before the candidate each item was seen; needed with ``use_time_gaps``.
      weights: float [B, L] (optional), a factor on each item's term of r_g^k = Σ_j w_j (Σ_i P_ij Q_ij) x_j (MTIN's
        routing gate; linear, where scaling x_j itself would act as w_j³).

    Input shape:
      items (B, L, d); assignment, ages, weights (B, L).

    Output shape:
      (B, s, d): r; rows of empty groups are 0.

    Example:

    >>> import numpy as np
    >>> items = np.ones([2, 5, 4], np.float32)
    >>> assignment = np.array([[0, 0, 1, -1, -1], [2, 2, 2, 2, 2]], np.int32)
    >>> r = ParallelTemporalMask(num_groups=3, num_masks=2)(items, assignment=assignment)
    >>> r.shape
    TensorShape([2, 3, 4])
    >>> r[0, 2].numpy()  # group 2 of the first history is empty
    array([0., 0., 0., 0.], dtype=float32)
    """

    def __init__(self, num_groups=6, num_masks=8, omega_min=0.05, omega_max=2.0, learnable_decay=True,
                 use_time_gaps=False, include_self=False, activation="relu", kernel_regularizer=None, chunk_size=50,
                 **kwargs):
        super().__init__(**kwargs)
        self.chunk_size = int(chunk_size)
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
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
        live = tf.reduce_sum(member, axis=-1)  # [B, L]: 1 for items in a group
        x = items * live[..., None]  # items in no group → 0
        if self.use_time_gaps:
            if ages is None:
                raise ValueError("use_time_gaps=True needs ages [B, L]")
            value = -tf.cast(ages, items.dtype) * live  # t_j up to a constant: P_ij = exp(−(v_i − v_j) ω)
        else:
            value = tf.reduce_sum(tf.cumsum(member, axis=1) * member, axis=-1)  # 1-based position within the group
        # Eq. 5 for each item's own group: y^k_j = W_{g_j}^k x_j, [B, L, p, d].
        w = tf.reshape(tf.transpose(self.w, [0, 3, 1, 2]), [s, d, p * d])  # [s, d(e), p·d]: x_j @ w = W x_j
        y = tf.reshape(grouped_matmul(tf.reshape(x, [-1, d]), tf.reshape(assignment, [-1]), w), [batch, length, p, d])
        # Σ_i P_ij Q_ij = (Σ_i P_ij x_i)^T W x_j = a_j^T y_j: the decay sums a_j over same-group i > j (eq. 5–7).
        a = self._decay_sums(x, member, value, batch, length, d)  # [B, L, p, d]
        coef = tf.reduce_sum(a * y, axis=-1)  # Σ_i P^k_ij Q^k_ij, [B, L(j), p]
        if weights is not None:  # each item's term of r_g^k scaled once, linearly
            coef = coef * tf.cast(weights, coef.dtype)[..., None]
        r_k = tf.einsum("bjg,bjk,bjd->bgkd", member, coef, x)  # r_g^k, [B, s, p, d]
        r = self.mlp_out(self.mlp_hidden(tf.reshape(r_k, [batch, s, p * d])))
        nonempty = tf.reduce_sum(member, axis=1) > 0  # [B, s]
        return r * tf.cast(nonempty, r.dtype)[..., None]

    def _decay_sums(self, x, member, value, batch, length, d):
        """a^k_j = Σ_{i > j, g_i = g_j} exp(−(v_i − v_j) ω_k) x_i (i ≥ j with ``include_self``), [B, L, p, d].

        With a static L longer than C = ``chunk_size``, the history is cut into C' = ⌈L / C⌉ chunks. Pairs within a
        chunk are summed directly ([C, C] per chunk, not [L, L] per history). For pairs across chunks the decay
        factors through a reference per (chunk c, group g), ρ_{c,g} = v of g's last item in chunks ≤ c:
        exp(−(v_i − v_j) ω) = exp(−(v_i − ρ) ω) · exp(−(ρ − v_j) ω), both exponents ≥ 0 for j in chunk c and i after
        it (v grows along a group's items: the history is in time order), and a state per chunk is kept, from the
        last chunk back:
          S_c[g] = exp(−(ρ_{c+1,g} − ρ_{c,g}) ω) S_{c+1}[g] + Σ_{i ∈ chunk c+1, g_i = g} exp(−(v_i − ρ_{c,g}) ω) x_i
          a_j   += exp(−(ρ_{c(j),g_j} − v_j) ω) S_{c(j)}[g_j]                        S_c: [B, s, p, d]
        Work: B·L·(C + s)·p·d instead of B·L²·p·d.
        """
        s, p = self.num_groups, self.num_masks
        omega = self.omega
        static_length = x.shape[1]
        chunk = self.chunk_size if static_length is not None and static_length > self.chunk_size else None
        if chunk is None:  # one chunk: the whole history
            return self._within(x[:, None], member[:, None], value[:, None])[:, 0]
        chunks = -(-static_length // chunk)
        pad = chunks * chunk - static_length
        x = tf.reshape(tf.pad(x, [[0, 0], [0, pad], [0, 0]]), [batch, chunks, chunk, d])
        member = tf.reshape(tf.pad(member, [[0, 0], [0, pad], [0, 0]]), [batch, chunks, chunk, s])
        value = tf.reshape(tf.pad(value, [[0, 0], [0, pad]]), [batch, chunks, chunk])
        within = self._within(x, member, value)  # [B, C', C, p, d]
        # ρ_c [B, s]: the running maximum of v over each group's items (−∞ before its first, read as 0: every
        # exponent below is clipped at 0, and a group's state is only read by its own items, after ρ is real).
        chunk_max = tf.reduce_max(tf.where(member > 0, value[..., None], -np.inf), axis=2)  # [B, C', s]
        rho, running = [], chunk_max[:, 0]
        for c in range(chunks):
            running = tf.maximum(running, chunk_max[:, c])
            rho.append(tf.where(tf.math.is_finite(running), running, 0.0))
        own = tf.argmax(member, axis=-1, output_type=tf.int32)  # [B, C', C]; items in no group have x = 0
        live = tf.reduce_sum(member, axis=-1)  # [B, C', C]

        def decay(gap):  # exp(−max(gap, 0) ω_k): [..., p]
            return tf.exp(-tf.maximum(gap, 0.0)[..., None] * omega)

        state = None
        across = [tf.zeros_like(within[:, -1])]  # the last chunk has nothing after it
        for c in range(chunks - 2, -1, -1):
            nxt = c + 1
            rho_i = tf.gather(rho[c], own[:, nxt], batch_dims=1)  # ρ_{c, g_i} for i in chunk c+1, [B, C]
            weight = tf.einsum("bik,big->bgki", decay(value[:, nxt] - rho_i), member[:, nxt])  # [B, s, p, C]
            added = tf.reshape(tf.matmul(tf.reshape(weight, [batch, s * p, chunk]), x[:, nxt]), [batch, s, p, d])
            state = added if state is None else decay(rho[nxt] - rho[c])[..., None] * state + added
            rho_j = tf.gather(rho[c], own[:, c], batch_dims=1)  # [B, C]
            back = decay(rho_j - value[:, c]) * live[:, c, :, None]  # [B, C, p]
            across.append(tf.gather(state, own[:, c], batch_dims=1) * back[..., None])  # [B, C, p, d]
        a = within + tf.stack(across[::-1], axis=1)
        return tf.reshape(a, [batch, chunks * chunk, p, d])[:, :static_length]

    def _within(self, x, member, value):
        """The decay sums over pairs inside each chunk: x [B, C', C, d], member [B, C', C, s], value [B, C', C] →
        [B, C', C(j), p, d]."""
        size = tf.shape(x)[2]
        pos = tf.range(size)
        lower = pos[:, None] >= pos[None, :] if self.include_self else pos[:, None] > pos[None, :]
        pair = tf.einsum("bnig,bnjg->bnij", member, member) * tf.cast(lower, x.dtype)  # same group, i > j
        gap = tf.maximum(value[:, :, :, None] - value[:, :, None, :], 0.0)  # v_i − v_j, [B, C', C(i), C(j)]
        p_in = tf.exp(-gap[..., None] * self.omega) * pair[..., None]  # eq. 6, [B, C', C(i), C(j), p]
        return tf.einsum("bnijk,bnid->bnjkd", p_in, x)

    def get_config(self):
        config = super().get_config()
        config.update(num_groups=self.num_groups, num_masks=self.num_masks, omega_min=self.omega_min,
                      omega_max=self.omega_max, learnable_decay=self.learnable_decay,
                      use_time_gaps=self.use_time_gaps, include_self=self.include_self, chunk_size=self.chunk_size,
                      activation=keras.activations.serialize(self.activation),
                      kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer))
        return config
