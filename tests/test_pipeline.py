"""The TFX pipeline end to end: ONE LocalDagRunner run on tiny planted data, shared by every test in this module.

Checks every component's artifacts, the exported signatures, that the pushed model scores like the Keras model, the
TFMA metrics (against mtin_tf.metrics on the same scores), blessing and push, and that a rerun is served from the
ML Metadata cache. Kubeflow, Airflow and bad-data checks are in tests/test_pipeline_orchestration.py.
"""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf import metrics as M
from mtin_tf.train import EVAL_AUC

L = 8
TINY_CONFIG = dict(embedding_dim=8, num_masks=2, num_groups=2, batch_size=32, epochs=2)
RUN_KW = dict(max_history=L, mtin_config=TINY_CONFIG, auc_floor=0.0)
COMPONENTS_WITH_OUTPUTS = ("InteractionsGen", "ItemsGen", "InteractionsSchema", "ExamplesSchema", "InteractionsStats",
                           "InteractionsValidator", "HistoryGen", "Transform", "Trainer", "Evaluator", "Pusher")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from mtin_tf.data import planted
    from pipeline.metadata import run_outputs
    from pipeline.runners.local import run_local

    base = tmp_path_factory.mktemp("pipeline")
    data = str(base / "data")
    planted.generate(data, num_users=40, num_items=200, num_clusters=6, feature_dim=8, interactions_per_user=30)
    dirs = run_local(data, str(base / "run"), **RUN_KW)
    return {"dirs": dirs, "data": data, "outputs": run_outputs(dirs.metadata)}


def _uri(run, node, key):
    return run["outputs"][node][key][0]


def _history_split(run, split):
    """Example dicts of one HistoryGen split (gzipped TFRecord)."""
    from mtin_tf.data.examples import parse_example

    files = sorted(glob.glob(os.path.join(_uri(run, "HistoryGen", "examples"), f"Split-{split}", "*")))
    return [parse_example(r) for r in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator()]


def test_every_component_recorded_outputs_in_ml_metadata(run):
    assert set(COMPONENTS_WITH_OUTPUTS) <= set(run["outputs"])
    for node in COMPONENTS_WITH_OUTPUTS:
        for uris in run["outputs"][node].values():
            assert all(os.path.exists(u) for u in uris), node


def test_history_examples_have_time_splits_and_transform_outputs_exactly_the_model_inputs(run):
    import tensorflow_transform as tft

    from pipeline.trainer import read_transformed, vocabulary_ids
    from pipeline.transform import USER_VOCABULARY

    splits = ["Split-test", "Split-train", "Split-validation"]
    assert sorted(os.listdir(_uri(run, "HistoryGen", "examples"))) == splits
    assert sorted(os.listdir(_uri(run, "Transform", "transformed_examples"))) == splits
    # per user, validation (>= floor(10 %) of the user's rows) is strictly after train and strictly before test
    times = {name: {} for name in ("train", "validation", "test")}
    for name, by_user in times.items():
        for ex in _history_split(run, name):
            by_user.setdefault(ex[F.USER_ID], []).append(ex[F.TIMESTAMP])
    assert len(times["validation"]) >= 30  # 40 users, 9 to 70 interactions each: users with >= 10 have validation
    for user, train in times["train"].items():
        val, test = times["validation"].get(user, []), times["test"][user]
        n = len(train) + len(val) + len(test)
        assert len(val) >= n // 10 and len(test) >= n // 5
        assert max(train) < min(val + test) and max(val + [max(train)]) < min(test)
    tft_out = tft.TFTransformOutput(_uri(run, "Transform", "transform_graph"))
    transformed = _uri(run, "Transform", "transformed_examples")
    validation = read_transformed([os.path.join(transformed, "Split-validation", "*")], tft_out)
    assert len(validation[F.LABEL]) == sum(map(len, times["validation"].values()))
    train = read_transformed([os.path.join(transformed, "Split-train", "*")], tft_out)
    assert set(train) == set(F.MODEL_INPUT_NAMES) | {F.LABEL}
    n = len(train[F.LABEL])
    assert n > 100
    for spec in F.MODEL_INPUTS:
        assert train[spec.name].shape == ((n, L) if spec.is_history else (n,)), spec.name
    # Padding on the right with 0, most recent L kept: a row's non-zero ids form a prefix.
    clicked = train[F.CLICKED_ITEMS]
    assert np.all((clicked != 0).argmin(1)[clicked[:, -1] == 0] <= (clicked != 0).sum(1)[clicked[:, -1] == 0])
    assert np.array_equal(np.sort(np.unique(train[F.USER_ID])), vocabulary_ids(tft_out, USER_VOCABULARY))


def test_pushed_model_has_both_signatures_with_the_serving_output_keys(run):
    from mtin_tf.signatures import DEFAULT_SIGNATURE, RAW_SIGNATURE
    from pipeline.runners.local import latest_pushed

    pushed = latest_pushed(run["dirs"].serving)
    assert pushed and os.path.basename(pushed).isdigit()
    assert os.path.exists(os.path.join(pushed, "saved_model.pb"))
    loaded = tf.saved_model.load(pushed)
    outputs = {F.OUTPUT_PROBABILITY, F.OUTPUT_LOGIT, F.OUTPUT_GROUP_WEIGHTS, F.OUTPUT_GROUP_ASSIGNMENT}
    for name in (DEFAULT_SIGNATURE, RAW_SIGNATURE):
        assert set(loaded.signatures[name].structured_outputs) == outputs
    assert set(loaded.signatures[RAW_SIGNATURE].structured_input_signature[1]) == set(F.MODEL_INPUT_NAMES)


def test_pushed_model_scores_equal_the_in_process_keras_model(run):
    from mtin_tf.data.examples import parse_example, to_model_arrays
    from mtin_tf.demo import score_pushed_model
    from mtin_tf.signatures import RAW_SIGNATURE
    from pipeline.runners.local import latest_pushed

    pushed = latest_pushed(run["dirs"].serving)
    served, keras = score_pushed_model(pushed, _uri(run, "HistoryGen", "examples"), L)
    assert len(served) > 20
    np.testing.assert_allclose(served, keras, atol=1e-5)
    # predict_raw on the same dense inputs as well.
    files = sorted(glob.glob(os.path.join(_uri(run, "HistoryGen", "examples"), "Split-test", "*")))
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())
    arrays = to_model_arrays([parse_example(r) for r in records], L)
    raw = tf_keras.models.load_model(pushed).signatures[RAW_SIGNATURE](
        **{k: tf.constant(arrays[k]) for k in F.MODEL_INPUT_NAMES})[F.OUTPUT_PROBABILITY]
    np.testing.assert_allclose(np.asarray(raw).reshape(-1), keras, atol=1e-5)


def test_tfma_metrics_match_mtin_metrics_and_the_model_is_blessed_and_pushed(run):
    from mtin_tf.demo import score_pushed_model
    from pipeline.evaluation import load_metrics
    from pipeline.runners.local import latest_pushed

    metrics = load_metrics(_uri(run, "Evaluator", "evaluation"))
    overall = metrics[""]
    for key in ("example_count", "auc", "gauc", "precision@50", "recall@50", "f1@50", "calibration"):
        assert key in overall, key
    assert any(name.startswith("history_bucket=") for name in metrics)
    examples = _history_split(run, "test")  # the Evaluator scores the test split only
    users = np.array([e[F.USER_ID] for e in examples])
    labels = np.array([e[F.LABEL] for e in examples])
    scores, _ = score_pushed_model(latest_pushed(run["dirs"].serving), _uri(run, "HistoryGen", "examples"), L)
    assert overall["example_count"] == len(labels)
    np.testing.assert_allclose(overall["auc"], M.auc(labels, scores), atol=2e-3)  # TFMA's AUC uses 10k buckets
    p, r, _ = M.precision_recall_f1_at_k(users, labels, scores, 50)
    np.testing.assert_allclose([overall["precision@50"], overall["recall@50"]], [p, r], atol=1e-6)
    np.testing.assert_allclose(overall["gauc"], M.gauc(users, labels, scores), atol=1e-6)
    assert os.path.exists(os.path.join(_uri(run, "Evaluator", "blessing"), "BLESSED"))
    assert latest_pushed(run["dirs"].serving)


def test_trainer_used_the_device_strategy_and_logged_training(run):
    model_run = _uri(run, "Trainer", "model_run")
    record = json.load(open(os.path.join(model_run, "training.json")))
    assert record["replicas"] == max(1, len(tf.config.list_logical_devices("GPU")))
    assert record["config"]["max_history"] == L and record["config"]["embedding_dim"] == TINY_CONFIG["embedding_dim"]
    # early stopping watched the validation split (EvalArgs), one validation AUC per epoch
    assert record["validation_examples"] == len(_history_split(run, "validation")) > 0
    assert record["train_examples"] == len(_history_split(run, "train"))
    assert len(record["history"][EVAL_AUC]) == record["epochs_run"]
    assert glob.glob(os.path.join(model_run, "**", "events.out.tfevents.*"), recursive=True)  # TensorBoard


def test_rerun_with_the_same_inputs_is_served_from_the_cache(run):
    from pipeline.metadata import component_timings, run_outputs
    from pipeline.runners.local import run_local

    run_local(run["data"], run["dirs"].run_dir, **RUN_KW)
    states = {node: state for node, _, state in component_timings(run["dirs"].metadata)}
    # Everything up to the Trainer is CACHED. The Evaluator (and so the Pusher) runs once more: its baseline input
    # changed from none (first run) to the model blessed by the first run; from then on it is cached too.
    for node in set(COMPONENTS_WITH_OUTPUTS) - {"Evaluator", "Pusher"}:
        assert states[node] == "CACHED", (node, states)
    assert run_outputs(run["dirs"].metadata)["Trainer"]["model"] == run["outputs"]["Trainer"]["model"]
