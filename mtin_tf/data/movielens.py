"""MovieLens-100K from the ``recbole==1.2.1`` wheel -> canonical interactions + item features.

The wheel (fetched with ``python -m pip download --no-deps recbole==1.2.1``, never installed) ships
``recbole/dataset_example/ml-100k/ml-100k.inter`` (``user_id:token, item_id:token, rating:float, timestamp:float``,
tab-separated) and ``ml-100k.item`` (``item_id:token, movie_title:token_seq, release_year:token, class:token_seq``).

Mapping: ids as published (they start at 1); timestamp in Unix seconds; click = rating >= ``click_threshold``
(default 4; lower ratings are browsed-not-clicked). Item features float32 [N, G + 2 (+ H)]:

- genre multi-hot over the G genres found in the file (sorted names);
- scaled release year ``(year - 1900) / 100`` and a flag 1.0 where the year is unknown (then the year value is 0);
- optional ``title_hash_dim`` H > 0: signed hashing of the lower-cased title words (crc32), L2-normalised.

Category = 1 + index of the item's first listed genre (0 if none).
"""
from __future__ import annotations

import csv
import glob
import os
import subprocess
import sys
import tempfile
import zipfile
import zlib

import numpy as np
import pandas as pd

from mtin_tf import features as F
from mtin_tf.data import canonical as C
from mtin_tf.data import delimited as D
from mtin_tf.data import report as R

RECBOLE = "recbole==1.2.1"
INTER_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
ITEM_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.item"
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "mtin-tf", "wheels")


def fetch_wheel(cache_dir: str = DEFAULT_CACHE) -> str:
    """Path of the recbole 1.2.1 wheel in ``cache_dir``, downloading it with pip (no install) when absent. The
    download goes to a private folder first and is renamed into place, so a process running at the same time (two
    test workers, two fetches) never sees half a wheel."""
    pattern = "recbole-1.2.1-*.whl"
    found = sorted(glob.glob(os.path.join(cache_dir, pattern)))
    if found:
        return found[0]
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache_dir) as staging:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", RECBOLE,
               "-d", staging]
        done = subprocess.run(cmd, capture_output=True, text=True)
        staged = sorted(glob.glob(os.path.join(staging, pattern)))
        if done.returncode != 0 or not staged:
            raise RuntimeError(f"could not download {RECBOLE} into {cache_dir}: {done.stderr.strip()[-2000:]}")
        final = os.path.join(cache_dir, os.path.basename(staged[0]))
        os.replace(staged[0], final)
    return final


def _read_member(zf: zipfile.ZipFile, member: str, source: str, report: R.Report, counter: str,
                 columns: tuple[str, ...]) -> tuple[pd.DataFrame, np.ndarray]:
    """One tab-separated member as text columns (``user_id:token`` -> ``user_id``) and the line of each row;
    rows with too many fields are counted (:mod:`mtin_tf.data.delimited`)."""
    try:
        f = zf.open(member)
    except KeyError as e:
        raise R.BadInputError(f"{source}: not in the wheel (is it recbole 1.2.1?)") from e
    frames, lines = [], []
    with f:
        for _, block_lines, frame in D.iter_blocks(f, source, report, sep="\t", quoting=csv.QUOTE_NONE,
                                                        encoding="latin-1", read_counter=counter):
            frames.append(frame)
            lines.append(block_lines)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns), dtype=object)
    table.columns = [c.split(":")[0] for c in table.columns]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise R.BadInputError(f"{source}: column(s) {missing} missing; have {list(table.columns)}")
    return table, (np.concatenate(lines) if lines else np.zeros(0, np.int64))


def read_movielens(wheel_path: str, report: R.Report, *, click_threshold: float = 4.0, title_hash_dim: int = 0,
                   ) -> tuple[pd.DataFrame, C.ItemFeatures]:
    """Canonical ``(interactions, item features)`` of MovieLens-100K read out of the recbole wheel."""
    try:
        zf = zipfile.ZipFile(wheel_path)
    except (OSError, zipfile.BadZipFile) as e:
        raise R.BadInputError(f"{wheel_path}: not a readable wheel (zip) file ({e})") from e
    inter_source, item_source = f"{wheel_path}!{INTER_MEMBER}", f"{wheel_path}!{ITEM_MEMBER}"
    with zf:
        inter, inter_lines = _read_member(zf, INTER_MEMBER, inter_source, report, "rows_read",
                                          ("user_id", "item_id", "rating", "timestamp"))
        item, item_lines = _read_member(zf, ITEM_MEMBER, item_source, report, "items_read",
                                        ("item_id", "movie_title", "release_year", "class"))
    items = _item_features(item, item_lines, item_source, report, title_hash_dim)
    rating = pd.to_numeric(inter["rating"], errors="coerce")
    click = pd.Series(np.where(rating >= click_threshold, 1, 0), dtype=object).where(rating.notna(), inter["rating"])
    raw = pd.DataFrame({F.USER_ID: inter["user_id"], F.ITEM_ID: inter["item_id"], F.TIMESTAMP: inter["timestamp"],
                        F.CLICK: click})
    sources = [inter_source]
    parsed = C.parse_interactions(raw, source_id=0, sources=sources, lines=inter_lines, report=report)
    return C.finish_interactions([parsed], sources, report, items), items


def _item_features(item: pd.DataFrame, lines: np.ndarray, source: str, report: R.Report, title_hash_dim: int,
                   ) -> C.ItemFeatures:
    genres_per_item = [g.split() for g in item["class"]]
    vocab = sorted({g for gs in genres_per_item for g in gs})
    index = {g: k for k, g in enumerate(vocab)}
    n = len(item)
    multi_hot = np.zeros((n, len(vocab)), np.float32)
    for row, gs in enumerate(genres_per_item):
        multi_hot[row, [index[g] for g in gs]] = 1.0
    year = pd.to_numeric(item["release_year"], errors="coerce").to_numpy(np.float64)
    unknown = ~np.isfinite(year)
    report.count("items_unknown_release_year", int(unknown.sum()))
    year_cols = np.stack([np.where(unknown, 0.0, (year - 1900.0) / 100.0), unknown.astype(np.float64)], axis=1)
    parts = [multi_hot, year_cols.astype(np.float32)]
    if title_hash_dim > 0:
        parts.append(title_hash(item["movie_title"], title_hash_dim))
    category = np.array([index[gs[0]] + 1 if gs else 0 for gs in genres_per_item], np.int64)
    return C.clean_item_features(item["item_id"].to_numpy(), np.concatenate(parts, axis=1), category, source=source,
                                 lines=lines, report=report)


def title_hash(titles, dim: int) -> np.ndarray:
    """Signed hashing-trick embedding of titles: float32 [N, dim], L2-normalised rows (zeros for empty titles)."""
    out = np.zeros((len(titles), dim), np.float32)
    for row, title in enumerate(titles):
        for word in str(title).lower().split():
            h = zlib.crc32(word.encode("utf-8"))
            out[row, h % dim] += 1.0 if (h >> 31) & 1 else -1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)
