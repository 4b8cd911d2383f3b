"""Every baseline's forward pass against its NumPy reference (tests/reference.py), its training through train_mtin,
and its reload: each baseline's export transformation and a .keras round trip, full SavedModel exports for the
attention and recurrent ones (ATRank, THACIL, ALPINE). THACIL and ALPINE also: padding and unknown slots do not change
their output, their blocks / edge weights, and training on the tiny planted data beats the initial loss and chance."""
import numpy as np
import pytest
import reference as ref
import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf.baselines import BUILDERS
from mtin_tf.baselines.alpine import TemporalGraphLSTM
from mtin_tf.baselines.bpr import PairwiseLogisticLoss
from mtin_tf.baselines.mind import squash
from mtin_tf.baselines.thacil import DirectionalMask, TemporalBlocks
from mtin_tf.config import MTINConfig
from mtin_tf.export import export_saved_model, serving_model
from mtin_tf.layers.pooling import MaskedPooling
from mtin_tf.train import predict_probabilities, train_mtin

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


# Every field a baseline or train_mtin reads, set here (the tests do not depend on MTINConfig's defaults).
CONFIG = dict(embedding_dim=8, num_groups=2, num_masks=2, max_history=L, batch_size=16, epochs=1, l2=1e-4,
              use_id_embedding=True, routing_iterations=3, seed=0, learning_rate=1e-3, optimizer="adam",
              jit_compile=False, mixed_precision=False, time_scale=20.0)


def _inputs(arrays, rows=slice(None)):
    return {k: arrays[k][rows] for k in F.MODEL_INPUT_NAMES}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_baseline_forward_pass_matches_its_numpy_reference(name):
    arrays, item_ids, feats = tiny_data(n=10, seed=1)
    config = MTINConfig(**CONFIG)
    user_ids = np.array([1, 2, 3])  # user 4 is unknown: the shared row
    tf_keras.utils.set_random_seed(0)
    model = BUILDERS[name](config, item_ids, feats, user_ids, compile=False)
    embed = model.get_layer("item_embedding")  # id embeddings that matter, so that a row mix-up would show
    embed.id_embedding.assign(0.5 * np.random.default_rng(2).normal(size=embed.id_embedding.shape))
    x = _inputs(arrays)
    x[F.ITEM_ID][1] = 5  # an unknown candidate
    x[F.CLICKED_ITEMS][2, 0] = 11  # an item absent from the table inside a history: not a real item
    want = ref.baseline(model, name, config, x, item_ids, feats.astype(np.float64), user_ids)
    np.testing.assert_allclose(model(x)[F.OUTPUT_LOGIT].numpy(), want, atol=1e-5)
    assert want.std() > 0.05  # the logits depend on the inputs


class InitialWeights(tf_keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.values = [w.numpy() for w in self.model.trainable_weights]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_baseline_trains_and_reloads_with_equal_scores(name, tmp_path):
    arrays, item_ids, feats = tiny_data()
    initial = InitialWeights()
    model, history = train_mtin(MTINConfig(**CONFIG), arrays, item_ids, feats, builder=BUILDERS[name], verbose=0,
                                callbacks=[initial])
    loss = history.history["loss"]
    assert len(loss) == 1 and np.isfinite(loss[0])
    # After 3 Adam steps every trainable weight has moved: each gets a gradient (no layer is cut off from the loss).
    assert len(initial.values) == len(model.trainable_weights) > 0
    for before, after in zip(initial.values, model.trainable_weights):
        assert np.abs(after.numpy() - before).max() > 0, after.name
    x = _inputs(arrays)
    out = model(x)
    assert set(out) >= {F.OUTPUT_LOGIT, F.OUTPUT_PROBABILITY}
    prob = out[F.OUTPUT_PROBABILITY].numpy()
    np.testing.assert_allclose(prob, ref.sigmoid(out[F.OUTPUT_LOGIT].numpy()), atol=1e-6)
    assert prob.std() > 0  # scores depend on the inputs

    # What export_saved_model writes is serving_model(model) (the item table pre-projected): same scores.
    served = serving_model(model)
    assert served.get_layer("item_embedding").projected
    np.testing.assert_allclose(served(x)[F.OUTPUT_PROBABILITY].numpy(), prob, rtol=1e-5, atol=1e-6)
    if name in ("atrank", "thacil", "alpine"):  # full SavedModel round trips (ATRank's once lost MHA's weights)
        path = export_saved_model(model, str(tmp_path / "model"))
        reloaded = tf_keras.models.load_model(path)
    else:  # the same configs and weights through the Keras v3 file: no SavedModel tracing
        served.save(tmp_path / "model.keras")
        reloaded = tf_keras.models.load_model(tmp_path / "model.keras")
    # Registered layers: load_model rebuilds the functional Keras model, not a bare SavedModel wrapper.
    assert isinstance(reloaded, tf_keras.Model) and reloaded.get_config()["name"] == name
    np.testing.assert_allclose(reloaded(x)[F.OUTPUT_PROBABILITY].numpy(), prob, rtol=1e-5, atol=1e-6)


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
    np.testing.assert_allclose(MaskedPooling("mean")(values, mask=mask).numpy(), [[3.0], [0.0]])
    np.testing.assert_allclose(MaskedPooling("max")(values, mask=mask).numpy(), [[5.0], [0.0]])
    # The form models saved before the mask= convention recorded: the same.
    np.testing.assert_allclose(MaskedPooling("mean")([values, mask]).numpy(), [[3.0], [0.0]])
    with pytest.raises(ValueError, match="needs mask="):
        MaskedPooling("mean")(values)
    with pytest.raises(ValueError, match="mode"):
        MaskedPooling("median")


def test_squash_keeps_direction_and_bounds_length():
    z = tf.constant([[3.0, 4.0], [0.0, 0.0]])
    out = squash(z).numpy()
    np.testing.assert_allclose(out[0], np.array([3.0, 4.0]) / 5 * 25 / 26, rtol=1e-5)
    np.testing.assert_allclose(out[1], [0.0, 0.0])


@pytest.mark.parametrize("name", ["thacil", "alpine"])
def test_padding_and_unknown_slots_do_not_change_the_output(name):
    """The same real items (at most 3 a history, in order, same timestamps) packed to the front with zero padding, or
    spread among slots of an id absent from the table and padding, all with arbitrary timestamps: equal logits."""
    arrays, item_ids, feats = tiny_data(n=12, seed=3)
    model = BUILDERS[name](MTINConfig(**CONFIG), item_ids, feats, np.array([1, 2, 3]), compile=False)
    packed, spread = _inputs(arrays), _inputs(arrays)
    rng = np.random.default_rng(4)
    for ids_key, times_key in F.HISTORY_PAIRS:
        ids, times = arrays[ids_key], arrays[times_key]
        packed[ids_key], packed[times_key] = np.zeros_like(ids), np.zeros_like(times)
        spread[ids_key] = rng.choice([0, 11], size=ids.shape)  # 11 is in no table: not a real item
        spread[times_key] = rng.integers(0, 100, size=times.shape)
        for b in range(len(ids)):
            real = np.flatnonzero(ids[b])[:3]
            slots = np.sort(rng.choice(L, size=len(real), replace=False))
            packed[ids_key][b, :len(real)], packed[times_key][b, :len(real)] = ids[b, real], times[b, real]
            spread[ids_key][b, slots], spread[times_key][b, slots] = ids[b, real], times[b, real]
    assert (spread[F.CLICKED_ITEMS] == 11).any() and (packed[F.CLICKED_ITEMS] > 0).sum(1).max() == 3
    want = model(packed)[F.OUTPUT_LOGIT].numpy()
    np.testing.assert_allclose(model(spread)[F.OUTPUT_LOGIT].numpy(), want, atol=1e-5)
    assert want.std() > 0.01


def test_thacil_blocks_cut_the_real_items_into_equal_count_windows_and_masks_look_one_way():
    known = np.array([[True, False, True, True, True, False], [True, True, True, False, False, False],
                      [False] * 6])
    blocks = TemporalBlocks(2)(known).numpy()
    np.testing.assert_array_equal(blocks.argmax(-1)[0][known[0]], [0, 0, 1, 1])  # 4 real items: 2 + 2
    np.testing.assert_array_equal(blocks.argmax(-1)[1][known[1]], [0, 0, 1])  # 3 real items: ranks 0, 1 | 2
    np.testing.assert_array_equal(blocks.sum(-1), known.astype(np.float32))  # padding belongs to no block
    forward = DirectionalMask("forward")(known[:1]).numpy()[0]
    backward = DirectionalMask("backward")(known[:1]).numpy()[0]
    assert forward[3, 0] and forward[3, 3] and not forward[0, 3] and not forward[3, 1]
    np.testing.assert_array_equal(backward, forward.T)
    with pytest.raises(ValueError, match="direction"):
        DirectionalMask("sideways")


def test_alpine_edges_fade_the_past_with_the_time_gap():
    """A gap far beyond τ cuts the temporal-graph edge: the state after it is that of the later item alone; a short
    gap carries the past in."""
    rng = np.random.default_rng(0)
    layer = TemporalGraphLSTM(4, time_scale=1.0)
    x = rng.normal(size=(1, 3, 5)).astype(np.float32)
    known = np.ones((1, 3), bool)
    alone = layer([x[:, 2:], np.array([[5]])], mask=known[:, 2:]).numpy()[:, 0]
    far = layer([x, np.array([[1, 2, 10 ** 6]])], mask=known).numpy()[:, 2]
    near = layer([x, np.array([[1, 2, 3]])], mask=known).numpy()[:, 2]
    np.testing.assert_allclose(far, alone, atol=1e-6)
    assert np.abs(near - alone).max() > 1e-3
    # The form models saved before the mask= convention recorded: known among the inputs.
    np.testing.assert_array_equal(layer([x, known, np.array([[1, 2, 3]])]).numpy()[:, 2], near)


@pytest.mark.parametrize("name", ["thacil", "alpine"])
def test_training_on_the_tiny_planted_data_beats_the_initial_loss_and_chance(name, tiny_planted):
    from mtin_tf.data.canonical import read_item_features
    from mtin_tf.data.examples import read_split_arrays
    from mtin_tf.metrics import summary

    data = read_split_arrays(tiny_planted["examples"], 6)
    items = read_item_features(tiny_planted["items"])

    def loss(model, arrays):
        p = np.clip(predict_probabilities(model, arrays), 1e-7, 1 - 1e-7)
        y = arrays[F.LABEL]
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    class InitialLoss(tf_keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.value = loss(self.model, data["train"])

    initial = InitialLoss()
    config = MTINConfig(embedding_dim=8, num_masks=2, num_groups=2, max_history=6, batch_size=32, epochs=6,
                        learning_rate=1e-2, seed=0)
    model, _ = train_mtin(config, data["train"], items.item_ids, items.features, builder=BUILDERS[name], verbose=0,
                          callbacks=[initial])
    assert loss(model, data["train"]) < 0.8 * initial.value
    held_out = {k: np.concatenate([data["validation"][k], data["test"][k]]) for k in data["test"]}
    for arrays, above in ((data["train"], 0.8), (held_out, 0.55)):
        auc = summary(arrays[F.USER_ID], arrays[F.LABEL], predict_probabilities(model, arrays), ks=(10,))["auc"]
        assert auc > above
