"""Recommend from the whole catalogue: MTIN's interest rows as multi-interest retrieval queries, ranked by MTIN.

A user's positive branch ends in s updated memory rows u_p [s, d] (eq. 10), one per interest group. Each row is a
query against every item's embedding x_j [d] (the item table the model owns: mtin_tf.layers.ItemEmbedding):

  retrieve   score_p(j) = u_p · x_j; each row p keeps its own top k' items (TFRS's exact top-k, CatalogueTopK),
             leaving out the items to exclude (the user's clicked history, or every item clicked in training)
  merge      the s·k' retrieved items, each item once (kept with the row that scored it highest)
  rank       MTIN's click probability of each (the candidate half of the model, mtin_tf.model.score_candidates)
  return     the k most probable: item id, click probability, logit, the row that retrieved it and its retrieval score

k' = k (each row retrieves as many items as are asked for, so the merged pool always holds at least k items when the
catalogue has them). A slot that cannot be filled (fewer than k items left after the exclusions) holds item id 0,
click probability 0, logit −inf and row −1. The retrieval score is the readout's own matching score (the attention
readout weighs the rows by u_p · x_e), so the rows are queries of the same geometry the ranking uses.
"""
from __future__ import annotations

import tensorflow as tf

from mtin_tf import features as F

MAX_RECOMMEND_K = 1000  # the most items one ``recommend`` call returns per user (the served signature checks it)


def catalogue_top_k(embedding, k: int = 10):
    """TFRS's exact top-k (``tfrs.layers.factorized_top_k.TopK`` with BruteForce's dot-product scoring) over the
    item table that ``embedding`` (an ItemEmbedding) already owns: BruteForce would copy the table into an index of
    its own (twice the served model's memory at 1.7 M items); this one reads the table in place on each call.

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
    first by click probability, plus the user's group_weights [U, s, s] and group_assignment [U, L]."""
    from mtin_tf.model import ITEM_EMBEDDING, _check_mtin
    from mtin_tf.signatures import model_halves

    _check_mtin(model)
    encode, score = model_halves(model)
    top_k = catalogue_top_k(model.get_layer(ITEM_EMBEDDING))

    def recommend(users, k, exclusions):
        k = tf.cast(k, tf.int32)
        checks = [tf.debugging.assert_greater_equal(k, 1, message="k must be at least 1"),
                  tf.debugging.assert_less_equal(k, MAX_RECOMMEND_K,
                                                 message=f"k must be at most {MAX_RECOMMEND_K}")]
        with tf.control_dependencies(checks):
            depth = tf.reduce_max(k)
        encoded = encode(users)
        rows = encoded[F.OUTPUT_POSITIVE_ROWS]  # [U, s, d]
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
        ranked = score(encoded, ids)  # MTIN's logit and click probability of each pooled item [U, s·k']
        top = tf.math.top_k(tf.where(valid, ranked[F.OUTPUT_LOGIT], -float("inf")),
                            k=tf.minimum(depth, tf.shape(ids)[1])).indices
        filled = tf.gather(valid, top, batch_dims=1) & (tf.range(tf.shape(top)[1])[None] < k[:, None])

        def take(t, empty):
            return tf.where(filled, tf.gather(t, top, batch_dims=1), tf.cast(empty, t.dtype))

        out = {F.OUTPUT_ITEM_IDS: take(ids, F.PADDING_ID),
               F.OUTPUT_PROBABILITY: take(ranked[F.OUTPUT_PROBABILITY], 0.0),
               F.OUTPUT_LOGIT: take(ranked[F.OUTPUT_LOGIT], -float("inf")),
               F.OUTPUT_RETRIEVAL_SCORE: take(scores, -float("inf")),
               F.OUTPUT_INTEREST_ROW: take(row_of, -1)}
        out.update({key: encoded[key] for key in (F.OUTPUT_GROUP_WEIGHTS, F.OUTPUT_GROUP_ASSIGNMENT)})
        return out

    return recommend
