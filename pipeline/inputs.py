"""Stage canonical data as the pipeline's ExampleGen inputs.

The pipeline reads two ExampleGen inputs under one input directory:

- ``<inputs>/interactions/*.csv`` — raw click logs with a header ``user_id,item_id,timestamp,click`` (read by
  CsvExampleGen, which cannot parse a line with the wrong number of fields: such lines are left out of the staged copy
  here and counted with their file:line in ``<inputs>/staging_report.json``, or stop the staging with ``strict``;
  malformed values in well-formed lines are caught by StatisticsGen + ExampleValidator against
  ``schemas/interactions/schema.pbtxt`` and counted by HistoryGen).
- ``<inputs>/items/items.tfrecord`` — item features as tf.Example (``item_id`` int64, ``features`` float list,
  optional ``category`` int64), read by ImportExampleGen.

:func:`stage_inputs` writes both from a canonical data directory (``interactions.parquet`` or ``*.csv`` files plus
``item_features.npz``, as written by ``mtin data convert`` / ``mtin data generate``). CSV interactions are copied line
for line but for those of the wrong shape, so bad values reach the pipeline's validation. Files are rewritten only when
their content changes, so a rerun
with the same data leaves ExampleGen's input fingerprint unchanged and is served from the ML Metadata cache.
"""
from __future__ import annotations

import filecmp
import glob
import logging
import os
import tempfile

from mtin_tf import features as F

log = logging.getLogger(__name__)
INTERACTIONS_DIR, ITEMS_DIR = "interactions", "items"
INTERACTIONS_CSV, ITEMS_TFRECORD = "interactions.csv", "items.tfrecord"
STAGING_REPORT = "staging_report.json"


def stage_inputs(data_dir: str, inputs_dir: str, *, strict: bool = False) -> dict:
    """Write ``inputs_dir/interactions/`` and ``inputs_dir/items/`` from canonical ``data_dir``; returns their paths.

    CSV lines with a field count other than the header's are skipped and counted (``malformed_row``: more fields,
    ``missing_field``: fewer) in ``inputs_dir/staging_report.json``, whose summary is also logged; ``strict`` raises
    BadInputError at the first one instead."""
    from mtin_tf.data.canonical import INTERACTIONS_FILE, ITEM_FEATURES_FILE
    from mtin_tf.data.report import Report

    items_path = os.path.join(data_dir, ITEM_FEATURES_FILE)
    if not os.path.exists(items_path):
        raise FileNotFoundError(f"{data_dir}: {ITEM_FEATURES_FILE} (canonical item features) is missing")
    parquet = os.path.join(data_dir, INTERACTIONS_FILE)
    csvs = sorted(glob.glob(os.path.join(data_dir, "*.csv")))
    if not os.path.exists(parquet) and not csvs:
        raise FileNotFoundError(f"{data_dir}: neither {INTERACTIONS_FILE} nor *.csv interactions found")
    out = {INTERACTIONS_DIR: os.path.join(inputs_dir, INTERACTIONS_DIR), ITEMS_DIR: os.path.join(inputs_dir, ITEMS_DIR)}
    for path in out.values():
        os.makedirs(path, exist_ok=True)
    report = Report("stage", strict=strict)
    with tempfile.TemporaryDirectory(dir=inputs_dir) as tmp:
        staged = []
        if os.path.exists(parquet):
            import pandas as pd

            frame = pd.read_parquet(parquet, columns=list(F.INTERACTION_COLUMNS))
            frame.to_csv(os.path.join(tmp, INTERACTIONS_CSV), index=False)
            staged.append(INTERACTIONS_CSV)
        else:
            for path in csvs:
                copy_well_formed_lines(path, os.path.join(tmp, os.path.basename(path)), report)
                staged.append(os.path.basename(path))
        _replace_dir_contents(tmp, staged, out[INTERACTIONS_DIR])
        write_item_examples(items_path, os.path.join(tmp, ITEMS_TFRECORD))
        _replace_dir_contents(tmp, [ITEMS_TFRECORD], out[ITEMS_DIR])
    report.write_json(os.path.join(inputs_dir, STAGING_REPORT))
    log.info("%s", report.summary())
    return out


def copy_well_formed_lines(path: str, out_path: str, report) -> int:
    """Copy the CSV at ``path`` to ``out_path`` without its lines whose field count differs from the header's, each
    counted in ``report`` with its file:line (``malformed_row`` for more fields, ``missing_field`` for fewer); the
    kept lines are written byte for byte. Returns the number of data lines kept.

    Raises BadInputError when the header lacks an interaction column (nothing of the file could be read). CsvExampleGen
    cannot read a file whose lines have different field counts (it fails deep inside Beam); bad values in well-formed
    lines are left to the pipeline's validation.
    """
    import csv

    from mtin_tf.data.report import MALFORMED_ROW, MISSING_FIELD, BadInputError

    kept = 0
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f, \
            open(out_path, "w", newline="", encoding="utf-8", errors="surrogateescape") as out:
        header_line = f.readline()
        header = next(csv.reader([header_line]), [])
        missing = [c for c in F.INTERACTION_COLUMNS if c not in header]
        if missing:
            raise BadInputError(f"{path}: header {header} lacks column(s) {missing}")
        out.write(header_line)
        for number, line in enumerate(f, start=2):
            if not line.strip():
                continue
            fields = next(csv.reader([line]), [])
            if len(fields) != len(header):
                kind = MALFORMED_ROW if len(fields) > len(header) else MISSING_FIELD
                report.bad_input(kind, [f"{path}:{number}: {len(fields)} fields, the header has {len(header)}"])
                continue
            out.write(line if line.endswith("\n") else line + "\n")
            kept += 1
    report.count("csv_lines_kept", kept)
    return kept


def write_item_examples(npz_path: str, out_path: str) -> int:
    """Canonical item features (.npz) → TFRecord of tf.Example; returns the number of items."""
    import tensorflow as tf

    from mtin_tf.data.canonical import read_item_features

    items = read_item_features(npz_path)
    with tf.io.TFRecordWriter(out_path) as writer:
        for row in range(len(items)):
            msg = tf.train.Example()
            feature = msg.features.feature
            feature[F.ITEM_ID].int64_list.value.append(int(items.item_ids[row]))
            feature[F.ITEM_FEATURES].float_list.value.extend(items.features[row].tolist())
            if items.category is not None:
                feature[F.ITEM_CATEGORY].int64_list.value.append(int(items.category[row]))
            writer.write(msg.SerializeToString(deterministic=True))  # stable bytes: stable ExampleGen fingerprint
    return len(items)


def parse_item_example(record: bytes):
    """One item tf.Example of :func:`write_item_examples` (ImportExampleGen passes them through) → (item id int,
    features float32 [F]): the Trainer's item table (mtin_tf.pipeline.trainer.read_item_table) and HistoryGen's
    memory pretraining in Beam read items with it."""
    import numpy as np
    import tensorflow as tf

    feature = tf.train.Example.FromString(record).features.feature
    return int(feature[F.ITEM_ID].int64_list.value[0]), np.asarray(feature[F.ITEM_FEATURES].float_list.value,
                                                                   np.float32)


def _replace_dir_contents(src_dir: str, names: list, dst_dir: str) -> None:
    """Make dst_dir hold exactly ``names`` from src_dir, leaving files whose content is unchanged untouched."""
    for name in os.listdir(dst_dir):
        if name not in names:
            os.remove(os.path.join(dst_dir, name))
    for name in names:
        src, dst = os.path.join(src_dir, name), os.path.join(dst_dir, name)
        if os.path.exists(dst) and filecmp.cmp(src, dst, shallow=False):
            continue
        os.replace(src, dst)
