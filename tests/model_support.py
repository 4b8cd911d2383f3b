"""Plain helpers shared by the model and export tests (no tests here): the small config, random raw batches."""
import numpy as np

from mtin_tf import features as F
from mtin_tf.config import MTINConfig

L = 8


def small_config(**overrides):
    values = dict(embedding_dim=8, num_masks=2, num_groups=3, max_history=L, l2=1e-4, tau=0.2)
    values.update(overrides)
    return MTINConfig(**values)


def random_batch(rng, batch=16, num_items=40, num_users=10, empty_rows=2):
    ids = lambda shape: rng.integers(1, num_items + 1, size=shape)
    lengths = rng.integers(0, L + 1, size=(2, batch))
    lengths[:, :empty_rows] = 0
    x = {F.USER_ID: rng.integers(1, num_users + 3, size=batch),  # some unknown users
         F.ITEM_ID: ids(batch), F.TIMESTAMP: np.full(batch, 10_000)}
    for (items_key, times_key), n in zip(F.HISTORY_PAIRS, lengths):
        pad = np.arange(L)[None, :] >= n[:, None]
        x[items_key] = np.where(pad, 0, ids((batch, L)))
        x[times_key] = np.where(pad, 0, np.sort(rng.integers(0, 10_000, size=(batch, L)), axis=1))
    return {k: v.astype(np.int64) for k, v in x.items()}


def raw_batch(rng, table):
    x = random_batch(rng)
    item_ids = np.sort(table[0])
    for key in (F.ITEM_ID, F.CLICKED_ITEMS, F.BROWSED_ITEMS):  # map 1..40 to the raw ids, keep 0 as padding
        x[key] = np.where(x[key] > 0, item_ids[np.maximum(x[key] - 1, 0)], 0)
    x[F.USER_ID] = x[F.USER_ID] * 7
    return x
