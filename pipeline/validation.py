"""Data validation gate: ExampleValidator's anomalies → a clear report, and a stop above a threshold.

ExampleValidator only records anomalies; :func:`check_anomalies` turns them into one readable message and raises
:class:`DataValidationError` when more than ``max_anomalous_features`` features are anomalous (default 0: any anomaly
against ``schemas/interactions/schema.pbtxt`` stops the run before history building). The artifact is read through
``tf.io.gfile``, so ``gs://``, ``s3://`` and ``hdfs://`` pipeline roots work as local ones do, and an artifact that
holds no anomalies file stops the gate instead of passing it.
"""
from __future__ import annotations

import os


class DataValidationError(RuntimeError):
    """The input data has more anomalies than the pipeline allows."""


def load_anomalies(anomalies_uri: str) -> dict:
    """{split name: tensorflow_metadata Anomalies proto} of an ExampleAnomalies artifact directory (any filesystem
    TensorFlow reads). Raises DataValidationError when it holds no ``Split-*/SchemaDiff.pb``: a gate that cannot
    read its input must not pass."""
    import tensorflow as tf
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    out = {}
    pattern = os.path.join(anomalies_uri, "Split-*", "SchemaDiff.pb")
    for path in sorted(tf.io.gfile.glob(pattern)):
        anomalies = anomalies_pb2.Anomalies()
        with tf.io.gfile.GFile(path, "rb") as f:
            anomalies.ParseFromString(f.read())
        out[os.path.basename(os.path.dirname(path))[len("Split-"):]] = anomalies
    if not out:
        raise DataValidationError(f"no anomalies to check: {pattern} matches no file, so ExampleValidator's output "
                                  "cannot be read; the data-validation gate stops here rather than pass unread data")
    return out


def describe(anomalies) -> list:
    """One line per anomalous feature (and per dataset-level anomaly) of an Anomalies proto."""
    lines = []
    for name, info in sorted(anomalies.anomaly_info.items()):
        reasons = "; ".join(r.description or r.short_description for r in info.reason) or info.description
        lines.append(f"feature {name!r}: {reasons}")
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        lines.append("dataset: " + ("; ".join(r.description for r in info.reason) or info.description))
    return lines


def check_anomalies(by_split: dict, max_anomalous_features: int = 0, *, what: str = "interactions") -> list:
    """Raise DataValidationError when any split has more anomalous features than allowed; returns the report lines."""
    report, worst = [], 0
    for split, anomalies in sorted(by_split.items()):
        lines = describe(anomalies)
        worst = max(worst, len(anomalies.anomaly_info) + int(anomalies.HasField("dataset_anomaly_info")))
        report += [f"[{split}] {line}" for line in lines]
    if worst > max_anomalous_features:
        raise DataValidationError(
            f"the {what} data has {worst} anomalous feature(s) against its schema (allowed: {max_anomalous_features}):"
            "\n  " + "\n  ".join(report) + "\nFix the input (or raise the threshold) and rerun.")
    return report
