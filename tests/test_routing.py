"""Algorithm 1 and eq. 2–4 against the plain NumPy references in tests/reference.py (under tf_keras, and under Keras 3
in the subprocess of tests/test_layers_keras.py)."""
import zlib

import numpy as np
import pytest
import reference as ref
import tensorflow as tf

from mtin_tf.layers import InterestGroupRouting, grouped_matmul, route_interest_groups


def _random_case(seed, batch=12, length=9, groups=4, ties=True):
    rng = np.random.default_rng(seed)
    if ties:  # half-integers: many exact ties, exact arithmetic in float64
        p = rng.integers(-4, 7, size=(batch, length, groups)) / 2.0
    else:
        p = rng.normal(size=(batch, length, groups))
    lengths = rng.integers(0, length + 1, size=batch)
    lengths[0], lengths[1] = 0, length  # full padding, full history
    mask = np.arange(length)[None, :] < lengths[:, None]
    return p, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("iterations,epsilon,base", [(1, 0.0, 2.0), (3, 0.0, 2.0), (4, 0.5, 3.0), (2, -1.0, 1.5)])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_sequential_routing_matches_algorithm_1(seed, iterations, epsilon, base, jit_compile):
    p, mask = _random_case(seed)
    want = ref.route(p, mask, iterations, epsilon, base)
    got = route_interest_groups(tf.constant(p), tf.constant(mask), iterations=iterations, epsilon=epsilon, base=base,
                                jit_compile=jit_compile)
    assert got.dtype == tf.int32
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_sequential_routing_float32_continuous_scores(jit_compile):
    p, mask = _random_case(7, batch=16, length=20, groups=6, ties=False)
    p = 1 / (1 + np.exp(-p))  # what the layer routes: matching probabilities
    want = ref.route(p.astype(np.float32).astype(np.float64), mask, 3, 0.1, 2.0)
    got = route_interest_groups(tf.constant(p, tf.float32), mask, iterations=3, epsilon=0.1, base=2.0,
                                jit_compile=jit_compile)
    np.testing.assert_array_equal(got.numpy(), want)


def test_routing_stops_after_a_pass_that_moves_nothing_and_at_the_longest_history():
    # Interleaved padding (unknown items) and a long padded tail: the tail is never visited, results unchanged.
    p, mask = _random_case(4, batch=8, length=12, groups=3)
    mask[:, 9:] = False
    mask[2, 3] = False
    for iterations in (1, 2, 10, 50):
        want = ref.route(p, mask, iterations, 0.0, 2.0)
        got = route_interest_groups(tf.constant(p), mask, iterations=iterations, epsilon=0.0, base=2.0)
        np.testing.assert_array_equal(got.numpy(), want)


def test_padding_is_never_assigned_and_all_below_epsilon_stays_unassigned():
    p, mask = _random_case(3)
    got = route_interest_groups(tf.constant(p), mask, iterations=3, epsilon=0.0, base=2.0).numpy()
    assert (got[~mask] == -1).all()
    assert (got[mask] >= 0).any()
    # Every score below ε: no item is ever assigned.
    none = route_interest_groups(tf.constant(p), mask, iterations=3, epsilon=float(p.max()) + 1.0, base=2.0)
    assert (none.numpy() == -1).all()


def test_order_matters_within_a_pass():
    # Item 2 is seen against the groups item 1 just changed; a simultaneous (parallel) pass routes differently.
    p = np.array([[[2.0, 1.0], [2.0, 1.9]]])
    mask = np.ones((1, 2), bool)
    seq = route_interest_groups(tf.constant(p), mask, iterations=1, epsilon=0.0, base=2.0).numpy()
    np.testing.assert_array_equal(seq, ref.route(p, mask, 1, 0.0, 2.0))
    np.testing.assert_array_equal(seq, [[0, 0]])
    # If item 1 already sat in group 0 with a high mean, the discount sends item 2 elsewhere.
    p2 = np.array([[[9.0, 0.0], [1.0, 0.9]]])
    seq2 = route_interest_groups(tf.constant(p2), mask, iterations=1, epsilon=0.0, base=2.0).numpy()
    np.testing.assert_array_equal(seq2, ref.route(p2, mask, 1, 0.0, 2.0))
    np.testing.assert_array_equal(seq2, [[0, 1]])
    par = route_interest_groups(tf.constant(p2), mask, iterations=1, epsilon=0.0, base=2.0, parallel=True).numpy()
    np.testing.assert_array_equal(par, [[0, 0]])  # the approximation: both items saw empty groups


@pytest.mark.parametrize("seed", [0, 1])
def test_parallel_variant_matches_its_reference(seed):
    p, mask = _random_case(seed)
    want = ref.route_parallel(p, mask, 3, 0.0, 2.0)
    got = route_interest_groups(tf.constant(p), mask, iterations=3, epsilon=0.0, base=2.0, parallel=True)
    np.testing.assert_array_equal(got.numpy(), want)


def test_routing_rejects_bad_arguments():
    with pytest.raises(TypeError, match="floating"):
        route_interest_groups(tf.constant([[[1, 2]]]), [[True]])
    with pytest.raises(ValueError, match="base"):
        InterestGroupRouting(3, base=1.0)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_grouped_matmul_multiplies_each_row_by_its_own_group(jit_compile):
    rng = np.random.default_rng(0)
    for rows, groups, block in [(0, 2, 4), (1, 3, 4), (37, 3, 4), (100, 6, 8), (5, 2, 128)]:
        x, w = rng.normal(size=(rows, 5)), rng.normal(size=(groups, 5, 7))
        g = rng.integers(-1, groups, size=rows)
        g[:1] = groups - 1  # a row in the last group, whose blocks end the buffer
        want = np.stack([x[n] @ w[g[n]] if g[n] >= 0 else np.zeros(7) for n in range(rows)] or [np.zeros([0, 7])])
        fn = tf.function(lambda a, b, c: grouped_matmul(a, b, c, block=block), jit_compile=jit_compile)
        got = fn(tf.constant(x), tf.constant(g, tf.int32), tf.constant(w)).numpy()
        np.testing.assert_allclose(got, want.reshape(rows, 7), atol=1e-10)
    skipped = grouped_matmul(tf.ones([3, 5]), tf.constant([-1, -1, -1]), tf.ones([2, 5, 7]), block=4)
    np.testing.assert_array_equal(skipped.numpy(), np.zeros([3, 7]))  # no row in any group


@pytest.mark.parametrize("jit_compile", [False, True])
def test_grouped_matmul_gradients_equal_the_dense_product(jit_compile):
    rng = np.random.default_rng(1)
    x, w = tf.constant(rng.normal(size=(50, 5))), tf.constant(rng.normal(size=(3, 5, 7)))
    g = tf.constant(rng.integers(-1, 3, size=50), tf.int32)
    upstream = tf.constant(rng.normal(size=(50, 7)))

    def gradients(product):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            loss = tf.reduce_sum(product(x, w) * upstream)
        return [tf.convert_to_tensor(t) for t in tape.gradient(loss, [x, w])]

    def dense(x, w):  # every group's product, keep the own group's
        return tf.reduce_sum(tf.einsum("nk,skm->nsm", x, w) * tf.one_hot(g, 3, dtype=x.dtype)[..., None], 1)

    grouped = tf.function(lambda: gradients(lambda x, w: grouped_matmul(x, g, w, block=8)), jit_compile=jit_compile)
    for a, b in zip(grouped(), gradients(dense)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-10)


def _routing_layer_case(seed=0, batch=4, length=8, groups=3, d=6):
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(batch, length, d)).astype(np.float32)
    memory = rng.normal(size=(batch, groups, d)).astype(np.float32)
    mask = np.arange(length)[None, :] < np.array([0, 3, length, 5])[:, None]
    layer = InterestGroupRouting(groups, iterations=3, epsilon=0.1, base=2.0)
    layer([items, memory], mask=mask)  # creates every weight (the Dense sublayers build on their first call)
    # The weights from NumPy too (uniform in ±1, spread enough that ε = 0.45 drops some items): the same case whatever
    # tests ran before, under either Keras.
    assert len(layer.weights) == 11
    for variable in layer.weights:  # seeded by "w_v/kernel" etc.: the Kerases list and prefix weights differently
        name = "/".join((getattr(variable, "path", None) or variable.name).split(":")[0].split("/")[-2:])
        values = np.random.default_rng([seed, zlib.crc32(name.encode())]).uniform(-1, 1, size=variable.shape)
        variable.assign(values.astype(np.float32))
    return layer, items, memory, mask


def test_coattention_matching_scores_eq_2_to_4():
    layer, items, memory, mask = _routing_layer_case()
    out = layer([items, memory], mask=mask)
    want = ref.matching_scores(layer, items.astype(np.float64), memory.astype(np.float64))
    np.testing.assert_allclose(layer.matching_scores(items, memory).numpy(), want, atol=1e-5)  # every slot
    # In the layer only real items are scored (padding slots are 0), inside a graph and under XLA alike.
    for fn in (tf.function(lambda x, m, k: layer([x, m], mask=k)),
               tf.function(lambda x, m, k: layer([x, m], mask=k), jit_compile=True)):
        scores = fn(items, memory, mask)["scores"].numpy()
        np.testing.assert_allclose(scores[mask], want[mask], atol=1e-5)
    np.testing.assert_allclose(out["scores"].numpy()[mask], want[mask], atol=1e-5)
    assert (out["scores"].numpy()[~mask] == 0).all()


@pytest.mark.parametrize("jit_compile", [False, True])
def test_routing_layer_assigns_by_algorithm_1_and_gates_each_item_by_its_own_group(jit_compile):
    layer, items, memory, mask = _routing_layer_case()
    layer.jit_compile = jit_compile
    first = layer([items, memory], mask=mask)["matching"].numpy()
    layer.epsilon = float(np.median(first.max(-1)[mask]))  # a threshold that filters some items and keeps others
    out = layer([items, memory], mask=mask)
    matching = out["matching"].numpy().astype(np.float64)
    np.testing.assert_allclose(matching, 1 / (1 + np.exp(-out["scores"].numpy().astype(np.float64))), atol=1e-6)
    assign = out["assignment"].numpy()
    np.testing.assert_array_equal(assign, ref.route(matching, mask, 3, layer.epsilon, 2.0))
    assert (assign[mask] == -1).any() and (assign[mask] >= 0).any()
    chosen = np.take_along_axis(matching, np.maximum(assign, 0)[..., None], -1)[..., 0]
    np.testing.assert_allclose(out["gate"].numpy(), np.where(assign >= 0, chosen, 0.0), atol=1e-6)


def test_only_the_gate_of_the_own_group_carries_gradient():
    layer, items, memory, mask = _routing_layer_case()
    items, memory = tf.constant(items), tf.constant(memory)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([items, memory])
        out = layer([items, memory], mask=mask)
        gate_loss = tf.reduce_sum(out["gate"] ** 2)
        scores_loss = tf.reduce_sum(out["scores"])
    grads = tape.gradient(gate_loss, [items, memory] + layer.trainable_weights)
    assert all(g is not None and np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in grads)
    assert tape.gradient(scores_loss, memory) is None  # the full co-attention runs forward only
    # The gate's gradient equals the one through the full [B, L, s] co-attention, gathered at the own group.
    with tf.GradientTape() as full_tape:
        full_tape.watch(memory)
        full = tf.sigmoid(layer.matching_scores(items, memory))
        own = tf.gather(full, tf.maximum(out["assignment"], 0), batch_dims=2)
        want = tf.reduce_sum((own * tf.cast(out["assignment"] >= 0, own.dtype)) ** 2)
    np.testing.assert_allclose(full_tape.gradient(want, memory).numpy(), grads[1].numpy(), atol=1e-5)


def test_routing_layer_padding_never_changes_outputs():
    layer, items, memory, mask = _routing_layer_case()
    a = layer([items, memory], mask=mask)
    noisy = np.where(mask[..., None], items, 100.0 * np.random.default_rng(1).normal(size=items.shape))
    b = layer([noisy.astype(np.float32), memory], mask=mask)
    np.testing.assert_array_equal(a["assignment"].numpy(), b["assignment"].numpy())
    np.testing.assert_allclose(a["gate"].numpy(), b["gate"].numpy(), atol=1e-6)


def test_routing_runs_under_xla():
    layer, items, memory, mask = _routing_layer_case()
    eager = layer([items, memory], mask=mask)
    compiled = tf.function(lambda x, m, k: layer([x, m], mask=k), jit_compile=True)(items, memory, mask)
    np.testing.assert_array_equal(eager["assignment"].numpy(), compiled["assignment"].numpy())
    np.testing.assert_allclose(eager["gate"].numpy(), compiled["gate"].numpy(), atol=1e-5)


def test_routing_layer_serializes():
    layer = InterestGroupRouting(5, iterations=2, epsilon=0.1, base=3.0, parallel_routing=True, jit_compile=True,
                                 activation="tanh")
    clone = InterestGroupRouting.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_the_default_threshold_drops_a_low_matching_item_that_the_old_one_kept():
    from mtin_tf.config import MTINConfig

    default = MTINConfig()
    # Matching probabilities σ(p): three items that match group 0 well and one that matches nothing well.
    p = np.array([[[0.8, 0.3], [0.75, 0.3], [0.7, 0.35], [0.32, 0.3]]])
    mask = np.ones((1, 4), bool)
    route = lambda eps: route_interest_groups(tf.constant(p), mask, iterations=default.routing_iterations,
                                              epsilon=eps, base=default.routing_base).numpy()
    np.testing.assert_array_equal(route(default.routing_epsilon), ref.route(p, mask, 3, default.routing_epsilon, 2.0))
    assert route(default.routing_epsilon)[0, 3] == -1 and (route(default.routing_epsilon)[0, :3] == 0).all()
    assert route(0.1)[0, 3] != -1  # the old default: ξ ≤ log₂3, so 0.32 / ξ > 0.1 and every item was kept


def test_centred_routing_ignores_the_level_of_the_scores():
    layer, items, memory, mask = _routing_layer_case()
    layer.center, layer.epsilon = True, 0.45
    out = layer([items, memory], mask=mask)
    scores = out["scores"].numpy().astype(np.float64)
    real = np.broadcast_to(mask[..., None], scores.shape)
    mean = np.array([scores[b][real[b]].mean() if real[b].any() else 0.0 for b in range(len(scores))])
    np.testing.assert_allclose(out["matching"].numpy()[mask], (1 / (1 + np.exp(-(scores - mean[:, None, None]))))[mask],
                               atol=1e-6)
    np.testing.assert_array_equal(out["assignment"].numpy(), ref.route(out["matching"].numpy().astype(np.float64),
                                                                       mask, 3, 0.45, 2.0))
    assert (out["assignment"].numpy()[mask] == -1).any()  # some items match worse than the user's average: dropped
    layer.w_ph.bias.assign(layer.w_ph.bias + 5.0)  # every p up by 5: σ(p) saturates, σ(p − p̄) does not move
    shifted = layer([items, memory], mask=mask)
    np.testing.assert_array_equal(shifted["assignment"].numpy(), out["assignment"].numpy())
    np.testing.assert_allclose(shifted["gate"].numpy(), out["gate"].numpy(), atol=1e-5)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_epsilon_is_a_strict_threshold_and_exact_ties_go_to_the_first_group(parallel, jit_compile):
    # Exact float32 values. Item 0's best score equals ε: p^(d) > ε fails and it stays out of every group. Item 2
    # ties across the groups while they are empty and takes the first; in a later pass the discount of group 0,
    # where item 1 sits with a higher mean, sends it to group 1.
    p = np.array([[[0.5, 0.25], [0.75, 0.5], [0.6, 0.6]]], np.float32)
    mask = np.ones((1, 3), bool)
    want = (ref.route_parallel if parallel else ref.route)(p.astype(np.float64), mask, 3, 0.5, 2.0)
    got = route_interest_groups(tf.constant(p), mask, iterations=3, epsilon=0.5, base=2.0, parallel=parallel,
                                jit_compile=jit_compile).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, [[-1, 0, 1]])
    after_one_pass = route_interest_groups(tf.constant(p), mask, iterations=1, epsilon=0.5, base=2.0,
                                           parallel=parallel, jit_compile=jit_compile).numpy()
    np.testing.assert_array_equal(after_one_pass, [[-1, 0, 0]] if parallel else [[-1, 0, 1]])
    # Just below ε, item 0 joins a group (group 0, its best).
    just_below = float(np.nextafter(np.float32(0.5), np.float32(0)))
    below = route_interest_groups(tf.constant(p), mask, iterations=3, epsilon=just_below, base=2.0, parallel=parallel,
                                  jit_compile=jit_compile).numpy()
    assert below[0, 0] == 0
    # Equal scores for every group: the lowest group index.
    tie = route_interest_groups(tf.constant([[[0.6, 0.6, 0.6]]], tf.float32), np.ones((1, 1), bool), iterations=3,
                                epsilon=0.1, base=2.0, parallel=parallel, jit_compile=jit_compile).numpy()
    np.testing.assert_array_equal(tie, [[0]])
