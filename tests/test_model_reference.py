"""The assembled MTIN model against the plain NumPy reference of tests/reference.py (ref.mtin): both branches, the
readouts, ŷ = α·P_pos + β·P_neg + b_item, and eq. 12's loss with its L2 terms, on tiny explicit configurations."""
import numpy as np
import pytest
import reference as ref
import tensorflow as tf

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.model import build_mtin

L, B = 5, 6
# Every field the model reads, set here: the test does not depend on MTINConfig's defaults.
BASE = dict(embedding_dim=4, num_masks=2, num_groups=3, max_history=L, l2=1e-2, activation="relu",
            routing_iterations=3, routing_base=2.0, jit_routing=False, omega_min=0.2, omega_max=1.5,
            learnable_decay=True, straight_through=True, time_scale=100.0, use_routing=True)
CASES = {
    # the paper's model: eq. 11 sum readout, sum pooling, strict eq. 6, free memory rows, learnable α and β
    "paper": dict(readout="paper", aggregation="sum", temporal_self=False, use_time_gaps=False, routing_epsilon=0.1,
                  routing_center=False, parallel_routing=False, tau=0.2, pretrain_memory=False, memory_anchors=0,
                  use_id_embedding=False, use_item_bias=False, learnable_branch_weights=True),
    # this project's additions: attention readout, concat_pool, P_ii = 1, time gaps, centred parallel routing,
    # anchored memory rows, id embeddings, the item bias and the click level of the last 4 impressions
    "attention": dict(readout="attention", aggregation="concat_pool", temporal_self=True, use_time_gaps=True,
                      routing_epsilon=0.45, routing_center=True, parallel_routing=True, tau=0.3,
                      pretrain_memory=True, memory_anchors=2, use_id_embedding=True, use_item_bias=True,
                      learnable_branch_weights=True, click_level=4),
    # routing that starts from the item-row similarity
    "similarity": dict(readout="attention", routing_similarity=True, aggregation="concat_pool",
                       temporal_self=True, use_time_gaps=False, routing_epsilon=0.45, routing_center=True,
                       parallel_routing=False, tau=0.3, pretrain_memory=False, memory_anchors=0,
                       use_id_embedding=False, use_item_bias=True, learnable_branch_weights=False),
}


def _table():
    rng = np.random.default_rng(0)
    item_ids = rng.permutation(np.arange(1, 13)) * 100  # raw ids, unsorted
    return item_ids, rng.normal(size=(12, 3)).astype(np.float32), np.array([7, 14, 21, 28])


def _batch(rng, item_ids):
    x = {F.USER_ID: np.array([7, 14, 21, 28, 99, 14]),  # 99: an unknown user (the shared memory row)
         F.ITEM_ID: rng.choice(item_ids, B), F.TIMESTAMP: np.full(B, 1_000)}
    x[F.ITEM_ID][-1] = 555  # an unknown candidate
    lengths = np.array([[0, 5, 3, 5, 2, 4], [5, 0, 4, 1, 5, 3]])  # an empty history in each branch
    for (items_key, times_key), n in zip(F.HISTORY_PAIRS, lengths):
        pad = np.arange(L)[None, :] >= n[:, None]
        x[items_key] = np.where(pad, 0, rng.choice(item_ids, (B, L)))
        x[times_key] = np.where(pad, 0, np.sort(rng.integers(0, 1_000, (B, L)), axis=1))
    x[F.CLICKED_ITEMS][3, 2] = 777  # an item absent from the table, inside a history: ignored like padding
    return {k: np.asarray(v, np.int64) for k, v in x.items()}


def _model(case):
    config = MTINConfig(**BASE, **CASES[case])
    item_ids, feats, user_ids = _table()
    tf.keras.utils.set_random_seed(1)
    model = build_mtin(config, item_ids, feats, user_ids)
    rng = np.random.default_rng(2)
    combiner = model.get_layer(F.OUTPUT_LOGIT)  # α, β away from 1 and the negative branch with a sign of its own
    combiner.alpha.assign(1.5)
    combiner.beta.assign(-0.7)
    if config.use_item_bias:
        model.get_layer("item_bias").bias.assign(rng.normal(size=13))
    if config.click_level:  # away from its zero start
        model.get_layer("click_level").dense.set_weights([np.array([[0.8], [-0.5]], np.float32), np.array([0.3])])
    if config.use_id_embedding:
        embed = model.get_layer("item_embedding")
        embed.id_embedding.assign(0.5 * rng.normal(size=embed.id_embedding.shape))
    if config.memory_anchors:  # anchors as pretraining leaves them: item ids, 0 for none (and one id not in the table)
        for name in ("positive_memory", "negative_memory"):
            anchors = model.get_layer(name).anchors
            ids = rng.choice(np.concatenate([item_ids, [0, 0, 0]]), size=anchors.shape)
            ids[1, 0] = [0, 0]  # a row without anchors: the residual alone
            ids[2, 1, 0] = 4242
            anchors.assign(ids)
            # the times the user met them, around the impression time (1 000): the later ones must not count
            model.get_layer(name).anchor_times.assign(rng.integers(0, 2_000, size=anchors.shape))
    return config, model


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_logits_and_loss_match_the_numpy_reference(case):
    config, model = _model(case)
    item_ids, feats, user_ids = _table()
    x = _batch(np.random.default_rng(3), item_ids)
    labels = np.array([1, 0, 1, 1, 0, 0], np.float32)
    want = ref.mtin(model, config, x, labels, item_ids, feats.astype(np.float64), user_ids)

    out = model(x)
    np.testing.assert_array_equal(out[F.OUTPUT_GROUP_ASSIGNMENT].numpy(), want["assignment"])
    assigned = want["assignment"][x[F.CLICKED_ITEMS] > 0]
    assert (assigned >= 0).sum() >= 4 and len(set(assigned[assigned >= 0])) >= 2  # routing really groups items
    np.testing.assert_allclose(out[F.OUTPUT_GROUP_WEIGHTS].numpy(), want["group_weights"], atol=1e-5)
    np.testing.assert_allclose(out[F.OUTPUT_LOGIT].numpy(), want["logit"], atol=1e-5)
    np.testing.assert_allclose(out[F.OUTPUT_PROBABILITY].numpy(), ref.sigmoid(want["logit"]), atol=1e-6)
    # Both branches matter in this batch (a dropped or sign-flipped term would show).
    assert np.abs(want["negative"]).max() > 0.05 and np.abs(want["positive"]).max() > 0.05

    # Eq. 12: the L2 terms (model.losses after the call), and the loss fit minimises (the compiled loss plus those
    # terms, Model.compute_loss as train_step calls it) = cross-entropy + L2.
    np.testing.assert_allclose(float(tf.add_n(model.losses)), want["regularisation"], rtol=1e-5, atol=1e-6)
    assert want["regularisation"] > 0.1 * want["cross_entropy"]
    loss = model.compute_loss(x, {F.OUTPUT_LOGIT: tf.constant(labels)}, out)
    np.testing.assert_allclose(float(loss), want["loss"], atol=1e-5)
