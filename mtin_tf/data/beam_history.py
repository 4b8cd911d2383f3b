"""History building as an Apache Beam PTransform: group by user, sort, emit (via the same per-user function).

Input: a PCollection of canonical interaction dicts ``{user_id, item_id, timestamp, click[, is_test]}``.
Output (``BuildExamples(...)`` applied): a tuple-like result with ``.train``, ``.validation`` and ``.test``
PCollections of example dicts, identical to :func:`mtin_tf.data.history.build_examples` on the same input (the DoFn
calls :func:`mtin_tf.data.history.user_examples`). Beam metrics (namespace ``mtin_data``): ``users``,
``train_examples``, ``validation_examples``, ``test_examples``, ``targets_skipped_short_history``. Write with
:func:`mtin_tf.data.examples.serialize_example` and ``beam.io.WriteToTFRecord``.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np

from mtin_tf import features as F
from mtin_tf.data import history
from mtin_tf.data.canonical import IS_TEST

TRAIN, VALIDATION, TEST = history.TRAIN, history.VALIDATION, history.TEST


class _UserExamplesFn(beam.DoFn):
    def __init__(self, options: dict, given_split: bool):
        self._options = options
        self._given_split = given_split
        self._skipped = beam.metrics.Metrics.counter("mtin_data", "targets_skipped_short_history")
        self._users = beam.metrics.Metrics.counter("mtin_data", "users")
        self._counts = {name: beam.metrics.Metrics.counter("mtin_data", f"{name}_examples")
                        for name in history.SPLIT_NAMES}

    def process(self, element):
        user, rows = element
        rows = list(rows)
        cols = np.array([r[:4] for r in rows], np.int64).reshape(-1, 4)
        is_test = np.array([r[3] for r in rows], np.int8) if self._given_split else None
        by_split, skipped = history.user_examples(user, cols[:, 0], cols[:, 1], cols[:, 2], is_test, **self._options)
        self._users.inc()
        if skipped:
            self._skipped.inc(skipped)
        for name in history.SPLIT_NAMES:
            self._counts[name].inc(len(by_split[name]))
            for ex in by_split[name]:
                yield ex if name == TRAIN else beam.pvalue.TaggedOutput(name, ex)


class BuildExamples(beam.PTransform):
    """``interactions | BuildExamples(max_history=..., ...)`` -> result with ``.train``, ``.validation``, ``.test``.

    Options as in :mod:`mtin_tf.data.history`; ``split`` is ``"given"`` (use each row's ``is_test``), ``"time"``
    (needs ``time_cut``) or ``"fraction"`` (default when ``time_cut`` is None). There is no ``"auto"``: unlike the
    in-memory path, the transform cannot see whether the input has an ``is_test`` column, so ask for ``"given"``.
    """

    def __init__(self, *, max_history: int = F.DEFAULT_MAX_HISTORY, test_fraction: float = history.TEST_FRACTION,
                 time_cut: int | None = None, validation_fraction: float = history.VALIDATION_FRACTION,
                 validation_cut: int | None = None, min_history: int = 0, split: str | None = None,
                 history_from: str = "all"):
        super().__init__()
        split = split or ("time" if time_cut is not None else "fraction")
        if split not in ("given", "time", "fraction"):
            raise ValueError(f"split must be given, time or fraction, got {split!r}")
        if split == "time" and time_cut is None:
            raise ValueError("split='time' needs time_cut")
        if history_from not in history.HISTORY_FROM:
            raise ValueError(f"history_from must be one of {history.HISTORY_FROM}, got {history_from!r}")
        time_cut = time_cut if split == "time" else None
        history.check_split_options(test_fraction, validation_fraction, time_cut, validation_cut)
        self._given = split == "given"
        self._options = dict(max_history=max_history, test_fraction=test_fraction, time_cut=time_cut,
                             validation_fraction=validation_fraction, validation_cut=validation_cut,
                             min_history=min_history, history_from=history_from)

    def expand(self, interactions):
        given = self._given

        def key(row):
            split_flag = int(row.get(IS_TEST, 0)) if given else 0
            return int(row[F.USER_ID]), (int(row[F.ITEM_ID]), int(row[F.TIMESTAMP]), int(row[F.CLICK]), split_flag)

        return (interactions
                | "KeyByUser" >> beam.Map(key)
                | "GroupByUser" >> beam.GroupByKey()
                | "UserExamples" >> beam.ParDo(_UserExamplesFn(self._options, given)).with_outputs(
                    VALIDATION, TEST, main=TRAIN))
