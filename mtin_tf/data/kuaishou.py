"""KuaiShou reader (ALPINE's published "Dataset I" layout) -> canonical interactions + item features.

Input (as read by ALPINE's ``train.py``, Li et al. MM 2019):

- ``dataset.pkl``: consecutive pickles, in this order: train records, test records,
  positive histories, negative histories, then positive/negative "edge" lists (not used here).
  A record is ``((user_id, item_id, click, ...), pos_len, neg_len)``: the impression, and how many items of the
  user's positive / negative history precede it. A history is indexable by user id (list or dict) and holds the
  user's clicked (resp. browsed-not-clicked) item ids in time order.
- Visual features ``.npy`` [N_items + 1, 64]: row i is item i; the last row is ALPINE's padding row and is dropped.

Mapping to the canonical format (the official train/test lists are kept in ``is_test``):

- user u -> u + 1, item i -> i + 1 (0 stays free for padding); click as published;
- timestamp: the records carry no clock, so by default it is the **ordinal** ``pos_len + neg_len`` (the number of
  the user's interactions before it, a relative unit). Records that share an ordinal are ties: none enters another's
  history. ``time_field=k`` takes field k of the impression tuple instead, when a variant of the data carries one.
- Consistency: a clicked record should be ``pos_history[user][pos_len]`` and a browsed one
  ``neg_history[user][neg_len]``; disagreements are counted as ``history_mismatch`` (rows are kept).

Safety: the pickles are read by :mod:`mtin_tf.data.safe_pickle`, which admits containers, numbers, strings and
numeric NumPy arrays only and refuses (before running anything) a pickle that names any other global. A record that is
not ``((user, item, click, ...), pos_len, neg_len)`` is counted as ``malformed_row``.

Locations in the report are ``dataset.pkl:train:<record index>`` (or ``:test:``) and ``<features>.npy:<row>``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

from mtin_tf import features as F
from mtin_tf.data import canonical as C
from mtin_tf.data import report as R
from mtin_tf.data import safe_pickle

FEATURES_LAYOUT = "ALPINE's visual features: float [N_items + 1, D], row i = item i, last row = padding"


def read_kuaishou(pkl_path: str, features_path: str, report: R.Report, *, time_field: int | None = None,
                  ) -> tuple[pd.DataFrame, C.ItemFeatures]:
    """Canonical ``(interactions with is_test, item features)`` from ALPINE's dataset.pkl and visual .npy."""
    train, test, pos_his, neg_his = safe_pickle.load_all(pkl_path, 4)
    for what, obj, types in (("train records", train, (list, tuple)), ("test records", test, (list, tuple)),
                             ("positive histories", pos_his, (list, tuple, dict, np.ndarray)),
                             ("negative histories", neg_his, (list, tuple, dict, np.ndarray))):
        if not isinstance(obj, types):
            raise R.BadInputError(f"{pkl_path}: the {what} are a {type(obj).__name__}, expected a "
                                  f"{' or '.join(t.__name__ for t in types)} (ALPINE's Dataset I layout)")
    feats = C.load_feature_matrix(features_path, FEATURES_LAYOUT)
    if feats.shape[0] < 2:
        raise R.BadInputError(f"{features_path}: {feats.shape[0]} row(s); expected {FEATURES_LAYOUT}")
    n_items = feats.shape[0] - 1
    sources = [f"{pkl_path}:train", f"{pkl_path}:test"]
    frames = []
    for source_id, (records, is_test) in enumerate(((train, 0), (test, 1))):
        raw, lens, malformed = _records_frame(records, time_field)
        raw[C.IS_TEST] = is_test
        index = np.arange(len(raw))
        report.bad_rows(R.MALFORMED_ROW, malformed, sources[source_id], index,
                        [f"{_short(records[i])} is not ((user, item, click, ...), pos_len, neg_len)"
                         for i in np.flatnonzero(malformed)[:R.MAX_EXAMPLES]])
        report.count("rows_read", int(malformed.sum()))
        parsed = C.parse_interactions(raw[~malformed], source_id=source_id, sources=sources, lines=index[~malformed],
                                      report=report, id_offset=1)
        _check_histories(parsed, lens, pos_his, neg_his, sources[source_id], report)
        frames.append(parsed)
    items = C.clean_item_features(np.arange(1, n_items + 1), feats[:n_items], source=features_path,
                                  lines=np.arange(n_items), report=report)
    return C.finish_interactions(frames, sources, report, items), items


def _records_frame(records, time_field: int | None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Raw canonical columns (None where a record is malformed), [n, 2] (pos_len, neg_len) (-1 if unknown) and the
    mask of malformed records."""
    n = len(records)
    cols = {c: [None] * n for c in F.INTERACTION_COLUMNS}
    lens = np.full((n, 2), -1, np.int64)
    malformed = np.zeros(n, bool)
    for i, rec in enumerate(tqdm(records, desc="read records", unit="record", leave=False, mininterval=2)):
        try:
            impression, pos_len, neg_len = rec
            user, item, click = impression[0], impression[1], impression[2]
            when = impression[time_field] if time_field is not None else int(pos_len) + int(neg_len)
            lens[i] = (int(pos_len), int(neg_len))
        except (TypeError, ValueError, IndexError, KeyError, OverflowError):
            malformed[i] = True  # not ((user, item, click, ...), pos_len, neg_len): counted as malformed_row
            continue
        cols[F.USER_ID][i], cols[F.ITEM_ID][i], cols[F.CLICK][i], cols[F.TIMESTAMP][i] = user, item, click, when
    return pd.DataFrame(cols, dtype=object), lens, malformed


def _short(obj, limit: int = 60) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[:limit] + "..."


def _history_item(his, user: int, pos: int):
    try:
        seq = his[user]
        return int(seq[pos]) if 0 <= pos < len(seq) else None
    except (KeyError, IndexError, TypeError, ValueError, OverflowError):
        return None


def _check_histories(parsed: pd.DataFrame, lens: np.ndarray, pos_his, neg_his, source: str, report: R.Report):
    rows = parsed[C.LINE_COLUMN].to_numpy()
    users = parsed[F.USER_ID].to_numpy() - 1
    items = parsed[F.ITEM_ID].to_numpy() - 1
    clicks = parsed[F.CLICK].to_numpy()
    bad = np.zeros(len(parsed), bool)
    for k in tqdm(range(len(parsed)), desc="check histories", unit="record", leave=False, mininterval=2):
        pos_len, neg_len = lens[rows[k]]
        expected = _history_item(pos_his, int(users[k]), int(pos_len)) if clicks[k] \
            else _history_item(neg_his, int(users[k]), int(neg_len))
        bad[k] = expected != items[k]
    report.bad_rows(R.HISTORY_MISMATCH, bad, source, rows,
                    [f"item {items[k]} is not the user's next {'positive' if clicks[k] else 'negative'} history item"
                     for k in np.flatnonzero(bad)[:R.MAX_EXAMPLES]])
