"""Id → row lookup tables owned by the model: the frozen item-feature table and the per-user interest memory.

Raw int64 ids map to rows by binary search over a sorted key vector stored as a (non-trainable) weight, so the tables
travel inside the SavedModel, need no hash-table resource, and serve raw ids. Row 0 is reserved: padding (id 0) and
ids absent from the table map to it.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mtin_tf.layers.backend import Layer, keras, register


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


class NpyRows:
    """The rows of a 2-D float32 ``.npy`` file (any filesystem tf.io.gfile reads: local, gs://, s3://, hdfs://), read
    a slice at a time. Given as ``item_features``, the model's table is filled from the file by chunks, so the
    caller never holds the table: building takes one table of memory (the model's) instead of two.

    Supports what the table code uses: ``shape``, ``dtype``, ``len``, ``rows[start:stop]`` and ``np.asarray(rows)``.
    """

    def __init__(self, path):
        self.path = str(path)
        with tf.io.gfile.GFile(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"{self.path}: .npy format version {version} is not supported (1.0 or 2.0)")
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            self.offset = f.tell()
        if len(shape) != 2 or fortran or dtype != np.dtype("<f4"):
            raise ValueError(f"{self.path}: need a 2-D C-order float32 array, got shape {shape}, dtype {dtype}"
                             f"{', Fortran order' if fortran else ''}")
        self.shape, self.dtype, self.ndim = tuple(int(n) for n in shape), np.dtype(np.float32), 2

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("NpyRows reads contiguous row slices only (rows[start:stop])")
        start, stop, _ = index.indices(self.shape[0])
        count = max(stop - start, 0) * self.shape[1]
        with tf.io.gfile.GFile(self.path, "rb") as f:
            f.seek(self.offset + start * self.shape[1] * 4)
            data = f.read(count * 4)
        if len(data) != count * 4:
            raise ValueError(f"{self.path}: file ends before row {stop} of {self.shape[0]}")
        return np.frombuffer(data, np.float32).reshape(-1, self.shape[1])

    def __array__(self, dtype=None, copy=None):
        rows = self[:]
        return rows if dtype is None else rows.astype(dtype, copy=False)


class NormalRows:
    """A [rows, cols] N(0, stddev²) table drawn a chunk of rows at a time, the same values whichever rows are asked
    for and in what order: chunk c is a stateless draw from (seed, c), and the seed is drawn once from TensorFlow's
    global generator (so tf.random.set_seed / keras set_random_seed fix it). Filling a variable from it by chunks
    (assign_rows) gives exactly the values of ``np.asarray(rows)`` (a replicated variable's whole initial value)."""

    chunk = 8192

    def __init__(self, rows: int, cols: int, stddev: float):
        self.shape, self.dtype, self.ndim, self.stddev = (int(rows), int(cols)), np.dtype(np.float32), 2, stddev
        self.seed = int(tf.random.uniform([], 0, 2 ** 31 - 1, dtype=tf.int32))

    def __len__(self):
        return self.shape[0]

    def _chunk(self, c):
        rows = min(self.chunk, self.shape[0] - c * self.chunk)
        return tf.random.stateless_normal([rows, self.shape[1]], seed=[self.seed, c], stddev=self.stddev).numpy()

    def __getitem__(self, index):
        start, stop, _ = index.indices(self.shape[0])
        if stop <= start:
            return np.zeros([0, self.shape[1]], np.float32)
        first, last = start // self.chunk, (stop - 1) // self.chunk
        rows = np.concatenate([self._chunk(c) for c in range(first, last + 1)])
        return rows[start - first * self.chunk:stop - first * self.chunk]

    def __array__(self, dtype=None, copy=None):
        rows = self[:]
        return rows if dtype is None else rows.astype(dtype, copy=False)


def assign_rows(variable, values, chunk: int = 8192):
    """variable[:] = values (an array of the variable's shape, or a table read by slices: NpyRows, NormalRows) a chunk
    of rows at a time, in place: the peak memory is the variable and the caller's array, never a whole-table
    temporary (a slice assign would copy the whole variable first)."""
    target = variable if isinstance(variable, tf.Variable) else variable.value  # a Keras 3 variable wraps one
    for start in range(0, int(target.shape[0]), chunk):
        rows = values[start:start + chunk]
        target.scatter_update(tf.IndexedSlices(tf.convert_to_tensor(rows, target.dtype),
                                               tf.range(start, start + len(rows))))


def initial(value, fallback="zeros"):
    """An initializer returning ``value`` (a NumPy array of the weight's shape) as it is, or ``fallback`` when None."""
    return (lambda *_, **__: value) if value is not None else fallback


def frozen_value(variable) -> tf.Tensor:
    """The value of a frozen table (a weight never updated after set-up) to gather rows from.

    A gather on the variable itself (TensorFlow's ResourceGather) switches the variable to copy-on-read for the rest
    of the process: from then on every whole read of it copies it. Recommending from the catalogue reads the item
    table whole on every request, so one gather from it (a history's items) made each request copy the table:
    51 MB at 100 000 items × d = 128, 512 MB at 1 M. Gathering from the read value instead leaves the variable
    shared. (Trainable tables are updated sparsely by the optimizer, which switches them anyway.)"""
    return tf.convert_to_tensor(variable)


def lookup_rows(keys, ids):
    """Rows of ``ids`` in a table whose sorted keys are ``keys`` [N]: int32 of ids' shape, key index + 1, 0 if
    absent."""
    keys = frozen_value(keys)
    ids = tf.cast(ids, tf.int64)
    flat = tf.reshape(ids, [-1])
    n = tf.shape(keys)[0]
    idx = tf.searchsorted(keys, flat, side="left", out_type=tf.int32)
    safe = tf.minimum(idx, tf.maximum(n - 1, 0))
    found = (idx < n) & (tf.gather(keys, safe) == flat) if keys.shape[0] != 0 else tf.zeros_like(flat, tf.bool)
    rows = tf.where(found, safe + 1, 0)
    return tf.reshape(rows, tf.shape(ids))


@register
class ItemEmbedding(Layer):
    """Item embeddings x_j = W_e f_j + b_e (+ e_j) from a frozen item table owned by the model (section 4, x_j ∈ R^d).

    f_j is the item's feature vector (visual features or metadata), looked up by raw item id; W_e projects it to d.
    Items never seen in training are scored from their features alone, provided they are in the table. An optional
    trainable id embedding e_j adds memorisation for items seen in training (its row 0 serves unknown items);
    ``id_l2`` adds λ‖e_j‖² for the real items each call looks up, averaged over the batch.

    Two forms with the same output:
      ``projected=False`` (training): the frozen feature table [N, F] and the trainable W_e, b_e (and e).
      ``projected=True`` (serving): the frozen table [N, d] of x_j itself, W_e f_j + b_e (+ e_j) computed once by
        ``projected_table``, and x for unknown ids; a 1.7 M × 512 feature table becomes 1.7 M × d.

    The table keeps the caller's row order (no sorted copy): raw ids are found by binary search over their sorted
    copy ``item_keys`` and ``item_rows`` points from there into the table; ``item_table_ids`` holds the raw ids in
    table order (what ``catalogue`` returns with every request, so that it need not invert ``item_rows``).

    Args:
      num_items: N, the rows of the table.
      feature_dim: F, the columns of the feature table (d when ``projected``).
      embedding_dim: d.
      use_id_embedding: add the trainable id embedding e_j.
      item_ids: int [N], the raw ids of the table's rows (positive, unique), saved as a weight (not in the config).
      item_features: float [N, F] (or [N, d] when projected) the table's initial values, saved as a weight; an
        NpyRows file instead of an array is read by chunks, so the caller need not hold the table.
      kernel_regularizer: regularizer of W_e, or None.
      projected: the serving form (above).
      id_l2: λ of the id embedding's L2 term.
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      ids: int64 [...], raw item ids; 0 is padding.

    Input shape:
      Any shape [...], e.g. (B,) for candidates or (B, L) for a history.

    Output shape:
      (x float [..., d], known bool [...]): known is False for padding and for ids absent from the table (whose x
      is W_e·0 + b_e (+ e_0)). known is what the layers downstream take as their ``mask=``.

    Example:

    >>> import numpy as np
    >>> embed = ItemEmbedding(3, 2, 4, item_ids=np.array([30, 10, 20]), item_features=np.eye(3, 2, dtype=np.float32))
    >>> x, known = embed(np.array([[10, 99, 0]]))  # 99 is not in the table, 0 is padding
    >>> x.shape, known.numpy()
    (TensorShape([1, 3, 4]), array([[ True, False, False]]))
    """

    def __init__(self, num_items, feature_dim, embedding_dim, use_id_embedding=False, item_ids=None,
                 item_features=None, kernel_regularizer=None, projected=False, id_l2=0.0, **kwargs):
        super().__init__(**kwargs)
        self.id_l2 = float(id_l2)
        self.num_items, self.feature_dim = int(num_items), int(feature_dim)
        self.embedding_dim = int(embedding_dim)
        self.use_id_embedding = bool(use_id_embedding)
        self.projected = bool(projected)
        if self.projected and self.feature_dim != self.embedding_dim:
            raise ValueError(f"a projected table has embedding_dim columns; got feature_dim={feature_dim}")
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self._init_keys = self._init_rows = self._init_table = self._init_ids = None
        if item_ids is not None:
            keys, order = sorted_unique_keys(item_ids, "item")
            # No copy when the caller's array is float32 already; an NpyRows file is read by chunks, never whole.
            table = item_features if isinstance(item_features, NpyRows) else np.asarray(item_features, np.float32)
            if table.shape != (self.num_items, self.feature_dim):
                raise ValueError(f"item_features must be [{self.num_items}, {self.feature_dim}], got {table.shape}")
            if not all(np.isfinite(table[i:i + 65536]).all() for i in range(0, len(table), 65536)):
                raise ValueError("item_features contain NaN or infinite values")
            self._init_keys, self._init_rows, self._init_table = keys, order.astype(np.int32), table
            self._init_ids = np.asarray(item_ids, np.int64).reshape(-1)

    def build(self, input_shape):
        def init(name, value, shape, dtype=tf.float32, trainable=False, fallback="zeros"):
            return self.add_weight(name=name, shape=shape, dtype=dtype, trainable=trainable,
                                   initializer=initial(value, fallback))

        n, d = self.num_items, self.embedding_dim
        self.keys = init("item_keys", self._init_keys, [n], tf.int64)
        self.table_rows = init("item_rows", self._init_rows, [n], tf.int32)
        self.table_ids = init("item_table_ids", self._init_ids, [n], tf.int64)
        # The table is copied in by chunks (peak memory: the caller's array + the variable), except under a
        # distribution strategy, whose replicated variables take their initial value whole.
        chunked = self._init_table is not None and not tf.distribute.has_strategy()
        table = None if chunked or self._init_table is None else np.asarray(self._init_table)
        if self.projected:
            self.table = init("item_table", table, [n, d])
            self.unknown = init("unknown_item", None, [d])
        else:
            self.table = init("item_feature_table", table, [n, self.feature_dim])
            self.projection = keras.layers.Dense(d, name="feature_projection",
                                                    kernel_regularizer=self.kernel_regularizer)
            if self.use_id_embedding:
                # Filled by chunks too (a whole [N + 1, d] normal draw takes three temporaries of its size), with the
                # same values as the whole initial value a distribution strategy's replicated variable takes.
                normal = NormalRows(n + 1, d, stddev=0.01)
                self.id_embedding = init("id_embedding", None if chunked else np.asarray(normal), [n + 1, d],
                                         trainable=True)
                if chunked:
                    assign_rows(self.id_embedding, normal)
        if chunked:
            assign_rows(self.table, self._init_table)
        self._init_keys = self._init_rows = self._init_table = self._init_ids = None  # the weights hold them now
        super().build(input_shape)

    def rows(self, ids):
        """Index of each id in the sorted keys + 1, 0 for padding and unknown ids: int32 of ids' shape."""
        return lookup_rows(self.keys, ids)

    def call(self, ids):
        rows = self.rows(ids)
        known = rows > 0
        feature_rows = tf.gather(frozen_value(self.table_rows), tf.maximum(rows - 1, 0))
        values = tf.gather(frozen_value(self.table), feature_rows) * tf.cast(known, self.table.dtype)[..., None]
        if self.projected:
            return tf.where(known[..., None], values, self.unknown), known
        x = self.projection(values)
        if self.use_id_embedding:
            e = tf.gather(self.id_embedding, rows)
            if self.id_l2:  # λ‖e‖² on the rows this batch looks up (real items only), averaged over the batch
                known_e = e * tf.cast(known, e.dtype)[..., None]
                self.add_loss(self.id_l2 * tf.reduce_sum(tf.square(known_e)) / tf.cast(tf.shape(ids)[0], e.dtype))
            x = x + e
        return x, known

    def catalogue(self):
        """(x of every item in the table [N, d], its raw id int64 [N]) as tensors, in table order: the candidates
        of retrieval over the whole catalogue (mtin_tf.retrieval). Projected (serving), x is the table itself, not a
        copy; otherwise it is computed from the features (W_e f_j + b_e (+ e_j)) on each call."""
        ids = tf.convert_to_tensor(self.table_ids)
        if self.projected:
            return tf.convert_to_tensor(self.table), ids
        x = self.projection(tf.convert_to_tensor(self.table))
        if self.use_id_embedding:  # e_j's rows are in sorted-key order: table row → index in the sorted keys
            x = x + tf.gather(self.id_embedding, tf.math.invert_permutation(self.table_rows) + 1)
        return x, ids

    def projected_table(self, chunk: int = 65536):
        """(x of every item in table order [N, d], x of an unknown id [d]) as NumPy, computed chunk by chunk."""
        if self.projected:
            return self.table.numpy(), self.unknown.numpy()
        out = np.empty([self.num_items, self.embedding_dim], np.float32)
        # Id-embedding rows are in sorted-key order; the table is in the caller's order: row_to_key inverts item_rows.
        row_to_key = np.empty([self.num_items], np.int64)
        row_to_key[self.table_rows.numpy()] = np.arange(self.num_items)
        table = frozen_value(self.table)  # read in place: only the gathered rows are copied
        for start in range(0, self.num_items, chunk):
            x = self.projection(tf.gather(table, tf.range(start, min(start + chunk, self.num_items))))
            if self.use_id_embedding:
                x = x + tf.gather(self.id_embedding, row_to_key[start:start + chunk] + 1)
            out[start:start + chunk] = x.numpy()
        unknown = self.projection(tf.zeros([1, self.feature_dim]))[0]
        if self.use_id_embedding:
            unknown = unknown + self.id_embedding[0]
        return out, unknown.numpy()

    def get_config(self):
        config = super().get_config()
        config.update(num_items=self.num_items, feature_dim=self.feature_dim, embedding_dim=self.embedding_dim,
                      use_id_embedding=self.use_id_embedding, projected=self.projected, id_l2=self.id_l2,
                      kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer))
        return config


@register
class ItemBias(Layer):
    """A trainable logit bias b_i per item, keyed by raw id (row 0: padding and unknown items, which share it).

    Added to the click logit by ClickCombiner (section 4.4, ours: the paper's ŷ has no item term). Under the model's
    λ‖·‖² ``regularizer``, applied to the whole vector each step: a prior of the same strength for every item, so a
    bias seen in a few rows stays near 0 (unregularised, the bias cost MTIN 0.012 validation AUC on planted data,
    docs/EXPERIMENTS.md "Diagnostics"). MTIN's exposure prior log q_j is a layer of its own (ExposurePrior).

    Args:
      num_items: N, the items with a bias of their own.
      item_ids: int [N], their raw ids (positive, unique), saved as a weight.
      regularizer: regularizer of the bias vector, or None.
      **kwargs: Layer arguments (name, dtype, trainable, ...).

    Call arguments:
      ids: int64 [...], raw item ids.

    Input shape:
      Any shape [...], e.g. (B,).

    Output shape:
      [...]: b float.

    Example:

    >>> import numpy as np
    >>> bias = ItemBias(2, item_ids=np.array([10, 20]))
    >>> bias(np.array([20, 99])).numpy()  # zeros until trained
    array([0., 0.], dtype=float32)
    """

    def __init__(self, num_items, item_ids=None, regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_items = int(num_items)
        self.regularizer = keras.regularizers.get(regularizer)
        self._init_keys = sorted_unique_keys(item_ids, "item")[0] if item_ids is not None else None

    def build(self, input_shape):
        keys = self._init_keys
        self.keys = self.add_weight(name="item_keys", shape=[self.num_items], dtype=tf.int64, trainable=False,
                                    initializer=initial(keys))
        self.bias = self.add_weight(name="item_bias", shape=[self.num_items + 1], initializer="zeros",
                                    regularizer=self.regularizer)
        self._init_keys = None
        super().build(input_shape)

    def call(self, ids):
        return tf.gather(self.bias, lookup_rows(self.keys, ids))

    def get_config(self):
        return {**super().get_config(), "num_items": self.num_items,
                "regularizer": keras.regularizers.serialize(self.regularizer)}


@register
class UserMemory(Layer):
    """The user interest memory M_u ∈ R^{s×d} (section 4.1.1), one trainable matrix per known user.

    Row 0 is the out-of-vocabulary user: unknown users share it (it learns an average user). ``row_l2`` adds
    λ·mean_batch ‖M_u‖², averaged over the batch like the loss (regularising the whole table every step would cost
    O(users); summing over the batch would decay memories B times harder than the loss is weighted).

    With ``anchor_size`` m > 0 each row g also holds up to m item ids (``anchors``, set by mtin_tf.pretrain, 0 =
    none) and the time the user first met each (``anchor_times``, int64 seconds): the memory row is then the mean of
    the current embeddings of the anchors met before the impression, plus the trained matrix (the residual, on which
    the L2 acts), computed by AnchoredMemory; so a pretrained row follows the item embeddings as they train.

    Args:
      num_users: U, the users with a memory of their own.
      num_groups: s, the rows of a memory.
      embedding_dim: d.
      user_ids: int [U], their raw ids (positive, unique), saved as a weight.
      row_l2: λ of the per-batch L2 term above.
      anchor_size: m, the anchor items per row (0: none).
      initializer: of the rows (a Keras initializer or its name; default: normal, stddev 0.1).
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      ids: int64 [B], raw user ids.

    Input shape:
      (B,).

    Output shape:
      memory (B, s, d), or, when m > 0, (residual (B, s, d), anchor ids int64 (B, s, m), anchor times int64
      (B, s, m)) for AnchoredMemory.

    Example:

    >>> import numpy as np
    >>> memory = UserMemory(2, num_groups=3, embedding_dim=4, user_ids=np.array([7, 8]))
    >>> memory(np.array([8, 5])).shape  # 5 is unknown: the shared row
    TensorShape([2, 3, 4])
    """

    def __init__(self, num_users, num_groups, embedding_dim, user_ids=None, row_l2=0.0, anchor_size=0,
                 initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer or keras.initializers.RandomNormal(stddev=0.1))
        self.num_users, self.num_groups = int(num_users), int(num_groups)
        self.embedding_dim = int(embedding_dim)
        self.row_l2 = float(row_l2)
        self.anchor_size = int(anchor_size)
        self._init_keys = sorted_unique_keys(user_ids, "user")[0] if user_ids is not None else None
        if self._init_keys is not None and self._init_keys.size != self.num_users:
            raise ValueError(f"got {self._init_keys.size} user ids for num_users={self.num_users}")

    def build(self, input_shape):
        init_keys = self._init_keys
        self.keys = self.add_weight(
            name="user_keys", shape=[self.num_users], dtype=tf.int64, trainable=False,
            initializer=initial(init_keys))
        self.memory = self.add_weight(
            name="memory", shape=[self.num_users + 1, self.num_groups, self.embedding_dim],
            initializer=self.initializer)
        if self.anchor_size:
            shape = [self.num_users + 1, self.num_groups, self.anchor_size]
            self.anchors = self.add_weight(name="anchors", shape=shape, dtype=tf.int64, trainable=False,
                                           initializer="zeros")
            self.anchor_times = self.add_weight(name="anchor_times", shape=shape, dtype=tf.int64,
                                                trainable=False, initializer="zeros")
        self._init_keys = None
        super().build(input_shape)

    def rows(self, ids):
        return lookup_rows(self.keys, ids)

    def call(self, ids):
        rows = self.rows(ids)
        memory = tf.gather(self.memory, rows)
        if self.row_l2:
            self.add_loss(self.row_l2 * tf.reduce_mean(tf.reduce_sum(tf.square(memory), axis=[1, 2])))
        if self.anchor_size:
            return memory, tf.gather(self.anchors, rows), tf.gather(self.anchor_times, rows)
        return memory

    def get_config(self):
        config = super().get_config()
        config.update(num_users=self.num_users, num_groups=self.num_groups, embedding_dim=self.embedding_dim,
                      row_l2=self.row_l2, anchor_size=self.anchor_size,
                      initializer=keras.initializers.serialize(self.initializer))
        return config


@register
class AnchoredMemory(Layer):
    """Anchored memory rows (section 4.1.1 with pretraining): c_g = residual_g + the mean embedding of row g's anchors
    met before the impression.

      c_g = M_u[g] + mean_{a ∈ anchors(g), known, t_a < t_impression} x_a          [B, s, d]
    (none such: the residual alone). An anchor counts only once its time (when the user first met it) is before the
    impression time: the anchors come from the user's whole training history, so without this a training row's own
    candidate — which later rows' histories hold — would sit in the memory that scores it (in the positive memory
    when clicked, the negative one when not): a label leak in training that validation and test rows do not have.

    Args:
      **kwargs: Layer arguments (name, dtype, ...). The layer has no weights: it combines UserMemory's outputs
        with ItemEmbedding's.

    Call arguments:
      inputs: [residual float [B, s, d], anchor embeddings float [B, s, m, d], anchor times int64 [B, s, m],
        impression time int64 [B]] (UserMemory's residual and anchor times, ItemEmbedding's x of the anchor ids).
      mask: known bool [B, s, m], False for empty anchor slots and anchors absent from the item table
        (ItemEmbedding's known of the anchor ids); required. Models saved before the ``mask=`` convention called
        the layer with known as the third of five inputs and no mask: that form is still accepted.

    Input shape:
      [(B, s, d), (B, s, m, d), (B, s, m), (B,)]; mask (B, s, m).

    Output shape:
      (B, s, d): the memory rows c.

    Example:

    >>> import numpy as np
    >>> residual, anchors = np.zeros([1, 2, 4], np.float32), np.ones([1, 2, 3, 4], np.float32)
    >>> times, known = np.array([[[5, 50, 0], [60, 0, 0]]]), np.array([[[True, True, False], [True, False, False]]])
    >>> AnchoredMemory()([residual, anchors, times, np.array([20])], mask=known)[:, :, 0].numpy()
    array([[1., 0.]], dtype=float32)
    """

    def call(self, inputs, mask=None):
        mask = self.given_mask(mask)
        if mask is None:  # the form models saved before the mask= convention recorded: known in the inputs
            if len(inputs) != 5:
                raise ValueError("AnchoredMemory needs mask= (known bool [B, s, m], False for empty anchor slots)")
            residual, anchors, known, anchor_times, impression_time = inputs
        else:
            (residual, anchors, anchor_times, impression_time), known = inputs, mask
        past = anchor_times < tf.cast(impression_time, tf.int64)[:, None, None]
        weight = tf.cast(tf.logical_and(known, past), anchors.dtype)[..., None]
        return residual + tf.math.divide_no_nan(tf.reduce_sum(anchors * weight, 2), tf.reduce_sum(weight, 2))
