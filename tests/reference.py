"""Plain NumPy references of the paper's equations, written as literally as possible (loops, no vectorisation).

Dense layers follow the Keras convention y = x @ kernel + bias.
"""
import numpy as np


def relu(x):
    return np.maximum(x, 0.0)


def dense(layer, x):
    kernel, *bias = [w.numpy().astype(np.float64) for w in layer.weights]
    return x @ kernel + (bias[0] if bias else 0.0)


def route(p, mask, iterations, epsilon, base):
    """Algorithm 1, one history at a time, items visited in order, groups recomputed at every step."""
    batch, length, groups = p.shape
    assign = -np.ones((batch, length), dtype=np.int64)
    for b in range(batch):
        for _ in range(iterations):
            for j in range(length):
                if not mask[b, j]:
                    continue
                xi = np.ones(groups)
                for g in range(groups):
                    members = [i for i in range(length) if assign[b, i] == g]
                    if members:
                        avg = np.mean([p[b, i, g] for i in members])
                        xi[g] = np.log(base + max(avg - p[b, j, g], 0.0)) / np.log(base)
                pd = p[b, j] / xi
                g_star = int(np.argmax(pd))  # first index on ties
                if g_star != assign[b, j] and pd[g_star] > epsilon:
                    assign[b, j] = g_star
    return assign


def route_parallel(p, mask, iterations, epsilon, base):
    """The data-parallel approximation: every item of a pass sees the groups as they stood when the pass began."""
    batch, length, groups = p.shape
    assign = -np.ones((batch, length), dtype=np.int64)
    for b in range(batch):
        for _ in range(iterations):
            before = assign[b].copy()
            for j in range(length):
                if not mask[b, j]:
                    continue
                xi = np.ones(groups)
                for g in range(groups):
                    members = [i for i in range(length) if before[i] == g]
                    if members:
                        avg = np.mean([p[b, i, g] for i in members])
                        xi[g] = np.log(base + max(avg - p[b, j, g], 0.0)) / np.log(base)
                pd = p[b, j] / xi
                g_star = int(np.argmax(pd))
                if g_star != before[j] and pd[g_star] > epsilon:
                    assign[b, j] = g_star
    return assign


def matching_scores(layer, items, memory):
    """Eq. 2–4 for every (item j, group g), with the layer's weights."""
    batch, length, _ = items.shape
    groups = memory.shape[1]
    p = np.zeros((batch, length, groups))
    for b in range(batch):
        for j in range(length):
            for g in range(groups):
                x, c = items[b, j], memory[b, g]
                s = dense(layer.w_s, relu(dense(layer.w_v, x) + dense(layer.w_u, c)))  # eq. 2
                x_hat, c_hat = s * x, s * c  # eq. 3
                hidden = relu(dense(layer.w_pl_x, x_hat) + dense(layer.w_pl_c, c_hat))  # eq. 4 ([x̂, ĉ] split)
                p[b, j, g] = dense(layer.w_ph, hidden)[0]
    return p


def group_items(assign, values, groups):
    """Line 13: each group's items in time order, packed to the front. values [B, L, ...] → [B, s, L, ...], mask."""
    batch, length = assign.shape
    out = np.zeros((batch, groups) + values.shape[1:])
    mask = np.zeros((batch, groups, length), dtype=bool)
    for b in range(batch):
        for g in range(groups):
            members = [j for j in range(length) if assign[b, j] == g]
            for q, j in enumerate(members):
                out[b, g, q] = values[b, j]
                mask[b, g, q] = True
    return out, mask


def temporal_mask(layer, grouped, mask, ages=None, weights=None, include_self=False):
    """Eq. 5–7 literally: Q, P, M = P∘Q, m_i = Σ_j M_ij x_j, r^k = Σ_i m_i, r = MLP(concat_k r^k).

    include_self: P_ii = 1 (i ≥ j) instead of eq. 6's i > j; weights [B, s, L]: a factor on item j's terms."""
    w = layer.w.numpy().astype(np.float64)
    omega = np.exp(layer.log_omega.numpy().astype(np.float64))
    batch, groups, length, d = grouped.shape
    r = np.zeros((batch, groups, d))
    for b in range(batch):
        for g in range(groups):
            idx = [q for q in range(length) if mask[b, g, q]]
            if not idx:
                continue
            x = grouped[b, g, idx]  # [l, d]
            n = len(idx)
            parts = []
            for k in range(len(omega)):
                r_k = np.zeros(d)
                for i in range(n):
                    m_i = np.zeros(d)
                    for j in range(n):
                        if i > j or (include_self and i == j):
                            gap = (ages[b, g, idx[j]] - ages[b, g, idx[i]]) if ages is not None else i - j
                            p_ij = np.exp(-gap * omega[k])  # eq. 6
                        else:
                            p_ij = 0.0
                        q_ij = x[i] @ w[g, k] @ x[j]  # eq. 5
                        w_j = 1.0 if weights is None else weights[b, g, idx[j]]
                        m_i += w_j * p_ij * q_ij * x[j]  # eq. 7
                    r_k += m_i
                parts.append(r_k)
            hidden = relu(dense(layer.mlp_hidden, np.concatenate(parts)))
            r[b, g] = dense(layer.mlp_out, hidden)
    return r


def interest_mask(layer, memory, groups_r, tau, group_mask=None):
    """Eq. 8–10: w_{p,g} = softmax_g(c_p^T W_h r_g) over non-empty groups, ŵ = 1[w > τ], h_p = Σ_g ŵ r_g."""
    w_h = layer.w_h.numpy().astype(np.float64)
    batch, s, d = memory.shape
    h = np.zeros((batch, s, d))
    weights = np.zeros((batch, s, groups_r.shape[1]))
    for b in range(batch):
        live = [g for g in range(groups_r.shape[1]) if group_mask is None or group_mask[b, g]]
        for p_ in range(s):
            if not live:
                continue
            logits = np.array([memory[b, p_] @ w_h @ groups_r[b, g] for g in live])
            e = np.exp(logits - logits.max())
            for g, wv in zip(live, e / e.sum()):
                weights[b, p_, g] = wv
                if wv > tau:
                    h[b, p_] += groups_r[b, g]
    return h, weights
