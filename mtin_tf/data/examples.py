"""Training examples: tf.Example encoding, TFRecord files, and dense model arrays.

Example dicts (as built by :mod:`mtin_tf.data.history`) map ``features.EXAMPLE_FEATURES`` names to an int (scalars:
user, candidate item, candidate timestamp, label) or an int64 array [<= L] (histories, oldest first). In a tf.Example
every feature is an ``int64_list``; a scalar has one value, a history any number (0 for an empty history).

- :func:`serialize_example` / :func:`parse_example`: one dict <-> serialized tf.Example bytes.
- :func:`write_tfrecords` (examples, path) -> count; :func:`read_tfrecords` (path, list of paths or glob) -> list of
  dicts. Files are uncompressed TFRecord.
- :func:`to_model_arrays` (examples, max_history) -> {name: array}: scalars int64 [N]; histories int64 [N, L],
  oldest first, right-padded with ``features.PADDING_ID`` (0), keeping the most recent L of a longer history.

TensorFlow is imported lazily (only the functions that touch tf.Example or TFRecord need it).
"""
from __future__ import annotations

import glob as _glob
import os
from typing import Iterable, Sequence

import numpy as np

from mtin_tf import features as F


def _example_pb2():
    import tensorflow as tf  # noqa: F401  (lazy: heavy import)

    return tf.train


def serialize_example(ex: dict) -> bytes:
    """Serialized tf.Example of one example dict."""
    msg = _example_pb2().Example()
    feature = msg.features.feature
    for spec in F.EXAMPLE_FEATURES:
        value = ex[spec.name]
        if spec.is_history:
            feature[spec.name].int64_list.value.extend(np.asarray(value, np.int64).tolist())
        else:
            feature[spec.name].int64_list.value.append(int(value))
    return msg.SerializeToString()


def parse_example(data: bytes) -> dict:
    """Example dict of serialized tf.Example bytes (missing history features read as empty)."""
    train = _example_pb2()
    msg = train.Example.FromString(data)
    feature = msg.features.feature
    ex = {}
    for spec in F.EXAMPLE_FEATURES:
        values = np.array(feature[spec.name].int64_list.value, np.int64) if spec.name in feature \
            else np.zeros(0, np.int64)
        if spec.is_history:
            ex[spec.name] = values
        elif values.shape[0] != 1:
            raise ValueError(f"feature {spec.name!r} must have exactly one value, got {values.shape[0]}")
        else:
            ex[spec.name] = int(values[0])
    return ex


def write_tfrecords(examples: Iterable[dict], path: str) -> int:
    """Write examples to one TFRecord file; returns how many were written."""
    import tensorflow as tf

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    n = 0
    with tf.io.TFRecordWriter(path) as writer:
        for ex in examples:
            writer.write(serialize_example(ex))
            n += 1
    return n


def expand_paths(paths_or_glob: str | Sequence[str]) -> list[str]:
    """A path, glob pattern or list of them -> sorted list of existing files (error if none)."""
    patterns = [paths_or_glob] if isinstance(paths_or_glob, str) else list(paths_or_glob)
    files = sorted({f for p in patterns for f in (_glob.glob(p) or [])})
    if not files:
        raise FileNotFoundError(f"no file matches {paths_or_glob!r}")
    return files


def read_tfrecords(paths_or_glob: str | Sequence[str]) -> list[dict]:
    """All examples of TFRecord files (a path, a glob, or a list), in file order."""
    import tensorflow as tf

    out = []
    for path in expand_paths(paths_or_glob):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            out.append(parse_example(record))
    return out


def to_model_arrays(examples: Iterable[dict], max_history: int = F.DEFAULT_MAX_HISTORY) -> dict[str, np.ndarray]:
    """Dense arrays keyed by ``features.MODEL_INPUT_NAMES`` + ``features.LABEL``.

    Scalars: int64 [N]. Histories: int64 [N, max_history], oldest first, right-padded with PADDING_ID; a longer
    history keeps its most recent ``max_history`` entries.
    """
    examples = examples if isinstance(examples, list) else list(examples)
    n = len(examples)
    out: dict[str, np.ndarray] = {}
    for spec in F.EXAMPLE_FEATURES:
        if not spec.is_history:
            out[spec.name] = np.fromiter((ex[spec.name] for ex in examples), np.int64, count=n)
            continue
        mat = np.full((n, max_history), F.PADDING_ID, np.int64)
        for row, ex in enumerate(examples):
            values = np.asarray(ex[spec.name], np.int64)[-max_history:] if max_history else ()
            mat[row, :len(values)] = values
        out[spec.name] = mat
    return out


TRAIN_FILE, TEST_FILE = "train.tfrecord", "test.tfrecord"


def write_split_tfrecords(pairs: Iterable[tuple[bool, dict]], out_dir: str) -> dict[str, str]:
    """Stream ``(is_test, example)`` pairs (e.g. from ``history.iter_examples``) into ``out_dir``/train.tfrecord and
    test.tfrecord without holding them in memory; returns {"train": path, "test": path}."""
    import tensorflow as tf

    os.makedirs(out_dir, exist_ok=True)
    paths = {"train": os.path.join(out_dir, TRAIN_FILE), "test": os.path.join(out_dir, TEST_FILE)}
    with tf.io.TFRecordWriter(paths["train"]) as train, tf.io.TFRecordWriter(paths["test"]) as test:
        for is_test, ex in pairs:
            (test if is_test else train).write(serialize_example(ex))
    return paths
