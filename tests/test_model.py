"""The assembled MTIN model: outputs, variants, gradients, padding, empty histories, save/load, learning."""
import numpy as np
import pytest
import reference as ref
import tensorflow as tf
import tf_keras
from model_support import L, random_batch, raw_batch, small_config

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.model import BRANCHES, build_mtin, set_exposure_prior, user_encoder
from mtin_tf.retrieval_task import MultiTaskTraining, impression_share


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    item_ids = rng.permutation(np.arange(1, 41)) * 1000  # raw ids need not be dense or sorted
    return item_ids, rng.normal(size=(40, 6)).astype(np.float32), np.arange(1, 11) * 7


def test_outputs_shapes_and_ranges(table):
    config = small_config()
    model = build_mtin(config, *table)
    out = model(raw_batch(np.random.default_rng(1), table))
    # With the retrieval objective and its head (the defaults), also what it scores: the retrieval queries of the
    # clicked branch's rows (and the rows) and x_e; with the exposure prior (the default), each candidate's log
    # impression share.
    assert set(out) == {F.OUTPUT_LOGIT, F.OUTPUT_PROBABILITY, F.OUTPUT_GROUP_WEIGHTS, F.OUTPUT_GROUP_ASSIGNMENT,
                        F.OUTPUT_POSITIVE_ROWS, F.OUTPUT_RETRIEVAL_QUERIES, F.OUTPUT_CANDIDATE_EMBEDDING,
                        F.OUTPUT_EXPOSURE}
    assert out[F.OUTPUT_EXPOSURE].shape == (16,)
    assert out[F.OUTPUT_POSITIVE_ROWS].shape == out[F.OUTPUT_RETRIEVAL_QUERIES].shape == (16, 3, config.embedding_dim)
    assert out[F.OUTPUT_LOGIT].shape == (16,)
    prob = out[F.OUTPUT_PROBABILITY].numpy()
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-out[F.OUTPUT_LOGIT].numpy())), atol=1e-6)
    assert out[F.OUTPUT_GROUP_WEIGHTS].shape == (16, 3, 3)
    assert out[F.OUTPUT_GROUP_ASSIGNMENT].dtype == tf.int32 and out[F.OUTPUT_GROUP_ASSIGNMENT].shape == (16, L)


def test_empty_histories_and_unknown_ids_give_valid_scores(table):
    model = build_mtin(small_config(), *table)
    x = raw_batch(np.random.default_rng(2), table)
    x[F.USER_ID][:3] = 999_999  # unknown users
    x[F.ITEM_ID][:2] = 123_456_789  # unknown candidate
    out = model(x)
    assert np.isfinite(out[F.OUTPUT_LOGIT].numpy()).all()
    assert (out[F.OUTPUT_GROUP_ASSIGNMENT].numpy()[:2] == -1).all()  # the empty rows
    assert (out[F.OUTPUT_GROUP_WEIGHTS].numpy()[:2] == 0).all()


def test_padding_values_never_change_outputs(table):
    model = build_mtin(small_config(use_time_gaps=True, time_scale=100.0), *table)
    x = raw_batch(np.random.default_rng(3), table)
    y = {k: v.copy() for k, v in x.items()}
    rng = np.random.default_rng(4)
    for items_key, times_key in F.HISTORY_PAIRS:
        pad = x[items_key] == 0
        y[times_key] = np.where(pad, rng.integers(0, 10**9, size=pad.shape), x[times_key])
    a, b = model(x), model(y)
    for key in a:
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-6)


def test_history_items_unknown_to_the_table_are_ignored_like_padding(table):
    model = build_mtin(small_config(), *table)
    x = raw_batch(np.random.default_rng(5), table)
    # Append an unknown item after the last real clicked item of row 5: same output as without it.
    row = 5
    n = int((x[F.CLICKED_ITEMS][row] > 0).sum())
    if n == L:
        x[F.CLICKED_ITEMS][row, -1] = 0
        n = L - 1
    y = {k: v.copy() for k, v in x.items()}
    y[F.CLICKED_ITEMS][row, n] = 987_654_321
    y[F.CLICKED_TIMES][row, n] = 9_999
    a, b = model(x), model(y)
    np.testing.assert_allclose(a[F.OUTPUT_LOGIT].numpy(), b[F.OUTPUT_LOGIT].numpy(), atol=1e-6)


@pytest.mark.parametrize("variant", ["MTIN", "MTIN-I", "MTIN-P"])
def test_every_trainable_variable_gets_a_finite_nonzero_gradient(table, variant):
    # ε low enough that every group holds several items of this small batch (a pair is needed for ω's gradient).
    config = MTINConfig.variant(variant, embedding_dim=8, num_masks=2, max_history=L, tau=0.2, routing_epsilon=0.1,
                                num_groups=3 if variant != "MTIN-I" else 1, use_id_embedding=True)
    tf_keras.utils.set_random_seed(0)
    model = build_mtin(config, *table)
    x = raw_batch(np.random.default_rng(6), table)
    labels = tf.constant(np.random.default_rng(7).integers(0, 2, size=16), tf.float32)
    # The training objective of the defaults: eq. 12 + the retrieval term, whose score holds the exposure prior's
    # γ log q_j (so γ's gradient comes from that term alone, and needs log q set).
    shares = impression_share(x[F.ITEM_ID])
    set_exposure_prior(model, *shares)
    training = MultiTaskTraining(model, config.retrieval_weight, *shares)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = tf_keras.losses.BinaryCrossentropy(from_logits=True)(labels, out[F.OUTPUT_LOGIT]) + tf.add_n(
            model.losses) + training.retrieval_loss(out, x, labels)
    grads = tape.gradient(loss, model.trainable_variables)
    names = [v.name for v in model.trainable_variables]
    if variant == "MTIN-I":
        assert not any("routing" in n for n in names)
    else:
        assert any("routing" in n and "w_s" in n for n in names)
    for var, grad in zip(model.trainable_variables, grads):
        assert grad is not None, f"no gradient reaches {var.name}"
        g = tf.convert_to_tensor(grad).numpy()
        assert np.isfinite(g).all(), var.name
        assert np.abs(g).sum() > 0, f"zero gradient for {var.name}"


def test_item_and_user_tables_are_frozen_and_memory_is_trainable(table):
    model = build_mtin(small_config(), *table)
    trainable = {v.name for v in model.trainable_variables}
    assert not any("item_feature_table" in n or "keys" in n for n in trainable)
    assert any("positive_memory" in n for n in trainable) and any("negative_memory" in n for n in trainable)


def test_saved_model_round_trip_gives_identical_outputs(table, tmp_path):
    model = build_mtin(small_config(use_time_gaps=True), *table)
    x = raw_batch(np.random.default_rng(8), table)
    before = model(x)
    model.save(tmp_path / "mtin", save_format="tf")
    loaded = tf_keras.models.load_model(tmp_path / "mtin")
    after = loaded(x)
    for key in before:
        np.testing.assert_array_equal(before[key].numpy(), after[key].numpy())
    # The reloaded object is the Keras model with its custom layers, not a bare SavedModel (TFMA relies on this).
    assert any(type(layer).__name__ == "InterestBranch" for layer in loaded.layers)


def test_keras_v3_file_round_trip(table, tmp_path):
    model = build_mtin(small_config(), *table)
    x = raw_batch(np.random.default_rng(9), table)
    model.save(tmp_path / "mtin.keras")
    loaded = tf_keras.models.load_model(tmp_path / "mtin.keras")
    np.testing.assert_array_equal(model(x)[F.OUTPUT_LOGIT].numpy(), loaded(x)[F.OUTPUT_LOGIT].numpy())


def test_config_validation_and_variants():
    assert MTINConfig.variant("MTIN-I").num_groups == 1
    assert MTINConfig.variant("MTIN-P").pretrain_memory is False
    paper = MTINConfig()
    assert (paper.embedding_dim, paper.num_masks, paper.num_groups, paper.batch_size) == (128, 8, 6, 32)
    assert (paper.learning_rate, paper.l2, paper.max_history, paper.optimizer) == (1e-3, 1e-4, 50, "adam")
    with pytest.raises(ValueError, match="aggregation"):
        MTINConfig(aggregation="mean")
    with pytest.raises(ValueError, match="unknown MTINConfig fields"):
        MTINConfig.from_dict({"embeding_dim": 3})
    with pytest.raises(ValueError, match="variant"):
        MTINConfig.variant("MTIN-X")


def test_bad_tables_are_rejected():
    with pytest.raises(ValueError, match="positive"):
        build_mtin(small_config(), np.array([0, 1]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="unique"):
        build_mtin(small_config(), np.array([2, 2]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        build_mtin(small_config(), np.array([1, 2]), np.array([[0.0, np.nan], [1.0, 2.0]]))


def _branch_scores(model, x):
    """Each branch's P(x_e | H) and the item bias, recomputed by calling the model's own layers one by one."""
    embed = model.get_layer("item_embedding")
    candidate, _ = embed(x[F.ITEM_ID])
    scores = []
    for (items_key, times_key), memory_name, name in zip(
            F.HISTORY_PAIRS, ("positive_memory", "negative_memory"), ("positive", "negative")):
        memory = model.get_layer(memory_name)(x[F.USER_ID])
        if isinstance(memory, tuple):
            residual, anchor_ids, anchor_times = memory
            anchors, anchors_known = embed(anchor_ids)
            memory = model.get_layer(f"{memory_name}_anchored")([residual, anchors, anchor_times, x[F.TIMESTAMP]],
                                                                mask=anchors_known)
        items, known = embed(x[items_key])
        rows, _, _ = model.get_layer(f"{name}_branch")([items, x[times_key], x[F.TIMESTAMP], memory], mask=known)
        scores.append(model.get_layer(f"{name}_readout")([rows, candidate]).numpy())
    has_bias = "item_bias" in [layer.name for layer in model.layers]
    bias = model.get_layer("item_bias")(x[F.ITEM_ID]).numpy() if has_bias else 0
    return scores[0], scores[1], bias


def test_logit_is_alpha_positive_plus_beta_negative_plus_item_bias(table):
    model = build_mtin(small_config(learnable_branch_weights=True), *table)
    x = raw_batch(np.random.default_rng(2), table)
    combiner = model.get_layer(F.OUTPUT_LOGIT)
    combiner.alpha.assign(2.0)
    combiner.beta.assign(-3.0)
    model.get_layer("item_bias").bias.assign(np.random.default_rng(3).normal(size=41))
    positive, negative, bias = _branch_scores(model, x)
    assert np.abs(bias).max() > 0.1
    np.testing.assert_allclose(model(x)[F.OUTPUT_LOGIT].numpy(), 2 * positive - 3 * negative + bias, atol=1e-5)
    assert not any(w.trainable for w in build_mtin(small_config(), *table).get_layer(F.OUTPUT_LOGIT).weights)


@pytest.mark.parametrize("readout", ["paper", "attention", "target"])
def test_readout_matches_its_formula(table, readout):
    model = build_mtin(small_config(readout=readout), *table)
    readout_layer = model.get_layer("positive_readout")
    rng = np.random.default_rng(4)
    rows, cand = rng.normal(size=(5, 3, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    got = readout_layer([tf.constant(rows), tf.constant(cand)]).numpy()
    want = ref.interest_readout(readout_layer, readout, rows.astype(np.float64), cand.astype(np.float64))
    np.testing.assert_allclose(got, want, atol=1e-5)
    # N candidates per user against the same rows: [B, N, d] → [B, N], each equal to its own single-candidate score.
    many = rng.normal(size=(5, 4, 8)).astype(np.float32)
    together = readout_layer([tf.constant(rows), tf.constant(many)]).numpy()
    alone = np.stack([readout_layer([tf.constant(rows), tf.constant(many[:, n])]).numpy() for n in range(4)], 1)
    np.testing.assert_allclose(together, alone, atol=1e-6)


@pytest.mark.parametrize("overrides", [dict(readout="paper"), dict(readout="attention"), dict(readout="target"),
                                       dict(readout="paper", memory_anchors=0, use_item_bias=False),
                                       dict(use_routing=False), dict(click_level=0)],
                         ids=["paper", "attention", "target", "paper-free-rows", "MTIN-I", "no-click-level"])
def test_user_encoder_and_candidate_scorer_compose_to_the_fused_model(table, overrides):
    from mtin_tf.model import candidate_scorer, user_encoder
    from mtin_tf.signatures import candidates_scorer, row_scorer

    config = small_config(**overrides)
    model = build_mtin(config, *table)
    if config.click_level:  # away from its zero start, so that a path that drops it shows
        model.get_layer(F.OUTPUT_CLICK_LEVEL).dense.set_weights([np.array([[0.8], [-0.5]], np.float32),
                                                                  np.array([0.3], np.float32)])
    x = raw_batch(np.random.default_rng(7), table)
    fused = model(x)
    encoder, scorer = user_encoder(model), candidate_scorer(model)
    assert {w.ref() for w in encoder.weights + scorer.weights} <= {w.ref() for w in model.weights}  # shared
    users = {k: x[k] for k in F.USER_INPUT_NAMES}
    encoded = encoder(users)
    others = np.roll(x[F.ITEM_ID], 3)
    candidates = np.stack([x[F.ITEM_ID], others], axis=1)  # [B, 2]: the row's own candidate and another row's
    assert (F.OUTPUT_CLICK_LEVEL in encoded) == bool(config.click_level)
    split = scorer({**{key: encoded[key] for key in F.USER_STATE if key in encoded}, F.CANDIDATE_IDS: candidates})
    np.testing.assert_allclose(split[F.OUTPUT_LOGIT].numpy()[:, 0], fused[F.OUTPUT_LOGIT].numpy(), atol=1e-5)
    np.testing.assert_allclose(split[F.OUTPUT_LOGIT].numpy()[:, 1], model({**x, F.ITEM_ID: others})[F.OUTPUT_LOGIT],
                               atol=1e-5)
    np.testing.assert_allclose(encoded[F.OUTPUT_GROUP_WEIGHTS], fused[F.OUTPUT_GROUP_WEIGHTS], atol=1e-6)
    np.testing.assert_array_equal(encoded[F.OUTPUT_GROUP_ASSIGNMENT], fused[F.OUTPUT_GROUP_ASSIGNMENT])
    # The serving paths: per-row scoring with one encoding per distinct user row, and [U, N] candidate scoring.
    repeated = {k: np.repeat(v, 3, axis=0) for k, v in x.items()}
    repeated[F.ITEM_ID] = np.stack([x[F.ITEM_ID], others, x[F.ITEM_ID][::-1]], 1).reshape(-1)
    by_rows = row_scorer(model)({k: tf.constant(v) for k, v in repeated.items()})
    np.testing.assert_allclose(by_rows[F.OUTPUT_LOGIT], model(repeated)[F.OUTPUT_LOGIT], atol=1e-5)
    np.testing.assert_array_equal(by_rows[F.OUTPUT_GROUP_ASSIGNMENT], model(repeated)[F.OUTPUT_GROUP_ASSIGNMENT])
    by_user = candidates_scorer(model)({k: tf.constant(v) for k, v in users.items()}, tf.constant(candidates))
    np.testing.assert_allclose(by_user[F.OUTPUT_LOGIT], split[F.OUTPUT_LOGIT], atol=1e-6)


def test_distinct_users_finds_each_user_row_once():
    from mtin_tf.signatures import distinct_users

    x = random_batch(np.random.default_rng(8), batch=5)
    x[F.TIMESTAMP][3] += 1  # user row 3 differs from the others only in the impression time, row 4 only in a history
    x[F.BROWSED_TIMES][4, 0] += 1
    batch = {k: tf.constant(v[[0, 1, 0, 2, 1, 0, 3, 4]]) for k, v in x.items()}
    users, index = distinct_users(batch)
    index = index.numpy()
    assert len(users[F.USER_ID]) == 5 and users[F.CLICKED_ITEMS].shape == (5, L)
    assert index[0] == index[2] == index[5] and index[1] == index[4] and len(set(index[[0, 1, 3, 6, 7]])) == 5
    for b in range(8):
        for name in F.USER_INPUT_NAMES:
            np.testing.assert_array_equal(users[name].numpy()[index[b]], batch[name].numpy()[b], err_msg=name)


def test_tau_defaults_to_one_over_s_and_the_routing_metrics_report_the_dropped_share(table):
    config = MTINConfig(embedding_dim=8, num_masks=2, num_groups=4, max_history=L)
    assert config.interest_tau == 0.25
    model = build_mtin(config, *table)
    assert model.get_layer("positive_branch").interest.tau == pytest.approx(0.25)
    x = raw_batch(np.random.default_rng(5), table)
    y = {F.OUTPUT_LOGIT: np.zeros(16, np.float32)}
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    for branch in ("positive_branch", "negative_branch"):  # the routing metrics are logged and mean what they say
        assert 0.0 <= logs[f"{branch}_dropped"] <= 1.0
        assert 0.0 <= logs[f"{branch}_groups_used"] <= 4.0
    assignment = model(x)[F.OUTPUT_GROUP_ASSIGNMENT].numpy()
    real = x[F.CLICKED_ITEMS] > 0
    np.testing.assert_allclose(logs["positive_branch_dropped"], 1 - (assignment >= 0).sum() / real.sum(), atol=1e-6)


def test_id_embedding_l2_counts_the_rows_a_batch_uses(table):
    model = build_mtin(small_config(use_id_embedding=True, l2=1e-2), *table)
    x = raw_batch(np.random.default_rng(6), table)
    embed = model.get_layer("item_embedding")
    model(x)
    before = float(tf.add_n(model.losses))
    embed.id_embedding.assign(embed.id_embedding * 10.0)
    model(x)
    assert float(tf.add_n(model.losses)) > before + 1e-3  # the id embedding is regularised


def test_group_normalized_gates_average_one_per_group_and_ignore_their_scale():
    from mtin_tf.layers.branch import group_normalized

    gate = tf.constant([[0.2, 0.4, 0.9, 0.3, 0.0]])
    assignment = tf.constant([[0, 0, 1, -1, 1]])
    w = group_normalized(gate, assignment, 3).numpy()
    np.testing.assert_allclose(w, [[0.2 / 0.3, 0.4 / 0.3, 0.9 / 0.45, 0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(group_normalized(gate * 0.1, assignment, 3).numpy(), w, rtol=1e-5)


def test_gated_update_starts_from_the_memory_rows_and_scales_the_update_by_gamma(table):
    """gated_update: u_p = M_u[p] + γ·c_p with γ = 0 at first (rows = memory); γ = 1 is eq. 10 as written."""
    x = raw_batch(np.random.default_rng(5), table)
    config = dict(pretrain_memory=False, use_id_embedding=False, jit_routing=False)
    x = {k: v for k, v in x.items() if k in F.USER_INPUT_NAMES}
    gated = build_mtin(small_config(gated_update=True, **config), *table)
    plain = build_mtin(small_config(**config), *table)
    encoder = user_encoder(gated)
    memory = gated.get_layer("positive_memory")(x[F.USER_ID]).numpy()
    np.testing.assert_allclose(encoder(x)[F.OUTPUT_POSITIVE_ROWS].numpy(), memory, atol=1e-6)
    gate = gated.get_layer("positive_branch").update_gate
    for name in ("positive_branch", "negative_branch"):
        gated.get_layer(name).update_gate.assign(1.0)
    for layer in plain.layers:  # same weights, γ = 1: the same rows as the ungated branch
        source = gated.get_layer(layer.name)
        layer.set_weights([w for v, w in zip(source.weights, source.get_weights()) if "update_gate" not in v.name])
    np.testing.assert_allclose(encoder(x)[F.OUTPUT_POSITIVE_ROWS].numpy(),
                               user_encoder(plain)(x)[F.OUTPUT_POSITIVE_ROWS].numpy(), atol=1e-5)
    gate.assign(0.5)
    half = encoder(x)[F.OUTPUT_POSITIVE_ROWS].numpy()
    full = user_encoder(plain)(x)[F.OUTPUT_POSITIVE_ROWS].numpy()
    np.testing.assert_allclose(half, memory + 0.5 * (full - memory), atol=1e-5)


def test_large_tables_are_filled_by_chunks_with_the_callers_rows_and_fresh_draws():
    # More rows than one chunk of assign_rows (8192): the feature table is the caller's, row for row, and every chunk
    # of the id embedding is its own N(0, 0.01²) draw (an unseeded initializer called again repeats its values).
    from mtin_tf.layers.tables import ItemEmbedding
    n = 20_000
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n, 3)).astype(np.float32)
    ids = rng.permutation(n).astype(np.int64) + 1
    embed = ItemEmbedding(n, 3, 4, use_id_embedding=True, item_ids=ids, item_features=features)
    x, known = embed(tf.constant(ids[:5]))
    np.testing.assert_array_equal(embed.table.numpy(), features)
    e = embed.id_embedding.numpy()
    assert e.shape == (n + 1, 4) and 0.009 < e.std() < 0.011
    assert len(np.unique(e, axis=0)) == n + 1  # no two rows alike, across chunks too
    # The draw is the same whole (a replicated variable's initial value) as by chunks, and for any slice.
    from mtin_tf.layers.tables import NormalRows
    tf.random.set_seed(3)
    whole = np.asarray(NormalRows(n + 1, 4, 0.01))
    tf.random.set_seed(3)
    rows = NormalRows(n + 1, 4, 0.01)
    np.testing.assert_array_equal(rows[8000:8500], whole[8000:8500])
    np.testing.assert_array_equal(np.concatenate([rows[:8192], rows[8192:]]), whole)
    want = features[:5] @ embed.projection.kernel.numpy() + embed.projection.bias.numpy()
    rows = np.searchsorted(np.sort(ids), ids[:5]) + 1
    np.testing.assert_allclose(x.numpy(), want + e[rows], rtol=1e-5, atol=1e-6)
    assert known.numpy().all()


def test_a_table_read_from_an_npy_file_by_chunks_builds_the_same_model(tmp_path):
    from mtin_tf.layers.tables import NpyRows
    rng = np.random.default_rng(1)
    n = 20_000
    features = rng.normal(size=(n, 3)).astype(np.float32)
    np.save(tmp_path / "items.npy", features)
    rows = NpyRows(tmp_path / "items.npy")
    assert rows.shape == (n, 3) and len(rows) == n
    np.testing.assert_array_equal(rows[8190:8200], features[8190:8200])
    np.testing.assert_array_equal(np.asarray(rows), features)
    config = MTINConfig(embedding_dim=4, num_masks=2, num_groups=2, max_history=3)
    ids = np.arange(1, n + 1)
    model = build_mtin(config, ids, rows, np.arange(1, 4))
    np.testing.assert_array_equal(model.get_layer("item_embedding").table.numpy(), features)
    # What the file cannot be read as is said, with the file's name.
    np.save(tmp_path / "f64.npy", features.astype(np.float64))
    with pytest.raises(ValueError, match="f64.npy: need a 2-D C-order float32 array"):
        NpyRows(tmp_path / "f64.npy")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "items.npy").read_bytes()[:-100])
    with pytest.raises(ValueError, match="cut.npy: file ends before row"):
        build_mtin(config, ids, NpyRows(tmp_path / "cut.npy"), np.arange(1, 4))
    bad = features.copy()
    bad[12_345, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="NaN"):
        build_mtin(config, ids, NpyRows(tmp_path / "nan.npy"), np.arange(1, 4))


def test_routing_loss_tells_own_items_from_the_other_historys_in_training_only(table):
    """routing_contrast_loss against its formula on the model's own matching scores (eq. 4), added to the model's
    losses in training and not at inference, with a gradient that reaches the co-attention."""
    config = small_config(routing_loss=0.5, l2=0.0, use_id_embedding=False, memory_anchors=0)
    model = build_mtin(config, *table)
    x = raw_batch(np.random.default_rng(8), table)
    model(x, training=False)
    assert not model.losses
    model(x, training=True)
    losses = list(model.losses)
    assert len(losses) == 2  # one per branch

    def softplus(z):
        return np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0)

    embed = model.get_layer("item_embedding")
    want = []
    for (own_key, _), memory_name, branch_name, *_ in BRANCHES:
        memory = model.get_layer(memory_name)(x[F.USER_ID])
        routing = model.get_layer(branch_name).routing
        other_key = [k for (k, _), *_ in BRANCHES if k != own_key][0]
        parts = []
        for key, sign in ((own_key, -1.0), (other_key, 1.0)):
            items, known = embed(x[key])
            z = ref.matching_scores(routing, items.numpy(), memory.numpy()).max(-1)  # [B, L]
            parts.append(softplus(sign * z)[known.numpy()].mean())
        want.append(0.5 * sum(parts))
    np.testing.assert_allclose(sorted(float(v) for v in losses), sorted(want), rtol=1e-5)
    kernel = model.get_layer("positive_branch").routing.w_ph.kernel

    @tf.function  # as Keras's train step runs it
    def gradient():
        with tf.GradientTape() as tape:
            model(x, training=True)
            loss = tf.add_n(model.losses)
        return tape.gradient(loss, kernel)

    assert float(tf.reduce_max(tf.abs(gradient()))) > 0


def test_history_query_is_the_mapped_mean_of_the_known_clicked_items(table):
    """config.history_query: retrieval_queries [B, s + 1, d], rows 0..s-1 the head's u_p (I + W_r) and row s
    x̄ (I + W_h), x̄ the mean of the clicked history's item embeddings over its known ids (padding and ids unknown to
    the table left out), 0 for an empty history; the user encoder gives the same queries; retrieval_weight 0 turns it
    off (nothing would train W_h)."""
    config = small_config(history_query=True)
    model = build_mtin(config, *table)
    rng = np.random.default_rng(5)
    d, s = config.embedding_dim, config.num_groups
    w_r, w_h = (0.3 * rng.normal(size=(d, d)).astype(np.float32) for _ in range(2))
    model.get_layer("retrieval_head").kernel.assign(w_r)
    model.get_layer("history_query").kernel.assign(w_h)
    x = raw_batch(rng, table)
    x[F.CLICKED_ITEMS][0] = 0  # an empty history
    x[F.CLICKED_ITEMS][1, 0] = 123_456_789  # an id unknown to the table
    out = model(x)
    queries = out[F.OUTPUT_RETRIEVAL_QUERIES].numpy()
    assert queries.shape == (16, s + 1, d)
    rows = out[F.OUTPUT_POSITIVE_ROWS].numpy()
    np.testing.assert_allclose(queries[:, :s], rows + rows @ w_r, atol=1e-5)
    items, known, _ = ref.item_embedding(model, config, table[0], table[1], x[F.CLICKED_ITEMS])
    assert not known[0].any() and not known[1, 0]
    mean = ref.masked_mean(items, known)
    np.testing.assert_allclose(queries[:, s], mean + mean @ w_h, atol=1e-5)
    np.testing.assert_array_equal(queries[0, s], 0.0)
    encoded = user_encoder(model)({k: x[k] for k in F.USER_INPUT_NAMES})
    np.testing.assert_allclose(encoded[F.OUTPUT_RETRIEVAL_QUERIES].numpy(), queries, atol=1e-6)
    assert not MTINConfig(history_query=True, retrieval_weight=0.0).history_query


def test_the_users_retrieval_row_is_added_to_every_query_and_nothing_else(table):
    """config.retrieval_user_row: retrieval_queries = the head's u_p (I + W_r) (and the history query) + e_u, e_u the
    user's row of its own table (row 0, shared, for users unknown to it), starting at 0; the click logit does not
    read it; retrieval_weight 0 turns it off (nothing would train it)."""
    config = small_config(history_query=True, retrieval_user_row=True)
    known = np.asarray(table[2])  # sorted raw ids: user known[i] has row i + 1
    model = build_mtin(config, *table)
    rng = np.random.default_rng(6)
    x = raw_batch(rng, table)
    x[F.USER_ID][:] = rng.choice([*known, 77], size=len(x[F.USER_ID]))  # 77 is unknown to the model
    x[F.USER_ID][:2] = [77, known[2]]
    before = model(x)
    user_rows = model.get_layer("retrieval_user")
    assert not user_rows.memory.numpy().any()  # from 0: the queries start as without it
    e = rng.normal(size=user_rows.memory.shape).astype(np.float32)
    user_rows.memory.assign(e)
    after = model(x)
    row = np.array([int(np.searchsorted(known, u)) + 1 if u in known else 0 for u in x[F.USER_ID]])
    np.testing.assert_allclose(after[F.OUTPUT_RETRIEVAL_QUERIES].numpy(),
                               before[F.OUTPUT_RETRIEVAL_QUERIES].numpy() + e[row], atol=1e-5)
    assert after[F.OUTPUT_RETRIEVAL_QUERIES].shape[1] == config.num_groups + 1
    for key in (F.OUTPUT_LOGIT, F.OUTPUT_POSITIVE_ROWS):
        np.testing.assert_array_equal(after[key].numpy(), before[key].numpy())
    encoded = user_encoder(model)({k: x[k] for k in F.USER_INPUT_NAMES})
    np.testing.assert_allclose(encoded[F.OUTPUT_RETRIEVAL_QUERIES].numpy(),
                               after[F.OUTPUT_RETRIEVAL_QUERIES].numpy(), atol=1e-6)
    alone = build_mtin(small_config(retrieval_head=False, retrieval_user_row=True), *table)
    alone.get_layer("retrieval_user").memory.assign(e)
    out = alone(x)  # without the head the queries are the rows + e_u
    np.testing.assert_allclose(out[F.OUTPUT_RETRIEVAL_QUERIES].numpy(),
                               out[F.OUTPUT_POSITIVE_ROWS].numpy() + e[row], atol=1e-5)
    assert not MTINConfig(retrieval_user_row=True, retrieval_weight=0.0).retrieval_user_row
