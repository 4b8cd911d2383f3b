"""Recommend from the whole catalogue: MTIN's interest rows as multi-interest retrieval queries.

A user's positive branch ends in s updated memory rows u_p [s, d] (eq. 10), one per interest group. Each row is a
query against every item's embedding x_j [d] (the item table the model owns: mtin_tf.layers.ItemEmbedding); with
the retrieval head (config.retrieval_head, the default; mtin_tf.layers.RetrievalHead) the query of row p is
q_p = u_p (I + W_r), which takes u_p's place in every score below; with the history query (config.history_query, off
by default) one more query, row s, x̄ (I + W_h) of the clicked history's mean x̄, joins the s rows; with the user's
retrieval row (config.retrieval_user_row, off by default) the user's own row e_u is added to every query:

  retrieve   score_p(j) = u_p · x_j + γ log q_j; each row p keeps its own top k items (TFRS's exact top-k,
             CatalogueTopK), leaving out the items to exclude (the user's clicked history, or every item clicked in
             training). q_j is the item's share of the training impressions and γ its weight learnt by the
             retrieval objective, when the model has the exposure prior (config.exposure_prior,
             mtin_tf.layers.ExposurePrior); without it the score is u_p · x_j.
  merge      the s·k retrieved items, each item once (kept with the row that scored it highest)
  rank       by that score, max_p u_p · x_j + γ log q_j
  return     the k best: item id, MTIN's click probability and logit of each (the candidate half of the model,
             mtin_tf.model.score_candidates), the row that retrieved it and its retrieval score

Why the retrieval score ranks, and not the click probability: the click logit estimates P(click | shown) but was
trained only to compare the impressions a user was shown; the retrieval objective (mtin_tf.retrieval_task) trains
max_p u_p · x_c + γ log q_c to pick the clicked candidate out of the batch's, which is what ranking a catalogue
asks. On validation (seed 0) the rows' score ranks the catalogue far better: Recall@50 0.35 against 0.21 on planted
data and 0.42 against 0.32 on MovieLens-100K (docs/EXPERIMENTS.md, "2026-12-06 (2)").

The merged pool always holds at least k items when the catalogue has them. A slot that cannot be filled (fewer than
k items left after the exclusions) holds item id 0, click probability 0, logit −inf and row −1.
"""
from __future__ import annotations

import tensorflow as tf

from mtin_tf import features as F

MAX_RECOMMEND_K = 1000  # the most items one ``recommend`` call returns per user (the served signature checks it)


def catalogue_top_k(embedding, k: int = 10, item_bias=None):
    """TFRS's exact top-k (``tfrs.layers.factorized_top_k.TopK`` with BruteForce's dot-product scoring) over the
    item table that ``embedding`` (an ItemEmbedding) already owns: BruteForce would copy the table into an index of
    its own (twice the served model's memory at 1.7 M items); this one reads the table in place on each call.
    ``item_bias`` (a callable () → float [N], each item's bias in the table's row order, e.g. the exposure prior's
    γ log q_j: ExposurePrior.catalogue_bias) is added to every query's score of each item.

    ``layer(queries [Q, d], k)`` → (scores [Q, k], item ids int64 [Q, k]), best first, k at most the catalogue's
    size; ``layer.query_with_exclusions(queries, exclusions [Q, E], k)`` leaves out the ids in each query's row of
    ``exclusions`` (TFRS's own method)."""
    import tensorflow_recommenders as tfrs

    class CatalogueTopK(tfrs.layers.factorized_top_k.TopK):
        def __init__(self, table_layer, k):
            super().__init__(k=k, name="catalogue_top_k")
            self.table_layer = table_layer

        def index(self, candidates=None, identifiers=None):
            raise TypeError("CatalogueTopK indexes the model's own item table; there is nothing to index")

        def call(self, queries, k=None):
            k = self._k if k is None else k
            candidates, identifiers = self.table_layer.catalogue()
            scores = self._compute_score(queries, candidates)  # [Q, N]
            if item_bias is not None:
                scores += item_bias()[None]
            values, indices = tf.math.top_k(scores, k=tf.minimum(tf.cast(k, tf.int32), tf.shape(scores)[1]))
            return values, tf.gather(identifiers, indices)

        def is_exact(self):
            return True

    return CatalogueTopK(embedding, k)


def _isin(ids, exclusions):
    """[Q, K] ids, [Q, E] exclusions → bool [Q, K]: whether each id is in its row of exclusions."""
    return tf.reduce_any(tf.equal(ids[:, :, None], exclusions[:, None, :]), axis=-1)


def recommender(model):
    """fn(users, k, exclusions) → the top-k items of the catalogue for each user, for an MTIN ``model``.

    users: the user inputs (mtin_tf.features.USER_INPUT_NAMES): user_id, timestamp int64 [U], histories [U, L].
    k: int [U], items wanted per user (1 ≤ k ≤ MAX_RECOMMEND_K; the output has K = max(k) columns and a user's
      slots past its own k are empty). exclusions: int64 [U, E] item ids never to recommend (0 = none).
    Returns {item_ids int64, click_probability, logit, retrieval_score float32, interest_row int32} [U, K], best
    first (by the retrieval score max_p u_p · x_j + log q_j, log q_j with the exposure prior only), plus the user's
    group_weights [U, s, s] and group_assignment [U, L]."""
    from mtin_tf.model import EXPOSURE_PRIOR, ITEM_EMBEDDING, check_mtin, has_exposure_prior, retrieval_queries
    from mtin_tf.signatures import model_halves

    check_mtin(model)
    encode, score = model_halves(model)
    prior = model.get_layer(EXPOSURE_PRIOR) if has_exposure_prior(model) else None
    top_k = catalogue_top_k(model.get_layer(ITEM_EMBEDDING), item_bias=None if prior is None else prior.catalogue_bias)

    def recommend(users, k, exclusions):
        k = tf.cast(k, tf.int32)
        checks = [tf.debugging.assert_greater_equal(k, 1, message="k must be at least 1"),
                  tf.debugging.assert_less_equal(k, MAX_RECOMMEND_K,
                                                 message=f"k must be at most {MAX_RECOMMEND_K}")]
        with tf.control_dependencies(checks):
            depth = tf.reduce_max(k)
        encoded = encode(users)
        rows = retrieval_queries(encoded)  # [U, s, d]: the positive rows u_p, or their queries q_p (retrieval head)
        num_users, s = tf.shape(rows)[0], tf.shape(rows)[1]
        exclusions = tf.cast(exclusions, tf.int64)
        queries = tf.reshape(rows, [num_users * s, -1])
        excluded = tf.repeat(exclusions, s, axis=0)  # [U·s, E], row u·s + p is user u's
        scores, ids = top_k.query_with_exclusions(queries, excluded, k=depth)  # [U·s, k']
        per_row = tf.shape(ids)[1]
        # A user's rows keep their own top k (the batch retrieved max(k)); excluded ids fill the tail when the
        # catalogue has too few others.
        within_k = tf.range(per_row)[None] < tf.repeat(k, s)[:, None]
        valid = ~_isin(ids, excluded) & (ids != F.PADDING_ID) & within_k
        pool = num_users, s * per_row
        ids, scores, valid = (tf.reshape(t, pool) for t in (ids, scores, valid))
        row_of = tf.tile(tf.repeat(tf.range(s, dtype=tf.int32), per_row)[None], [num_users, 1])
        # Each item once: order by retrieval score (invalid last), then stably by id; the first of equal ids is kept.
        by_score = tf.argsort(tf.where(valid, scores, -float("inf")), axis=1, direction="DESCENDING", stable=True)
        by_id = tf.gather(by_score, tf.argsort(tf.gather(ids, by_score, batch_dims=1), axis=1, stable=True),
                          batch_dims=1)
        ids, scores, valid, row_of = (tf.gather(t, by_id, batch_dims=1) for t in (ids, scores, valid, row_of))
        first = tf.concat([tf.ones([num_users, 1], tf.bool), ids[:, 1:] != ids[:, :-1]], axis=1)
        valid &= first
        top = tf.math.top_k(tf.where(valid, scores, -float("inf")), k=tf.minimum(depth, tf.shape(ids)[1])).indices
        filled = tf.gather(valid, top, batch_dims=1) & (tf.range(tf.shape(top)[1])[None] < k[:, None])
        ids, scores, row_of = (tf.gather(t, top, batch_dims=1) for t in (ids, scores, row_of))
        ranked = score(encoded, ids)  # MTIN's logit and click probability of each recommended item [U, K]

        def take(t, empty):
            return tf.where(filled, t, tf.cast(empty, t.dtype))

        out = {F.OUTPUT_ITEM_IDS: take(ids, F.PADDING_ID),
               F.OUTPUT_PROBABILITY: take(ranked[F.OUTPUT_PROBABILITY], 0.0),
               F.OUTPUT_LOGIT: take(ranked[F.OUTPUT_LOGIT], -float("inf")),
               F.OUTPUT_RETRIEVAL_SCORE: take(scores, -float("inf")),
               F.OUTPUT_INTEREST_ROW: take(row_of, -1)}
        out.update({key: encoded[key] for key in (F.OUTPUT_GROUP_WEIGHTS, F.OUTPUT_GROUP_ASSIGNMENT)})
        return out

    return recommend


def catalogue_queries(before, test):
    """What retrieval over the catalogue is scored on (docs/EVALUATION.md, "Retrieval"), from model-input arrays.

    before: the splits of the period before test (train, validation), each {feature: array} with labels.
    test: the test split. Each user of test is asked once, as of the user's first test impression (its user inputs:
    user id, that time, the histories then). Excluded for that user: every item clicked before test (clicked
    candidates of ``before`` and the items of that row's clicked history). Relevant: the items clicked in test that
    are not excluded. Returns (users {user input: [U] / [U, L]}, exclusions int64 [U, E] padded with 0,
    relevant_users int [P] (rows of users), relevant_items int64 [P])."""
    import numpy as np

    order = np.lexsort((test[F.TIMESTAMP], test[F.USER_ID]))
    user_sorted = test[F.USER_ID][order]
    first = order[np.flatnonzero(np.r_[True, user_sorted[1:] != user_sorted[:-1]])]
    users = {name: np.asarray(test[name][first], np.int64) for name in F.USER_INPUT_NAMES}
    row_of_user = {int(u): i for i, u in enumerate(users[F.USER_ID])}
    excluded = [set(users[F.CLICKED_ITEMS][i][users[F.CLICKED_ITEMS][i] != F.PADDING_ID].tolist())
                for i in range(len(first))]
    for split in before:
        clicked = np.asarray(split[F.LABEL]) == 1
        for user, item in zip(split[F.USER_ID][clicked].tolist(), split[F.ITEM_ID][clicked].tolist()):
            if user in row_of_user:
                excluded[row_of_user[user]].add(item)
    width = max([len(e) for e in excluded] + [1])
    exclusions = np.zeros([len(first), width], np.int64)
    for i, items in enumerate(excluded):
        exclusions[i, :len(items)] = sorted(items)
    clicked = np.asarray(test[F.LABEL]) == 1
    pairs = [(row_of_user[u], i) for u, i in zip(test[F.USER_ID][clicked].tolist(), test[F.ITEM_ID][clicked].tolist())
             if i not in excluded[row_of_user[u]]]
    relevant_users = np.array([p[0] for p in pairs], np.int64)
    relevant_items = np.array([p[1] for p in pairs], np.int64)
    return users, exclusions, relevant_users, relevant_items


def popular_items(before, exclusions, depth: int):
    """The popularity floor of retrieval: for each user (a row of ``exclusions`` int64 [U, E]), the ``depth`` items
    clicked most often in ``before`` (ties: the smaller id first), leaving out the user's excluded items → int64
    [U, depth] (0 where fewer remain)."""
    import numpy as np

    items = np.concatenate([np.asarray(s[F.ITEM_ID])[np.asarray(s[F.LABEL]) == 1] for s in before])
    ids, counts = np.unique(items, return_counts=True)
    ranked = ids[np.lexsort((ids, -counts))]
    head = ranked[:depth + exclusions.shape[1]]  # enough for any user's exclusions
    out = np.zeros([len(exclusions), depth], np.int64)
    for u, excluded in enumerate(exclusions):
        kept = head[~np.isin(head, excluded)][:depth]
        out[u, :len(kept)] = kept
    return out


RETRIEVAL_KS = (20, 50, 100)
RETRIEVAL_PREFIX = "retrieval_"  # of the report keys: retrieval_recall@K, retrieval_hit_rate@K, retrieval_users


def _report(metrics: dict) -> dict:
    return {RETRIEVAL_PREFIX + key: value for key, value in metrics.items()}


def popularity_floor_metrics(before, test, ks=RETRIEVAL_KS, queries=None) -> dict:
    """Recall@K and HitRate@K of :func:`popular_items` on the queries of :func:`catalogue_queries`, keys prefixed
    ``retrieval_`` (the floor a model's catalogue retrieval must beat). ``queries``: catalogue_queries(before, test)
    when the caller has them already (a model's catalogue_metrics on the same split)."""
    from mtin_tf.metrics import retrieval_recall_hit_rate

    _, exclusions, relevant_users, relevant_items = catalogue_queries(before, test) if queries is None else queries
    return _report(retrieval_recall_hit_rate(popular_items(before, exclusions, max(ks)), relevant_users,
                                             relevant_items, ks))


def catalogue_metrics(model, before, test, ks=RETRIEVAL_KS, batch_size: int = 256, queries=None) -> dict:
    """Recall@K and HitRate@K (mtin_tf.metrics.retrieval_recall_hit_rate) of an MTIN ``model`` recommending from
    its whole catalogue (:func:`recommender`, K = max(ks) per user) on the queries of :func:`catalogue_queries`;
    keys prefixed ``retrieval_`` (retrieval_recall@K, retrieval_hit_rate@K, retrieval_users: the users with a
    relevant item). ``queries``: catalogue_queries(before, test) when the caller has them already."""
    from mtin_tf.metrics import retrieval_recall_hit_rate

    users, exclusions, relevant_users, relevant_items = catalogue_queries(before, test) if queries is None else queries
    retrieved = recommend_all(model, users, exclusions, max(ks), batch_size=batch_size)[F.OUTPUT_ITEM_IDS]
    return _report(retrieval_recall_hit_rate(retrieved, relevant_users, relevant_items, ks))


def recommend_all(model, users, exclusions, depth: int, keys=(F.OUTPUT_ITEM_IDS,), batch_size: int = 256) -> dict:
    """:func:`recommender` of an MTIN ``model`` for many users, ``batch_size`` at a time: users {user input: [U] /
    [U, L]} and exclusions int64 [U, E] (catalogue_queries' first two), ``depth`` items each → {key: NumPy [U, depth]}
    for the recommend outputs named in ``keys`` (item ids, retrieval_score, logit, ...)."""
    import numpy as np

    recommend = tf.function(recommender(model))
    parts = {key: [] for key in keys}
    for start in range(0, len(exclusions), batch_size):
        batch = {name: tf.constant(value[start:start + batch_size]) for name, value in users.items()}
        stop = start + len(batch[F.USER_ID].numpy())
        out = recommend(batch, tf.fill([stop - start], depth), tf.constant(exclusions[start:stop]))
        for key in keys:
            parts[key].append(out[key].numpy())
    empty = {F.OUTPUT_ITEM_IDS: np.int64, F.OUTPUT_INTEREST_ROW: np.int32}
    return {key: np.concatenate(parts[key]) if parts[key] else np.zeros([0, depth], empty.get(key, np.float32))
            for key in keys}
