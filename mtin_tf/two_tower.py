"""A TFRS two-tower retrieval model, trained on the same split as MTIN: the anchor of catalogue retrieval (issue 15).

Towers (d = config.embedding_dim, B a batch, L the history length):

  user tower   e_u = the user's embedding row (UserMemory with one row; users unknown to the table share row 0)  [B, d]
               h̄_u = Σ_l m_l x_{h_l} / Σ_l m_l, over the clicked history h_1..h_L, m_l = 1 for an item of the
                     table and 0 for padding (id 0) and unknown ids; 0 when the history is empty              [B, d]
               q_u = W_q2 ReLU(W_q1 [e_u; h̄_u] + b_q1) + b_q2                                                 [B, d]
  item tower   x_j = W_e f_j + b_e (+ e_j): mtin_tf.model.item_embedding, MTIN's item table (the frozen feature
                     table f, so an item never clicked in training is still embedded from its features)      [B, d]
               c_j = W_c2 ReLU(W_c1 x_j + b_c1) + b_c2                                                        [B, d]
  score        s(u, j) = q_u · c_j

Loss (``tfrs.tasks.Retrieval``): in-batch softmax over the clicked impressions of the training split (rows with label
1; the history is the one the row carries, i.e. before the click). For a batch of B clicks (u_i, j_i):

  s'_ik = q_i · c_k − log P(j_k)      P(j) = item j's share of the training clicks (the log-q correction: popular
                                      items are in-batch negatives more often than uniform sampling would make them)
  s'_ik = MIN_FLOAT for k ≠ i with j_k = j_i (accidental hits: the positive itself, seen as a negative, is removed)
  L = −(1/B) Σ_i log softmax_k(s'_ik)[i]   (+ the λ‖·‖² penalties of MTIN's eq. 12, λ = config.l2, on W_e, the id
                                           embedding rows, the user rows and the tower kernels)

The mean over the batch (TFRS's default is the sum) keeps λ on the scale it has in MTIN, whose losses are batch means.
With config.retrieval_negatives = "catalogue" the softmax runs over every item of the table instead (c_k for all
items, no correction: mtin_tf.retrieval_task.catalogue_softmax_loss), as MTIN's retrieval objective does then.

Training (:func:`train_two_tower`): Adam at config.learning_rate, batches of config.batch_size clicks, at most
config.epochs epochs, early-stopped on validation Recall@50 over the whole catalogue (the queries of
mtin_tf.retrieval.catalogue_queries with train as "before" and validation as "test"), the best epoch's weights
restored. Retrieval (:func:`two_tower_catalogue_metrics`): exact top-K by q_u · c_j over every item of the table, the
items of catalogue_queries' exclusions left out; the same report keys as mtin_tf.retrieval.catalogue_metrics.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras

from mtin_tf import features as F
from mtin_tf.baselines.common import USER_EMBEDDING
from mtin_tf.config import MTINConfig
from mtin_tf.layers.pooling import MaskedPooling
from mtin_tf.layers.tables import UserMemory
from mtin_tf.model import item_embedding, regularizer
from mtin_tf.retrieval_task import catalogue_softmax_loss

TWO_TOWER = "two_tower"  # the model name of `mtin experiment` runs
CANDIDATE_PROBABILITY = "candidate_probability"  # P(j) of a training click's item: its share of the training clicks
QUERY_FEATURES = (F.USER_ID, F.CLICKED_ITEMS)  # what the user tower reads
EPOCH_LOSS = "mean_loss"  # the epoch's mean of L (TFRS logs the last batch's as "loss")
VALIDATION_K = 50
VALIDATION_METRIC = f"val_retrieval_recall@{VALIDATION_K}"  # the early-stopping monitor


def _tower(config: MTINConfig, name: str):
    """d ReLU units, then d linear outputs; kernels under λ‖·‖²."""
    reg = regularizer(config)
    return tf_keras.Sequential([tf_keras.layers.Dense(config.embedding_dim, activation="relu", kernel_regularizer=reg,
                                                      name=f"{name}_hidden"),
                                tf_keras.layers.Dense(config.embedding_dim, kernel_regularizer=reg,
                                                      name=f"{name}_out")], name=name)


class TwoTower(tfrs.models.Model):
    """The two towers and the retrieval task of the module docstring.

    ``query(features)``: {user_id int64 [B], clicked_item_ids int64 [B, L]} (other keys ignored) → q [B, d].
    ``candidate(item_ids)``: int64 [B] → c [B, d]. ``catalogue()``: (c of every item of the table [N, d], its raw id
    int64 [N]), the form mtin_tf.retrieval.catalogue_top_k reads. ``call(features)`` → {"query", "candidate"} of a
    batch of clicks; ``compute_loss(features)`` (features also holding item_id [B] and candidate_probability [B])
    → the in-batch softmax loss L.
    """

    def __init__(self, config: MTINConfig, item_ids, item_features, user_ids=None):
        super().__init__(name=TWO_TOWER)
        user_ids = np.zeros([0], np.int64) if user_ids is None else np.asarray(user_ids)
        self.mtin_config = config
        self.item_embedding = item_embedding(config, item_ids, item_features)
        self.user_embedding = UserMemory(len(user_ids), 1, config.embedding_dim, user_ids=user_ids,
                                         row_l2=config.l2, name=USER_EMBEDDING)
        self.history_mean = MaskedPooling("mean", name="clicked_mean")
        self.query_tower = _tower(config, "query_tower")
        self.candidate_tower = _tower(config, "candidate_tower")
        self.epoch_loss = tf_keras.metrics.Mean(name=EPOCH_LOSS)  # updated by the task, or by the catalogue loss
        self.task = tfrs.tasks.Retrieval(
            loss=tf_keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=tf_keras.losses.Reduction.SUM_OVER_BATCH_SIZE),
            loss_metrics=[self.epoch_loss], remove_accidental_hits=True,
            temperature=None if config.retrieval_temperature == 1.0 else config.retrieval_temperature)

    def query(self, features):
        user = tf.reshape(self.user_embedding(features[F.USER_ID]), [-1, self.mtin_config.embedding_dim])  # [B, d]
        clicked, known = self.item_embedding(features[F.CLICKED_ITEMS])  # [B, L, d], [B, L]
        return self.query_tower(tf.concat([user, self.history_mean(clicked, mask=known)], axis=-1))

    def candidate(self, item_ids):
        return self.candidate_tower(self.item_embedding(item_ids)[0])

    def catalogue(self):
        x, ids = self.item_embedding.catalogue()
        return self.candidate_tower(x), ids

    def call(self, features, training=None):
        return {"query": self.query(features), "candidate": self.candidate(features[F.ITEM_ID])}

    def compute_loss(self, features, training=False):
        # Through the model's own call, so that every penalty its layers add in this step is collected.
        towers = self(features, training=training)
        if self.mtin_config.retrieval_negatives == "catalogue":  # every item of the table, exactly
            ids = tf.cast(features[F.ITEM_ID], tf.int64)
            loss = catalogue_softmax_loss(towers["query"][:, None, :], self.item_embedding, ids,
                                          tf.ones_like(ids, tf.float32), table=self.catalogue()[0],
                                          temperature=self.mtin_config.retrieval_temperature)
            self.epoch_loss.update_state(loss)
            return loss
        return self.task(towers["query"], towers["candidate"],
                         candidate_sampling_probability=features[CANDIDATE_PROBABILITY],
                         candidate_ids=features[F.ITEM_ID], compute_metrics=False, compute_batch_metrics=False)


def click_shares(arrays) -> tuple[np.ndarray, np.ndarray]:
    """(item ids int64 [M], their share of the clicks of ``arrays`` float32 [M], summing to 1): P(j) of the loss."""
    items = np.asarray(arrays[F.ITEM_ID])[np.asarray(arrays[F.LABEL]) == 1]
    ids, counts = np.unique(items.astype(np.int64), return_counts=True)
    return ids, (counts / max(counts.sum(), 1)).astype(np.float32)


def click_dataset(arrays, batch_size: int, *, seed: int = 0) -> tf.data.Dataset:
    """tf.data of the clicked rows of ``arrays`` (label 1), shuffled each epoch, in batches: {user_id [B],
    clicked_item_ids [B, L], item_id [B], candidate_probability [B]}, P(j) taken from these same rows."""
    clicked = np.asarray(arrays[F.LABEL]) == 1
    ids, shares = click_shares(arrays)
    items = np.asarray(arrays[F.ITEM_ID], np.int64)[clicked]
    data = {name: np.asarray(arrays[name], np.int64)[clicked] for name in QUERY_FEATURES + (F.ITEM_ID,)}
    data[CANDIDATE_PROBABILITY] = shares[np.searchsorted(ids, items)]
    ds = tf.data.Dataset.from_tensor_slices(data).shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def retrieve(model: TwoTower, users, exclusions, k: int, batch_size: int = 256) -> np.ndarray:
    """Exact top-k items of the whole table for each user → int64 [U, k], best first (q_u · c_j); the ids in the
    user's row of ``exclusions`` int64 [U, E] (0 = none) are never returned, and a slot left empty (fewer than k items
    not excluded) holds 0. users: {user_id [U], clicked_item_ids [U, L], ...} (catalogue_queries' users)."""
    from mtin_tf.retrieval import _isin, catalogue_top_k

    top_k = catalogue_top_k(model, k)  # TFRS's TopK over model.catalogue(), k + E clipped to the table's size
    out = np.zeros([len(exclusions), k], np.int64)
    for start in range(0, len(exclusions), batch_size):
        stop = min(start + batch_size, len(exclusions))
        queries = model.query({name: tf.constant(users[name][start:stop], tf.int64) for name in QUERY_FEATURES})
        excluded = tf.constant(exclusions[start:stop], tf.int64)
        _, ids = top_k.query_with_exclusions(queries, excluded, k=k)
        # query_with_exclusions only pushes excluded items down; they fill the tail when too few others remain.
        ids = tf.where(_isin(ids, excluded), tf.constant(F.PADDING_ID, tf.int64), ids).numpy()
        out[start:stop, :ids.shape[1]] = ids
    return out


def two_tower_catalogue_metrics(model: TwoTower, before, test, ks=(20, 50, 100), queries=None) -> dict:
    """Recall@K and HitRate@K of the two-tower retrieving max(ks) items per user from its whole table, on the queries
    of mtin_tf.retrieval.catalogue_queries(before, test): the keys of mtin_tf.retrieval.catalogue_metrics
    (retrieval_recall@K, retrieval_hit_rate@K, retrieval_users). ``queries``: catalogue_queries(before, test) when the
    caller has them already."""
    from mtin_tf.metrics import retrieval_recall_hit_rate
    from mtin_tf.retrieval import _report, catalogue_queries

    users, exclusions, relevant_users, relevant_items = catalogue_queries(before, test) if queries is None else queries
    return _report(retrieval_recall_hit_rate(retrieve(model, users, exclusions, max(ks)), relevant_users,
                                             relevant_items, ks))


class CatalogueRecall(tf_keras.callbacks.Callback):
    """Adds ``val_retrieval_recall@50`` (Recall@50 over the catalogue on the validation queries) to each epoch's
    logs, before EarlyStopping reads them. The validation queries are built once, not every epoch."""

    def __init__(self, before, validation):
        from mtin_tf.retrieval import catalogue_queries

        super().__init__()
        self.queries = catalogue_queries(before, validation)

    def on_epoch_end(self, epoch, logs=None):
        metrics = two_tower_catalogue_metrics(self.model, None, None, ks=(VALIDATION_K,), queries=self.queries)
        logs[VALIDATION_METRIC] = metrics[f"retrieval_recall@{VALIDATION_K}"]


def train_two_tower(config: MTINConfig, train_arrays, item_ids, item_features, *, validation_arrays, user_ids=None,
                    patience: int = 2, verbose: int = 0, callbacks=()):
    """Train the two-tower on the clicks of ``train_arrays`` (model-input arrays with labels); early stopping on
    validation Recall@50 over the catalogue (``validation_arrays``; train's clicks excluded), best weights restored;
    ``validation_arrays`` None: config.epochs epochs, no validation (a refit for an epoch count chosen before).
    user_ids: the users with an embedding row (default: the users of train). Returns (model, history); history
    holds ``mean_loss`` (L averaged over the epoch's batches) and ``val_retrieval_recall@50`` per epoch."""
    tf_keras.utils.set_random_seed(config.seed)
    if user_ids is None:
        user_ids = np.unique(np.asarray(train_arrays[F.USER_ID]))
    model = TwoTower(config, item_ids, item_features, user_ids)
    model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
    selection = []
    if validation_arrays is not None:
        selection = [CatalogueRecall([train_arrays], validation_arrays),
                     tf_keras.callbacks.EarlyStopping(monitor=VALIDATION_METRIC, mode="max", patience=patience,
                                                      restore_best_weights=True)]
    history = model.fit(click_dataset(train_arrays, config.batch_size, seed=config.seed), epochs=config.epochs,
                        callbacks=[*selection, *callbacks], verbose=verbose)
    return model, history
