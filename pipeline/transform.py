"""Transform's preprocessing_fn: exactly the model inputs of ``mtin_tf.features.MODEL_INPUTS`` plus the label.

MTIN consumes raw int64 ids and owns its lookup tables (a frozen item-feature table and per-user memories keyed by raw
id, each with an out-of-vocabulary row), so Transform does not replace ids with indices. It

- computes the **user vocabulary** (``user_id``, training split) — the Trainer keys the model's interest memories by
  it; every user outside it (new users, users with too few training rows) shares the memory's OOV row, which is the
  OOV bucket of this design;
- computes the **item vocabulary** (candidate and history items of the training split) — the Trainer reports how many
  items of the item table were never seen in training (those are scored from their features alone);
- outputs scalars as int64 [B] and each history as int64 [B, L] — the most recent L entries, oldest first,
  right-padded with ``features.PADDING_ID`` — with L from ``custom_config["max_history"]``;
- passes the label through as int64 [B].

The Trainer embeds this graph (TFT layer) in the exported ``serving_default`` signature, so serving applies the same
padding and truncation as training.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from mtin_tf import features as F
from mtin_tf.signatures import pad_history

USER_VOCABULARY, ITEM_VOCABULARY = "user_vocabulary", "item_vocabulary"


def _dense(x) -> tf.Tensor:
    """A scalar feature ([B] or [B, 1], dense or sparse with one value) as int64 [B]."""
    if isinstance(x, tf.sparse.SparseTensor):
        x = tf.sparse.to_dense(x, default_value=0)
    return tf.reshape(tf.cast(x, tf.int64), [-1])


def preprocessing_fn(inputs: dict, custom_config: dict) -> dict:
    """TFT preprocessing_fn; ``custom_config["max_history"]`` is L."""
    max_history = int(custom_config["max_history"])
    outputs = {}
    for spec in F.MODEL_INPUTS:
        outputs[spec.name] = pad_history(inputs[spec.name], max_history) if spec.is_history \
            else _dense(inputs[spec.name])
    tft.vocabulary(tf.strings.as_string(outputs[F.USER_ID]), vocab_filename=USER_VOCABULARY)
    items = tf.concat([outputs[F.ITEM_ID][:, None], outputs[F.CLICKED_ITEMS], outputs[F.BROWSED_ITEMS]], axis=1)
    items = tf.boolean_mask(items, tf.not_equal(items, F.PADDING_ID))
    tft.vocabulary(tf.strings.as_string(items), vocab_filename=ITEM_VOCABULARY)
    if F.LABEL in inputs:
        outputs[F.LABEL] = _dense(inputs[F.LABEL])
    return outputs
