"""The retrieval objective (mtin_tf.retrieval_task) against a NumPy reference, and training with it."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.retrieval_task import MultiTaskTraining, impression_share


def reference_loss(rows, candidates, ids, clicked, share_ids, share, gamma=0.0, prior=None, temperature=1.0):
    """(1/B) Σ_{b clicked} −log softmax_c((max_p u_bp·x_c + γ prior_c) / T − log q_c)[b], other rows' copies of b's
    item left out (prior: {id: log q} of the exposure prior). q of an id never shown in training: half the smallest
    share, as the exposure prior gives it."""
    q = np.array([share[list(share_ids).index(i)] if i in share_ids else 0.5 * min(share) for i in ids])
    bias = np.array([gamma * prior[i] for i in ids]) if prior else 0.0
    total = 0.0
    for b in np.flatnonzero(clicked):
        logits = ((rows[b] @ candidates.T).max(axis=0) + bias) / temperature - np.log(q)
        keep = (ids != ids[b]) | (np.arange(len(ids)) == b)
        logits = logits[keep]
        target = int(np.flatnonzero(np.flatnonzero(keep) == b)[0])
        total += -(logits[target] - np.log(np.exp(logits - logits.max()).sum()) - logits.max())
    return total / len(ids)


def test_retrieval_loss_matches_the_numpy_reference():
    rng = np.random.default_rng(0)
    batch, s, d = 6, 3, 4
    rows = rng.normal(size=(batch, s, d)).astype(np.float32)
    candidates = rng.normal(size=(batch, d)).astype(np.float32)
    ids = np.array([11, 12, 11, 13, 14, 99], np.int64)  # 11 twice: an accidental hit; 99 never seen in training
    clicked = np.array([1, 0, 1, 1, 0, 1], np.float32)
    share_ids, share = impression_share([11, 11, 12, 13, 13, 13, 14, 14])
    np.testing.assert_array_equal(share_ids, [11, 12, 13, 14])
    np.testing.assert_allclose(share, [0.25, 0.125, 0.375, 0.25])
    ranker = tf_keras.Sequential([tf_keras.layers.Dense(1)])  # unused by the loss itself
    task = MultiTaskTraining(ranker, 1.0, share_ids, share)
    got = task.retrieval_loss({F.OUTPUT_POSITIVE_ROWS: tf.constant(rows),
                               F.OUTPUT_CANDIDATE_EMBEDDING: tf.constant(candidates)},
                              {F.ITEM_ID: tf.constant(ids)}, tf.constant(clicked))
    want = reference_loss(rows, candidates, ids, clicked, list(share_ids), list(share))
    assert float(got) == pytest.approx(want, rel=1e-5)
    # Only clicked rows count: no clicks, no loss.
    none = task.retrieval_loss({F.OUTPUT_POSITIVE_ROWS: tf.constant(rows),
                                F.OUTPUT_CANDIDATE_EMBEDDING: tf.constant(candidates)},
                               {F.ITEM_ID: tf.constant(ids)}, tf.zeros([batch]))
    assert float(none) == 0.0
    # The temperature divides the scores before the log-q correction (config.retrieval_temperature).
    sharp = MultiTaskTraining(ranker, 1.0, share_ids, share, temperature=0.5)
    got = sharp.retrieval_loss({F.OUTPUT_POSITIVE_ROWS: tf.constant(rows),
                                F.OUTPUT_CANDIDATE_EMBEDDING: tf.constant(candidates)},
                               {F.ITEM_ID: tf.constant(ids)}, tf.constant(clicked))
    assert float(got) == pytest.approx(reference_loss(rows, candidates, ids, clicked, list(share_ids), list(share),
                                                      temperature=0.5), rel=1e-5)
    assert float(got) != pytest.approx(want, rel=1e-2)


def test_the_retrieval_head_maps_each_row_by_identity_plus_its_kernel_and_the_loss_scores_its_queries():
    """q_p = u_p (I + W_r) against NumPy; with the head's queries among the outputs, the loss scores them and not
    the rows; W_r gets a gradient from the retrieval term."""
    from mtin_tf.layers import RetrievalHead

    rng = np.random.default_rng(2)
    batch, s, d = 6, 3, 4
    rows = rng.normal(size=(batch, s, d)).astype(np.float32)
    head = RetrievalHead(kernel_regularizer=tf_keras.regularizers.L2(0.1))
    np.testing.assert_allclose(head(rows).numpy(), rows, atol=1e-7)  # starts as the identity
    kernel = rng.normal(size=(d, d)).astype(np.float32)
    head.kernel.assign(kernel)
    queries = np.einsum("bsd,de->bse", rows, np.eye(d) + kernel)
    np.testing.assert_allclose(head(rows).numpy(), queries, rtol=1e-5, atol=1e-5)
    assert float(head.losses[0]) == pytest.approx(0.1 * (kernel.astype(np.float64) ** 2).sum(), rel=1e-5)

    candidates = rng.normal(size=(batch, d)).astype(np.float32)
    ids = np.array([11, 12, 11, 13, 14, 99], np.int64)
    clicked = np.array([1, 0, 1, 1, 0, 1], np.float32)
    share_ids, share = impression_share([11, 11, 12, 13, 13, 13, 14, 14])
    task = MultiTaskTraining(tf_keras.Sequential([tf_keras.layers.Dense(1)]), 1.0, share_ids, share)
    with tf.GradientTape() as tape:
        got = task.retrieval_loss({F.OUTPUT_POSITIVE_ROWS: tf.constant(rows),
                                   F.OUTPUT_RETRIEVAL_QUERIES: head(tf.constant(rows)),
                                   F.OUTPUT_CANDIDATE_EMBEDDING: tf.constant(candidates)},
                                  {F.ITEM_ID: tf.constant(ids)}, tf.constant(clicked))
    want = reference_loss(queries, candidates, ids, clicked, list(share_ids), list(share))
    assert float(got) == pytest.approx(want, rel=1e-4)
    assert float(got) != pytest.approx(reference_loss(rows, candidates, ids, clicked, list(share_ids), list(share)),
                                       rel=1e-2)
    assert float(tf.reduce_max(tf.abs(tape.gradient(got, head.kernel)))) > 1e-4
    # With its bias (use_bias, config.retrieval_bias): q_p = u_p (I + W_r) + b_r, b_r from 0 under the same penalty,
    # a per-item offset b_r · x_c of every row's score; the loss moves it.
    biased = RetrievalHead(kernel_regularizer=tf_keras.regularizers.L2(0.1), use_bias=True)
    np.testing.assert_allclose(biased(rows).numpy(), rows, atol=1e-7)
    bias = rng.normal(size=d).astype(np.float32)
    biased.kernel.assign(kernel)
    biased.bias.assign(bias)
    np.testing.assert_allclose(biased(rows).numpy(), queries + bias, rtol=1e-5, atol=1e-5)
    assert float(sum(biased.losses)) == pytest.approx(
        0.1 * ((kernel.astype(np.float64) ** 2).sum() + (bias.astype(np.float64) ** 2).sum()), rel=1e-5)
    with tf.GradientTape() as tape:
        got = task.retrieval_loss({F.OUTPUT_RETRIEVAL_QUERIES: biased(tf.constant(rows)),
                                   F.OUTPUT_CANDIDATE_EMBEDDING: tf.constant(candidates)},
                                  {F.ITEM_ID: tf.constant(ids)}, tf.constant(clicked))
    assert float(got) == pytest.approx(
        reference_loss(queries + bias, candidates, ids, clicked, list(share_ids), list(share)), rel=1e-4)
    assert float(tf.reduce_max(tf.abs(tape.gradient(got, biased.bias)))) > 1e-4
    assert MTINConfig(retrieval_bias=True).retrieval_bias
    assert not MTINConfig(retrieval_bias=True, retrieval_head=False).retrieval_bias  # the bias is the head's


def test_the_exposure_prior_enters_the_retrieval_score_with_its_learnt_weight():
    """With an exposure prior in the ranker, each candidate's score is max_p u_p·x_c + γ log q_c (γ the layer's)."""
    from mtin_tf.layers import ExposurePrior

    rng = np.random.default_rng(1)
    batch, s, d = 6, 3, 4
    rows = rng.normal(size=(batch, s, d)).astype(np.float32)
    candidates = rng.normal(size=(batch, d)).astype(np.float32)
    ids = np.array([11, 12, 11, 13, 14, 99], np.int64)
    clicked = np.array([1, 1, 0, 1, 1, 1], np.float32)
    share_ids, share = impression_share([11, 11, 12, 13, 13, 13, 14, 14])
    layer = ExposurePrior(4, item_ids=share_ids, name="exposure_prior")
    ranker = tf_keras.Sequential([layer])
    ranker(tf.constant(ids))
    log_share = np.log([0.01, 0.25, 0.125, 0.375, 0.25]).astype(np.float32)  # row 0: unknown ids (99)
    layer.log_share.assign(log_share)
    layer.gamma.assign(0.4)
    task = MultiTaskTraining(ranker, 1.0, share_ids, share)
    got = task.retrieval_loss({F.OUTPUT_POSITIVE_ROWS: tf.constant(rows),
                               F.OUTPUT_CANDIDATE_EMBEDDING: tf.constant(candidates)},
                              {F.ITEM_ID: tf.constant(ids)}, tf.constant(clicked))
    prior = dict(zip([11, 12, 13, 14, 99], log_share[[1, 2, 3, 4, 0]].tolist()))
    want = reference_loss(rows, candidates, ids, clicked, list(share_ids), list(share), gamma=0.4, prior=prior)
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert float(got) != pytest.approx(reference_loss(rows, candidates, ids, clicked, list(share_ids), list(share)),
                                       rel=1e-3)
    # γ is learnt from this term: its gradient is not zero.
    with tf.GradientTape() as tape:
        loss = task.retrieval_loss({F.OUTPUT_POSITIVE_ROWS: tf.constant(rows),
                                    F.OUTPUT_CANDIDATE_EMBEDDING: tf.constant(candidates)},
                                   {F.ITEM_ID: tf.constant(ids)}, tf.constant(clicked))
    assert abs(float(tape.gradient(loss, layer.gamma))) > 1e-4


def test_training_with_the_retrieval_objective_returns_the_ranker_and_logs_the_term(tiny_planted, tiny_base):
    from mtin_tf.data.canonical import read_item_features
    from mtin_tf.data.examples import read_split_arrays
    from mtin_tf.model import is_mtin
    from mtin_tf.train import EVAL_AUC, train_mtin

    data = read_split_arrays(tiny_planted["examples"], tiny_base["max_history"])
    items = read_item_features(tiny_planted["items"])
    config = MTINConfig(**dict(tiny_base, epochs=3, batch_size=32, learning_rate=0.01, retrieval_weight=1.0))
    model, history = train_mtin(config, data["train"], items.item_ids, items.features,
                                eval_arrays=data["validation"], verbose=0, patience=5)
    assert is_mtin(model) and model.name == "mtin"  # the ranker, not the training wrapper
    assert {"retrieval_loss", "val_retrieval_loss", EVAL_AUC} <= set(history.history)
    losses = history.history["retrieval_loss"]
    assert losses[-1] < losses[0]  # the term is trained, not only logged
    assert float(model.get_layer("exposure_prior").gamma.numpy()) != 1.0  # γ learnt by the retrieval term
    out = model({k: tf.constant(v[:4]) for k, v in data["validation"].items() if k in F.MODEL_INPUT_NAMES})
    assert out[F.OUTPUT_POSITIVE_ROWS].shape[1:] == (config.num_groups, config.embedding_dim)
    # With the retrieval head, the history query and the user's retrieval row, the objective trains W_r, W_h and e_u
    # away from 0 and the model outputs the s + 1 queries.
    headed = MTINConfig(**dict(tiny_base, epochs=1, batch_size=32, learning_rate=0.01, retrieval_weight=1.0,
                               retrieval_head=True, history_query=True, retrieval_user_row=True))
    model, _ = train_mtin(headed, data["train"], items.item_ids, items.features, verbose=0)
    for name in ("retrieval_head", "history_query"):
        assert float(tf.reduce_max(tf.abs(model.get_layer(name).kernel))) > 1e-4, name
    assert float(tf.reduce_max(tf.abs(model.get_layer("retrieval_user").memory))) > 1e-4
    out = model({k: tf.constant(v[:4]) for k, v in data["validation"].items() if k in F.MODEL_INPUT_NAMES})
    assert out[F.OUTPUT_RETRIEVAL_QUERIES].shape[1:] == (config.num_groups + 1, config.embedding_dim)
    assert not MTINConfig(retrieval_head=True, retrieval_weight=0.0).retrieval_head  # nothing would train it
    # Without the objective the model has neither extra output, and nothing is wrapped.
    plain = MTINConfig(**dict(tiny_base, epochs=1, retrieval_weight=0.0))
    model, history = train_mtin(plain, data["train"], items.item_ids, items.features, verbose=0)
    assert "retrieval_loss" not in history.history and F.OUTPUT_POSITIVE_ROWS not in model.output
    assert float(model.get_layer("exposure_prior").gamma.numpy()) == 1.0  # nothing else trains γ


def test_the_catalogue_softmax_scores_every_item_of_the_table_with_the_exposure_prior():
    """negatives="catalogue": (1/B) Σ_{b clicked, c_b in the table} −log softmax_j(max_p q_bp · x_j + γ log q_j)[c_b]
    over every item j of the table (table order ≠ id order), against NumPy; an unclicked row and a candidate absent
    from the table add nothing; γ and the item table get gradients."""
    from mtin_tf.layers import ExposurePrior, ItemEmbedding
    from mtin_tf.model import EXPOSURE_PRIOR, ITEM_EMBEDDING, set_exposure_prior

    rng = np.random.default_rng(3)
    item_ids = np.array([14, 11, 13, 12], np.int64)  # table order, not sorted
    embed = ItemEmbedding(4, 2, 3, use_id_embedding=True, item_ids=item_ids,
                          item_features=rng.normal(size=(4, 2)).astype(np.float32), name=ITEM_EMBEDDING)
    prior = ExposurePrior(4, item_ids=item_ids, name=EXPOSURE_PRIOR)

    class Ranker(tf_keras.Model):  # what the objective reads of a ranker: its item table and exposure prior
        def __init__(self):
            super().__init__()
            self.embed, self.prior = embed, prior

    ranker = Ranker()
    embed(tf.constant([11])), prior(tf.constant([11]))
    embed.id_embedding.assign(rng.normal(size=(5, 3)).astype(np.float32))
    share_ids, share = impression_share([11, 11, 12, 13, 13, 13, 14, 14])
    set_exposure_prior(ranker, share_ids, share)
    prior.gamma.assign(0.6)
    task = MultiTaskTraining(ranker, 1.0, share_ids, share, negatives="catalogue")

    batch, s = 5, 2
    queries = rng.normal(size=(batch, s, 3)).astype(np.float32)
    ids = np.array([11, 13, 11, 99, 12], np.int64)  # 99: not in the table
    clicked = np.array([1, 1, 0, 1, 1], np.float32)
    with tf.GradientTape() as tape:
        got = task.retrieval_loss({F.OUTPUT_RETRIEVAL_QUERIES: tf.constant(queries)}, {F.ITEM_ID: tf.constant(ids)},
                                  tf.constant(clicked))
    x = embed(tf.constant(item_ids))[0].numpy()  # [N, d] in table order
    log_q = np.log([dict(zip(share_ids.tolist(), share.tolist()))[i] for i in item_ids.tolist()])
    total = 0.0
    for b in range(batch):
        if clicked[b] and ids[b] in item_ids:
            logits = (queries[b] @ x.T).max(axis=0) + 0.6 * log_q
            total += np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[list(item_ids).index(ids[b])]
    assert float(got) == pytest.approx(total / batch, rel=1e-5)
    gamma_grad, table_grad = tape.gradient(got, [prior.gamma, embed.id_embedding])
    assert abs(float(gamma_grad)) > 1e-4 and float(tf.reduce_max(tf.abs(tf.convert_to_tensor(table_grad)))) > 1e-4
    # With a temperature T every logit is divided by T.
    sharp = MultiTaskTraining(ranker, 1.0, share_ids, share, negatives="catalogue", temperature=0.25)
    got = sharp.retrieval_loss({F.OUTPUT_RETRIEVAL_QUERIES: tf.constant(queries)}, {F.ITEM_ID: tf.constant(ids)},
                               tf.constant(clicked))
    total = 0.0
    for b in range(batch):
        if clicked[b] and ids[b] in item_ids:
            logits = ((queries[b] @ x.T).max(axis=0) + 0.6 * log_q) / 0.25
            total += np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[list(item_ids).index(ids[b])]
    assert float(got) == pytest.approx(total / batch, rel=1e-5)
    with pytest.raises(ValueError, match="negatives"):
        MultiTaskTraining(ranker, 1.0, share_ids, share, negatives="sampled")
    with pytest.raises(ValueError, match="retrieval_temperature"):
        MTINConfig(retrieval_temperature=0.0)
    with pytest.raises(ValueError, match="retrieval_negatives"):
        MTINConfig(retrieval_negatives="sampled")
