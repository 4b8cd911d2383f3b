"""The canonical raw format: interactions (CSV or Parquet) and item features (one .npz), with validation.

Interactions (``interactions.parquet`` or any ``.csv``/``.parquet`` with a header), one row per impression:

=============  =======  ==========================================================================================
column         dtype    meaning
=============  =======  ==========================================================================================
user_id        int64    > 0 (0 is reserved for padding)
item_id        int64    > 0
timestamp      int64    >= 0; seconds for real logs, or the dataset's relative unit (documented per reader)
click          int64    1 = clicked, 0 = thumbnail browsed but not clicked
is_test        int8     optional: 1 = official test split, 0 = train (readers of datasets with a published split)
=============  =======  ==========================================================================================

Item features (``item_features.npz``): ``item_ids`` int64 [N] (unique, > 0), ``features`` float32 [N, F] (finite),
optional ``category`` int64 [N]. Stored once, never per example.

Validation (:func:`parse_interactions`, :func:`finish_interactions`, :func:`clean_item_features`) counts every bad row
in a :class:`~mtin_tf.data.report.Report` (or raises in strict mode): missing fields, non-numeric ids, ids <= 0 (this
plain format does not remap ids; dataset readers with 0-based ids shift them by ``id_offset``), negative or unparsable
timestamps, clicks outside {0, 1}, duplicate (user, item, timestamp) rows (the first is kept, whatever its click),
interactions whose item has no valid feature vector, and NaN/inf or wrong-length feature vectors.
A non-integral timestamp is floored to int64 seconds.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from mtin_tf import features as F
from mtin_tf.data import report as R

IS_TEST = "is_test"  # optional split column of the canonical interactions (not a model feature)
INTERACTIONS_FILE = "interactions.parquet"
ITEM_FEATURES_FILE = "item_features.npz"
# bookkeeping columns of parsed chunks: index into the list of sources, and the line (or row) number
SRC_COLUMN, LINE_COLUMN = "_src", "_line"
CSV_CHUNK_ROWS = 1_000_000


@dataclasses.dataclass
class ItemFeatures:
    """item_ids int64 [N], features float32 [N, F], category int64 [N] or None."""

    item_ids: np.ndarray
    features: np.ndarray
    category: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        """Row of each id in ``features`` (int64, same shape as ``item_ids``), -1 where the item is unknown."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if len(self) == 0:
            return np.full(ids.shape, -1, np.int64)
        order = np.argsort(self.item_ids, kind="stable")
        sorted_ids = self.item_ids[order]
        pos = np.minimum(np.searchsorted(sorted_ids, ids), len(self) - 1)
        return np.where(sorted_ids[pos] == ids, order[pos], -1).astype(np.int64)


def write_item_features(path: str, items: ItemFeatures | None = None, *, item_ids=None, features=None,
                        category=None) -> str:
    """Write one .npz (``items`` or the three arrays); returns ``path``."""
    if items is None:
        items = ItemFeatures(np.asarray(item_ids, np.int64), np.asarray(features, np.float32),
                             None if category is None else np.asarray(category, np.int64))
    arrays = {"item_ids": items.item_ids.astype(np.int64), "features": items.features.astype(np.float32)}
    if items.category is not None:
        arrays["category"] = items.category.astype(np.int64)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:  # a file object keeps np.savez from appending ".npz" to the name
        np.savez(f, **arrays)
    return path


def read_item_features(path: str) -> ItemFeatures:
    """Read a canonical item-feature .npz (as written by :func:`write_item_features`)."""
    with np.load(path, allow_pickle=False) as z:
        category = z["category"].astype(np.int64) if "category" in z.files else None
        items = ItemFeatures(z["item_ids"].astype(np.int64), z["features"].astype(np.float32), category)
    if items.features.ndim != 2 or items.features.shape[0] != len(items):
        raise R.BadInputError(f"{path}: features must be [N, F] with N = len(item_ids)")
    return items


def clean_item_features(item_ids, vectors, category=None, *, source: str, lines: np.ndarray | None = None,
                        report: R.Report, dim: int | None = None) -> ItemFeatures:
    """Validate raw item features and keep the good rows.

    ``item_ids`` [N] (anything numeric-like), ``vectors`` either a float array [N, F] or a sequence of N vectors of
    possibly different lengths; ``dim`` is the expected F (default: the most common length). Bad ids, wrong-length or
    non-finite vectors and repeated ids (first kept) are counted at ``source:lines[i]`` (default line = row + 1).
    """
    n = len(item_ids)
    lines = np.arange(1, n + 1) if lines is None else np.asarray(lines)
    ids = pd.to_numeric(pd.Series(item_ids), errors="coerce").to_numpy(np.float64)
    bad_id = ~np.isfinite(ids) | (ids != np.floor(ids))
    report.bad_rows(R.NON_NUMERIC_ID, bad_id, source, lines)
    nonpos = ~bad_id & (ids <= 0)
    report.bad_rows(R.NONPOSITIVE_ID, nonpos, source, lines)
    keep = ~bad_id & ~nonpos
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2 and vectors.dtype != object:
        if dim is not None and vectors.shape[1] != dim:
            raise R.BadInputError(f"{source}: feature vectors have {vectors.shape[1]} values, expected {dim}")
        mat = vectors.astype(np.float32, copy=False)
        finite = np.isfinite(mat).all(axis=1)
        report.bad_rows(R.BAD_FEATURE_VECTOR, keep & ~finite, source, lines,
                        ["NaN or infinite value"] * int((keep & ~finite).sum()))
        keep &= finite
    else:
        lengths = np.array([len(v) if v is not None and not np.isscalar(v) else -1 for v in vectors])
        if dim is None:
            valid = lengths[lengths > 0]
            dim = int(np.bincount(valid).argmax()) if valid.size else 0
        wrong = keep & (lengths != dim)
        report.bad_rows(R.BAD_FEATURE_VECTOR, wrong, source, lines,
                        [f"{lengths[i]} values, expected {dim}" for i in np.flatnonzero(wrong)[:R.MAX_EXAMPLES]])
        keep &= ~wrong
        mat = np.zeros((n, dim), np.float32)
        for i in np.flatnonzero(keep):
            mat[i] = np.asarray(vectors[i], dtype=np.float32)
        finite = np.isfinite(mat).all(axis=1)
        report.bad_rows(R.BAD_FEATURE_VECTOR, keep & ~finite, source, lines,
                        ["NaN or infinite value"] * int((keep & ~finite).sum()))
        keep &= finite
    ids_int = np.where(keep, ids, 0).astype(np.int64)
    dup = keep & pd.Series(ids_int).duplicated().to_numpy() & (ids_int > 0)
    report.bad_rows(R.DUPLICATE_ROW, dup, source, lines,
                    [f"item {ids_int[i]} listed again" for i in np.flatnonzero(dup)[:R.MAX_EXAMPLES]])
    keep &= ~dup
    report.count("items_read", n)
    report.count("items_kept", int(keep.sum()))
    cat = None if category is None else np.asarray(category)[keep].astype(np.int64)
    return ItemFeatures(ids_int[keep], np.ascontiguousarray(mat[keep]), cat)


def read_item_table(path: str, report: R.Report, *, dim: int | None = None) -> ItemFeatures:
    """Item features from .npz (canonical), or CSV/Parquet with columns ``item_id``, ``features`` and optional
    ``category``; in CSV ``features`` is one field of space-separated floats, in Parquet a list column."""
    if path.endswith(".npz"):
        items = read_item_features(path)
        return clean_item_features(items.item_ids, items.features, items.category, source=path, report=report,
                                   dim=dim)
    table = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path, dtype=str)
    for col in (F.ITEM_ID, F.ITEM_FEATURES):
        if col not in table.columns:
            raise R.BadInputError(f"{path}: column {col!r} is missing (need {F.ITEM_ID}, {F.ITEM_FEATURES})")
    line0 = 1 if path.endswith(".parquet") else 2  # CSV: line 1 is the header
    vectors = [_parse_vector(v) for v in table[F.ITEM_FEATURES]]
    category = table[F.ITEM_CATEGORY].to_numpy() if F.ITEM_CATEGORY in table.columns else None
    return clean_item_features(table[F.ITEM_ID].to_numpy(), vectors, category, source=path,
                               lines=np.arange(len(table)) + line0, report=report, dim=dim)


def _parse_vector(value) -> np.ndarray | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        try:
            return np.array(value.replace(",", " ").replace(";", " ").split(), dtype=np.float64)
        except ValueError:
            return np.array([np.nan])
    return np.asarray(value, dtype=np.float64)


def parse_interactions(raw: pd.DataFrame, *, source_id: int, sources: Sequence[str], lines: np.ndarray,
                       report: R.Report, id_offset: int = 0) -> pd.DataFrame:
    """Validate one chunk of raw interactions (columns as in the module docstring, any dtype).

    Returns the good rows as int64 columns plus ``_src``/``_line`` bookkeeping for :func:`finish_interactions`.
    ``id_offset`` is added to user and item ids after parsing (1 for datasets whose ids start at 0).
    A row with several problems is counted once, under the first failing check in the order of the module docstring.
    """
    source = sources[source_id]
    missing_cols = [c for c in F.INTERACTION_COLUMNS if c not in raw.columns]
    if missing_cols:
        raise R.BadInputError(f"{source}: required column(s) {missing_cols} missing; have {list(raw.columns)}")
    lines = np.asarray(lines, dtype=np.int64)
    cols = {c: raw[c] for c in F.INTERACTION_COLUMNS}
    empty = np.zeros(len(raw), bool)
    for c in F.INTERACTION_COLUMNS:
        empty |= cols[c].isna().to_numpy()
        if cols[c].dtype == object:
            empty |= (cols[c].astype(str).str.strip() == "").to_numpy()
    report.bad_rows(R.MISSING_FIELD, empty, source, lines)
    ok = ~empty
    num = {c: pd.to_numeric(cols[c], errors="coerce").to_numpy(np.float64) for c in F.INTERACTION_COLUMNS}
    for c in (F.USER_ID, F.ITEM_ID):
        bad = ok & (~np.isfinite(num[c]) | (num[c] != np.floor(num[c])))
        report.bad_rows(R.NON_NUMERIC_ID, bad, source, lines,
                        [f"{c}={cols[c].iloc[i]!r}" for i in np.flatnonzero(bad)[:R.MAX_EXAMPLES]])
        ok &= ~bad
    for c in (F.USER_ID, F.ITEM_ID):
        num[c] = num[c] + id_offset
        bad = ok & (num[c] <= 0)
        report.bad_rows(R.NONPOSITIVE_ID, bad, source, lines,
                        [f"{c}={cols[c].iloc[i]!r} (0 is padding)" for i in np.flatnonzero(bad)[:R.MAX_EXAMPLES]])
        ok &= ~bad
    t = num[F.TIMESTAMP]
    bad = ok & (~np.isfinite(t) | (t < 0))
    report.bad_rows(R.BAD_TIMESTAMP, bad, source, lines,
                    [f"timestamp={cols[F.TIMESTAMP].iloc[i]!r}" for i in np.flatnonzero(bad)[:R.MAX_EXAMPLES]])
    ok &= ~bad
    c = num[F.CLICK]
    bad = ok & ~((c == 0) | (c == 1))
    report.bad_rows(R.BAD_CLICK, bad, source, lines,
                    [f"click={cols[F.CLICK].iloc[i]!r}" for i in np.flatnonzero(bad)[:R.MAX_EXAMPLES]])
    ok &= ~bad
    report.count("rows_read", len(raw))
    out = pd.DataFrame({k: np.floor(num[k][ok]).astype(np.int64) for k in F.INTERACTION_COLUMNS})
    if IS_TEST in raw.columns:
        out[IS_TEST] = pd.to_numeric(raw[IS_TEST], errors="coerce").fillna(0).to_numpy()[ok].astype(np.int8)
    out[SRC_COLUMN] = np.int16(source_id)
    out[LINE_COLUMN] = lines[ok]
    return out


def finish_interactions(frames: Iterable[pd.DataFrame], sources: Sequence[str], report: R.Report,
                        items: ItemFeatures | None = None) -> pd.DataFrame:
    """Concatenate parsed chunks, drop repeated (user, item, timestamp) rows (first kept) and, when ``items`` is
    given, interactions whose item has no feature vector; every dropped row is counted. Sorted by user, timestamp."""
    df = pd.concat(list(frames), ignore_index=True)
    dup = df.duplicated([F.USER_ID, F.ITEM_ID, F.TIMESTAMP], keep="first").to_numpy()
    _bad_rows_multi(report, R.DUPLICATE_ROW, df, dup, sources,
                    lambda r: f"user {r[F.USER_ID]} item {r[F.ITEM_ID]} at {r[F.TIMESTAMP]} repeated")
    df = df[~dup]
    if items is not None:
        unknown = items.rows(df[F.ITEM_ID].to_numpy()) < 0
        _bad_rows_multi(report, R.ITEM_WITHOUT_FEATURES, df, unknown, sources,
                        lambda r: f"item {r[F.ITEM_ID]} has no feature vector")
        df = df[~unknown]
    df = df.sort_values([F.USER_ID, F.TIMESTAMP, F.ITEM_ID], kind="stable")
    df = df.drop(columns=[SRC_COLUMN, LINE_COLUMN])
    report.count("rows_kept", len(df))
    return df.reset_index(drop=True)


def _bad_rows_multi(report, kind, df, mask, sources, detail) -> None:
    """Count rows of ``df`` (which may come from several sources) where ``mask`` is true."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return
    first = df.iloc[idx[:R.MAX_EXAMPLES]]
    locs = [f"{sources[int(r[SRC_COLUMN])]}:{int(r[LINE_COLUMN])}: {detail(r)}" for _, r in first.iterrows()]
    report.bad_input(kind, locs, count=idx.size)


def read_interactions(paths: str | Sequence[str], report: R.Report, *, items: ItemFeatures | None = None,
                      id_offset: int = 0, chunk_rows: int = CSV_CHUNK_ROWS) -> pd.DataFrame:
    """Read canonical interactions from CSV (line numbers count the header as line 1) or Parquet (row numbers from 1),
    validated as described in the module docstring."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    frames = []
    for source_id, path in enumerate(paths):
        for start, chunk in tqdm(iter_chunks(path, chunk_rows), desc=f"read {os.path.basename(path)}",
                                 unit="chunk", leave=False):
            line0 = 1 if path.endswith(".parquet") else 2
            frames.append(parse_interactions(chunk, source_id=source_id, sources=paths,
                                             lines=np.arange(len(chunk)) + start + line0, report=report,
                                             id_offset=id_offset))
    return finish_interactions(frames, paths, report, items)


def iter_chunks(path: str, chunk_rows: int):
    """Yield (first row index, DataFrame chunk)."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        start = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            chunk = batch.to_pandas()
            yield start, chunk
            start += len(chunk)
        return
    start = 0
    try:
        for chunk in pd.read_csv(path, chunksize=chunk_rows, skipinitialspace=True):
            yield start, chunk
            start += len(chunk)
    except pd.errors.ParserError as e:
        raise R.BadInputError(f"{path}: malformed CSV row ({e})") from e


def write_interactions(df: pd.DataFrame, path: str) -> str:
    """Write canonical interactions (columns of INTERACTION_COLUMNS, plus is_test if present) to .parquet or .csv."""
    cols = list(F.INTERACTION_COLUMNS) + ([IS_TEST] if IS_TEST in df.columns else [])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    out = df[cols]
    if path.endswith(".parquet"):
        out.to_parquet(path, index=False)
    else:
        out.to_csv(path, index=False)
    return path
