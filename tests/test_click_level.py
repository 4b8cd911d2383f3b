"""The user's recent click level (mtin_tf.layers.ClickLevel, config.click_level): the click share of the K latest
impressions of both histories against a loop reference, one offset per user for all its candidates, training and
the served model."""
import numpy as np
import pytest
import reference as ref
import tensorflow as tf
import tf_keras
from model_support import L, raw_batch, small_config

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.layers import ClickLevel
from mtin_tf.model import build_mtin


def _histories(rng, batch=12):
    """Histories with padding, empty rows, and clicks and browses at the same second (the tie rule)."""
    x = {"user_id": np.arange(batch)}
    for ids_key, times_key in F.HISTORY_PAIRS:
        n = rng.integers(0, L + 1, batch)
        n[0] = 0
        pad = np.arange(L)[None] >= n[:, None]
        x[ids_key] = np.where(pad, 0, rng.integers(1, 50, (batch, L)))
        x[times_key] = np.where(pad, 0, np.sort(rng.integers(0, 12, (batch, L)), axis=1))  # few seconds: ties
    x[F.BROWSED_ITEMS][0] = 0  # a user with no history at all: ρ = 1/2, n = 0
    return x


def _call(layer, x):
    return layer([tf.constant(x[key]) for pair in F.HISTORY_PAIRS for key in pair]).numpy()


@pytest.mark.parametrize("last", [1, 3, L, 2 * L, 2 * L + 5])
def test_click_level_matches_the_loop_reference(last):
    x = _histories(np.random.default_rng(last))
    layer = ClickLevel(last)
    _call(layer, x)  # build
    for kernel in ([[1.0], [0.0]], [[0.0], [1.0]], [[0.7], [-1.3]]):  # logit ρ alone, n / K alone, both
        layer.dense.set_weights([np.array(kernel, np.float32), np.array([0.25], np.float32)])
        np.testing.assert_allclose(_call(layer, x), ref.click_level(layer, x, last), atol=1e-5)
    assert _call(layer, x)[0] == pytest.approx(0.25)  # no history: logit ½ = 0 and n = 0


def test_click_level_needs_a_positive_k():
    with pytest.raises(ValueError, match="last"):
        ClickLevel(0)
    with pytest.raises(ValueError, match="click_level"):
        MTINConfig(click_level=-1)


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    return rng.permutation(np.arange(1, 41)) * 1000, rng.normal(size=(40, 6)).astype(np.float32), np.arange(1, 11) * 7


def test_one_offset_per_user_moves_all_its_candidates_together(table):
    """The offset is a user's, not a candidate's: every candidate's logit moves by the same amount, so the order of a
    user's candidates (gAUC, top-k, recommend) is that of the model without it."""
    from mtin_tf.signatures import candidates_scorer

    x = raw_batch(np.random.default_rng(3), table)
    users = {k: tf.constant(x[k]) for k in F.USER_INPUT_NAMES}
    candidates = tf.constant(np.stack([np.roll(x[F.ITEM_ID], r) for r in range(5)], 1))  # [B, 5]
    tf_keras.utils.set_random_seed(0)
    with_level = build_mtin(small_config(click_level=6), *table)
    level = with_level.get_layer(F.OUTPUT_CLICK_LEVEL)
    level.dense.set_weights([np.array([[0.9], [0.4]], np.float32), np.array([-0.2], np.float32)])
    shifted = candidates_scorer(with_level)(users, candidates)[F.OUTPUT_LOGIT].numpy()
    level.dense.set_weights([np.zeros([2, 1], np.float32), np.zeros([1], np.float32)])
    plain = candidates_scorer(with_level)(users, candidates)[F.OUTPUT_LOGIT].numpy()
    level.dense.set_weights([np.array([[0.9], [0.4]], np.float32), np.array([-0.2], np.float32)])
    offset = ref.click_level(level, x, 6)
    assert np.ptp(offset) > 0.1  # users differ
    np.testing.assert_allclose(shifted - plain, np.repeat(offset[:, None], 5, 1), atol=1e-5)


def test_training_moves_the_click_level_and_the_served_model_keeps_it(table, tmp_path):
    from mtin_tf.export import serving_model

    tf_keras.utils.set_random_seed(0)
    model = build_mtin(small_config(click_level=6, retrieval_weight=0.0), *table)
    x = raw_batch(np.random.default_rng(4), table)
    labels = np.random.default_rng(5).integers(0, 2, 16).astype(np.float32)
    before = [w.numpy().copy() for w in model.get_layer(F.OUTPUT_CLICK_LEVEL).weights]
    model.fit(x, {F.OUTPUT_LOGIT: labels}, epochs=2, verbose=0)
    after = [w.numpy() for w in model.get_layer(F.OUTPUT_CLICK_LEVEL).weights]
    assert all(np.abs(a - b).max() > 0 for a, b in zip(after, before))  # trained from its zero start
    served = serving_model(model)
    np.testing.assert_allclose(served(x)[F.OUTPUT_LOGIT].numpy(), model(x)[F.OUTPUT_LOGIT].numpy(), atol=1e-5)


@pytest.mark.parametrize("name", ["din", "ncf"])
def test_every_baseline_gets_the_same_click_level(table, name):
    """A baseline's logit with the click level is its logit without it + the same per-user offset (finish)."""
    from mtin_tf.baselines import BUILDERS

    x = raw_batch(np.random.default_rng(6), table)
    tf_keras.utils.set_random_seed(0)
    model = BUILDERS[name](small_config(click_level=6), *table)
    level = model.get_layer(F.OUTPUT_CLICK_LEVEL)
    level.dense.set_weights([np.array([[0.9], [0.4]], np.float32), np.array([-0.2], np.float32)])
    shifted = model(x)[F.OUTPUT_LOGIT].numpy()
    offset = ref.click_level(level, x, 6)
    level.dense.set_weights([np.zeros([2, 1], np.float32), np.zeros([1], np.float32)])
    np.testing.assert_allclose(shifted - model(x)[F.OUTPUT_LOGIT].numpy(), offset, atol=1e-5)
