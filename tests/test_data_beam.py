"""The Beam transform (real apache_beam, TestPipeline on the DirectRunner) emits the in-memory path's examples, also
with the DirectRunner's 2 worker processes (multi_processing mode)."""
import os

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

from mtin_tf import features as F
from mtin_tf.data import history as H
from mtin_tf.data.beam_history import BuildExamples
from mtin_tf.data.canonical import IS_TEST


def _canon(examples):
    """Order-free, comparable form of example dicts."""
    return sorted(tuple((k, tuple(np.asarray(v).reshape(-1).tolist())) for k, v in sorted(ex.items()))
                  for ex in examples)


def _equal_to(expected):
    def check(actual):
        got = _canon(actual)
        if got != expected:
            raise AssertionError(f"Beam gave {len(got)} examples, in-memory {len(expected)}; first differing: "
                                 f"{next((a, b) for a, b in zip(got, expected) if a != b) if got and expected else ''}")
    return check


@pytest.mark.parametrize("options", [
    dict(max_history=3, test_fraction=0.3, validation_fraction=0.2, split="fraction"),
    dict(max_history=50, time_cut=40, validation_cut=25, min_history=1, split="time"),
    dict(max_history=5, split="given", history_from="train", validation_fraction=0.15),
])
def test_beam_matches_in_memory(options):
    rng = np.random.default_rng(11)
    n = 300
    df = pd.DataFrame({F.USER_ID: rng.integers(1, 9, n), F.ITEM_ID: rng.integers(1, 40, n),
                       F.TIMESTAMP: rng.integers(0, 60, n), F.CLICK: rng.integers(0, 2, n),
                       IS_TEST: (rng.random(n) < 0.2).astype(np.int8)})
    df = df.drop_duplicates([F.USER_ID, F.ITEM_ID, F.TIMESTAMP]).reset_index(drop=True)
    splits = dict(zip(H.SPLIT_NAMES, H.build_examples(df, **options)[:3]))
    assert all(splits.values())
    with BeamTestPipeline() as p:
        rows = p | beam.Create(df.sample(frac=1.0, random_state=1).to_dict("records"))  # any input order
        result = rows | BuildExamples(**options)
        for name, examples in splits.items():
            assert_that(getattr(result, name), _equal_to(_canon(examples)), label=name)


def test_cli_generate_then_build_with_both_engines(tmp_path, capsys):
    from mtin_tf.cli import main
    from mtin_tf.data import examples as E

    raw = tmp_path / "raw"
    assert main(["data", "generate", "--out", str(raw), "--num-users", "30", "--num-items", "300",
                 "--interactions-per-user", "10", "--seed", "3"]) == 0
    outs = {}
    for engine in ("memory", "beam"):
        outs[engine] = tmp_path / engine
        assert main(["data", "build", "--interactions", str(raw / "interactions.parquet"), "--items",
                     str(raw / "item_features.npz"), "--out", str(outs[engine]), "--max-history", "4",
                     "--engine", engine]) == 0
    assert sorted(os.listdir(outs["memory"])) == sorted(os.listdir(outs["beam"]))
    for name in (E.TRAIN_FILE, E.VALIDATION_FILE, E.TEST_FILE):
        memory, beam_ = (E.read_tfrecords(str(outs[k] / name)) for k in ("memory", "beam"))
        assert memory and _canon(memory) == _canon(beam_)
    printed = capsys.readouterr().out
    assert printed.count("train_examples=") == 2 and printed.count("validation_examples=") == 2
    assert "build_report.json" in printed
    assert main(["data", "build", "--interactions", str(raw / "interactions.parquet"), "--out", str(tmp_path / "x"),
                 "--validation-fraction", "0.9"]) == 2
    assert "must be below 1" in capsys.readouterr().err


MULTI_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def test_history_gen_graph_on_the_multi_process_direct_runner_matches_in_memory(tmp_path):
    """HistoryGen's Beam graph (its tf.Example parsing, BuildExamples, serialization to TFRecord files) on the
    DirectRunner with 2 worker processes: the written examples equal the in-memory builder's exactly, as multisets, so
    a lost or duplicated row fails; the Beam counters, summed over the workers, count every row once. (Everything the
    workers run must be importable there: a function defined in this test module is pickled by reference and fails
    in the workers with "No module named 'test_data_beam'", so the graph uses only mtin_tf / pipeline code.)"""
    import tensorflow as tf
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from mtin_tf.data import examples as E
    from mtin_tf.pipeline.components.history import COUNTER_NAMESPACE, _ParseFn

    rng = np.random.default_rng(5)
    n = 600
    df = pd.DataFrame({F.USER_ID: rng.integers(1, 41, n), F.ITEM_ID: rng.integers(1, 60, n),
                       F.TIMESTAMP: rng.integers(0, 100, n), F.CLICK: rng.integers(0, 2, n)})
    df = df.drop_duplicates([F.USER_ID, F.ITEM_ID, F.TIMESTAMP]).reset_index(drop=True)
    options = dict(max_history=4, test_fraction=0.2, validation_fraction=0.1, split="fraction")
    expected = dict(zip(H.SPLIT_NAMES, H.build_examples(df, **options)[:3]))
    assert all(expected.values())

    def record(row):
        feature = {k: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row[k])]))
                   for k in (F.USER_ID, F.ITEM_ID, F.TIMESTAMP, F.CLICK)}
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    records = [record(r) for r in df.to_dict("records")] + [b""]  # + 1 unreadable (empty) row
    p = beam.Pipeline(options=PipelineOptions(MULTI_PROCESS))
    parsed = (p | beam.Create(records, reshuffle=True)
              | "Parse" >> beam.ParDo(_ParseFn()).with_outputs(_ParseFn.BAD, main="rows"))
    built = parsed.rows | BuildExamples(**options)
    for name in H.SPLIT_NAMES:
        _ = (getattr(built, name) | f"Serialize[{name}]" >> beam.Map(E.serialize_example)
             | f"Write[{name}]" >> beam.io.WriteToTFRecord(str(tmp_path / name / "part")))
    result = p.run()
    result.wait_until_finish()

    for name, examples in expected.items():
        got = E.read_tfrecords(str(tmp_path / name / "part*"))
        assert len(got) == len(examples) and _canon(got) == _canon(examples), name
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(
        MetricsFilter().with_namespace(COUNTER_NAMESPACE))["counters"]}
    assert counters["rows_read"] == len(df) + 1 and counters["bad_rows"] == 1
    built_counts = {c.key.metric.name: c.committed for c in result.metrics().query(
        MetricsFilter().with_namespace("mtin_data"))["counters"]}
    assert built_counts["users"] == df[F.USER_ID].nunique()
    assert {name: built_counts[f"{name}_examples"] for name in H.SPLIT_NAMES} == {
        name: len(v) for name, v in expected.items()}
