"""History building: one example per target interaction, with the user's prior clicked and browsed histories.

The one implementation is :func:`user_examples` (one user's interactions -> train, validation and test examples). The
in-memory
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
- Split, per user, into three parts (:data:`SPLIT_NAMES`): **test** is an ``is_test`` column (a dataset's official
  split) when ``split="given"``; otherwise ``time_cut`` (global: timestamp >= time_cut is test), otherwise the last
  ``floor(n * test_fraction)`` interactions of the user. **Validation** is carved from the training period: the
  non-test interactions with timestamp >= ``validation_cut`` when one is given, otherwise the last
  ``floor(n * validation_fraction)`` non-test interactions of the user (n = all of the user's interactions). Ties at
  a boundary go to the later part (every interaction at the boundary timestamp), so with a time-ordered test part
  (fraction or time split) train < validation < test in time, strictly. The rest is **train**. Defaults:
  :data:`TEST_FRACTION`, :data:`VALIDATION_FRACTION` (the CLIs and the pipeline use these constants).
- Histories are built from every interaction before the target, whatever its split (validation and test targets see
  earlier train and validation interactions; a validation target never sees a test one, which is later), unless
  ``history_from="train"``, which builds every history from the training period (train + validation) only, never
  from test interactions (THACIL's MicroVideo protocol).
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
TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLIT_NAMES = (TRAIN, VALIDATION, TEST)  # in time order
TEST_FRACTION = 0.2  # per user, the last share of interactions in test
VALIDATION_FRACTION = 0.1  # per user, the share of interactions just before test in validation


def check_split_options(test_fraction: float, validation_fraction: float, time_cut=None, validation_cut=None) -> None:
    """ValueError unless the fractions are in [0, 1) and sum below 1, and validation_cut (if any) precedes time_cut."""
    for name, value in (("test_fraction", test_fraction), ("validation_fraction", validation_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if test_fraction + validation_fraction >= 1.0:
        raise ValueError(f"test_fraction + validation_fraction must be below 1 (some training rows must remain), got "
                         f"{test_fraction} + {validation_fraction}")
    if validation_cut is not None and time_cut is not None and validation_cut >= time_cut:
        raise ValueError(f"validation_cut ({validation_cut}) must be before time_cut ({time_cut})")


def user_examples(user_id: int, items, times, clicks, is_test=None, *, max_history: int = F.DEFAULT_MAX_HISTORY,
                  test_fraction: float = TEST_FRACTION, time_cut: int | None = None,
                  validation_fraction: float = VALIDATION_FRACTION, validation_cut: int | None = None,
                  min_history: int = 0, history_from: str = "all") -> tuple[dict[str, list[dict]], int]:
    """Examples of one user. ``items``, ``times``, ``clicks`` (and optional 0/1 ``is_test``): int arrays [n], any order.

    Returns ``({"train": [...], "validation": [...], "test": [...]}, n_skipped)``, each list in time order;
    ``n_skipped`` counts targets below ``min_history``.
    """
    items = np.asarray(items, np.int64)
    times = np.asarray(times, np.int64)
    clicks = np.asarray(clicks, np.int64)
    order = np.lexsort((clicks, items, times))
    items, times, clicks = items[order], times[order], clicks[order]
    n = items.shape[0]
    test = _test_mask(times, None if is_test is None else np.asarray(is_test)[order], test_fraction, time_cut)
    validation = _validation_mask(times, test, validation_fraction, validation_cut)
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
    out = {name: [] for name in SPLIT_NAMES}
    for i in np.flatnonzero(keep):
        ex = {F.USER_ID: int(user_id), F.ITEM_ID: int(items[i]), F.TIMESTAMP: int(times[i]), F.LABEL: int(clicks[i]),
              F.CLICKED_ITEMS: c_items[c_start[i]:c_end[i]], F.CLICKED_TIMES: c_times[c_start[i]:c_end[i]],
              F.BROWSED_ITEMS: b_items[b_start[i]:b_end[i]], F.BROWSED_TIMES: b_times[b_start[i]:b_end[i]]}
        out[TEST if test[i] else VALIDATION if validation[i] else TRAIN].append(ex)
    skipped = int(n - keep.sum())
    return out, skipped


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


def _validation_mask(times: np.ndarray, test: np.ndarray, validation_fraction: float, validation_cut) -> np.ndarray:
    """Validation membership of each (time-sorted) interaction: the latest non-test ones (see the module docstring)."""
    if validation_cut is not None:
        return ~test & (times >= validation_cut)
    before = times[~test]  # sorted
    n_validation = min(int(np.floor(times.shape[0] * validation_fraction)), before.shape[0])
    if n_validation <= 0:
        return np.zeros(times.shape[0], bool)
    return ~test & (times >= before[before.shape[0] - n_validation])


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
                  test_fraction: float = TEST_FRACTION, time_cut: int | None = None,
                  validation_fraction: float = VALIDATION_FRACTION, validation_cut: int | None = None,
                  min_history: int = 0, split: str = "auto", history_from: str = "all",
                  report: R.Report | None = None, progress: bool = False) -> Iterator[tuple[str, dict]]:
    """Stream ``(split name, example)`` over all users of canonical interactions (a DataFrame, see canonical.py)."""
    if history_from not in HISTORY_FROM:
        raise ValueError(f"history_from must be one of {HISTORY_FROM}, got {history_from!r}")
    report = report if report is not None else R.Report("build")
    split = resolve_split(interactions, split, time_cut)
    check_split_options(test_fraction, validation_fraction, time_cut if split == "time" else None, validation_cut)
    groups = iter_user_groups(interactions, with_split=split == "given")
    if progress:
        from tqdm import tqdm

        groups = tqdm(groups, total=interactions[F.USER_ID].nunique(), desc="build histories", unit="user")
    for user, items, times, clicks, is_test in groups:
        by_split, skipped = user_examples(
            user, items, times, clicks, is_test, max_history=max_history, test_fraction=test_fraction,
            time_cut=time_cut if split == "time" else None, validation_fraction=validation_fraction,
            validation_cut=validation_cut, min_history=min_history, history_from=history_from)
        report.count("users", 1)
        for name in SPLIT_NAMES:
            report.count(f"{name}_examples", len(by_split[name]))
        if skipped:
            report.count("targets_skipped_short_history", skipped)
        for name in SPLIT_NAMES:
            for ex in by_split[name]:
                yield name, ex


def build_examples(interactions: pd.DataFrame, *, max_history: int = F.DEFAULT_MAX_HISTORY,
                   test_fraction: float = TEST_FRACTION, time_cut: int | None = None,
                   validation_fraction: float = VALIDATION_FRACTION, validation_cut: int | None = None,
                   min_history: int = 0, split: str = "auto", history_from: str = "all", progress: bool = False,
                   ) -> tuple[list[dict], list[dict], list[dict], R.Report]:
    """In-memory history building: ``(train, validation, test, report)`` (lists of example dicts); options as in the
    module docstring.

    ``interactions``: canonical DataFrame (user_id, item_id, timestamp, click int64, optional is_test), already
    validated (e.g. by :func:`mtin_tf.data.canonical.read_interactions`).
    """
    report = R.Report("build")
    out = {name: [] for name in SPLIT_NAMES}
    for name, ex in iter_examples(interactions, max_history=max_history, test_fraction=test_fraction,
                                  time_cut=time_cut, validation_fraction=validation_fraction,
                                  validation_cut=validation_cut, min_history=min_history, split=split,
                                  history_from=history_from, report=report, progress=progress):
        out[name].append(ex)
    return out[TRAIN], out[VALIDATION], out[TEST], report
