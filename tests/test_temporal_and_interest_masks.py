"""Eq. 5–7 (ParallelTemporalMask) and eq. 8–10 (InterestMask) against plain NumPy references."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import reference as ref
from mtin_tf.layers import InterestAggregation, InterestMask, ParallelTemporalMask


def _grouped_case(seed=0, batch=3, groups=3, length=6, d=5):
    rng = np.random.default_rng(seed)
    grouped = rng.normal(size=(batch, groups, length, d)).astype(np.float32)
    counts = np.array([[0, 1, 6], [3, 2, 0], [6, 6, 4]])[:batch, :groups]
    mask = np.arange(length)[None, None, :] < counts[..., None]
    grouped = grouped * mask[..., None]
    ages = np.sort(rng.uniform(0, 10, size=(batch, groups, length)), axis=-1)[..., ::-1].astype(np.float32)
    return grouped, mask, ages.copy()


@pytest.mark.parametrize("use_time_gaps", [False, True])
def test_temporal_mask_matches_eq_5_to_7(use_time_gaps):
    grouped, mask, ages = _grouped_case()
    layer = ParallelTemporalMask(num_masks=3, omega_min=0.1, omega_max=1.5, use_time_gaps=use_time_gaps)
    got = layer(grouped, mask=mask, ages=ages).numpy()
    want = ref.temporal_mask(layer, grouped.astype(np.float64), mask, ages.astype(np.float64) if use_time_gaps
                             else None)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.all(got[~mask.any(-1)] == 0)  # empty groups give r_g = 0


def test_temporal_mask_initial_scales_are_log_spaced_and_positive():
    layer = ParallelTemporalMask(num_masks=4, omega_min=0.01, omega_max=1.0)
    layer.build((None, 2, 5, 3))
    np.testing.assert_allclose(layer.omega.numpy(), [0.01, 0.01 ** (2 / 3), 0.01 ** (1 / 3), 1.0], rtol=1e-5)
    fixed = ParallelTemporalMask(num_masks=2, learnable_decay=False)
    fixed.build((None, 2, 5, 3))
    assert fixed.log_omega not in fixed.trainable_weights


def test_temporal_mask_padding_never_changes_outputs():
    grouped, mask, ages = _grouped_case(1)
    layer = ParallelTemporalMask(num_masks=2, use_time_gaps=True)
    a = layer(grouped, mask=mask, ages=ages).numpy()
    rng = np.random.default_rng(5)
    noisy = np.where(mask[..., None], grouped, rng.normal(size=grouped.shape) * 50).astype(np.float32)
    noisy_ages = np.where(mask, ages, rng.uniform(-100, 100, size=ages.shape)).astype(np.float32)
    b = layer(noisy, mask=mask, ages=noisy_ages).numpy()
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_temporal_mask_runs_under_xla_and_serializes():
    grouped, mask, ages = _grouped_case(2)
    layer = ParallelTemporalMask(num_masks=2, use_time_gaps=True)
    eager = layer(grouped, mask=mask, ages=ages)
    compiled = tf.function(lambda g, m, a: layer(g, mask=m, ages=a), jit_compile=True)(grouped, mask, ages)
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
    h, w = layer([memory, groups_r], group_mask=group_mask)
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
    eager = layer([memory, groups_r], group_mask=group_mask)
    compiled = tf.function(lambda m, r, g: layer([m, r], group_mask=g), jit_compile=True)(memory, groups_r, group_mask)
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
        name = tf_keras.saving.get_registered_name(cls)
        assert name.startswith("mtin>")
        assert tf_keras.saving.get_registered_object(name) is cls
