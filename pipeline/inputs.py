"""Stage canonical data as the pipeline's ExampleGen inputs.

The pipeline reads two ExampleGen inputs under one input directory:

- ``<inputs>/interactions/*.csv`` — raw click logs with a header ``user_id,item_id,timestamp,click`` (read by
  CsvExampleGen; lines with the wrong number of fields, which CsvExampleGen cannot parse, are rejected here with their
  line numbers; malformed values in well-formed lines are caught by StatisticsGen + ExampleValidator against
  ``schemas/interactions/schema.pbtxt``).
- ``<inputs>/items/items.tfrecord`` — item features as tf.Example (``item_id`` int64, ``features`` float list,
  optional ``category`` int64), read by ImportExampleGen.

:func:`stage_inputs` writes both from a canonical data directory (``interactions.parquet`` or ``*.csv`` files plus
``item_features.npz``, as written by ``mtin data convert`` / ``mtin data generate``). CSV interactions are copied as
they are, so bad rows reach the pipeline's validation. Files are rewritten only when their content changes, so a rerun
with the same data leaves ExampleGen's input fingerprint unchanged and is served from the ML Metadata cache.
"""
from __future__ import annotations

import filecmp
import glob
import os
import shutil
import tempfile

from mtin_tf import features as F

INTERACTIONS_DIR, ITEMS_DIR = "interactions", "items"
INTERACTIONS_CSV, ITEMS_TFRECORD = "interactions.csv", "items.tfrecord"


def stage_inputs(data_dir: str, inputs_dir: str) -> dict:
    """Write ``inputs_dir/interactions/`` and ``inputs_dir/items/`` from canonical ``data_dir``; returns their paths."""
    from mtin_tf.data.canonical import INTERACTIONS_FILE, ITEM_FEATURES_FILE

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
    with tempfile.TemporaryDirectory(dir=inputs_dir) as tmp:
        staged = []
        if os.path.exists(parquet):
            import pandas as pd

            frame = pd.read_parquet(parquet, columns=list(F.INTERACTION_COLUMNS))
            frame.to_csv(os.path.join(tmp, INTERACTIONS_CSV), index=False)
            staged.append(INTERACTIONS_CSV)
        else:
            for path in csvs:
                check_csv_shape(path)
                shutil.copyfile(path, os.path.join(tmp, os.path.basename(path)))
                staged.append(os.path.basename(path))
        _replace_dir_contents(tmp, staged, out[INTERACTIONS_DIR])
        write_item_examples(items_path, os.path.join(tmp, ITEMS_TFRECORD))
        _replace_dir_contents(tmp, [ITEMS_TFRECORD], out[ITEMS_DIR])
    return out


def check_csv_shape(path: str, max_listed: int = 5) -> None:
    """Raise BadInputError unless the header has the interaction columns and every line has as many fields.

    CsvExampleGen cannot read a file whose lines have different field counts (it fails deep inside Beam); bad
    values in well-formed lines are left to the pipeline's validation.
    """
    import csv

    from mtin_tf.data.report import BadInputError

    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        missing = [c for c in F.INTERACTION_COLUMNS if c not in header]
        if missing:
            raise BadInputError(f"{path}: header {header} lacks column(s) {missing}")
        bad = [(reader.line_num, len(row)) for row in reader if len(row) != len(header)]
    if bad:
        listed = ", ".join(f"line {line} has {n}" for line, n in bad[:max_listed])
        raise BadInputError(f"{path}: {len(bad)} line(s) do not have the header's {len(header)} fields ({listed}"
                            f"{', ...' if len(bad) > max_listed else ''})")


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
