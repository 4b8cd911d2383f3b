"""HistoryGen: raw interactions (ExampleGen output) → MTIN examples with train/validation/test splits (Beam).

The component runs mtin_tf's one history-building implementation, the Beam PTransform
:class:`mtin_tf.data.beam_history.BuildExamples` (group by user, sort by time, prior clicked / browsed-not-clicked
histories of at most ``max_history`` items, split by time: test is per user the last ``test_fraction`` of
interactions, or globally every interaction at or after ``time_cut`` when ``time_cut`` > 0; validation is carved from
the training period just before it: per user ``validation_fraction`` of the interactions, or globally the training
interactions at or after ``validation_cut`` when ``validation_cut`` > 0). The Trainer fits on ``train`` and early-stops
on ``validation``; the Evaluator blesses and reports on ``test``.

Before building, it reads ExampleValidator's anomalies for the raw interactions and stops the run with a readable
report when more than ``max_anomalous_features`` features are anomalous (:mod:`mtin_tf.pipeline.validation`). Rows that
still cannot be read (a missing or non-integer field, id <= 0, negative timestamp, click outside {0, 1}) are dropped and
counted (Beam counters, namespace ``mtin_pipeline``); their count is recorded on the output artifact (custom property
``bad_rows``), and the run stops when their share exceeds ``max_bad_row_fraction``.

Outputs
- ``examples`` (Examples, splits ``train``, ``validation`` and ``test``, gzipped TFRecord of tf.Example): the features
  of ``mtin_tf.features.EXAMPLE_FEATURES`` plus ``history_bucket`` (bytes; the clicked-history length bucket, for
  TFMA slices — not a model input, not in the schema, so Transform ignores it).
- ``memory_pretraining`` (Examples, split ``memory_anchors``, gzipped TFRecord): when memory pretraining is anchored
  (``pretrain_memory`` and ``memory_anchors`` > 0), each user's memory anchors, computed in Beam by
  :class:`mtin_tf.data.beam_pretrain.PretrainAnchors` from the ``train`` split and the ``items`` input (one record
  per user: :data:`mtin_tf.pretrain.ANCHOR_FEATURES`, 2 × ``num_groups`` × ``memory_anchors`` ids and as many
  times); custom properties ``pretraining_users`` and ``pretraining_users_without_known_items``. With ``refit``
  (the Trainer's refit protocol, which fits a second model on train + validation), a second split
  ``memory_anchors_refit`` holds the anchors of each user's latest example of train + validation, for that model
  (custom properties ``refit_pretraining_users`` and ``refit_pretraining_users_without_known_items``). Empty (no split)
  otherwise. Its own artifact: TFX's Trainer reads the hyperparameters artifact as a directory of exactly one file.
- ``training_inputs`` (HyperParameters, one JSON file): run-time inputs of the Trainer's run_fn that TFX's Trainer has
  no input channel for — the file pattern of the item-feature examples (the item table the model owns), the
  history length and, when computed, ``memory_anchors`` (:data:`MEMORY_ANCHORS_KEY`: the anchors' file patterns, their
  ``num_groups``, ``anchor_size``, ``seed`` and ``iterations``; with ``refit``, ``refit_files``: the second split's
  file patterns). The Trainer reads it as ``fn_args.hyperparameters``.
"""
# No `from __future__ import annotations`: TFX reads the component signature's type hints at run time.

import json
import os

import apache_beam as beam
from tfx import v1 as tfx
from tfx.types import artifact_utils

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.data.history import SPLIT_NAMES, TEST_FRACTION, VALIDATION_FRACTION
from mtin_tf.data.ranges import RANGES
from mtin_tf.pretrain import KMEANS_ITERATIONS

SLICE_FEATURE = "history_bucket"
HISTORY_BUCKETS = (0, 1, 5, 20, 50)  # lower bounds of the clicked-history length buckets
TRAIN_SPLIT, VALIDATION_SPLIT, TEST_SPLIT = SPLIT_NAMES  # the artifact's split names (Split-<name>/)
TRAINING_INPUTS_FILE = "training_inputs.json"
MEMORY_ANCHORS_KEY = "memory_anchors"  # training_inputs' entry of the anchors computed in Beam
ANCHORS_SPLIT = "memory_anchors"  # memory_pretraining's split of the anchors over train
REFIT_ANCHORS_SPLIT = "memory_anchors_refit"  # ... and, with refit, its split of the anchors over train + validation
REFIT_NAMESPACE = "mtin_data_refit"  # the Beam metrics of the anchors over train + validation
COUNTER_NAMESPACE = "mtin_pipeline"
REQUIRED = RANGES  # (min, max) of each raw field, defined once in mtin_tf.data.ranges


def history_bucket(length: int) -> str:
    """Bucket label of a clicked-history length, e.g. ``"01-04"``, ``"50+"``."""
    bounds = HISTORY_BUCKETS
    for lo, hi in zip(bounds, bounds[1:]):
        if length < hi:
            return f"{lo:02d}" if hi - lo == 1 else f"{lo:02d}-{hi - 1:02d}"
    return f"{bounds[-1]}+"


def parse_interaction(record: bytes):
    """A raw interaction tf.Example → (dict, None) or (None, reason) when a field is missing or out of range."""
    import tensorflow as tf

    feature = tf.train.Example.FromString(record).features.feature
    row = {}
    for name, (minimum, maximum) in REQUIRED.items():
        values = feature[name].int64_list.value if name in feature else ()
        if len(values) != 1:
            kind = feature[name].WhichOneof("kind") if name in feature else None
            return None, f"{name} missing" if not values and kind in (None, "int64_list") else f"{name} not an integer"
        if not minimum <= values[0] <= maximum:
            return None, f"{name} out of range"
        row[name] = int(values[0])
    return row, None


def bad_input_kind(reason: str) -> str:
    """The bad-input kind (:mod:`mtin_tf.data.report`) of a :func:`parse_interaction` reason; skipped rows are also
    counted per kind, as Beam counters ``bad_rows.<kind>``. (tf.Example values are int64: no id is above range.)"""
    from mtin_tf.data import report as R

    name, problem = reason.split(" ", 1)
    if problem == "missing":
        return R.MISSING_FIELD
    return {F.TIMESTAMP: R.BAD_TIMESTAMP, F.CLICK: R.BAD_CLICK}.get(
        name, R.NON_NUMERIC_ID if problem == "not an integer" else R.NONPOSITIVE_ID)


class _ParseFn(beam.DoFn):
    BAD = "bad"

    def __init__(self):
        self._rows = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "rows_read")
        self._bad = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "bad_rows")

    def process(self, record):
        self._rows.inc()
        row, reason = parse_interaction(record)
        if row is None:
            self._bad.inc()
            beam.metrics.Metrics.counter(COUNTER_NAMESPACE, f"bad_rows.{bad_input_kind(reason)}").inc()
            yield beam.pvalue.TaggedOutput(self.BAD, reason)
        else:
            yield row


def _serialize(ex: dict) -> bytes:
    import tensorflow as tf

    from mtin_tf.data.examples import serialize_example

    msg = tf.train.Example.FromString(serialize_example(ex))
    msg.features.feature[SLICE_FEATURE].bytes_list.value.append(
        history_bucket(len(ex[F.CLICKED_ITEMS])).encode())
    return msg.SerializeToString()


def _split_patterns(artifact) -> list:
    return [os.path.join(artifact_utils.get_split_uri([artifact], split), "*")
            for split in artifact_utils.decode_split_names(artifact.split_names)]


def _counter(result, name: str, namespace: str = COUNTER_NAMESPACE) -> int:
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))["counters"]
    return int(sum(c.committed or c.attempted or 0 for c in found))


@tfx.dsl.components.component(use_beam=True)
def HistoryGen(  # noqa: N802  (TFX component names are classes)
        interactions: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
        items: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
        anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
        examples: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
        training_inputs: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.HyperParameters],
        memory_pretraining: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Examples],
        max_history: tfx.dsl.components.Parameter[int] = F.DEFAULT_MAX_HISTORY,
        test_fraction: tfx.dsl.components.Parameter[float] = TEST_FRACTION,
        time_cut: tfx.dsl.components.Parameter[int] = 0,
        validation_fraction: tfx.dsl.components.Parameter[float] = VALIDATION_FRACTION,
        validation_cut: tfx.dsl.components.Parameter[int] = 0,
        min_history: tfx.dsl.components.Parameter[int] = 0,
        max_anomalous_features: tfx.dsl.components.Parameter[int] = 0,
        max_bad_row_fraction: tfx.dsl.components.Parameter[float] = 0.0,
        num_groups: tfx.dsl.components.Parameter[int] = MTINConfig.num_groups,
        memory_anchors: tfx.dsl.components.Parameter[int] = MTINConfig.memory_anchors,
        pretrain_memory: tfx.dsl.components.Parameter[int] = int(MTINConfig.pretrain_memory),
        seed: tfx.dsl.components.Parameter[int] = MTINConfig.seed,
        kmeans_iterations: tfx.dsl.components.Parameter[int] = KMEANS_ITERATIONS,
        refit: tfx.dsl.components.Parameter[int] = 0,
        beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None):
    """Validate, then build MTIN examples from raw interactions with mtin_tf's Beam history building; with anchored
    memory pretraining (``pretrain_memory`` 1 and ``memory_anchors`` > 0; ``num_groups``, ``seed`` and
    ``kmeans_iterations`` as the model's config.num_groups, config.seed and k-means iterations), compute each user's
    memory anchors in the same Beam pipeline (:class:`mtin_tf.data.beam_pretrain.PretrainAnchors`); with ``refit`` 1
    (the Trainer's refit protocol) once more over train + validation, for the model the Trainer fits on both."""
    import tensorflow as tf

    from mtin_tf.data.beam_history import BuildExamples
    from mtin_tf.pipeline.validation import DataValidationError, check_anomalies, load_anomalies

    check_anomalies(load_anomalies(anomalies.uri), max_anomalous_features, what="interactions")
    split = "time" if time_cut > 0 else "fraction"
    examples.split_names = artifact_utils.encode_split_names(list(SPLIT_NAMES))
    p = beam_pipeline
    records = [p | f"Read[{i}]" >> beam.io.ReadFromTFRecord(pattern)
               for i, pattern in enumerate(_split_patterns(interactions))]
    parsed = (records | "Flatten" >> beam.Flatten()
              | "Parse" >> beam.ParDo(_ParseFn()).with_outputs(_ParseFn.BAD, main="rows"))
    built = parsed.rows | "BuildExamples" >> BuildExamples(
        max_history=max_history, test_fraction=test_fraction, time_cut=time_cut if time_cut > 0 else None,
        validation_fraction=validation_fraction, validation_cut=validation_cut if validation_cut > 0 else None,
        min_history=min_history, split=split)
    for split_name in SPLIT_NAMES:
        out_dir = artifact_utils.get_split_uri([examples], split_name)
        _ = (getattr(built, split_name) | f"Serialize[{split_name}]" >> beam.Map(_serialize)
             | f"Write[{split_name}]" >> beam.io.WriteToTFRecord(os.path.join(out_dir, "data_tfrecord"),
                                                                  file_name_suffix=".gz"))
    anchored = bool(pretrain_memory) and memory_anchors > 0
    anchor_splits = ([ANCHORS_SPLIT, REFIT_ANCHORS_SPLIT] if refit else [ANCHORS_SPLIT]) if anchored else []
    memory_pretraining.split_names = artifact_utils.encode_split_names(anchor_splits)
    if anchored:
        from mtin_tf.data.beam_pretrain import NAMESPACE
        from mtin_tf.pipeline.inputs import parse_item_example

        item_records = [p | f"ReadItems[{i}]" >> beam.io.ReadFromTFRecord(pattern)
                        for i, pattern in enumerate(_split_patterns(items))]
        item_features = item_records | "FlattenItems" >> beam.Flatten() | "ParseItems" >> beam.Map(parse_item_example)
        options = dict(num_groups=num_groups, anchor_size=memory_anchors, iterations=kmeans_iterations, seed=seed)
        anchors_dir = _write_anchors(built.train, item_features, memory_pretraining, ANCHORS_SPLIT, NAMESPACE,
                                     **options)
        if refit:
            seen = (built.train, built.validation) | "TrainAndValidation" >> beam.Flatten()
            refit_dir = _write_anchors(seen, item_features, memory_pretraining, REFIT_ANCHORS_SPLIT, REFIT_NAMESPACE,
                                       **options)
    result = p.run()
    result.wait_until_finish()

    rows, bad = _counter(result, "rows_read"), _counter(result, "bad_rows")
    examples.set_int_custom_property("rows_read", rows)
    examples.set_int_custom_property("bad_rows", bad)
    if rows and bad / rows > max_bad_row_fraction:
        raise DataValidationError(
            f"{bad} of {rows} interaction rows ({bad / rows:.2%}) are unreadable (missing or non-integer fields, ids "
            f"<= 0, negative timestamps or clicks outside 0/1); allowed: {max_bad_row_fraction:.2%}")
    inputs = {"item_examples": _split_patterns(items), "max_history": int(max_history)}
    if anchored:
        for name in ("pretraining_users", "pretraining_users_without_known_items"):
            memory_pretraining.set_int_custom_property(name, _counter(result, name, NAMESPACE))
            if refit:
                memory_pretraining.set_int_custom_property(f"refit_{name}", _counter(result, name, REFIT_NAMESPACE))
        inputs[MEMORY_ANCHORS_KEY] = {"files": [os.path.join(anchors_dir, "*")], "num_groups": int(num_groups),
                                      "anchor_size": int(memory_anchors), "seed": int(seed),
                                      "iterations": int(kmeans_iterations),
                                      **({"refit_files": [os.path.join(refit_dir, "*")]} if refit else {})}
    with tf.io.gfile.GFile(os.path.join(training_inputs.uri, TRAINING_INPUTS_FILE), "w") as f:
        json.dump(inputs, f)


def _write_anchors(examples, item_features, memory_pretraining, split: str, namespace: str, **options) -> str:
    """Adds memory pretraining to the Beam pipeline: PretrainAnchors(**options) on the ``examples`` and the parsed
    ``item_features`` ((item id, vector) pairs), its metrics in ``namespace``, the records written as gzipped
    TFRecord into memory_pretraining's ``split``. Returns that split's directory."""
    from mtin_tf.data.beam_pretrain import PretrainAnchors
    from mtin_tf.pretrain import anchor_record

    out_dir = artifact_utils.get_split_uri([memory_pretraining], split)
    _ = ((examples, item_features) | f"PretrainAnchors[{split}]" >> PretrainAnchors(namespace=namespace, **options)
         | f"SerializeAnchors[{split}]" >> beam.Map(anchor_record)
         | f"WriteAnchors[{split}]" >> beam.io.WriteToTFRecord(os.path.join(out_dir, "anchors"),
                                                               file_name_suffix=".gz"))
    return out_dir
