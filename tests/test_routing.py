"""Algorithm 1 and eq. 2–4 against the plain NumPy references in tests/reference.py."""
import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from mtin_tf.layers import InterestGroupRouting, group_sequences, route_interest_groups


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
def test_sequential_routing_matches_algorithm_1(seed, iterations, epsilon, base):
    p, mask = _random_case(seed)
    want = ref.route(p, mask, iterations, epsilon, base)
    got = route_interest_groups(tf.constant(p), tf.constant(mask), iterations=iterations, epsilon=epsilon, base=base)
    assert got.dtype == tf.int32
    np.testing.assert_array_equal(got.numpy(), want)


def test_sequential_routing_float32_continuous_scores():
    p, mask = _random_case(7, batch=16, length=20, groups=6, ties=False)
    want = ref.route(p.astype(np.float32).astype(np.float64), mask, 3, 0.0, 2.0)
    got = route_interest_groups(tf.constant(p, tf.float32), mask, iterations=3, epsilon=0.0, base=2.0)
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


def test_group_sequences_packs_groups_in_time_order():
    rng = np.random.default_rng(0)
    assign = rng.integers(-1, 3, size=(5, 7))
    values = rng.normal(size=(5, 7, 4))
    (got,), mask = group_sequences(tf.constant(assign, tf.int32), 3, [tf.constant(values)])
    want, want_mask = ref.group_items(assign, values, 3)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    np.testing.assert_array_equal(mask.numpy(), want_mask)


def _routing_layer_case(seed=0, batch=4, length=8, groups=3, d=6):
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(batch, length, d)).astype(np.float32)
    memory = rng.normal(size=(batch, groups, d)).astype(np.float32)
    mask = np.arange(length)[None, :] < np.array([0, 3, length, 5])[:, None]
    layer = InterestGroupRouting(groups, iterations=3, epsilon=0.1, base=2.0)
    return layer, items, memory, mask


def test_coattention_matching_scores_eq_2_to_4():
    layer, items, memory, mask = _routing_layer_case()
    out = layer([items, memory], mask=mask)
    want = ref.matching_scores(layer, items.astype(np.float64), memory.astype(np.float64))
    np.testing.assert_allclose(out["scores"].numpy(), want, atol=1e-5)


def test_routing_layer_assigns_by_algorithm_1_and_groups_gated_items():
    layer, items, memory, mask = _routing_layer_case()
    first = layer([items, memory], mask=mask)["matching"].numpy()
    layer.epsilon = float(np.median(first.max(-1)[mask]))  # a threshold that filters some items and keeps others
    out = layer([items, memory], mask=mask)
    matching = out["matching"].numpy().astype(np.float64)
    np.testing.assert_allclose(matching, 1 / (1 + np.exp(-out["scores"].numpy().astype(np.float64))), atol=1e-6)
    assign = out["assignment"].numpy()
    np.testing.assert_array_equal(assign, ref.route(matching, mask, 3, layer.epsilon, 2.0))
    assert (assign[mask] == -1).any() and (assign[mask] >= 0).any()
    chosen = np.take_along_axis(matching, np.maximum(assign, 0)[..., None], -1)[..., 0]
    gate = np.where(assign >= 0, chosen, 0.0)
    want, want_mask = ref.group_items(assign, items * gate[..., None], 3)
    np.testing.assert_allclose(out["grouped"].numpy(), want, atol=1e-5)
    np.testing.assert_array_equal(out["group_mask"].numpy(), want_mask)


def test_routing_layer_padding_never_changes_outputs():
    layer, items, memory, mask = _routing_layer_case()
    a = layer([items, memory], mask=mask)
    noisy = np.where(mask[..., None], items, 100.0 * np.random.default_rng(1).normal(size=items.shape))
    b = layer([noisy.astype(np.float32), memory], mask=mask)
    np.testing.assert_array_equal(a["assignment"].numpy(), b["assignment"].numpy())
    np.testing.assert_allclose(a["grouped"].numpy(), b["grouped"].numpy(), atol=1e-6)


def test_routing_runs_under_xla():
    layer, items, memory, mask = _routing_layer_case()
    eager = layer([items, memory], mask=mask)
    compiled = tf.function(lambda x, m, k: layer([x, m], mask=k), jit_compile=True)(items, memory, mask)
    np.testing.assert_array_equal(eager["assignment"].numpy(), compiled["assignment"].numpy())
    np.testing.assert_allclose(eager["grouped"].numpy(), compiled["grouped"].numpy(), atol=1e-5)


def test_routing_layer_serializes():
    layer = InterestGroupRouting(5, iterations=2, epsilon=0.1, base=3.0, parallel_routing=True, activation="tanh")
    clone = InterestGroupRouting.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
