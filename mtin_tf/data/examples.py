"""Training examples: tf.Example encoding, TFRecord files, and dense model arrays.

Example dicts (as built by :mod:`mtin_tf.data.history`) map ``features.EXAMPLE_FEATURES`` names to an int (scalars:
user, candidate item, candidate timestamp, label) or an int64 array [<= L] (histories, oldest first). In a tf.Example
every feature is an ``int64_list``; a scalar has one value, a history any number (0 for an empty history).

- :func:`serialize_example` / :func:`parse_example`: one dict <-> serialized tf.Example bytes.
- :func:`write_tfrecords` (examples, path) -> count; :func:`read_tfrecords` (path, list of paths or glob) -> list of
  dicts. Files are uncompressed TFRecord.
- :func:`write_split_tfrecords`, :func:`split_path`, :func:`read_split_arrays`: the ``mtin data build`` layout, one
  file per split (``SPLIT_FILES``: train.tfrecord, validation.tfrecord, test.tfrecord).
- :func:`to_model_arrays` (examples, max_history) -> {name: array}: scalars int64 [N]; histories int64 [N, L],
  oldest first, right-padded with ``features.PADDING_ID`` (0), keeping the most recent L of a longer history.

TensorFlow is imported lazily (only the functions that touch tf.Example or TFRecord need it).
"""
from __future__ import annotations

import contextlib
import glob as _glob
import os
from typing import Iterable, Sequence

import numpy as np

from mtin_tf import features as F


def _example_pb2():
    import tensorflow as tf

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


TRAIN_FILE, VALIDATION_FILE, TEST_FILE = "train.tfrecord", "validation.tfrecord", "test.tfrecord"
SPLIT_FILES = {"train": TRAIN_FILE, "validation": VALIDATION_FILE, "test": TEST_FILE}  # keys: history.SPLIT_NAMES


def write_split_tfrecords(pairs: Iterable[tuple[str, dict]], out_dir: str) -> dict[str, str]:
    """Stream ``(split name, example)`` pairs (e.g. from ``history.iter_examples``) into ``out_dir``/train.tfrecord,
    validation.tfrecord and test.tfrecord without holding them in memory; returns {split name: path}."""
    import tensorflow as tf

    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, file) for name, file in SPLIT_FILES.items()}
    with contextlib.ExitStack() as stack:
        writers = {name: stack.enter_context(tf.io.TFRecordWriter(path)) for name, path in paths.items()}
        for name, ex in pairs:
            writers[name].write(serialize_example(ex))
    return paths


def split_path(examples_dir: str, split: str) -> str:
    """Path of one split's file in a ``mtin data build`` output directory; FileNotFoundError (saying what to do) if
    it is missing."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {tuple(SPLIT_FILES)}, got {split!r}")
    path = os.path.join(examples_dir, SPLIT_FILES[split])
    if os.path.exists(path):
        return path
    if split == "validation" and os.path.exists(os.path.join(examples_dir, TRAIN_FILE)):
        raise FileNotFoundError(f"{examples_dir} has no {VALIDATION_FILE}: these examples were built before the "
                                "validation split existed; re-run `mtin data build` to write train, validation and "
                                "test")
    raise FileNotFoundError(f"{path} does not exist (run `mtin data build` first)")


def read_split_arrays(examples_dir: str, max_history: int, splits: Sequence[str] = tuple(SPLIT_FILES)
                      ) -> dict[str, dict[str, np.ndarray]]:
    """{split: :func:`to_model_arrays` of its examples} of a ``mtin data build`` directory; every split must exist and
    be non-empty (FileNotFoundError / ValueError with the reason)."""
    out = {}
    for split in splits:
        path = split_path(examples_dir, split)
        out[split] = to_model_arrays(read_tfrecords(path), max_history)
        if len(out[split][F.LABEL]) == 0:
            raise ValueError(f"{path} holds no examples; every split of {tuple(splits)} must be non-empty")
    return out


def join_arrays(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Model-input arrays of several splits as one, rows in the order given (e.g. train + validation, what a refit
    is fitted on)."""
    return {name: np.concatenate([np.asarray(part[name]) for part in parts]) for name in parts[0]}
