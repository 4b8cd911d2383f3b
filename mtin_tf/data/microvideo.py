"""MicroVideo-1.7M reader (THACIL's published layout) -> canonical interactions + item features.

Input directory (as published with THACIL, Chen et al. MM 2018):

- ``train_data.csv``, ``test_data.csv``: header ``user_id,item_id,cate_id,is_click,timestamp``; ids start at 0.
- ``train_cover_image_feature.npy`` [N_train, 512] and ``test_cover_image_feature.npy`` [N_test, 512]: float cover-image
  features; row i belongs to item id i **of that file's split** (train and test items are disjoint id spaces).

Mapping to the canonical format (the official split is kept in ``is_test``):

- user id u -> u + 1; train item i -> i + 1; test item j -> N_train + j + 1 (so test items stay new, unseen items);
- category = cate_id + 1 (0 stays free for padding); click = is_click; timestamp as published (the dataset's own
  units, non-negative integers).
- An item's category is taken from its first interaction row; items never interacted with get category 0.

Bad rows are counted (see :mod:`mtin_tf.data.report`); an id beyond its feature file counts as
``item_without_features``, a ``cate_id`` that is not a non-negative integer as ``bad_category`` (an empty one is
allowed: the item's category then comes from its other rows).
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
from tqdm import tqdm

from mtin_tf import features as F
from mtin_tf.data import canonical as C
from mtin_tf.data import ranges as V
from mtin_tf.data import report as R

SPLIT_FILES = (("train_data.csv", "train_cover_image_feature.npy", 0),
               ("test_data.csv", "test_cover_image_feature.npy", 1))
RAW_COLUMNS = ("user_id", "item_id", "cate_id", "is_click", "timestamp")


def read_microvideo(input_dir: str, report: R.Report) -> tuple[pd.DataFrame, C.ItemFeatures]:
    """Canonical ``(interactions with is_test, item features with category)`` from a THACIL-layout directory."""
    frames, sources, item_parts, cate_parts = [], [], [], []
    offset = 0
    for csv_name, npy_name, is_test in SPLIT_FILES:
        csv_path, npy_path = os.path.join(input_dir, csv_name), os.path.join(input_dir, npy_name)
        feats = C.load_feature_matrix(npy_path, f"{npy_name}: float cover-image features [N_items, D], row i = item i",
                                      mmap=True)
        n_items = feats.shape[0]
        sources.append(csv_path)
        for lines, chunk in tqdm(C.iter_chunks(csv_path, C.CSV_CHUNK_ROWS, report), desc=f"read {csv_name}",
                                 unit="chunk", leave=False):
            missing = [c for c in RAW_COLUMNS if c not in chunk.columns]
            if missing:
                raise R.BadInputError(f"{csv_path}: column(s) {missing} missing; THACIL layout is {RAW_COLUMNS}")
            raw = pd.DataFrame({F.USER_ID: chunk["user_id"], F.ITEM_ID: chunk["item_id"],
                                F.TIMESTAMP: chunk["timestamp"], F.CLICK: chunk["is_click"], C.IS_TEST: is_test})
            parsed = C.parse_interactions(raw, source_id=len(sources) - 1, sources=sources, lines=lines,
                                          report=report, id_offset=1)
            beyond = (parsed[F.ITEM_ID] > n_items).to_numpy()  # no row in this split's feature file
            report.bad_rows(R.ITEM_WITHOUT_FEATURES, beyond, csv_path, parsed[C.LINE_COLUMN].to_numpy(),
                            [f"item_id {i - 1} >= {n_items} rows of {npy_name}"
                             for i in parsed[F.ITEM_ID].to_numpy()[beyond][:R.MAX_EXAMPLES]])
            parsed = parsed[~beyond].copy()
            rows = np.searchsorted(lines, parsed[C.LINE_COLUMN].to_numpy())  # positions in the chunk
            cate, status = V.parse_int64(chunk["cate_id"].iloc[rows])
            bad = ((status != V.OK) & (status != V.EMPTY)) | (cate < V.CATEGORY_MIN) | (cate >= V.CATEGORY_MAX)
            report.bad_rows(R.BAD_CATEGORY, bad, csv_path, parsed[C.LINE_COLUMN].to_numpy(),
                            [f"cate_id={chunk['cate_id'].iat[r]!r}" for r in rows[bad][:R.MAX_EXAMPLES]])
            parsed = parsed[~bad].copy()
            parsed[F.ITEM_ID] += offset
            known = (status == V.OK)[~bad]  # an empty cate_id leaves the item's category to other rows
            cate_parts.append(pd.DataFrame({F.ITEM_ID: parsed[F.ITEM_ID].to_numpy()[known],
                                            F.ITEM_CATEGORY: cate[~bad][known] + 1}))
            frames.append(parsed)
        ids = np.arange(offset + 1, offset + n_items + 1, dtype=np.int64)
        item_parts.append((npy_path, ids, feats))
        offset += n_items
    cates = pd.concat(cate_parts or [pd.DataFrame({F.ITEM_ID: [], F.ITEM_CATEGORY: []}, dtype=np.int64)])
    cates = cates.drop_duplicates(F.ITEM_ID).set_index(F.ITEM_ID)[F.ITEM_CATEGORY]
    items = _items(item_parts, cates, report)
    return C.finish_interactions(frames, sources, report, items), items


def _items(item_parts, cates: pd.Series, report: R.Report) -> C.ItemFeatures:
    """Concatenate both splits' features; category = first seen cate_id + 1, 0 for items without interactions."""
    parts = []
    for npy_path, ids, feats in item_parts:
        cat = cates.reindex(ids, fill_value=0).to_numpy().astype(np.int64)  # 0: no interaction names a category
        parts.append(C.clean_item_features(ids, np.asarray(feats, np.float32), cat, source=npy_path,
                                           lines=np.arange(ids.shape[0]), report=report))
    dims = {p.dim for p in parts if len(p)}
    if len(dims) > 1:
        raise R.BadInputError(f"train and test feature files disagree on the feature dimension: {sorted(dims)}")
    return C.ItemFeatures(np.concatenate([p.item_ids for p in parts]), np.concatenate([p.features for p in parts]),
                          np.concatenate([p.category for p in parts]))
