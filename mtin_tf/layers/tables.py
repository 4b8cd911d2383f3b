"""Id → row lookup tables owned by the model: the frozen item-feature table and the per-user interest memory.

Raw int64 ids map to rows by binary search over a sorted key vector stored as a (non-trainable) weight, so the tables
travel inside the SavedModel, need no hash-table resource, and serve raw ids. Row 0 is reserved: padding (id 0) and
ids absent from the table map to it.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras


def sorted_unique_keys(ids, what):
    """Validate raw ids for a table: int64, positive (0 is padding), unique. Returns (sorted keys, order)."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{what} ids must be a 1-D integer array, got dtype {ids.dtype} and shape {ids.shape}")
    if ids.size and ids.min() <= 0:
        raise ValueError(f"{what} ids must be positive (0 is padding); found {int(ids.min())}")
    order = np.argsort(ids, kind="stable")
    keys = ids[order].astype(np.int64)
    dup = np.flatnonzero(keys[1:] == keys[:-1])
    if dup.size:
        raise ValueError(f"{what} ids must be unique; {int(keys[dup[0]])} appears more than once")
    return keys, order


def lookup_rows(keys, ids):
    """Rows of ``ids`` in a table whose sorted keys are ``keys`` [N]: int32 of ids' shape, key index + 1, 0 if absent."""
    ids = tf.cast(ids, tf.int64)
    flat = tf.reshape(ids, [-1])
    n = tf.shape(keys)[0]
    idx = tf.searchsorted(keys, flat, side="left", out_type=tf.int32)
    safe = tf.minimum(idx, tf.maximum(n - 1, 0))
    found = (idx < n) & (tf.gather(keys, safe) == flat) if keys.shape[0] != 0 else tf.zeros_like(flat, tf.bool)
    rows = tf.where(found, safe + 1, 0)
    return tf.reshape(rows, tf.shape(ids))


@tf_keras.saving.register_keras_serializable(package="mtin")
class ItemEmbedding(tf_keras.layers.Layer):
    """x_j = W_e f_j + b_e (+ e_j): item embeddings from a frozen feature table owned by the model.

    f_j is the item's feature vector (visual features or metadata), looked up by raw item id; W_e projects it to d.
    Items never seen in training are scored from their features alone, provided they are in the table. An optional
    trainable id embedding e_j adds memorisation for items seen in training (its row 0 serves unknown items).

    Construction takes the table (``item_ids`` int [N], ``item_features`` float [N, F]) as initial values; they are
    saved as weights, not in the config. Call: ids int64 [...] → (x float [..., d], known bool [...]), where known is
    False for padding and for ids absent from the table (whose feature row is all zeros).
    """

    def __init__(self, num_items, feature_dim, embedding_dim, use_id_embedding=False, item_ids=None,
                 item_features=None, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.feature_dim = int(num_items), int(feature_dim)
        self.embedding_dim = int(embedding_dim)
        self.use_id_embedding = bool(use_id_embedding)
        self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
        self._init_keys = self._init_table = None
        if item_ids is not None:
            keys, order = sorted_unique_keys(item_ids, "item")
            feats = np.asarray(item_features, np.float32)[order]
            if feats.shape != (self.num_items, self.feature_dim):
                raise ValueError(f"item_features must be [{self.num_items}, {self.feature_dim}], got {feats.shape}")
            if not np.isfinite(feats).all():
                raise ValueError("item_features contain NaN or infinite values")
            self._init_keys = keys
            self._init_table = np.concatenate([np.zeros((1, self.feature_dim), np.float32), feats])

    def build(self, input_shape):
        def const(value, fallback):
            return tf_keras.initializers.Constant(value) if value is not None else fallback

        self.keys = self.add_weight("item_keys", shape=[self.num_items], dtype=tf.int64, trainable=False,
                                    initializer=const(self._init_keys, "zeros"))
        self.table = self.add_weight("item_feature_table", shape=[self.num_items + 1, self.feature_dim],
                                     trainable=False, initializer=const(self._init_table, "zeros"))
        self.projection = tf_keras.layers.Dense(self.embedding_dim, name="feature_projection",
                                                kernel_regularizer=self.kernel_regularizer)
        if self.use_id_embedding:
            self.id_embedding = self.add_weight("id_embedding", shape=[self.num_items + 1, self.embedding_dim],
                                                initializer=tf_keras.initializers.RandomNormal(stddev=0.01))
        self._init_keys = self._init_table = None  # the weights hold them now
        super().build(input_shape)

    def rows(self, ids):
        return lookup_rows(self.keys, ids)

    def call(self, ids):
        rows = self.rows(ids)
        x = self.projection(tf.gather(self.table, rows))
        if self.use_id_embedding:
            x = x + tf.gather(self.id_embedding, rows)
        return x, rows > 0

    def get_config(self):
        config = super().get_config()
        config.update(num_items=self.num_items, feature_dim=self.feature_dim, embedding_dim=self.embedding_dim,
                      use_id_embedding=self.use_id_embedding,
                      kernel_regularizer=tf_keras.regularizers.serialize(self.kernel_regularizer))
        return config


@tf_keras.saving.register_keras_serializable(package="mtin")
class UserMemory(tf_keras.layers.Layer):
    """The user interest memory M_u ∈ R^{s×d} (section 4.1.1), one trainable matrix per known user.

    Row 0 is the out-of-vocabulary user: unknown users share it (it learns an average user). ``row_l2`` adds
    λ·mean_batch ‖M_u‖², averaged over the batch like the loss (regularising the whole table every step would cost
    O(users); summing over the batch would decay memories B times harder than the loss is weighted).
    Call: user ids int64 [B] → memory float [B, s, d].
    """

    def __init__(self, num_users, num_groups, embedding_dim, user_ids=None, row_l2=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_users, self.num_groups = int(num_users), int(num_groups)
        self.embedding_dim = int(embedding_dim)
        self.row_l2 = float(row_l2)
        self._init_keys = sorted_unique_keys(user_ids, "user")[0] if user_ids is not None else None
        if self._init_keys is not None and self._init_keys.size != self.num_users:
            raise ValueError(f"got {self._init_keys.size} user ids for num_users={self.num_users}")

    def build(self, input_shape):
        init_keys = self._init_keys
        self.keys = self.add_weight(
            "user_keys", shape=[self.num_users], dtype=tf.int64, trainable=False,
            initializer=tf_keras.initializers.Constant(init_keys) if init_keys is not None else "zeros")
        self.memory = self.add_weight(
            "memory", shape=[self.num_users + 1, self.num_groups, self.embedding_dim],
            initializer=tf_keras.initializers.RandomNormal(stddev=0.1))
        self._init_keys = None
        super().build(input_shape)

    def rows(self, ids):
        return lookup_rows(self.keys, ids)

    def call(self, ids):
        memory = tf.gather(self.memory, self.rows(ids))
        if self.row_l2:
            self.add_loss(self.row_l2 * tf.reduce_mean(tf.reduce_sum(tf.square(memory), axis=[1, 2])))
        return memory

    def get_config(self):
        config = super().get_config()
        config.update(num_users=self.num_users, num_groups=self.num_groups, embedding_dim=self.embedding_dim,
                      row_l2=self.row_l2)
        return config
