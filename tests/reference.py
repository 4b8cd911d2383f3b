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


def matching_scores(layer, items, memory, similarity=False):
    """Eq. 2–4 for every (item j, group g), with the layer's weights; ``similarity`` adds x_j·c_g/√d."""
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
                p[b, j, g] = dense(layer.w_ph, hidden)[0] + (x @ c / np.sqrt(len(x)) if similarity else 0.0)
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


# ----------------------------------------------------------------------------- the assembled model (mtin_tf.model)
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def table_rows(keys, ids):
    """Row of each raw id in a table keyed by ``keys``: its rank among the sorted keys + 1 (0: padding, unknown)."""
    rank = {int(k): r + 1 for r, k in enumerate(sorted(int(k) for k in keys))}
    return np.array([rank.get(int(i), 0) for i in np.ravel(ids)], np.int64).reshape(np.shape(ids))


def item_embedding(model, config, item_ids, item_features, ids):
    """x_j = W_e f_j + b_e (+ e_j); f_j = 0 for padding and unknown ids. Returns (x, known, this lookup's λ‖e‖²)."""
    layer = model.get_layer("item_embedding")
    position = {int(k): n for n, k in enumerate(item_ids)}
    ids = np.asarray(ids)
    known = np.array([int(i) in position for i in ids.ravel()], bool).reshape(ids.shape)
    f = np.zeros(ids.shape + (item_features.shape[1],))
    for index in zip(*np.nonzero(known)):
        f[index] = item_features[position[int(ids[index])]]
    x = dense(layer.projection, f)
    l2 = 0.0
    if config.use_id_embedding:
        e = layer.id_embedding.numpy().astype(np.float64)[table_rows(item_ids, ids)]
        x = x + e
        l2 = config.l2 * np.sum(e[known] ** 2) / ids.shape[0]  # the rows of real items, averaged over the batch
    return x, known, l2


def interest_branch(layer, config, items, known, times, now, memory):
    """One InterestBranch: routing on σ(p − p̄) (Algorithm 1), gates over their group's mean, eq. 5–7 on each
    group, eq. 8–10 on the memory rows, aggregation, u = memory + c. Returns (rows u, weights w, assignment)."""
    s = config.num_groups
    ages = np.maximum(now[:, None] - times, 0) / config.time_scale
    gate = None
    if config.use_routing:
        p = matching_scores(layer.routing, items, memory, config.routing_similarity)  # [B, L, s]
        offset = np.zeros(len(p))
        if config.routing_center:  # p̄: the mean over the real (item, group) pairs of the history
            offset = np.array([p[b][known[b]].mean() if known[b].any() else 0.0 for b in range(len(p))])
        matching = sigmoid(p - offset[:, None, None])
        router = route_parallel if config.parallel_routing else route
        assign = router(matching, known, config.routing_iterations, config.routing_epsilon, config.routing_base)
        gate = np.zeros(assign.shape)
        for b, j in zip(*np.nonzero(assign >= 0)):
            members = assign[b] == assign[b, j]
            own = matching[b, members, assign[b, j]]  # the gates of j's group, σ(p_{S_i←i} − p̄)
            gate[b, j] = matching[b, j, assign[b, j]] / own.mean()
    else:
        assign = np.where(known, 0, -1)
    grouped, mask = group_items(assign, items, s)
    grouped_ages = group_items(assign, ages, s)[0] if config.use_time_gaps else None
    grouped_gate = group_items(assign, gate, s)[0] if gate is not None else None
    r = temporal_mask(layer.temporal, grouped, mask, grouped_ages, grouped_gate, config.temporal_self)
    h, weights = interest_mask(layer.interest, memory, r, config.interest_tau, mask.any(-1))
    if config.aggregation == "sum":
        c = r + h
    else:
        c = dense(layer.aggregate.combine, np.concatenate([r, h], -1))
        if config.aggregation == "concat_pool":
            c = c + r + h
    return memory + c, weights, assign


def interest_readout(layer, kind, rows, candidate):
    """Section 4.4: "paper" MLP([Σ_p u_p, x_e]); "attention" MLP([q, x_e, q ⊙ x_e]) with
    q = Σ_p softmax_p(u_p·x_e/√d) u_p; "target" the same with DIN's activation unit
    softmax_p(MLP_σ([u_p, x_e, u_p − x_e, u_p ⊙ x_e])) in place of the dot product."""
    if kind == "paper":
        head = np.concatenate([rows.sum(1), candidate], -1)
    else:
        if kind == "target":
            cand = np.broadcast_to(candidate[:, None], rows.shape)
            unit = np.concatenate([rows, cand, rows - cand, rows * cand], -1)
            logits = dense(layer.unit_out, sigmoid(dense(layer.unit_hidden, unit)))[..., 0]
        else:
            logits = np.einsum("bpd,bd->bp", rows, candidate) / np.sqrt(rows.shape[-1])
        a = np.exp(logits - logits.max(1, keepdims=True))
        q = np.einsum("bp,bpd->bd", a / a.sum(1, keepdims=True), rows)
        head = np.concatenate([q, candidate, q * candidate], -1)
    return dense(layer.out, relu(dense(layer.hidden, head)))[:, 0]


def regularised_kernels(model, config):
    """Every weight under λ‖·‖² (eq. 12): W_e, and each branch's and readout's dense kernels, W_g^k and W_h."""
    kernels = [model.get_layer("item_embedding").projection.kernel]
    for name in ("positive", "negative"):
        branch = model.get_layer(f"{name}_branch")
        if config.use_routing:
            kernels += [getattr(branch.routing, w).kernel for w in ("w_v", "w_u", "w_s", "w_pl_x", "w_pl_c", "w_ph")]
        kernels += [branch.temporal.w, branch.temporal.mlp_hidden.kernel, branch.temporal.mlp_out.kernel,
                    branch.interest.w_h]
        if config.aggregation != "sum":
            kernels.append(branch.aggregate.combine.kernel)
        readout = model.get_layer(f"{name}_readout")
        kernels += [readout.hidden.kernel, readout.out.kernel]
    return kernels


def click_level(layer, x, last):
    """mtin_tf.layers.ClickLevel on the histories of batch ``x``, row by row: the K = ``last`` latest real items of
    both histories (by time, a click before a browse of the same second), ρ = (clicks + 1) / (n + 2), and
    w · [logit ρ, n / K] + b with the layer's weights → [B]."""
    kernel, bias = (w.numpy().astype(np.float64) for w in layer.dense.weights)
    out = []
    for b in range(len(x["user_id"])):
        events = []  # (-time, position in [clicked, browsed], clicked)
        for offset, (ids_key, times_key, clicked) in enumerate((("clicked_item_ids", "clicked_timestamps", 1),
                                                                 ("browsed_item_ids", "browsed_timestamps", 0))):
            length = len(x[ids_key][b])
            for j in range(length):
                if x[ids_key][b][j] > 0:
                    events.append((-int(x[times_key][b][j]), offset * length + j, clicked))
        latest = sorted(events)[:last]
        n, c = len(latest), sum(e[2] for e in latest)
        rho = (c + 1.0) / (n + 2.0)
        out.append(np.log(rho / (1 - rho)) * kernel[0, 0] + n / last * kernel[1, 0] + bias[0])
    return np.array(out)


def mtin(model, config, x, labels, item_ids, item_features, user_ids):
    """The MTIN model of mtin_tf.model.build_mtin on a batch ``x`` (model inputs, raw ids), from the model's weights:
    ŷ = α·P(x_e|H_pos) + β·P(x_e|H_neg) (+ b_item) (+ the click level) and eq. 12's loss, the mean sigmoid
    cross-entropy plus λ on the kernels, the memory rows a batch uses (mean over the batch) and the id-embedding rows
    each lookup uses.

    Returns {logit, positive, negative, assignment (of the clicked history), group_weights, cross_entropy,
    regularisation, loss}."""
    assert config.activation == "relu"
    embed = lambda ids: item_embedding(model, config, item_ids, item_features, ids)
    l2 = config.l2 * sum(np.sum(k.numpy().astype(np.float64) ** 2) for k in regularised_kernels(model, config))
    now = np.asarray(x["timestamp"])
    candidate, _, id_l2 = embed(x["item_id"])
    l2 += id_l2
    out = {}
    for name, (ids_key, times_key) in zip(("positive", "negative"), (("clicked_item_ids", "clicked_timestamps"),
                                                                      ("browsed_item_ids", "browsed_timestamps"))):
        table = model.get_layer(f"{name}_memory")
        residual = table.memory.numpy().astype(np.float64)[table_rows(user_ids, x["user_id"])]  # [B, s, d]
        l2 += config.memory_row_l2 * np.mean(np.sum(residual ** 2, axis=(1, 2)))
        memory = residual
        if config.pretrain_memory and config.memory_anchors:  # + the mean embedding of each row's past anchors
            rows_of_users = table_rows(user_ids, x["user_id"])
            anchors, anchor_known, id_l2 = embed(table.anchors.numpy()[rows_of_users])
            l2 += id_l2
            anchor_known = anchor_known & (table.anchor_times.numpy()[rows_of_users] < now[:, None, None])
            count = anchor_known.sum(-1, keepdims=True)
            memory = residual + np.where(count > 0, (anchors * anchor_known[..., None]).sum(2) / np.maximum(count, 1),
                                         0.0)
        items, known, id_l2 = embed(x[ids_key])
        l2 += id_l2
        rows, weights, assign = interest_branch(model.get_layer(f"{name}_branch"), config, items, known,
                                                np.asarray(x[times_key]), now, memory)
        out[name] = interest_readout(model.get_layer(f"{name}_readout"), config.readout, rows, candidate)
        if name == "positive":
            out["assignment"], out["group_weights"] = assign, weights
    combiner = model.get_layer("logit")
    logit = float(combiner.alpha.numpy()) * out["positive"] + float(combiner.beta.numpy()) * out["negative"]
    if config.use_item_bias:  # b_i, and λ‖b‖² over the whole vector
        bias = model.get_layer("item_bias").bias.numpy().astype(np.float64)
        logit = logit + bias[table_rows(item_ids, x["item_id"])]
        l2 += config.l2 * np.sum(bias ** 2)
    if config.click_level:  # the user's recent click level (no L2)
        logit = logit + click_level(model.get_layer("click_level"), x, config.click_level)
    y = np.asarray(labels, np.float64)
    cross_entropy = np.mean(np.maximum(logit, 0) - logit * y + np.log1p(np.exp(-np.abs(logit))))
    return {**out, "logit": logit, "cross_entropy": cross_entropy, "regularisation": l2, "loss": cross_entropy + l2}


# ----------------------------------------------------------------------------- baselines (mtin_tf.baselines)
def masked_mean(values, mask):
    """Mean over the True positions of axis 1, 0 where there is none (mtin_tf.layers.MaskedPooling("mean"))."""
    count = mask.sum(1)[:, None]
    return np.where(count > 0, (values * mask[..., None]).sum(1) / np.maximum(count, 1), 0.0)


def softmax(logits, mask=None):
    """Softmax over the last axis; with ``mask``, over the True entries only (rows with none: all 0)."""
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    top = np.max(logits, -1, keepdims=True)
    e = np.exp(logits - np.where(np.isfinite(top), top, 0.0))
    total = e.sum(-1, keepdims=True)
    return np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0)


def multi_head_attention(layer, query, value, mask):
    """tf_keras MultiHeadAttention (key = value, no dropout): per head, softmax(q·k/√h) over the allowed keys
    (``mask`` [B, T, S]); a query allowed no key attends uniformly to all (Keras adds −1e9 to every masked logit)."""
    def project(dense, x):  # EinsumDense "abc,cde->abde": [B, T, d] → [B, T, heads, h]
        return np.einsum("btd,dnh->btnh", x, dense.kernel.numpy()) + dense.bias.numpy()

    q, k, v = project(layer._query_dense, query), project(layer._key_dense, value), project(layer._value_dense, value)
    scores = np.einsum("btnh,bsnh->bnts", q / np.sqrt(q.shape[-1]), k)
    allowed = np.broadcast_to(mask[:, None], scores.shape)
    weights = np.where(allowed.any(-1, keepdims=True), softmax(scores, allowed), 1.0 / scores.shape[-1])
    out = np.einsum("bnts,bsnh->btnh", weights, v)
    return np.einsum("btnh,nhd->btd", out, layer._output_dense.kernel.numpy()) + layer._output_dense.bias.numpy()


def layer_norm(layer, x):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * layer.gamma.numpy() + layer.beta.numpy()


def lstm(layer, x, mask):
    """tf_keras LSTM (gates i, f, c, o; sigmoid and tanh), the state carried over masked steps: outputs [B, L, u]."""
    kernel, recurrent, bias = (w.numpy().astype(np.float64) for w in layer.weights)
    units = recurrent.shape[0]
    h, c = np.zeros((len(x), units)), np.zeros((len(x), units))
    out = np.zeros((len(x), x.shape[1], units))
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = (z[:, n * units:(n + 1) * units] for n in range(4))
        c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h_new = sigmoid(o) * np.tanh(c_new)
        keep = mask[:, t][:, None]
        h, c = np.where(keep, h_new, h), np.where(keep, c_new, c)
        out[:, t] = h
    return out


def graph_lstm(layer, x, known, times, time_scale):
    """mtin_tf.baselines.alpine.TemporalGraphLSTM, one history at a time: the state moves from each real item to the
    next real one scaled by the edge weight exp(−Δt / time_scale / τ); other slots repeat the last state."""
    kernel, recurrent, bias = (w.numpy().astype(np.float64) for w in (layer.kernel, layer.recurrent_kernel, layer.bias))
    tau = np.exp(float(layer.log_tau.numpy()))
    units = recurrent.shape[0]
    out = np.zeros((len(x), x.shape[1], units))
    for b in range(len(x)):
        h, c, previous = np.zeros(units), np.zeros(units), None
        for t in range(x.shape[1]):
            if known[b, t]:
                edge = 1.0 if previous is None else np.exp(-max(times[b, t] - times[b, previous], 0) / time_scale / tau)
                z = x[b, t] @ kernel + (edge * h) @ recurrent + bias
                i, f, g, o = (z[n * units:(n + 1) * units] for n in range(4))
                c = sigmoid(f) * edge * c + sigmoid(i) * np.tanh(g)
                h = sigmoid(o) * np.tanh(c)
                previous = t
            out[b, t] = h
    return out


def squash(z):
    sq = np.sum(z ** 2, -1, keepdims=True)
    return sq / (1 + sq) * z / np.sqrt(sq + 1e-9)


def baseline(model, name, config, x, item_ids, item_features, user_ids):
    """The logit [B] of baseline ``name`` (mtin_tf.baselines.BUILDERS) on model inputs ``x``, from its weights:
    the baseline's score plus the item bias b_i when config.use_item_bias."""
    score = _baseline_score(model, name, config, x, item_ids, item_features, user_ids)
    if config.use_item_bias:
        score = score + model.get_layer("item_bias").bias.numpy().astype(np.float64)[table_rows(item_ids,
                                                                                              x["item_id"])]
    return score


def _baseline_score(model, name, config, x, item_ids, item_features, user_ids):
    layer = model.get_layer
    embed = lambda ids: item_embedding(model, config, item_ids, item_features, ids)[:2]
    candidate, _ = embed(x["item_id"])
    if name in ("bpr", "ncf"):  # histories unused; a user embedding row per known user, row 0 for the others
        user = layer("user_embedding").memory.numpy().astype(np.float64)[table_rows(user_ids, x["user_id"])][:, 0]
        if name == "bpr":  # u·x_e + w·x_e
            return np.sum(user * candidate, -1) + dense(layer("feature_bias"), candidate)[:, 0]
        hidden = relu(dense(layer("ncf_mlp_1"), relu(dense(layer("ncf_mlp_0"), np.concatenate([user, candidate], -1)))))
        return dense(layer("neumf_out"), np.concatenate([user * candidate, hidden], -1))[:, 0]
    clicked, clicked_known = embed(x["clicked_item_ids"])
    browsed, browsed_known = embed(x["browsed_item_ids"])
    if name == "din":  # a_j = MLP([x_j, x_e, x_j − x_e, x_j ⊙ x_e]), softmax over real items, u = Σ_j a_j x_j
        attention = layer("target_attention")
        e = np.broadcast_to(candidate[:, None], clicked.shape)
        hidden = sigmoid(dense(attention.att_hidden, np.concatenate([clicked, e, clicked - e, clicked * e], -1)))
        a = softmax(dense(attention.att_out, hidden)[..., 0], clicked_known)
        interest = np.einsum("bl,bld->bd", a, clicked)
    elif name == "lstm":  # the mean of the LSTM's hidden states at the real items
        interest = masked_mean(lstm(layer("lstm"), clicked, clicked_known), clicked_known)
    elif name == "cnn":  # Conv1D (kernel 3, zero "same" padding, ReLU) over every slot, max over the real items
        conv = layer("conv")
        kernel, bias = conv.kernel.numpy(), conv.bias.numpy()
        padded = np.pad(clicked, ((0, 0), (1, 1), (0, 0)))
        out = relu(sum(padded[:, k:k + clicked.shape[1]] @ kernel[k] for k in range(3)) + bias)
        interest = np.where(clicked_known.any(1)[:, None],
                            np.where(clicked_known[..., None], out, -np.inf).max(1), 0.0)
    elif name == "atrank":  # behaviour spaces, one masked self-attention block, candidate attention
        seq = np.concatenate([dense(layer("click_space"), clicked), dense(layer("browse_space"), browsed)], 1)
        known = np.concatenate([clicked_known, browsed_known], 1)
        z = layer_norm(layer("norm1"), seq + multi_head_attention(layer("self_attention"), seq, seq,
                                                                   known[:, :, None] & known[:, None, :]))
        z = layer_norm(layer("norm2"), z + dense(layer("ffn_out"), relu(dense(layer("ffn_hidden"), z))))
        interest = multi_head_attention(layer("candidate_attention"), candidate[:, None], z, known[:, None, :])[:, 0]
    elif name == "mind":  # B2I capsule routing from the saved initial logits, ReLU layer, label-aware attention
        routing = layer("capsule_routing")
        u_hat = clicked @ routing.bilinear.numpy()
        logits = np.broadcast_to(routing.initial_logits.numpy(), (len(clicked),) + routing.initial_logits.shape)
        for i in range(routing.iterations):
            w = softmax(np.swapaxes(logits, 1, 2)).swapaxes(1, 2) * clicked_known[:, None, :]  # over interests
            capsules = squash(np.einsum("bkl,ble->bke", w, u_hat))
            logits = logits + np.einsum("bke,ble->bkl", capsules, u_hat)
        interests = relu(dense(layer("interest_layer"), capsules))
        a = softmax(layer("label_aware_attention").power * np.einsum("bkd,bd->bk", interests, candidate))
        interest = np.einsum("bk,bkd->bd", a, interests)
    elif name == "thacil":  # forward + backward self-attention, equal-count blocks, item- then block-level attention
        length = clicked.shape[1]
        pair = clicked_known[:, :, None] & clicked_known[:, None, :]
        before = np.arange(length)[None, :] <= np.arange(length)[:, None]  # [i, j]: j ≤ i
        z = layer_norm(layer("temporal_norm"), clicked
                       + multi_head_attention(layer("forward_attention"), clicked, clicked, pair & before)
                       + multi_head_attention(layer("backward_attention"), clicked, clicked, pair & before.T))
        att = layer("hierarchical_attention")
        interest = np.zeros_like(candidate)
        for b in range(len(z)):
            real = [j for j in range(length) if clicked_known[b, j]]
            pooled, logits = [], []
            for w in range(config.num_groups):
                members = [j for k, j in enumerate(real) if config.num_groups * k // len(real) == w]
                if not members:
                    continue
                e = [dense(att.item_score, np.tanh(dense(att.item_key, z[b, j]) + dense(att.item_query, candidate[b])))
                     for j in members]
                a = softmax(np.concatenate(e))
                pooled.append(sum(a_j * z[b, j] for a_j, j in zip(a, members)))
                logits.append(dense(att.block_score, np.tanh(dense(att.block_key, pooled[-1])
                                                             + dense(att.block_query, candidate[b]))))
            if pooled:
                interest[b] = sum(beta * p for beta, p in zip(softmax(np.concatenate(logits)), pooled))
    elif name == "alpine":  # graph LSTMs, candidate readouts, + user memory on the interest side, two similarities
        memory = layer("user_embedding").memory.numpy().astype(np.float64)[table_rows(user_ids, x["user_id"])][:, 0]
        similarities = []
        for side, items, known, times in (("interest", clicked, clicked_known, x["clicked_timestamps"]),
                                          ("uninterest", browsed, browsed_known, x["browsed_timestamps"])):
            states = graph_lstm(layer(f"{side}_graph_lstm"), items, known, np.asarray(times), config.time_scale)
            readout = layer(f"{side}_readout")
            logits = np.einsum("blu,bu->bl", states, dense(readout.query, candidate)) / np.sqrt(states.shape[-1])
            r = np.einsum("bl,blu->bu", softmax(logits, known), states)
            if side == "interest":
                r = r + memory
            similarities.append(np.sum(r * dense(layer(f"{side}_projection"), candidate), -1))
        return dense(layer("similarity_out"), np.stack(similarities, -1))[:, 0]
    else:
        raise ValueError(f"no reference for baseline {name!r}")
    # The shared head: MLP([h, mean browsed, x_e, h ⊙ x_e])
    head = np.concatenate([interest, masked_mean(browsed, browsed_known), candidate, interest * candidate], -1)
    return dense(layer("mlp_out"), relu(dense(layer("mlp_0"), head)))[:, 0]
