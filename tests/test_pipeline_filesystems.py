"""The pipeline reads its artifacts through tf.io.gfile, so a gs://, s3:// or hdfs:// pipeline root works as a local
one does. TensorFlow's in-process ram:// filesystem stands in for a remote one here: Python's glob and open cannot
see it, exactly as they cannot see gs://."""
import uuid

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2

from mtin_tf import features as F
from mtin_tf.pipeline.trainer import read_item_table
from mtin_tf.pipeline.validation import DataValidationError, check_anomalies, load_anomalies


def _root():
    return f"ram://mtin-{uuid.uuid4().hex}"


def test_the_validation_gate_reads_anomalies_from_a_remote_filesystem_and_stops_on_them():
    root = _root()
    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info["click"]
    info.description = "values outside {0, 1}"
    info.reason.add().description = "Out-of-range values"
    for split in ("train", "eval"):
        tf.io.gfile.makedirs(f"{root}/Split-{split}")
        with tf.io.gfile.GFile(f"{root}/Split-{split}/SchemaDiff.pb", "wb") as f:
            f.write((anomalies if split == "train" else anomalies_pb2.Anomalies()).SerializeToString())
    loaded = load_anomalies(root)
    assert sorted(loaded) == ["eval", "train"] and "click" in loaded["train"].anomaly_info
    with pytest.raises(DataValidationError, match="click"):
        check_anomalies(loaded, 0)


def test_the_validation_gate_stops_when_it_cannot_read_its_input():
    with pytest.raises(DataValidationError, match="matches no file"):
        load_anomalies(_root())


def test_the_trainer_reads_the_item_table_from_a_remote_filesystem():
    root = _root()
    tf.io.gfile.makedirs(f"{root}/Split-train")
    rng = np.random.default_rng(0)
    ids, vectors = np.array([30, 10, 20]), rng.normal(size=(3, 4)).astype(np.float32)
    with tf.io.TFRecordWriter(f"{root}/Split-train/data_tfrecord-00000-of-00001.gz", options="GZIP") as writer:
        for item, vector in zip(ids, vectors):
            example = tf.train.Example(features=tf.train.Features(feature={
                F.ITEM_ID: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(item)])),
                F.ITEM_FEATURES: tf.train.Feature(float_list=tf.train.FloatList(value=vector))}))
            writer.write(example.SerializeToString())
    got_ids, got_vectors = read_item_table([f"{root}/Split-train/*"])
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_allclose(got_vectors, vectors)
