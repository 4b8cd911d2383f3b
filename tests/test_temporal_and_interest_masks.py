"""Eq. 5–7 (ParallelTemporalMask) and eq. 8–10 (InterestMask) against plain NumPy references (under tf_keras, and
under Keras 3 in the subprocess of tests/test_layers_keras.py)."""
import numpy as np
import pytest
import reference as ref
import tensorflow as tf

from mtin_tf.layers import InterestAggregation, InterestMask, ParallelTemporalMask
from mtin_tf.layers.backend import keras


def _history_case(seed=0, batch=4, length=9, groups=3, d=5):
    """Histories with every kind of group: empty, one item, several; unassigned items (−1) interleaved."""
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(batch, length, d)).astype(np.float32)
    assignment = rng.integers(-1, groups, size=(batch, length)).astype(np.int32)
    assignment[0] = -1  # nothing routed
    assignment[1, :] = -1
    assignment[1, :6] = [0, -1, 1, 1, -1, 1]  # a one-item group, a three-item group, an empty group
    assignment[2, :] = 2  # one group holds everything
    ages = np.sort(rng.uniform(0, 10, size=(batch, length)), axis=-1)[:, ::-1].astype(np.float32)
    return items, assignment, ages.copy()


def _reference(layer, items, assignment, ages, groups, weights=None):
    grouped, mask = ref.group_items(assignment, items.astype(np.float64), groups)
    grouped_ages, _ = ref.group_items(assignment, ages.astype(np.float64), groups)
    grouped_weights = None if weights is None else ref.group_items(assignment, weights.astype(np.float64), groups)[0]
    return ref.temporal_mask(layer, grouped, mask, grouped_ages if layer.use_time_gaps else None, grouped_weights,
                             layer.include_self), mask


@pytest.mark.parametrize("use_time_gaps", [False, True])
@pytest.mark.parametrize("include_self", [False, True])
def test_temporal_mask_matches_eq_5_to_7(use_time_gaps, include_self):
    items, assignment, ages = _history_case()
    layer = ParallelTemporalMask(3, num_masks=3, omega_min=0.1, omega_max=1.5, use_time_gaps=use_time_gaps,
                                 include_self=include_self)
    got = layer(items, assignment=assignment, ages=ages).numpy()
    want, mask = _reference(layer, items, assignment, ages, 3)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.all(got[~mask.any(-1)] == 0)  # empty groups give r_g = 0


def test_a_one_item_group_is_a_constant_under_eq_6_and_its_item_with_p_ii():
    rng = np.random.default_rng(4)
    items = rng.normal(size=(2, 3, 5)).astype(np.float32)
    assignment = np.array([[0, -1, -1], [0, -1, -1]], np.int32)  # one item in group 0, different in each row
    strict = ParallelTemporalMask(2, num_masks=2)
    r = strict(items, assignment=assignment).numpy()
    np.testing.assert_allclose(r[0, 0], r[1, 0], atol=1e-6)  # r_g = MLP(0) whatever the item
    with_self = ParallelTemporalMask(2, num_masks=2, include_self=True)
    r = with_self(items, assignment=assignment).numpy()
    assert np.abs(r[0, 0] - r[1, 0]).max() > 1e-3


def test_temporal_mask_weights_scale_each_items_term_once():
    items, assignment, ages = _history_case(5)
    weights = np.random.default_rng(5).uniform(0.1, 1.0, size=assignment.shape).astype(np.float32)
    layer = ParallelTemporalMask(3, num_masks=2, include_self=True)
    got = layer(items, assignment=assignment, ages=ages, weights=weights).numpy()
    np.testing.assert_allclose(got, _reference(layer, items, assignment, ages, 3, weights)[0], atol=1e-5)
    # Linear in the weights, not cubic (as scaling the items themselves would be): compare before the MLP.
    layer.mlp_hidden.activation = keras.activations.linear
    layer.mlp_hidden.bias.assign(tf.zeros_like(layer.mlp_hidden.bias))
    layer.mlp_out.bias.assign(tf.zeros_like(layer.mlp_out.bias))
    once = layer(items, assignment=assignment, weights=weights).numpy()
    twice = layer(items, assignment=assignment, weights=2 * weights).numpy()
    np.testing.assert_allclose(twice, 2 * once, rtol=1e-4, atol=1e-6)


def test_temporal_mask_at_scale_matches_eq_5_to_7():
    # Enough items for several blocks of the grouped matmul per group.
    items, assignment, ages = _history_case(3, batch=40, length=12, groups=4, d=6)
    layer = ParallelTemporalMask(4, num_masks=2, use_time_gaps=True)
    got = layer(items, assignment=assignment, ages=ages).numpy()
    np.testing.assert_allclose(got, _reference(layer, items, assignment, ages, 4)[0], atol=1e-5)


@pytest.mark.parametrize("use_time_gaps", [False, True])
@pytest.mark.parametrize("include_self", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 2, 4])
def test_temporal_mask_in_chunks_matches_eq_5_to_7(use_time_gaps, include_self, chunk_size):
    # Histories longer than a chunk: the decay sums' terms from later chunks go through the (chunk, group) states.
    items, assignment, ages = _history_case(6, batch=6, length=9)
    weights = np.random.default_rng(6).uniform(0.1, 1.0, size=assignment.shape).astype(np.float32)
    layer = ParallelTemporalMask(3, num_masks=3, omega_min=0.1, omega_max=1.5, use_time_gaps=use_time_gaps,
                                 include_self=include_self, chunk_size=chunk_size)
    got = layer(items, assignment=assignment, ages=ages, weights=weights).numpy()
    want = _reference(layer, items, assignment, ages, 3, weights)[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    spec = [tf.TensorSpec([None, None, 5]), tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None]),
            tf.TensorSpec([None, None])]
    for compiled in (tf.function(lambda x, g, a, w: layer(x, assignment=g, ages=a, weights=w), jit_compile=True),
                     tf.function(lambda x, g, a, w: layer(x, assignment=g, ages=a, weights=w), input_signature=spec)):
        np.testing.assert_allclose(compiled(items, assignment, ages, weights).numpy(), want, atol=1e-5)


def test_temporal_mask_gradients_do_not_depend_on_the_chunk_size():
    items, assignment, ages = _history_case(7, batch=5, length=11)
    whole = ParallelTemporalMask(3, num_masks=2, use_time_gaps=True, chunk_size=50)
    cut = ParallelTemporalMask(3, num_masks=2, use_time_gaps=True, chunk_size=3)
    whole(items, assignment=assignment, ages=ages)
    cut(items, assignment=assignment, ages=ages)
    cut.set_weights(whole.get_weights())
    x = tf.constant(items)
    grads = []
    for layer in (whole, cut):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x, assignment=assignment, ages=ages)))
        grads.append(tape.gradient(loss, [x] + layer.trainable_weights))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def test_temporal_mask_initial_scales_are_log_spaced_and_positive():
    layer = ParallelTemporalMask(2, num_masks=4, omega_min=0.01, omega_max=1.0)
    layer.build((None, 5, 3))
    np.testing.assert_allclose(layer.omega.numpy(), [0.01, 0.01 ** (2 / 3), 0.01 ** (1 / 3), 1.0], rtol=1e-5)
    fixed = ParallelTemporalMask(2, num_masks=2, learnable_decay=False)
    fixed.build((None, 5, 3))
    assert all(w is not fixed.log_omega for w in fixed.trainable_weights)  # (Keras 3 variables compare by value)


def test_temporal_mask_items_in_no_group_never_change_outputs():
    items, assignment, ages = _history_case(1)
    layer = ParallelTemporalMask(3, num_masks=2, use_time_gaps=True)
    a = layer(items, assignment=assignment, ages=ages).numpy()
    rng = np.random.default_rng(5)
    out = assignment < 0
    noisy = np.where(out[..., None], rng.normal(size=items.shape) * 50, items).astype(np.float32)
    noisy_ages = np.where(out, rng.uniform(-100, 100, size=ages.shape), ages).astype(np.float32)
    b = layer(noisy, assignment=assignment, ages=noisy_ages).numpy()
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_temporal_mask_runs_under_xla_and_serializes():
    items, assignment, ages = _history_case(2)
    layer = ParallelTemporalMask(3, num_masks=2, use_time_gaps=True)
    eager = layer(items, assignment=assignment, ages=ages)
    compiled = tf.function(lambda x, g, a: layer(x, assignment=g, ages=a), jit_compile=True)(items, assignment, ages)
    np.testing.assert_allclose(eager.numpy(), compiled.numpy(), atol=1e-5)
    clone = ParallelTemporalMask.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def _interest_case(seed=0, batch=4, s=4, d=5):
    rng = np.random.default_rng(seed)
    memory = rng.normal(size=(batch, s, d)).astype(np.float32)
    groups_r = rng.normal(size=(batch, s, d)).astype(np.float32)
    group_mask = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], bool)[:batch, :s]
    return memory, groups_r * group_mask[..., None], group_mask


@pytest.mark.parametrize("tau", [0.0, 0.2, 0.45])
def test_interest_mask_matches_eq_8_to_10(tau):
    memory, groups_r, group_mask = _interest_case()
    layer = InterestMask(tau=tau)
    h, w = layer([memory, groups_r], mask=group_mask)
    want_h, want_w = ref.interest_mask(layer, memory.astype(np.float64), groups_r.astype(np.float64), tau, group_mask)
    np.testing.assert_allclose(w.numpy(), want_w, atol=1e-5)
    np.testing.assert_allclose(h.numpy(), want_h, atol=1e-5)
    assert np.isfinite(w.numpy()).all()  # the all-empty row gives zeros, not NaN
    # Without a group mask it is the plain softmax of eq. 8.
    h2, w2 = layer([memory, groups_r])
    want_h2, want_w2 = ref.interest_mask(layer, memory.astype(np.float64), groups_r.astype(np.float64), tau)
    np.testing.assert_allclose(w2.numpy(), want_w2, atol=1e-5)
    np.testing.assert_allclose(h2.numpy(), want_h2, atol=1e-5)


@pytest.mark.parametrize("straight_through", [True, False])
def test_interest_mask_gradient_reaches_w_h_only_with_straight_through(straight_through):
    memory, groups_r, _ = _interest_case(3)
    layer = InterestMask(tau=0.2, straight_through=straight_through)
    with tf.GradientTape() as tape:
        h, _ = layer([memory, groups_r])
        loss = tf.reduce_sum(h * tf.constant(np.random.default_rng(0).normal(size=h.shape), tf.float32))
    grad = tape.gradient(loss, layer.w_h)
    if straight_through:
        assert grad is not None and np.abs(grad.numpy()).sum() > 0 and np.isfinite(grad.numpy()).all()
    else:
        assert grad is None or np.abs(grad.numpy()).sum() == 0


def test_interest_mask_runs_under_xla():
    memory, groups_r, group_mask = _interest_case(1)
    layer = InterestMask(tau=0.2)
    eager = layer([memory, groups_r], mask=group_mask)
    compiled = tf.function(lambda m, r, g: layer([m, r], mask=g), jit_compile=True)(memory, groups_r, group_mask)
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


@pytest.mark.parametrize("method", ["sum", "concat", "concat_pool"])
def test_aggregation_methods(method):
    rng = np.random.default_rng(0)
    r, h = rng.normal(size=(2, 3, 4)).astype(np.float32), rng.normal(size=(2, 3, 4)).astype(np.float32)
    layer = InterestAggregation(method)
    got = layer([r, h]).numpy()
    if method == "sum":
        want = r + h
    else:
        want = ref.dense(layer.combine, np.concatenate([r, h], -1).astype(np.float64))
        if method == "concat_pool":
            want = want + r + h
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="aggregation"):
        InterestAggregation("max")


def test_layers_are_registered_for_keras_deserialization():
    for cls in (ParallelTemporalMask, InterestMask, InterestAggregation):
        name = keras.saving.get_registered_name(cls)
        assert name.startswith("mtin>")
        assert keras.saving.get_registered_object(name) is cls


def test_interest_mask_tau_is_a_strict_threshold():
    # W_h = 0: every logit is 0, so the four groups get exactly w = 1/4. At τ = 1/4, ŵ = 1[w > τ] keeps none of
    # them (h = 0); just below τ, all four (h = Σ_g r_g = [18, 22, 26]).
    memory = np.random.default_rng(0).normal(size=(1, 4, 3)).astype(np.float32)
    groups_r = np.arange(12, dtype=np.float32).reshape(1, 4, 3)
    just_below = float(np.nextafter(np.float32(0.25), np.float32(0)))
    for tau, want in ((0.25, [0.0, 0.0, 0.0]), (just_below, [18.0, 22.0, 26.0])):
        layer = InterestMask(tau=tau)
        layer.build([memory.shape, groups_r.shape])
        layer.w_h.assign(tf.zeros_like(layer.w_h))
        h, w = layer([memory, groups_r])
        np.testing.assert_array_equal(w.numpy(), np.full((1, 4, 4), 0.25))
        np.testing.assert_array_equal(h.numpy(), np.tile(want, (1, 4, 1)))
    # Two non-empty groups of four: w = 1/2 each, and τ = 1/2 keeps neither.
    layer = InterestMask(tau=0.5)
    layer.build([memory.shape, groups_r.shape])
    layer.w_h.assign(tf.zeros_like(layer.w_h))
    h, w = layer([memory, groups_r], mask=np.array([[True, False, True, False]]))
    np.testing.assert_array_equal(w.numpy()[0, 0], [0.5, 0.0, 0.5, 0.0])
    np.testing.assert_array_equal(h.numpy(), np.zeros((1, 4, 3)))
