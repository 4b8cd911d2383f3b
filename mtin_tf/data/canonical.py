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
in a :class:`~mtin_tf.data.report.Report` (or raises in strict mode): CSV rows with too many fields
(:mod:`mtin_tf.data.delimited`), missing fields, non-numeric ids, ids <= 0 (this plain format does not remap ids;
dataset readers with 0-based ids shift them by ``id_offset``), ids above int64 (judged on the text, see
:mod:`mtin_tf.data.ranges`, where every range is defined), negative, unparsable or too large timestamps, clicks and
``is_test`` flags outside {0, 1}, duplicate (user, item, timestamp) rows (the first is kept, whatever its click),
interactions whose item has no valid feature vector, and NaN/inf or wrong-length feature vectors, bad categories or
repeated ids in item tables. A non-integral timestamp is floored to int64. Problems of a whole file (unreadable, no
header, a required column or array missing, wrong dtypes or shapes of an item table, an empty item table) are one
:class:`~mtin_tf.data.report.BadInputError` naming the file, what was found and what is expected.
"""
from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from mtin_tf import features as F
from mtin_tf.data import delimited as D
from mtin_tf.data import ranges as V
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


ITEM_LAYOUT = "item_ids int64 [N] (unique, > 0), features float32 [N, F] (finite), optional category int64 [N]"


def load_item_arrays(path: str) -> ItemFeatures:
    """The arrays of an item-feature .npz with its structure checked (names, dtypes, shapes, not empty), rows not.

    Anything else is a :class:`~mtin_tf.data.report.BadInputError` naming the file, what was found and
    :data:`ITEM_LAYOUT`. Ids keep their integer dtype (a uint64 id above int64 is counted later, not wrapped).
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise R.BadInputError(f"{path}: not a readable .npz archive ({e}); expected {ITEM_LAYOUT}") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise R.BadInputError(f"{path}: a single array, not an .npz archive of named arrays; expected {ITEM_LAYOUT}")
    with archive as z:
        names = sorted(z.files)
        missing = [n for n in ("item_ids", "features") if n not in names]
        unexpected = [n for n in names if n not in ("item_ids", "features", "category")]
        if missing or unexpected:
            what = (f"no array {missing}" if missing else "") + (" and " if missing and unexpected else "") + \
                (f"unexpected array(s) {unexpected}" if unexpected else "")
            raise R.BadInputError(f"{path}: {what} (found {names}); expected {ITEM_LAYOUT}")
        arrays = {}
        for name in names:
            try:
                arrays[name] = z[name]
            except ValueError as e:  # object arrays cannot be read without unpickling
                raise R.BadInputError(f"{path}: array {name!r} holds Python objects ({e}); expected {ITEM_LAYOUT}"
                                      ) from e
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise R.BadInputError(f"{path}: array {name!r} cannot be read ({e})") from e
    ids, feats, cat = arrays["item_ids"], arrays["features"], arrays.get("category")
    problems = []
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        problems.append(f"item_ids is {ids.dtype} {list(ids.shape)}, expected an integer (int64) vector [N]")
    if feats.ndim != 2 or feats.dtype.kind not in "iuf":
        problems.append(f"features is {feats.dtype} {list(feats.shape)}, expected a float32 matrix [N, F]")
    elif ids.ndim == 1 and feats.shape[0] != ids.shape[0]:
        problems.append(f"features has {feats.shape[0]} rows for {ids.shape[0]} item_ids (ragged table)")
    elif feats.shape[1] == 0:
        problems.append("features has 0 columns")
    if cat is not None and (cat.ndim != 1 or cat.dtype.kind not in "iu" or cat.shape[0] != ids.shape[0]):
        problems.append(f"category is {cat.dtype} {list(cat.shape)}, expected an integer (int64) vector "
                        f"[{ids.shape[0]}]")
    if not problems and ids.shape[0] == 0:
        problems.append("the table is empty (0 items)")
    if problems:
        raise R.BadInputError(f"{path}: " + "; ".join(problems) + f"; expected {ITEM_LAYOUT}")
    return ItemFeatures(ids, feats.astype(np.float32), cat)


def read_item_features(path: str) -> ItemFeatures:
    """Read a canonical item-feature .npz (as written by :func:`write_item_features`); any structural problem, id
    out of range, repeated id, NaN/inf row or negative category is one :class:`~mtin_tf.data.report.BadInputError`
    naming the file and the first offending row (``mtin data convert`` cleans a table, counting such rows)."""
    items = load_item_arrays(path)
    ids, status = V.parse_int64(pd.Series(items.item_ids))
    checks = [(status != V.OK) | (ids < V.ID_MIN), f"an id outside [{V.ID_MIN}, {V.ID_MAX}]",
              pd.Series(ids).duplicated().to_numpy(), "an id listed again",
              ~np.isfinite(items.features).all(axis=1), "NaN or infinite features"]
    if items.category is not None:
        cat, cat_status = V.parse_int64(pd.Series(items.category))
        checks += [(cat_status != V.OK) | (cat < V.CATEGORY_MIN), f"a category outside [{V.CATEGORY_MIN}, "
                   f"{V.CATEGORY_MAX}]"]
    for mask, what in zip(checks[::2], checks[1::2]):
        if mask.any():
            i = int(np.argmax(mask))
            raise R.BadInputError(f"{path}: row {i} (item_ids[{i}] = {items.item_ids[i]}) has {what} and "
                                  f"{int(mask.sum()) - 1} more row(s); expected {ITEM_LAYOUT}")
    return ItemFeatures(ids, items.features, None if items.category is None else cat)


def load_feature_matrix(path: str, what: str, *, mmap: bool = False) -> np.ndarray:
    """A numeric [N, D] array from a .npy (``what`` describes the expected layout for the error message)."""
    try:
        feats = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise R.BadInputError(f"{path}: not a readable numeric .npy array ({e}); expected {what}") from e
    if not isinstance(feats, np.ndarray):
        raise R.BadInputError(f"{path}: an .npz archive, not a single .npy array; expected {what}")
    if feats.ndim != 2 or feats.dtype.kind not in "iuf":
        raise R.BadInputError(f"{path}: a {feats.dtype} array of shape {list(feats.shape)}; expected {what}")
    return feats


def clean_item_features(item_ids, vectors, category=None, *, source: str, lines: np.ndarray | None = None,
                        report: R.Report, dim: int | None = None) -> ItemFeatures:
    """Validate raw item features and keep the good rows.

    ``item_ids`` [N] (integers or text), ``vectors`` either a numeric array [N, F] or a sequence of N vectors of
    possibly different lengths; ``dim`` is the expected F (default: the most common length); ``category`` [N]
    (integers or text, empty = 0). Empty, non-integer, non-positive and too large ids, bad categories, wrong-length or
    non-finite vectors and repeated ids (first kept) are counted at ``source:lines[i]`` (default line = row + 1).
    """
    n = len(item_ids)
    lines = np.arange(1, n + 1) if lines is None else np.asarray(lines)
    raw_ids = pd.Series(np.asarray(item_ids) if not isinstance(item_ids, pd.Series) else item_ids.to_numpy())
    ids, status = V.parse_int64(raw_ids)
    keep = np.ones(n, bool)
    checks = []  # reported together at the end (strict mode: the earliest bad row first)

    def count(kind, mask, detail):
        bad = keep & mask
        checks.append((kind, bad, [detail(i) for i in np.flatnonzero(bad)[:R.MAX_EXAMPLES]]))
        keep[bad] = False

    shown = lambda i: f"item_id={raw_ids.iat[i]!r}"  # the value as written
    count(R.MISSING_FIELD, status == V.EMPTY, lambda i: "item_id is empty")
    count(R.NON_NUMERIC_ID, status == V.INVALID, shown)
    count(R.NONPOSITIVE_ID, (status == V.TOO_LOW) | ((status == V.OK) & (ids < V.ID_MIN)),
          lambda i: shown(i) + " (0 is padding)")
    count(R.ID_OUT_OF_RANGE, (status == V.TOO_HIGH) | ((status == V.OK) & (ids > V.ID_MAX)),
          lambda i: shown(i) + f" is above {V.ID_MAX}")
    cat = None
    if category is not None:
        raw_cat = pd.Series(np.asarray(category) if not isinstance(category, pd.Series) else category.to_numpy())
        cat, cat_status = V.parse_int64(raw_cat)
        cat_status = np.where(cat_status == V.EMPTY, V.OK, cat_status)  # no category given: 0
        count(R.BAD_CATEGORY, (cat_status != V.OK) | (cat < V.CATEGORY_MIN) | (cat > V.CATEGORY_MAX),
              lambda i: f"category={raw_cat.iat[i]!r}")
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2 and vectors.dtype.kind in "iuf":
        if dim is not None and vectors.shape[1] != dim:
            raise R.BadInputError(f"{source}: feature vectors have {vectors.shape[1]} values, expected {dim}")
        with np.errstate(over="ignore", invalid="ignore"):
            mat = vectors.astype(np.float32, copy=False)
    else:
        vectors = [_parse_vector(v) for v in vectors]
        lengths = np.array([-1 if v is None else v.shape[0] for v in vectors], np.int64)
        if dim is None:
            valid = lengths[keep & (lengths > 0)]
            dim = int(np.bincount(valid).argmax()) if valid.size else 0
        count(R.BAD_FEATURE_VECTOR, lengths != dim,
              lambda i: "no feature vector" if lengths[i] < 0 else f"{lengths[i]} values, expected {dim}")
        mat = np.zeros((n, dim), np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            for i in np.flatnonzero(keep):
                mat[i] = vectors[i]
    count(R.BAD_FEATURE_VECTOR, ~np.isfinite(mat).all(axis=1), lambda i: "NaN or infinite value (as float32)")
    ids_kept = np.where(keep, ids, 0)
    count(R.DUPLICATE_ROW, pd.Series(ids_kept).duplicated().to_numpy() & (ids_kept > 0),
          lambda i: f"item {ids[i]} listed again")
    report.bad_row_checks(checks, source, lines)
    report.count("items_read", n)
    report.count("items_kept", int(keep.sum()))
    return ItemFeatures(ids[keep], np.ascontiguousarray(mat[keep]), None if cat is None else cat[keep])


def read_item_table(path: str, report: R.Report, *, dim: int | None = None) -> ItemFeatures:
    """Item features from .npz (canonical), or CSV/Parquet with columns ``item_id``, ``features`` and optional
    ``category``; in CSV ``features`` is one field of space-separated floats, in Parquet a list column.

    Structural problems (unreadable file, wrong array or column names, dtypes or shapes, an empty table) are one
    precise :class:`~mtin_tf.data.report.BadInputError`; bad rows are counted and skipped (see
    :func:`clean_item_features`); a table without a single valid row is an error too.
    """
    if path.endswith(".npz"):
        raw = load_item_arrays(path)
        items = clean_item_features(raw.item_ids, raw.features, raw.category, source=path, report=report, dim=dim)
    else:
        if path.endswith(".parquet"):
            table = _read_parquet(path)
            lines = np.arange(len(table)) + 1
        else:
            frames, line_parts = [], []
            with _open(path) as f:
                for _, block_lines, frame in D.iter_blocks(f, path, report, read_counter="items_read"):
                    frames.append(frame)
                    line_parts.append(block_lines)
            table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
            lines = np.concatenate(line_parts) if line_parts else np.zeros(0, np.int64)
        for col in (F.ITEM_ID, F.ITEM_FEATURES):
            if col not in table.columns:
                raise R.BadInputError(f"{path}: column {col!r} is missing (have {list(table.columns)}; need "
                                      f"{F.ITEM_ID}, {F.ITEM_FEATURES}[, {F.ITEM_CATEGORY}])")
        if len(table) == 0:
            raise R.BadInputError(f"{path}: the item table is empty (0 rows)")
        category = table[F.ITEM_CATEGORY] if F.ITEM_CATEGORY in table.columns else None
        items = clean_item_features(table[F.ITEM_ID], table[F.ITEM_FEATURES].tolist(), category, source=path,
                                    lines=lines, report=report, dim=dim)
    if len(items) == 0:
        raise R.BadInputError(f"{path}: none of its item rows is valid (skipped: "
                              f"{ {k: v['count'] for k, v in report.bad.items()} })")
    return items


def _parse_vector(value) -> np.ndarray | None:
    """One feature vector as float64 (None if absent; [NaN] if it holds something that is not a number)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        if isinstance(value, str):
            if not value.strip():
                return None
            return np.array(value.replace(",", " ").replace(";", " ").split(), dtype=np.float64)
        vec = np.asarray(value, dtype=np.float64)
        return vec if vec.ndim == 1 else np.array([np.nan])
    except (ValueError, TypeError, OverflowError):
        return np.array([np.nan])


def _open(path: str):
    try:
        return open(path, "rb")
    except OSError as e:
        raise R.BadInputError(f"{path}: cannot open ({e.strerror or e})") from e


def _read_parquet(path: str) -> pd.DataFrame:
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except (OSError, pa.ArrowException, ValueError) as e:
        raise R.BadInputError(f"{path}: not a readable Parquet file ({e})") from e


def parse_interactions(raw: pd.DataFrame, *, source_id: int, sources: Sequence[str], lines: np.ndarray,
                       report: R.Report, id_offset: int = 0) -> pd.DataFrame:
    """Validate one chunk of raw interactions (columns as in the module docstring; text, objects or numbers).

    Returns the good rows as int64 columns plus ``_src``/``_line`` bookkeeping for :func:`finish_interactions`.
    ``id_offset`` is added to user and item ids after parsing (1 for datasets whose ids start at 0); the ranges of
    :mod:`mtin_tf.data.ranges` apply after the shift and are checked on the values as written, before any int64
    conversion. A row with several problems is counted once, under the first failing check in the order of the module
    docstring; examples quote the value as written.
    """
    source = sources[source_id]
    missing_cols = [c for c in F.INTERACTION_COLUMNS if c not in raw.columns]
    if missing_cols:
        raise R.BadInputError(f"{source}: required column(s) {missing_cols} missing; have {list(raw.columns)}")
    lines = np.asarray(lines, dtype=np.int64)
    n = len(raw)
    parsed = {c: V.parse_int64(raw[c], floor=c == F.TIMESTAMP) for c in F.INTERACTION_COLUMNS}
    ok = np.ones(n, bool)
    checks = []  # reported together at the end (strict mode: the earliest bad row first)

    def count(kind, mask, detail):
        bad = ok & mask
        checks.append((kind, bad, [detail(i) for i in np.flatnonzero(bad)[:R.MAX_EXAMPLES]]))
        ok[bad] = False

    def shown(c):
        return lambda i: f"{c}={raw[c].iat[i]!r}"

    empty = np.stack([parsed[c][1] == V.EMPTY for c in F.INTERACTION_COLUMNS], axis=1)
    count(R.MISSING_FIELD, empty.any(axis=1), lambda i: f"{F.INTERACTION_COLUMNS[int(np.argmax(empty[i]))]} is empty")
    for c in (F.USER_ID, F.ITEM_ID):
        count(R.NON_NUMERIC_ID, parsed[c][1] == V.INVALID, shown(c))
    for c in (F.USER_ID, F.ITEM_ID):
        (lo, hi), (v, st) = V.RANGES[c], parsed[c]
        count(R.NONPOSITIVE_ID, (st == V.TOO_LOW) | ((st == V.OK) & (v < lo - id_offset)),
              lambda i, c=c: shown(c)(i) + " (0 is padding)")
        count(R.ID_OUT_OF_RANGE, (st == V.TOO_HIGH) | ((st == V.OK) & (v > hi - id_offset)),
              lambda i, c=c, hi=hi: shown(c)(i) + f" is above {hi - id_offset}")
    for c, kind in ((F.TIMESTAMP, R.BAD_TIMESTAMP), (F.CLICK, R.BAD_CLICK)):
        (lo, hi), (v, st) = V.RANGES[c], parsed[c]
        count(kind, (st != V.OK) | (v < lo) | (v > hi), shown(c))
    is_test = None
    if IS_TEST in raw.columns:
        v, st = V.parse_int64(raw[IS_TEST])
        count(R.BAD_IS_TEST, ((st != V.OK) & (st != V.EMPTY)) | (v < V.IS_TEST_MIN) | (v > V.IS_TEST_MAX),
              shown(IS_TEST))
        is_test = v  # empty: 0 (train)
    report.bad_row_checks(checks, source, lines)
    report.count("rows_read", n)
    out = pd.DataFrame({c: parsed[c][0][ok] for c in F.INTERACTION_COLUMNS})
    for c in (F.USER_ID, F.ITEM_ID):
        out[c] += id_offset
    if is_test is not None:
        out[IS_TEST] = is_test[ok].astype(np.int8)
    out[SRC_COLUMN] = np.int16(source_id)
    out[LINE_COLUMN] = lines[ok]
    return out


def finish_interactions(frames: Iterable[pd.DataFrame], sources: Sequence[str], report: R.Report,
                        items: ItemFeatures | None = None) -> pd.DataFrame:
    """Concatenate parsed chunks, drop repeated (user, item, timestamp) rows (first kept) and, when ``items`` is
    given, interactions whose item has no feature vector; every dropped row is counted. Sorted by user, timestamp."""
    frames = list(frames)
    if not frames:  # no rows at all (a header-only file)
        frames = [pd.DataFrame({c: np.zeros(0, np.int64) for c in (*F.INTERACTION_COLUMNS, LINE_COLUMN)})
                  .assign(**{SRC_COLUMN: np.zeros(0, np.int16)})]
    df = pd.concat(frames, ignore_index=True)
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
    report.count("rows_read", 0)  # present even when no file has a row
    for source_id, path in enumerate(paths):
        for lines, chunk in tqdm(iter_chunks(path, chunk_rows, report), desc=f"read {os.path.basename(path)}",
                                 unit="chunk", leave=False):
            frames.append(parse_interactions(chunk, source_id=source_id, sources=paths, lines=lines, report=report,
                                             id_offset=id_offset))
    return finish_interactions(frames, paths, report, items)


def iter_chunks(path: str, chunk_rows: int, report: R.Report):
    """Yield ``(line numbers [n], DataFrame chunk of n rows)`` of a CSV (fields as text, malformed rows counted in
    ``report``, see :mod:`mtin_tf.data.delimited`) or a Parquet file (row numbers from 1). An unreadable file or one
    without a header is a :class:`~mtin_tf.data.report.BadInputError`."""
    if path.endswith(".parquet"):
        import pyarrow as pa

        start = 0
        try:
            for batch in _open_parquet(path).iter_batches(batch_size=chunk_rows):
                chunk = batch.to_pandas(integer_object_nulls=True)  # no float round trip for int columns with nulls
                yield np.arange(len(chunk), dtype=np.int64) + start + 1, chunk
                start += len(chunk)
        except (OSError, pa.ArrowException) as e:
            raise R.BadInputError(f"{path}: not a readable Parquet file ({e})") from e
        return
    with _open(path) as f:
        for _, lines, chunk in D.iter_blocks(f, path, report, block_lines=chunk_rows):
            yield lines, chunk


def _open_parquet(path: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise R.BadInputError(f"{path}: not a readable Parquet file ({e})") from e


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
