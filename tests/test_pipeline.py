"""The TFX pipeline end to end: ONE pipeline run on tiny planted data, made by `mtin demo` (the README's main job,
with its data and model sizes shrunk), shared by every test in this module; later tests rerun it through `mtin
pipeline run` on the same run directory, so that TFX's cache re-executes only the components whose inputs or
settings changed.

Checks the demo's printed promises, every component's artifacts, Transform's output against mtin_tf's in-memory
history building on the same interactions (exactly), the exported signatures, that the pushed model scores like the
Keras model, the TFMA metrics (against mtin_tf.metrics on the same scores), blessing and push, that a rerun is served
from the ML Metadata cache, and the gates: an AUC floor no model reaches, a candidate that regresses beyond
``max_auc_drop`` against the blessed baseline (neither is pushed), and unreadable rows above
``max_bad_row_fraction`` (the run stops at HistoryGen). Kubeflow, Airflow and anomaly checks are in
tests/test_pipeline_orchestration.py.
"""
import contextlib
import glob
import io
import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tf_keras
from training_support import latest_examples, reference_anchors

from mtin_tf import features as F
from mtin_tf import metrics as M
from mtin_tf.cli import main as mtin
from mtin_tf.train import EVAL_AUC

L = 8
# Small, yet learnable enough that the blessed model beats random (test AUC about 0.63; the demo's floor is 0.5) and a
# regression against it is measurable; the Trainer's cost is mostly tracing and export, not the epochs.
TINY_DATA = dict(num_users=60, num_items=200, num_clusters=6, feature_dim=8, interactions_per_user=40)
TINY_MODEL = dict(embedding_dim=8, num_masks=2, num_groups=2, max_history=L, batch_size=32, epochs=6,
                  learning_rate=0.01)
SEED = 0
# `mtin pipeline run` with exactly the settings `mtin demo` used (its mtin_config is TINY_MODEL without L, plus seed).
MODEL_SETTINGS = [f"{k}={v}" for k, v in TINY_MODEL.items() if k != "max_history"] + [f"seed={SEED}"]
COMPONENTS_WITH_OUTPUTS = ("InteractionsGen", "ItemsGen", "InteractionsSchema", "ExamplesSchema", "InteractionsStats",
                           "InteractionsValidator", "HistoryGen", "Transform", "Trainer", "Evaluator", "Pusher")
UP_TO_TRANSFORM = ("InteractionsGen", "ItemsGen", "InteractionsSchema", "ExamplesSchema", "InteractionsStats",
                   "InteractionsValidator", "HistoryGen", "Transform")


def _run_cli(argv):
    """`mtin ...` in process; returns (exit code, stdout). Its output is echoed for the test log."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = mtin(argv)
    print(out.getvalue())
    return code, out.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from mtin_tf import demo
    from mtin_tf.pipeline.metadata import run_outputs
    from mtin_tf.pipeline.runners.local import RunDirs

    base = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:  # the demo's own code path, on tiny sizes
        patch.setattr(demo, "DEMO_DATA", TINY_DATA)
        patch.setattr(demo, "DEMO_MODEL", TINY_MODEL)
        code, stdout = _run_cli(["demo", "--out", str(base), "--seed", str(SEED)])
    dirs = RunDirs.at(str(base / "pipeline"))
    return {"code": code, "stdout": stdout, "dirs": dirs, "data": str(base / "data"),
            "outputs": run_outputs(dirs.metadata)}


def _pipeline_run(run, *extra, data=None, settings=MODEL_SETTINGS):
    """`mtin pipeline run` on the demo's run directory (the demo's settings unless ``extra`` / ``settings`` change
    them); returns (exit code, stdout, {component: state} of this run)."""
    from mtin_tf.pipeline.metadata import component_timings

    code, stdout = _run_cli(["pipeline", "run", "--data", data or run["data"], "--run-dir", run["dirs"].run_dir,
                             "--max-history", str(L), "--set", *settings, *extra])
    return code, stdout, {node: state for node, _, state in component_timings(run["dirs"].metadata)}


def _versions(run):
    return sorted(os.listdir(run["dirs"].serving))


def _threshold_failures(evaluation_uri):
    """[(metric name, is a change (diff) threshold, value)] of the failed thresholds of an Evaluator output."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    return result.validation_ok, [(f.metric_key.name, f.metric_key.is_diff, f.metric_value.double_value.value)
                                  for s in result.metric_validations_per_slice for f in s.failures]


def test_demo_runs_the_pipeline_prints_its_results_and_pushes_a_model_that_scores_like_keras(run):
    stdout = run["stdout"]
    assert run["code"] == 0, stdout
    for node in COMPONENTS_WITH_OUTPUTS:  # the per-component summary from MLMD
        assert re.search(rf"^  {node} +COMPLETE +[0-9.]+s$", stdout, re.M), (node, stdout)
    assert "blessed: True" in stdout
    pushed = re.search(r"pushed model: (\S+)", stdout).group(1)
    assert os.path.dirname(pushed) == run["dirs"].serving and os.path.exists(os.path.join(pushed, "saved_model.pb"))
    with open(os.path.join(run["data"], "summary.json")) as f:
        oracle = json.load(f)["oracle_auc"]
    assert f"oracle AUC (true click probabilities): {oracle:.4f}" in stdout
    diff = re.search(r"on (\d+) test examples: max \|diff\| = (\S+)", stdout)
    assert int(diff.group(1)) > 20 and float(diff.group(2)) <= 1e-5
    auc = re.search(r"^ +auc: ([0-9.]+)$", stdout, re.M)
    assert auc and 0.5 <= float(auc.group(1)) <= 1.0  # the demo's blessing floor is 0.5

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

    from mtin_tf.pipeline.trainer import read_transformed, vocabulary_ids
    from mtin_tf.pipeline.transform import USER_VOCABULARY

    splits = ["Split-test", "Split-train", "Split-validation"]
    assert sorted(os.listdir(_uri(run, "HistoryGen", "examples"))) == splits
    assert sorted(os.listdir(_uri(run, "Transform", "transformed_examples"))) == splits
    # per user, validation (>= floor(10 %) of the user's rows) is strictly after train and strictly before test
    times = {name: {} for name in ("train", "validation", "test")}
    for name, by_user in times.items():
        for ex in _history_split(run, name):
            by_user.setdefault(ex[F.USER_ID], []).append(ex[F.TIMESTAMP])
    assert len(times["validation"]) >= 55  # 60 users, 14 to 107 interactions each: users with >= 10 have validation
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
    assert np.array_equal(np.sort(np.unique(train[F.USER_ID])), vocabulary_ids(tft_out, USER_VOCABULARY))


def _rows(arrays):
    """The examples of {name: [N] or [N, L] array} as one int64 matrix [N, columns], rows in lexicographic order
    (Beam writes examples in no fixed order)."""
    names = sorted(arrays)
    matrix = np.concatenate([np.asarray(arrays[k]).reshape(len(arrays[F.LABEL]), -1) for k in names], axis=1)
    assert np.all(matrix == matrix.astype(np.int64)), "non-integer values"
    matrix = matrix.astype(np.int64)
    return matrix[np.lexsort(matrix.T[::-1])]


def test_transform_output_equals_the_in_memory_history_builder_on_the_same_interactions(run):
    """Every split Transform wrote, row for row and value for value, equals mtin_tf.data.history + to_model_arrays on
    the interactions the demo generated: same examples, same splits, histories oldest first, right-padded with 0."""
    import tensorflow_transform as tft

    from mtin_tf.data.canonical import INTERACTIONS_FILE
    from mtin_tf.data.examples import to_model_arrays
    from mtin_tf.data.history import build_examples
    from mtin_tf.pipeline.trainer import read_transformed

    interactions = pd.read_parquet(os.path.join(run["data"], INTERACTIONS_FILE))
    train, validation, test, _ = build_examples(interactions, max_history=L)
    assert sum(len(ex[F.CLICKED_ITEMS]) == L for ex in train) > 0  # some histories are full,
    assert sum(0 < len(ex[F.CLICKED_ITEMS]) < L for ex in train) > 0  # some are padded
    tft_out = tft.TFTransformOutput(_uri(run, "Transform", "transform_graph"))
    transformed = _uri(run, "Transform", "transformed_examples")
    for split, examples in (("train", train), ("validation", validation), ("test", test)):
        got = read_transformed([os.path.join(transformed, f"Split-{split}", "*")], tft_out)
        want = to_model_arrays(examples, L)
        assert set(got) == set(want), split
        for name in F.MODEL_INPUT_NAMES:
            assert got[name].dtype == np.int64 and got[name].shape == want[name].shape, (split, name)
        np.testing.assert_array_equal(_rows(got), _rows(want), err_msg=split)


def test_pushed_model_has_both_signatures_with_the_serving_output_keys(run):
    from mtin_tf.pipeline.runners.local import latest_pushed
    from mtin_tf.signatures import DEFAULT_SIGNATURE, RAW_SIGNATURE

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
    from mtin_tf.pipeline.demo import score_pushed_model
    from mtin_tf.pipeline.runners.local import latest_pushed
    from mtin_tf.signatures import RAW_SIGNATURE

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


def gauc_bounds(users, labels, scores, tie: float) -> tuple[float, float]:
    """gAUC (mtin_tf.metrics.gauc: per-user AUC weighted by the user's rows, one-class users skipped) with each pair
    whose scores differ by less than ``tie`` counted wrong (low) and counted right (high), by a loop over pairs."""
    low = high = weights = 0.0
    for user in np.unique(users):
        y, s = labels[users == user], scores[users == user]
        if y.min() == y.max():
            continue
        gap = s[y == 1][:, None] - s[y == 0][None, :]  # [positives, negatives]
        right, near = (gap >= tie).sum(), (np.abs(gap) < tie).sum()
        low += len(y) * right / gap.size
        high += len(y) * (right + near) / gap.size
        weights += len(y)
    return low / weights, high / weights


def test_tfma_metrics_match_mtin_metrics_and_the_model_is_blessed_and_pushed(run):
    from mtin_tf.pipeline.demo import score_pushed_model
    from mtin_tf.pipeline.evaluation import load_metrics
    from mtin_tf.pipeline.runners.local import latest_pushed

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
    # The Evaluator and this rescoring batch the rows differently, so scores equal to float precision may swap inside
    # a user's list (one swapped pair of a small user moved gAUC by ~1e-4 once). TFMA's gAUC must lie between this
    # rescoring's gAUC with every near-tied pair counted wrong and with every one counted right.
    low, high = gauc_bounds(users, labels, scores, tie=1e-5)
    assert low - 1e-9 <= overall["gauc"] <= high + 1e-9, (low, overall["gauc"], high)
    assert low <= M.gauc(users, labels, scores) <= high and high - low < 5e-3  # the bounds are tight
    assert os.path.exists(os.path.join(_uri(run, "Evaluator", "blessing"), "BLESSED"))
    assert latest_pushed(run["dirs"].serving)


def test_trainer_used_the_device_strategy_and_logged_training(run):
    model_run = _uri(run, "Trainer", "model_run")
    record = json.load(open(os.path.join(model_run, "training.json")))
    assert record["replicas"] == max(1, len(tf.config.list_logical_devices("GPU")))
    assert record["config"]["max_history"] == L and record["config"]["embedding_dim"] == TINY_MODEL["embedding_dim"]
    # early stopping watched the validation split (EvalArgs), one validation AUC per epoch
    assert record["validation_examples"] == len(_history_split(run, "validation")) > 0
    assert record["train_examples"] == len(_history_split(run, "train"))
    assert len(record["history"][EVAL_AUC]) == record["epochs_run"]
    assert glob.glob(os.path.join(model_run, "**", "events.out.tfevents.*"), recursive=True)  # TensorBoard
    # The memories were pretrained from HistoryGen's Beam anchors, for every training user (all items have features).
    train_users = {e[F.USER_ID] for e in _history_split(run, "train")}
    assert record["pretraining"]["source"] == "beam" and record["pretraining"]["unknown_users"] == 0
    assert record["pretraining_users"] == record["pretraining"]["positive_memory"] == len(train_users)


def test_history_gen_wrote_each_training_users_memory_anchors_and_listed_them_for_the_trainer(run):
    """HistoryGen's memory_pretraining artifact holds one anchor record per training user, of the Trainer's memory
    shape (num_groups from the model config, memory_anchors its default), listed in training_inputs.json; the
    records equal user_anchors of each user's latest training example, read back from the train split."""
    from mtin_tf.config import MTINConfig
    from mtin_tf.pipeline.components.history import MEMORY_ANCHORS_KEY, TRAINING_INPUTS_FILE

    with open(os.path.join(_uri(run, "HistoryGen", "training_inputs"), TRAINING_INPUTS_FILE)) as f:
        training_inputs = json.load(f)
    entry = training_inputs[MEMORY_ANCHORS_KEY]
    k, m = TINY_MODEL["num_groups"], MTINConfig.memory_anchors
    assert (entry["num_groups"], entry["anchor_size"], entry["seed"]) == (k, m, SEED)
    assert all(p.startswith(_uri(run, "HistoryGen", "memory_pretraining")) for p in entry["files"])
    _assert_reference_anchors(entry["files"], latest_examples(_history_split(run, "train")), training_inputs)


def _assert_reference_anchors(files, latest, training_inputs):
    """The anchor records in ``files`` are exactly one per user of ``latest`` ({user: latest example}), each equal
    to the reference anchors of that example (training_support.reference_anchors, the Trainer's memory shape)."""
    from mtin_tf.config import MTINConfig
    from mtin_tf.pipeline.trainer import read_item_table
    from mtin_tf.pretrain import read_anchor_records

    k, m = TINY_MODEL["num_groups"], MTINConfig.memory_anchors
    batches = list(read_anchor_records(files, k, m).as_numpy_iterator())
    got = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    assert sorted(got[F.USER_ID].tolist()) == sorted(latest)
    features = dict(zip(*read_item_table(training_inputs["item_examples"])))
    for row, user in enumerate(got[F.USER_ID].tolist()):
        for name, value in reference_anchors(latest[user], features, k, m, SEED).items():
            np.testing.assert_array_equal(got[name][row], value, err_msg=f"user {user} {name}")


def _to_ram(run, split):
    """The Transform output's ``split`` copied to an in-process ram:// directory (a stand-in for gs://, which Python's
    open cannot see either); returns its file pattern."""
    import uuid

    source = os.path.join(_uri(run, "Transform", "transformed_examples"), f"Split-{split}")
    target = f"ram://mtin-{uuid.uuid4().hex}/Split-{split}"
    tf.io.gfile.makedirs(target)
    for name in tf.io.gfile.listdir(source):
        tf.io.gfile.copy(os.path.join(source, name), f"{target}/{name}")
    return f"{target}/*"


def test_the_trainer_streams_the_transformed_examples_from_a_ram_directory_through_a_small_shuffle_buffer(run):
    """transformed_dataset reads a ram:// directory through tf.data; with a 16-row buffer (the split has hundreds of
    rows) one pass yields every row exactly once, shuffled, in another order on the next pass; ``repeat`` loops."""
    import tensorflow_transform as tft

    from mtin_tf.pipeline.trainer import read_transformed, transformed_dataset

    tft_out = tft.TFTransformOutput(_uri(run, "Transform", "transform_graph"))
    pattern = _to_ram(run, "train")
    want = read_transformed([pattern], tft_out)
    n = len(want[F.LABEL])
    assert n > 10 * 16
    ds = transformed_dataset([pattern], tft_out, 10, shuffle_buffer=16, seed=0)

    def one_pass():
        batches = list(ds.as_numpy_iterator())
        inputs = {name: np.concatenate([b[0][name] for b in batches]) for name in F.MODEL_INPUT_NAMES}
        inputs[F.LABEL] = np.concatenate([b[1][F.OUTPUT_LOGIT] for b in batches])
        return batches, inputs

    batches, first = one_pass()
    assert all(len(b[1][F.OUTPUT_LOGIT]) == 10 for b in batches[:-1])
    assert batches[0][1][F.OUTPUT_LOGIT].dtype == np.float32
    for spec in F.MODEL_INPUTS:
        assert first[spec.name].dtype == np.int64
        assert first[spec.name].shape == ((n, L) if spec.is_history else (n,)), spec.name
    np.testing.assert_array_equal(_rows(first), _rows(want))  # every row once
    assert not np.array_equal(first[F.TIMESTAMP], want[F.TIMESTAMP])  # shuffled
    _, second = one_pass()
    np.testing.assert_array_equal(_rows(second), _rows(want))
    assert not np.array_equal(second[F.TIMESTAMP], first[F.TIMESTAMP])  # reshuffled each pass
    looped = transformed_dataset([pattern], tft_out, 10, shuffle_buffer=16, repeat=True)
    assert sum(len(b[1][F.OUTPUT_LOGIT]) for b in looped.take(n // 10 + 5).as_numpy_iterator()) > n


def test_the_trainers_summary_pass_keeps_each_users_latest_row_and_the_impression_shares(run):
    """One streaming pass (small batches and merges, so that batch reduction and merging both happen) gives what the
    in-memory arrays give: the example count, retrieval_task.impression_share and, per user, the latest row."""
    import tensorflow_transform as tft

    from mtin_tf.pipeline.trainer import read_transformed, summarize_training
    from mtin_tf.retrieval_task import impression_share

    tft_out = tft.TFTransformOutput(_uri(run, "Transform", "transform_graph"))
    pattern = _to_ram(run, "train")
    arrays = read_transformed([pattern], tft_out)
    summary = summarize_training([pattern], tft_out, batch_size=7, compact_rows=20)
    assert summary.examples == len(arrays[F.LABEL])
    for got, want in zip(summary.candidate_share(), impression_share(arrays[F.ITEM_ID])):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    latest = summary.latest_rows()
    users = np.unique(arrays[F.USER_ID])
    np.testing.assert_array_equal(np.sort(latest[F.USER_ID]), users)
    for user, timestamp, clicked in zip(latest[F.USER_ID], latest[F.TIMESTAMP], latest[F.CLICKED_ITEMS]):
        rows = np.flatnonzero(arrays[F.USER_ID] == user)
        last = rows[arrays[F.TIMESTAMP][rows] == arrays[F.TIMESTAMP][rows].max()]
        assert timestamp == arrays[F.TIMESTAMP][rows].max()
        assert any(np.array_equal(clicked, arrays[F.CLICKED_ITEMS][r]) for r in last)


def test_training_plan_spreads_train_steps_over_the_configured_epochs():
    from mtin_tf.pipeline.trainer import training_plan

    assert training_plan(3, None) == (3, None) and training_plan(3, 0) == (3, None)
    assert training_plan(3, 7) == (3, 3)  # 3 + 3 + 1
    assert training_plan(2, 10) == (2, 5)
    assert training_plan(5, 2) == (2, 1)
    assert training_plan(4, 10) == (4, 3)  # 3 + 3 + 3 + 1


def test_run_fn_honours_train_steps_and_eval_steps_streaming_from_a_ram_directory_and_refits(run, tmp_path):
    """run_fn itself, as TFX calls it (FnArgs), on the run's Transform output copied to ram://: with TrainArgs'
    num_steps = 7 and 3 epochs it takes exactly 7 optimizer steps (3 + 3 + 1, a validation AUC after each epoch),
    although one pass over the split is many more batches. With custom_config["refit"] it then trains a model
    again on train + validation for the epoch count validation chose (3 steps each, at most 7 in all) and exports
    that one, with the serving signatures. Its memories start from the anchors HistoryGen computed, with the
    pipeline's --refit, over each user's latest example of train + validation (checked against the reference)."""
    from tfx.components.trainer.fn_args_utils import FnArgs

    from mtin_tf.pipeline.components.history import MEMORY_ANCHORS_KEY, REFIT_ANCHORS_SPLIT, TRAINING_INPUTS_FILE
    from mtin_tf.pipeline.metadata import run_outputs
    from mtin_tf.pipeline.trainer import run_fn

    code, stdout, states = _pipeline_run(run, "--refit", "--stop-after", "HistoryGen")
    assert code == 0, stdout
    history_gen = run_outputs(run["dirs"].metadata)["HistoryGen"]
    with open(os.path.join(history_gen["training_inputs"][0], TRAINING_INPUTS_FILE)) as f:
        training_inputs = json.load(f)
    entry = training_inputs[MEMORY_ANCHORS_KEY]
    assert [os.path.dirname(p) for p in entry["refit_files"]] == [
        os.path.join(history_gen["memory_pretraining"][0], f"Split-{REFIT_ANCHORS_SPLIT}")]
    train = _history_split(run, "train")
    latest, in_train = latest_examples(train + _history_split(run, "validation")), latest_examples(train)
    assert any(latest[u][F.TIMESTAMP] > in_train[u][F.TIMESTAMP] for u in in_train)  # some latest rows in validation
    _assert_reference_anchors(entry["refit_files"], latest, training_inputs)
    settings = {k: v for k, v in TINY_MODEL.items() if k != "max_history"} | {"epochs": 3, "seed": SEED}
    fn_args = FnArgs(train_files=[_to_ram(run, "train")], eval_files=[_to_ram(run, "validation")],
                     transform_output=_uri(run, "Transform", "transform_graph"),
                     serving_model_dir=str(tmp_path / "model"), model_run_dir=str(tmp_path / "model_run"),
                     train_steps=7, eval_steps=2, hyperparameters=training_inputs,
                     custom_config={"mtin_config": settings, "shuffle_buffer": 16, "refit": True})
    run_fn(fn_args)
    record = json.load(open(tmp_path / "model_run" / "training.json"))
    train_rows = len(_history_split(run, "train"))
    assert train_rows // TINY_MODEL["batch_size"] > 7  # one pass is more than train_steps batches
    assert record["train_examples"] == train_rows
    assert record["steps_run"] == 7 and record["steps_per_epoch"] == 3 and record["epochs_run"] == 3
    assert len(record["history"][EVAL_AUC]) == 3 and record["shuffle_buffer"] == 16 and record["eval_steps"] == 2
    assert record["pretraining_users"] == len({e[F.USER_ID] for e in _history_split(run, "train")})
    assert record["pretraining"]["source"] == "beam"
    best = int(np.argmax(record["history"][EVAL_AUC])) + 1
    refit = record["refit"]
    assert refit["epochs"] == best and len(refit["loss"]) == best
    assert refit["examples"] == train_rows + len(_history_split(run, "validation"))
    assert refit["steps_run"] == min(3 * best, 7)
    assert refit["pretraining_anchors"] == entry["refit_files"] and refit["pretraining_users"] == len(latest)
    assert tf.io.gfile.exists(str(tmp_path / "model_run" / "refit"))  # its TensorBoard logs
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    assert "serving_default" in loaded.signatures


def test_rerun_through_the_cli_with_the_same_inputs_is_served_from_the_cache(run):
    from mtin_tf.pipeline.metadata import run_outputs

    versions = _versions(run)
    code, stdout, states = _pipeline_run(run)
    assert code == 0
    # Everything up to the Trainer is CACHED. The Evaluator (and so the Pusher) runs once more: its baseline input
    # changed from none (first run) to the model blessed by the first run; from then on it is cached too.
    for node in set(COMPONENTS_WITH_OUTPUTS) - {"Evaluator", "Pusher"}:
        assert states[node] == "CACHED", (node, states)
    assert run_outputs(run["dirs"].metadata)["Trainer"]["model"] == run["outputs"]["Trainer"]["model"]
    assert "blessed: True" in stdout and len(_versions(run)) == len(versions) + 1  # the same model, pushed again
    versions = _versions(run)
    code, stdout, states = _pipeline_run(run)  # from now on: fully cached, nothing pushed
    assert code == 0 and _versions(run) == versions
    assert {states[node] for node in COMPONENTS_WITH_OUTPUTS} == {"CACHED"}, states


def test_a_model_below_the_auc_floor_is_not_blessed_and_not_pushed(run):
    """Only the Evaluator's threshold changes: everything upstream is a cache hit; the Pusher runs and pushes
    nothing."""
    from mtin_tf.pipeline.metadata import run_outputs

    versions = _versions(run)
    code, stdout, states = _pipeline_run(run, "--auc-floor", "1.01")  # no AUC reaches it
    assert code == 0
    for node in UP_TO_TRANSFORM + ("Trainer",):
        assert states[node] == "CACHED", (node, states)
    assert states["Evaluator"] == "COMPLETE" and states["Pusher"] == "COMPLETE", states
    outputs = run_outputs(run["dirs"].metadata)
    assert os.listdir(outputs["Evaluator"]["blessing"][0]) == ["NOT_BLESSED"]
    ok, failures = _threshold_failures(outputs["Evaluator"]["evaluation"][0])
    assert not ok and failures and all(name == "auc" and not diff and value < 1.01 for name, diff, value in failures)
    assert "blessed: False" in stdout and "pushed model: (none: not blessed)" in stdout
    assert _versions(run) == versions


def test_a_regression_beyond_max_auc_drop_against_the_blessed_baseline_is_not_pushed(run):
    """A candidate trained by gradient ascent (negative learning rate: only the Trainer's settings change, so
    Transform and everything before it are cache hits) scores far below the blessed baseline; with the AUC floor at 0
    only the change threshold (candidate AUC - baseline AUC >= -max_auc_drop) can fail, and it does."""
    from mtin_tf.pipeline.metadata import run_outputs

    versions = _versions(run)
    worse = [s for s in MODEL_SETTINGS if not s.startswith(("epochs=", "learning_rate="))] + \
        ["epochs=1", "learning_rate=-0.01"]
    code, stdout, states = _pipeline_run(run, "--auc-floor", "0.0", "--max-auc-drop", "0.01", settings=worse)
    assert code == 0
    for node in UP_TO_TRANSFORM:
        assert states[node] == "CACHED", (node, states)
    assert states["Trainer"] == states["Evaluator"] == "COMPLETE", states
    outputs = run_outputs(run["dirs"].metadata)
    assert outputs["Trainer"]["model"] != run["outputs"]["Trainer"]["model"]  # a new candidate
    assert os.listdir(outputs["Evaluator"]["blessing"][0]) == ["NOT_BLESSED"]
    ok, failures = _threshold_failures(outputs["Evaluator"]["evaluation"][0])
    assert not ok and failures, failures
    assert all(name == "auc" and diff and value < -0.01 for name, diff, value in failures), failures
    assert "blessed: False" in stdout and _versions(run) == versions


def test_unreadable_rows_above_max_bad_row_fraction_stop_the_run_at_history_gen(run, tmp_path):
    """The demo's interactions plus rows with click = 2 (one anomalous feature, allowed): HistoryGen drops and counts
    them, and stops the run because their share exceeds --max-bad-row-fraction. Only the interaction components
    re-execute (their input changed); the item and schema components are cache hits; nothing after HistoryGen runs."""
    from mtin_tf.data.canonical import INTERACTIONS_FILE, ITEM_FEATURES_FILE

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(os.path.join(run["data"], ITEM_FEATURES_FILE), data / ITEM_FEATURES_FILE)
    good = pd.read_parquet(os.path.join(run["data"], INTERACTIONS_FILE), columns=list(F.INTERACTION_COLUMNS))
    bad = good.iloc[::100].copy()
    bad[F.CLICK] = 2
    pd.concat([good, bad]).to_csv(data / "interactions.csv", index=False)
    versions = _versions(run)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, _, states = _pipeline_run(run, "--max-anomalous-features", "1", "--max-bad-row-fraction", "0.005",
                                        data=str(data))
    assert code == 1
    message = err.getvalue()
    assert f"{len(bad)} of {len(good) + len(bad)} interaction rows" in message and "unreadable" in message, message
    assert states["ItemsGen"] == states["InteractionsSchema"] == "CACHED", states
    assert states["InteractionsGen"] == states["InteractionsStats"] == states["InteractionsValidator"] == "COMPLETE"
    assert states["HistoryGen"] == "FAILED", states
    assert not {"Transform", "Trainer", "Evaluator", "Pusher"} & set(states), states
    assert _versions(run) == versions
