"""The exposure prior (ours, beyond the paper): how often each item is shown, for ranking the whole catalogue.

A click log holds clicks only on items that were shown, and items are shown unevenly. The layer stores, per item,
log q_j: the item's share of the training impressions (a statistic of the data, set once by
mtin_tf.model.set_exposure_prior, never trained), and one trainable scalar γ, how much of log q_j the retrieval
score needs on top of what the item embeddings already carry:

  retrieval score of item j for interest row u_p   u_p · x_j + γ · log q_j

γ starts at 1 and is learnt by the retrieval objective only (mtin_tf.retrieval_task); features that cannot tell a
popular item from a rare one leave γ near 1, id embeddings that learn popularity themselves pull it down.
"""
from __future__ import annotations

import tensorflow as tf

from mtin_tf.layers.backend import Layer, register
from mtin_tf.layers.tables import frozen_value, initial, lookup_rows, sorted_unique_keys

# The share q given to an item never shown in training, as a fraction of the smallest share: one rule for the exposure
# prior (mtin_tf.model.set_exposure_prior) and the retrieval objective's log-q correction (mtin_tf.retrieval_task).
UNSEEN_SHARE_FACTOR = 0.5


@register
class ExposurePrior(Layer):
    """log q_j per item keyed by raw id (row 0: padding and unknown ids), and its learnt weight γ in retrieval.

    log q_j is set from the data (mtin_tf.model.set_exposure_prior) and never trained; γ (initially 1) is trained by
    the retrieval objective only. ``catalogue_bias()`` is γ · log q_j of every item in the item table's row order, the
    term retrieval over the catalogue adds (set_exposure_prior fills both copies of log q_j).

    Args:
      num_items: N, the items with a share of their own.
      item_ids: int [N], their raw ids (positive, unique), saved as a weight; None when restored from a config.
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      ids: int64 [...], raw item ids.

    Input shape:
      Any shape [...], e.g. (B,).

    Output shape:
      [...]: log q_j float (without γ).

    Example:

    >>> import numpy as np
    >>> prior = ExposurePrior(2, item_ids=np.array([10, 20]))
    >>> prior(np.array([20, 99])).numpy()  # zeros until set_exposure_prior fills log q
    array([0., 0.], dtype=float32)
    >>> float(prior.gamma.numpy())
    1.0
    """

    def __init__(self, num_items, item_ids=None, **kwargs):
        super().__init__(**kwargs)
        self.num_items = int(num_items)
        self._init_keys = sorted_unique_keys(item_ids, "item")[0] if item_ids is not None else None

    def build(self, input_shape):
        self.keys = self.add_weight(name="item_keys", shape=[self.num_items], dtype=tf.int64, trainable=False,
                                    initializer=initial(self._init_keys))
        self.log_share = self.add_weight(name="log_share", shape=[self.num_items + 1], initializer="zeros",
                                         trainable=False)
        # log q_j again, in the row order of the model's item table (ItemEmbedding), so that retrieval over the
        # whole catalogue adds it without looking up N ids per request (set by mtin_tf.model.set_exposure_prior).
        self.table_log_share = self.add_weight(name="table_log_share", shape=[self.num_items], initializer="zeros",
                                               trainable=False)
        self.gamma = self.add_weight(name="gamma", shape=[], initializer="ones")
        self._init_keys = None
        super().build(input_shape)

    def call(self, ids):
        return tf.gather(frozen_value(self.log_share), lookup_rows(self.keys, ids))

    def catalogue_bias(self):
        """γ · log q_j of every item in the item table's row order [N]: what retrieval over the catalogue adds."""
        return tf.cast(self.gamma, self.table_log_share.dtype) * self.table_log_share

    def get_config(self):
        return {**super().get_config(), "num_items": self.num_items}
