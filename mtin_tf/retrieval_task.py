"""The retrieval objective (ours): training MTIN's interest rows to be queries for recommending from the catalogue.

The ``recommend`` signature (mtin_tf.retrieval) queries the item table with the s updated memory rows u_p of the
clicked-history branch. Eq. 12 trains the rows only through the ranking readout; with ``retrieval_weight`` w > 0
the training loss becomes

  L = L_rank (eq. 12: sigmoid cross-entropy on the click logit, + λ‖·‖²)
      + w · (1/B) Σ_{b: clicked} −log softmax_c( max_p u_{b,p} · x_c + γ log q_c − log q_c )[c = b]

over a batch of B impressions: for each clicked impression b, its candidate x_b against every candidate of the batch
(clicked or not: the other impressions of the batch are the negatives), each scored by the best matching of the
user's s rows (TFRS's multi-head "maxsim" retrieval, ``tfrs.tasks.Retrieval``), with the log-q correction (q_c: the
candidate's share of the training impressions, which is how often it is drawn as an in-batch negative) and
accidental hits (the same item as another row's candidate) removed. Unclicked impressions add nothing. With the
retrieval head (config.retrieval_head, mtin_tf.layers.RetrievalHead) each row's query q_{b,p} = u_{b,p} (I + W_r)
takes u_{b,p}'s place (+ b_r with config.retrieval_bias), and this term alone trains W_r; with the history query
(config.history_query) the max runs over one more query, the clicked history's mean mapped by I + W_h
(mtin_tf.model.encode_user), trained here too. With the exposure prior (config.exposure_prior,
mtin_tf.layers.ExposurePrior) the score of a candidate also holds γ log q_c, γ a scalar learnt here only: the part of
an item's popularity its embedding cannot carry (features alone cannot tell a popular item from a rare one), which
``recommend`` adds to its retrieval score in the same way.

With ``retrieval_negatives="catalogue"`` (config.retrieval_negatives) the softmax runs over every item j of the
model's item table instead of the batch's candidates, exactly (no sampling, so no log-q correction and no accidental
hits):

  L_retrieval = (1/B) Σ_{b: clicked, c_b in the table} −log softmax_j( max_p q_{b,p} · x_j + γ log q_j )[j = c_b]

at B·s·N·d multiply-adds per step (N the table's items): for catalogues of up to some 10⁵ items.

``MultiTaskTraining`` wraps the model for fit only: its train step adds the retrieval term; evaluation, export and
serving use the wrapped model unchanged.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf.config import RETRIEVAL_NEGATIVES
from mtin_tf.layers.exposure import UNSEEN_SHARE_FACTOR
from mtin_tf.model import EXPOSURE_PRIOR, ITEM_EMBEDDING, has_exposure_prior, retrieval_queries

RETRIEVAL_LOSS = "retrieval_loss"  # the retrieval term's running mean, logged per epoch


def impression_share(item_ids) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct item ids int64 [M], each one's share of the impressions float32 [M]) of training candidates."""
    ids, counts = np.unique(np.asarray(item_ids, np.int64), return_counts=True)
    return ids, (counts / max(counts.sum(), 1)).astype(np.float32)


def catalogue_softmax_loss(queries, embedding, ids, weights, item_bias=None, table=None, temperature=1.0):
    """(1/B) Σ_b w_b · −log softmax_j(max_p q_{b,p} · x_j + bias_j)[j = c_b]: the exact softmax over every item of
    the table (module docstring, "catalogue").

    queries: [B, P, d] each row's queries (MTIN's s interest rows, a two-tower's one query); embedding: the
    ItemEmbedding that owns the table (x_j [N, d] from its ``catalogue``); ids: int64 [B], the candidate c_b of each
    row; weights: [B] (1 for a clicked row, 0 otherwise); an id absent from the table weighs 0, it has no class to
    be; item_bias: [N] in table order (the exposure prior's γ log q_j), or None; table: the items' vectors [N, d]
    in table order when they are not the table's own x_j (a two-tower's candidate tower over them); temperature: T,
    the logits divided by T. Returns a scalar."""
    if table is None:
        table, _ = embedding.catalogue()  # [N, d] in table order
    queries = tf.cast(queries, table.dtype)
    logits = tf.reduce_max(tf.einsum("bpd,nd->bpn", queries, table), axis=1)  # [B, N]
    if item_bias is not None:
        logits += tf.cast(item_bias, logits.dtype)[None]
    logits /= temperature
    rows = embedding.rows(ids)  # index in the sorted keys + 1; 0 for an id not in the table
    target = tf.gather(tf.convert_to_tensor(embedding.table_rows), tf.maximum(rows - 1, 0))  # its row in the table
    weights = tf.cast(tf.reshape(weights, [-1]), logits.dtype) * tf.cast(rows > 0, logits.dtype)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)
    return tf.reduce_sum(weights * losses) / tf.cast(tf.shape(ids)[0], logits.dtype)


class MultiTaskTraining(tf_keras.Model):
    """Fits ``ranker`` (an MTIN from build_mtin with ``retrieval_weight`` > 0, whose outputs include the
    positive_rows [B, s, d] and the candidate_embedding [B, d]) on L_rank + w · L_retrieval.

    Compile it like the ranker (mtin_tf.model.compile_model): its metrics and the ranking loss are the ranker's
    (``loss`` is L_rank with its λ terms, ``logit_auc``, ...), plus ``retrieval_loss``, the retrieval term before w.
    ``candidate_ids`` / ``candidate_share``: impression_share of the training candidates (an id absent from them gets
    UNSEEN_SHARE_FACTOR × the smallest share). ``negatives``: "in_batch" or "catalogue" (module docstring);
    ``temperature``: T, the softmax's logits divided by T before the log-q correction (config.retrieval_temperature)."""

    def __init__(self, ranker, weight: float, candidate_ids, candidate_share, negatives: str = "in_batch",
                 temperature: float = 1.0, **kwargs):
        import tensorflow_recommenders as tfrs

        super().__init__(name="mtin_multitask", **kwargs)
        if negatives not in RETRIEVAL_NEGATIVES:
            raise ValueError(f"negatives must be one of {RETRIEVAL_NEGATIVES}, got {negatives!r}")
        self.ranker, self.weight, self.negatives = ranker, float(weight), negatives
        self.temperature = float(temperature)
        self.embedding = ranker.get_layer(ITEM_EMBEDDING) if negatives == "catalogue" else None
        self.share_keys = tf.constant(np.asarray(candidate_ids, np.int64))
        self.share = tf.constant(np.asarray(candidate_share, np.float32))
        self.task = tfrs.tasks.Retrieval(
            loss=tf_keras.losses.CategoricalCrossentropy(from_logits=True, reduction=tf_keras.losses.Reduction.SUM),
            remove_accidental_hits=True, temperature=None if self.temperature == 1.0 else self.temperature)
        self.retrieval_tracker = tf_keras.metrics.Mean(name=RETRIEVAL_LOSS)
        self.prior = ranker.get_layer(EXPOSURE_PRIOR) if has_exposure_prior(ranker) else None

    def call(self, inputs, training=None):
        return self.ranker(inputs, training=training)

    def sampling_probability(self, item_ids):
        """q of each candidate id [B]: its share of the training impressions (unseen ids: UNSEEN_SHARE_FACTOR × the
        smallest share)."""
        at = tf.minimum(tf.searchsorted(self.share_keys, item_ids), tf.shape(self.share_keys)[0] - 1)
        found = tf.gather(self.share_keys, at) == item_ids
        return tf.where(found, tf.gather(self.share, at), UNSEEN_SHARE_FACTOR * tf.reduce_min(self.share))

    def retrieval_loss(self, outputs, inputs, clicked):
        """The retrieval term: (1/B) Σ over clicked rows of the in-batch or the catalogue softmax loss (module
        docstring)."""
        ids = tf.cast(inputs[F.ITEM_ID], tf.int64)
        if self.negatives == "catalogue":
            return catalogue_softmax_loss(retrieval_queries(outputs), self.embedding, ids, clicked,
                                          None if self.prior is None else self.prior.catalogue_bias(),
                                          temperature=self.temperature)
        rows, candidates = retrieval_queries(outputs), outputs[F.OUTPUT_CANDIDATE_EMBEDDING]  # [B, s, d], [B, d]
        if self.prior is not None:  # u_p · x_c + γ log q_c as one dot product: [u_p, γ] · [x_c, log q_c]
            gamma = tf.cast(self.prior.gamma, rows.dtype)
            rows = tf.concat([rows, tf.fill(tf.concat([tf.shape(rows)[:2], [1]], 0), gamma)], axis=-1)
            candidates = tf.concat([candidates, tf.cast(self.prior(ids), candidates.dtype)[:, None]], axis=-1)
        total = self.task(rows, candidates,
                          sample_weight=tf.cast(tf.reshape(clicked, [-1]), tf.float32),
                          candidate_sampling_probability=self.sampling_probability(ids), candidate_ids=ids,
                          compute_metrics=False, compute_batch_metrics=False)
        return total / tf.cast(tf.shape(ids)[0], total.dtype)

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            outputs = self(x, training=True)
            ranking = self.compiled_loss(y, outputs, regularization_losses=self.losses)  # scaled for replicas
            retrieval = self.retrieval_loss(outputs, x, y[F.OUTPUT_LOGIT])  # over this replica's batch
            # Under a distribution strategy the replicas' gradients are summed: a replica's share of the global mean
            # is its own mean over the number of replicas (the in-batch negatives are the replica's batch).
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            loss = ranking + self.weight * retrieval / replicas
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        self.compiled_metrics.update_state(y, outputs)
        self.retrieval_tracker.update_state(retrieval)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data
        outputs = self(x, training=False)
        self.compiled_loss(y, outputs, regularization_losses=self.losses)
        self.compiled_metrics.update_state(y, outputs)
        self.retrieval_tracker.update_state(self.retrieval_loss(outputs, x, y[F.OUTPUT_LOGIT]))
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return super().metrics + [self.retrieval_tracker]
