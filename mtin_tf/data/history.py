"""History building: one example per target interaction, with the user's prior clicked and browsed histories.

The one implementation is :func:`user_examples` (one user's interactions -> train and test examples). The in-memory
path (:func:`iter_examples`, :func:`build_examples`) and the Beam transform (:mod:`mtin_tf.data.beam_history`) both
call it, so they emit the same examples.

An example is a dict keyed by ``mtin_tf.features`` names::

    USER_ID, ITEM_ID, TIMESTAMP, LABEL   -> int
    CLICKED_ITEMS, CLICKED_TIMES         -> int64 [<= L]  most recent L clicked interactions before the target
    BROWSED_ITEMS, BROWSED_TIMES         -> int64 [<= L]  most recent L browsed-not-clicked ones, both oldest first

Rules
- No leakage: a history holds only interactions with timestamp **strictly less** than the target's. Ties: other
  interactions at the same timestamp as the target (and the target itself) are never in its history.
- Order inside a user is (timestamp, item_id, click), so the output does not depend on input order.
- Split, per user: an ``is_test`` column (a dataset's official split) wins when ``split="given"``; otherwise
  ``time_cut`` (global: timestamp >= time_cut is test), otherwise the last ``floor(n * test_fraction)`` interactions
  of the user; with ties at that boundary every interaction at the boundary timestamp goes to test.
- Histories of test targets include earlier test interactions (they were observed before the target) unless
  ``history_from="train"``, which builds every history from train interactions only (THACIL's MicroVideo protocol).
- ``min_history``: a target is emitted only if its clicked history has at least this many items (default 0: empty
  histories are valid examples). Skipped targets are counted (``targets_skipped_short_history``).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from mtin_tf import features as F
from mtin_tf.data import report as R
from mtin_tf.data.canonical import IS_TEST

SPLITS = ("auto", "given", "fraction", "time")
HISTORY_FROM = ("all", "train")


def user_examples(user_id: int, items, times, clicks, is_test=None, *, max_history: int = F.DEFAULT_MAX_HISTORY,
                  test_fraction: float = 0.2, time_cut: int | None = None, min_history: int = 0,
                  history_from: str = "all") -> tuple[list[dict], list[dict], int]:
    """Examples of one user. ``items``, ``times``, ``clicks`` (and optional 0/1 ``is_test``): int arrays [n], any order.

    Returns ``(train_examples, test_examples, n_skipped)``; ``n_skipped`` counts targets below ``min_history``.
    """
    items = np.asarray(items, np.int64)
    times = np.asarray(times, np.int64)
    clicks = np.asarray(clicks, np.int64)
    order = np.lexsort((clicks, items, times))
    items, times, clicks = items[order], times[order], clicks[order]
    n = items.shape[0]
    test = _test_mask(times, None if is_test is None else np.asarray(is_test)[order], test_fraction, time_cut)
    pool = ~test if history_from == "train" else np.ones(n, bool)
    p_items, p_times, p_clicks = items[pool], times[pool], clicks[pool]
    n_prior = np.searchsorted(p_times, times, side="left")  # pool interactions strictly before each target
    kinds = []  # (items, times, end, start per target) for clicked, then browsed-not-clicked
    for flag in (1, 0):
        sel = p_clicks == flag
        ends = np.searchsorted(np.flatnonzero(sel), n_prior, side="left")
        kinds.append((p_items[sel], p_times[sel], ends, np.maximum(ends - max_history, 0)))
    (c_items, c_times, c_end, c_start), (b_items, b_times, b_end, b_start) = kinds
    keep = c_end >= min_history  # prior clicks, before truncation to L
    train, tests = [], []
    for i in np.flatnonzero(keep):
        ex = {F.USER_ID: int(user_id), F.ITEM_ID: int(items[i]), F.TIMESTAMP: int(times[i]), F.LABEL: int(clicks[i]),
              F.CLICKED_ITEMS: c_items[c_start[i]:c_end[i]], F.CLICKED_TIMES: c_times[c_start[i]:c_end[i]],
              F.BROWSED_ITEMS: b_items[b_start[i]:b_end[i]], F.BROWSED_TIMES: b_times[b_start[i]:b_end[i]]}
        (tests if test[i] else train).append(ex)
    skipped = int(n - keep.sum())
    return train, tests, skipped


def _test_mask(times: np.ndarray, is_test, test_fraction: float, time_cut) -> np.ndarray:
    """Test membership of each (time-sorted) interaction."""
    if is_test is not None:
        return is_test.astype(bool)
    if time_cut is not None:
        return times >= time_cut
    n_test = int(np.floor(times.shape[0] * test_fraction))
    if n_test <= 0:
        return np.zeros(times.shape[0], bool)
    return times >= times[times.shape[0] - n_test]


def resolve_split(df: pd.DataFrame, split: str, time_cut) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "auto":
        return "given" if IS_TEST in df.columns else ("time" if time_cut is not None else "fraction")
    if split == "given" and IS_TEST not in df.columns:
        raise ValueError(f"split='given' needs an {IS_TEST!r} column in the interactions")
    if split == "time" and time_cut is None:
        raise ValueError("split='time' needs time_cut")
    return split


def iter_user_groups(df: pd.DataFrame, with_split: bool) -> Iterator[tuple]:
    """Yield ``(user_id, items, times, clicks, is_test or None)`` per user of canonical interactions ``df``."""
    users = df[F.USER_ID].to_numpy(np.int64)
    order = np.argsort(users, kind="stable")
    users = users[order]
    cols = [df[c].to_numpy(np.int64)[order] for c in (F.ITEM_ID, F.TIMESTAMP, F.CLICK)]
    split_col = df[IS_TEST].to_numpy()[order] if with_split else None
    bounds = np.flatnonzero(np.diff(users)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [users.shape[0]]])
    for s, e in zip(starts, ends):
        yield (int(users[s]), cols[0][s:e], cols[1][s:e], cols[2][s:e],
               None if split_col is None else split_col[s:e])


def iter_examples(interactions: pd.DataFrame, *, max_history: int = F.DEFAULT_MAX_HISTORY,
                  test_fraction: float = 0.2, time_cut: int | None = None, min_history: int = 0,
                  split: str = "auto", history_from: str = "all", report: R.Report | None = None,
                  progress: bool = False) -> Iterator[tuple[bool, dict]]:
    """Stream ``(is_test, example)`` over all users of canonical interactions (a DataFrame, see canonical.py)."""
    if history_from not in HISTORY_FROM:
        raise ValueError(f"history_from must be one of {HISTORY_FROM}, got {history_from!r}")
    report = report if report is not None else R.Report("build")
    split = resolve_split(interactions, split, time_cut)
    groups = iter_user_groups(interactions, with_split=split == "given")
    if progress:
        from tqdm import tqdm

        groups = tqdm(groups, total=interactions[F.USER_ID].nunique(), desc="build histories", unit="user")
    for user, items, times, clicks, is_test in groups:
        train, test, skipped = user_examples(
            user, items, times, clicks, is_test, max_history=max_history, test_fraction=test_fraction,
            time_cut=time_cut if split == "time" else None, min_history=min_history, history_from=history_from)
        report.count("users", 1)
        report.count("train_examples", len(train))
        report.count("test_examples", len(test))
        if skipped:
            report.count("targets_skipped_short_history", skipped)
        for ex in train:
            yield False, ex
        for ex in test:
            yield True, ex


def build_examples(interactions: pd.DataFrame, *, max_history: int = F.DEFAULT_MAX_HISTORY,
                   test_fraction: float = 0.2, time_cut: int | None = None, min_history: int = 0,
                   split: str = "auto", history_from: str = "all", progress: bool = False,
                   ) -> tuple[list[dict], list[dict], R.Report]:
    """In-memory history building: ``(train_examples, test_examples, report)``; options as in the module docstring.

    ``interactions``: canonical DataFrame (user_id, item_id, timestamp, click int64, optional is_test), already
    validated (e.g. by :func:`mtin_tf.data.canonical.read_interactions`).
    """
    report = R.Report("build")
    train, test = [], []
    for is_test, ex in iter_examples(interactions, max_history=max_history, test_fraction=test_fraction,
                                     time_cut=time_cut, min_history=min_history, split=split,
                                     history_from=history_from, report=report, progress=progress):
        (test if is_test else train).append(ex)
    return train, test, report
