"""The λ terms of eq. 12 on the per-item and per-user parameters: the item bias (MTIN and every baseline), the
interest memory (memory_l2) — each checked against the value computed by hand from the layer's own weights."""
import numpy as np
import pytest

from mtin_tf import features as F
from mtin_tf.baselines import BUILDERS
from mtin_tf.config import MTINConfig
from mtin_tf.layers.tables import ItemBias, UserMemory
from mtin_tf.model import ITEM_BIAS, build_mtin, user_memory

ITEM_IDS = np.arange(1, 13) * 5
FEATURES = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
USERS = np.array([3, 8, 9])
L = 4


def batch(rng, n=6):
    x = {F.USER_ID: rng.choice(USERS, n), F.ITEM_ID: rng.choice(ITEM_IDS, n), F.TIMESTAMP: np.full(n, 100)}
    for ids_key, times_key in F.HISTORY_PAIRS:
        x[ids_key] = rng.choice(ITEM_IDS, (n, L))
        x[times_key] = np.tile(np.arange(1, L + 1) * 10, (n, 1))
    return {k: np.asarray(v, np.int64) for k, v in x.items()}


def test_item_bias_l2_covers_the_whole_vector_every_step():
    layer = ItemBias(len(ITEM_IDS), item_ids=ITEM_IDS, regularizer={"class_name": "L2", "config": {"l2": 0.01}})
    layer(np.array([5], np.int64))
    b = np.random.default_rng(1).normal(size=len(ITEM_IDS) + 1).astype(np.float32)
    layer.bias.assign(b)
    layer(np.array([5, 10], np.int64))  # a batch touching two items still pays for every item's bias
    np.testing.assert_allclose(float(sum(layer.losses)), 0.01 * np.sum(b ** 2), rtol=1e-5)
    assert ItemBias(3, item_ids=[1, 2, 3]).get_config()["regularizer"] is None


def test_memory_l2_sets_the_memory_rows_lambda_and_defaults_to_l2():
    assert MTINConfig(l2=1e-4).memory_row_l2 == 1e-4
    assert MTINConfig(l2=1e-4, memory_l2=0.05).memory_row_l2 == 0.05
    memory = UserMemory(len(USERS), 2, 3, user_ids=USERS, row_l2=0.05)
    ids = np.array([3, 9, 9, 77], np.int64)  # 77: unknown → row 0
    rows = memory(ids).numpy()
    expected = 0.05 * np.mean(np.sum(rows ** 2, axis=(1, 2)))
    np.testing.assert_allclose(float(sum(memory.losses)), expected, rtol=1e-5)
    assert user_memory(MTINConfig(l2=1e-4, memory_l2=0.05), USERS, "positive_memory").row_l2 == 0.05


@pytest.mark.parametrize("name", sorted(BUILDERS) + ["mtin"])
def test_every_model_adds_the_regularised_item_bias_to_its_logit(name):
    """logit changes by exactly b_i when item i's bias is set (and by nothing for other items); the bias is under
    the model's λ; without use_item_bias the layer is absent."""
    builder = build_mtin if name == "mtin" else BUILDERS[name]
    config = dict(embedding_dim=4, num_masks=1, num_groups=2, max_history=L, l2=1e-3, pretrain_memory=False)
    model = builder(MTINConfig(**config), ITEM_IDS, FEATURES, USERS, compile=False)
    x = batch(np.random.default_rng(2))
    before = model(x)[F.OUTPUT_LOGIT].numpy()
    bias = model.get_layer(ITEM_BIAS).bias
    delta = np.zeros(bias.shape, np.float32)
    target = int(x[F.ITEM_ID][0])
    delta[1 + int(np.searchsorted(ITEM_IDS, target))] = 0.7  # row 0 is unknown items
    bias.assign(delta)
    after = model(x)[F.OUTPUT_LOGIT].numpy()
    np.testing.assert_allclose(after - before, np.where(x[F.ITEM_ID] == target, 0.7, 0.0), atol=1e-5)
    assert model.get_layer(ITEM_BIAS).regularizer.get_config()["l2"] == pytest.approx(1e-3)
    plain = builder(MTINConfig(**config, use_item_bias=False), ITEM_IDS, FEATURES, USERS, compile=False)
    assert ITEM_BIAS not in {layer.name for layer in plain.layers}
