"""Every baseline builds from MTIN's inputs, trains a few steps, and survives a SavedModel round trip unchanged."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf.baselines import BUILDERS
from mtin_tf.baselines.bpr import PairwiseLogisticLoss
from mtin_tf.baselines.common import MaskedPooling
from mtin_tf.baselines.mind import squash
from mtin_tf.config import MTINConfig
from mtin_tf.export import export_saved_model
from mtin_tf.train import make_dataset, train_mtin

L = 6


def tiny_data(n=48, seed=0):
    """Random impressions over 30 items (features 5-d) and 4 users; histories partly padded, one row empty."""
    rng = np.random.default_rng(seed)
    item_ids = np.arange(1, 31) * 7
    feats = rng.normal(size=(30, 5)).astype(np.float32)
    lengths = rng.integers(0, L + 1, size=(n, 2))
    lengths[0] = 0
    arrays = {F.USER_ID: rng.integers(1, 5, n), F.ITEM_ID: rng.choice(item_ids, n),
              F.TIMESTAMP: np.full(n, 1000), F.LABEL: rng.integers(0, 2, n)}
    for k, (ids_key, times_key) in enumerate(F.HISTORY_PAIRS):
        ids = rng.choice(item_ids, (n, L))
        ids[np.arange(L)[None, :] >= lengths[:, k:k + 1]] = 0
        arrays[ids_key] = ids
        arrays[times_key] = np.where(ids > 0, np.arange(1, L + 1)[None, :] * 10, 0)
    return {k: np.asarray(v, np.int64) for k, v in arrays.items()}, item_ids, feats


CONFIG = dict(embedding_dim=8, num_groups=2, num_masks=2, max_history=L, batch_size=16, epochs=1, l2=1e-4)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_baseline_trains_and_round_trips_through_saved_model(name, tmp_path):
    arrays, item_ids, feats = tiny_data()
    model, history = train_mtin(MTINConfig(**CONFIG), arrays, item_ids, feats, builder=BUILDERS[name], verbose=0)
    loss = history.history["loss"]
    assert len(loss) == 1 and np.isfinite(loss[0])
    out = model.predict(make_dataset(arrays, 64), verbose=0)
    assert set(out) >= {F.OUTPUT_LOGIT, F.OUTPUT_PROBABILITY}
    prob = np.asarray(out[F.OUTPUT_PROBABILITY])
    assert prob.shape == (len(arrays[F.LABEL]),) and np.all((prob >= 0) & (prob <= 1)) and np.isfinite(prob).all()
    assert prob.std() > 0  # scores depend on the inputs

    path = export_saved_model(model, str(tmp_path / "model"))
    reloaded = tf_keras.models.load_model(path)
    # Registered layers: load_model rebuilds the functional Keras model, not a bare SavedModel wrapper.
    assert isinstance(reloaded, tf_keras.Model) and reloaded.get_config()["name"] == name
    again = reloaded.predict(make_dataset(arrays, 64), verbose=0)
    np.testing.assert_allclose(again[F.OUTPUT_PROBABILITY], prob, rtol=1e-5, atol=1e-6)
    # The predict_raw serving signature is checked on an exported DIN in test_train_cli (mtin evaluate).


def test_new_items_are_scored_from_features():
    """Items without an id embedding row still get distinct scores (the feature table drives the item side)."""
    arrays, item_ids, feats = tiny_data()
    model = BUILDERS["ncf"](MTINConfig(**CONFIG), item_ids, feats)
    batch = {k: v[:2] for k, v in arrays.items() if k in F.MODEL_INPUT_NAMES}
    batch[F.ITEM_ID] = item_ids[[3, 9]]
    out = model(batch)[F.OUTPUT_LOGIT].numpy()
    assert out[0] != out[1]


def test_pairwise_loss_is_bpr_over_clicked_unclicked_pairs():
    y = tf.constant([1.0, 0.0, 1.0, 0.0])
    s = tf.constant([2.0, 0.5, -1.0, 0.0])
    pairs = [(2.0, 0.5), (2.0, 0.0), (-1.0, 0.5), (-1.0, 0.0)]
    want = np.mean([np.log1p(np.exp(neg - pos)) for pos, neg in pairs])
    got = PairwiseLogisticLoss(reduction="none")(y, s).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert PairwiseLogisticLoss(reduction="none")(tf.ones(3), tf.constant([1.0, 2.0, 3.0])).numpy() == 0.0


def test_masked_pooling_ignores_padding_and_empty_rows():
    values = tf.constant([[[1.0], [5.0], [-9.0]], [[3.0], [4.0], [7.0]]])
    mask = tf.constant([[True, True, False], [False, False, False]])
    np.testing.assert_allclose(MaskedPooling("mean")([values, mask]).numpy(), [[3.0], [0.0]])
    np.testing.assert_allclose(MaskedPooling("max")([values, mask]).numpy(), [[5.0], [0.0]])
    with pytest.raises(ValueError, match="mode"):
        MaskedPooling("median")


def test_squash_keeps_direction_and_bounds_length():
    z = tf.constant([[3.0, 4.0], [0.0, 0.0]])
    out = squash(z).numpy()
    np.testing.assert_allclose(out[0], np.array([3.0, 4.0]) / 5 * 25 / 26, rtol=1e-5)
    np.testing.assert_allclose(out[1], [0.0, 0.0])
