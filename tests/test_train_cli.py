"""`mtin train` with every --model choice wired, the validation/test protocol and the popularity floors in
metrics.json, and `mtin evaluate` on an exported model matching in-process AUC."""
import json
import os
import shutil

import numpy as np
import pytest

from mtin_tf.baselines import MODELS
from mtin_tf.cli import main as mtin
from mtin_tf.export import evaluate_saved_model
from mtin_tf.train import train_and_evaluate


def test_model_choices_cover_mtin_and_every_baseline():
    from mtin_tf.baselines import BUILDERS

    assert set(MODELS) == {"mtin"} | set(BUILDERS)


def test_evaluate_exported_model_matches_in_process_scoring(tiny_planted, tiny_base, tmp_path):
    result = train_and_evaluate(tiny_planted["examples"], tiny_planted["items"], str(tmp_path / "run"),
                                model_name="din", overrides=tiny_base, verbose=0)
    assert os.path.isdir(result["model_path"])
    for signature in ("keras", "predict_raw"):
        out = tmp_path / f"eval_{signature}.json"
        assert mtin(["evaluate", "--model-dir", result["model_path"], "--examples", tiny_planted["examples"],
                     "--signature", signature, "--out", str(out)]) == 0
        evaluated = json.load(open(out))
        assert evaluated["num_examples"] == result["test_examples"]
        for key in ("auc", "gauc", "precision@50", "recall@50", "f1@50"):
            assert evaluated[key] == pytest.approx(result[key], abs=1e-6), (signature, key)


def test_train_cli_trains_a_baseline_refits_it_and_evaluate_reports_clear_errors(tiny_planted, tiny_base, tmp_path,
                                                                                   capsys):
    """`mtin train --model bpr`, then with --refit: the epoch is chosen on validation by the model trained on train
    (the same validation block as without it); then BPR trained from the same seed on train + validation for that
    many epochs is what test scores, what is exported, and the floors are fitted on the same rows."""
    from mtin_tf import features as F
    from mtin_tf import metrics as M
    from mtin_tf.baselines import BUILDERS
    from mtin_tf.config import MTINConfig
    from mtin_tf.data.canonical import read_item_features
    from mtin_tf.data.examples import join_arrays, read_split_arrays
    from mtin_tf.floors import floor_metrics
    from mtin_tf.train import predict_probabilities, train_mtin

    base = {**tiny_base, "epochs": 3}
    sets = [f"{k}={json.dumps(v)}" for k, v in base.items()]
    results = {}
    for refit in (False, True):
        out = tmp_path / f"refit{refit}"
        assert mtin(["train", "--examples", tiny_planted["examples"], "--items", tiny_planted["items"], "--out",
                     str(out), "--model", "bpr", "--verbose", "0", "--set", *sets,
                     *(["--refit"] if refit else [])]) == 0
        results[refit] = json.load(open(out / "metrics.json"))
    plain, refit = results[False], results[True]
    assert plain["model"] == "bpr" and 0.0 <= plain["auc"] <= 1.0
    assert "refit: trained again on train + validation" in capsys.readouterr().out
    assert refit["validation"] == plain["validation"] and refit["best_epoch"] == plain["best_epoch"]
    assert "refit" not in plain and refit["refit"]["epochs"] == refit["best_epoch"]
    data = read_split_arrays(tiny_planted["examples"], base["max_history"])
    fit = join_arrays(data["train"], data["validation"])
    assert refit["refit"]["examples"] == len(fit[F.LABEL])
    items = read_item_features(tiny_planted["items"])
    config = MTINConfig.from_dict({**base, "epochs": refit["best_epoch"]})
    model, _ = train_mtin(config, fit, items.item_ids, items.features, builder=BUILDERS["bpr"], verbose=0)
    test = data["test"]
    expected = M.auc(test[F.LABEL], predict_probabilities(model, test))
    assert refit["auc"] == pytest.approx(expected, abs=1e-6) and refit["auc"] != plain["auc"]
    assert evaluate_saved_model(refit["model_path"], tiny_planted["examples"])["auc"] == pytest.approx(expected,
                                                                                                      abs=1e-6)
    floors = floor_metrics(fit, test, ks=(10, 50))
    assert refit["floors"]["user_item_rate"]["auc"] == pytest.approx(floors["user_item_rate"]["auc"])
    assert refit["floors"]["user_item_rate"]["auc"] != plain["floors"]["user_item_rate"]["auc"]
    with pytest.raises(ValueError, match="no SavedModel directory"):
        evaluate_saved_model(str(tmp_path / "missing"), tiny_planted["examples"])
    with pytest.raises(ValueError, match="does not exist"):
        evaluate_saved_model(plain["model_path"], str(tmp_path))
    # the CLI answers the library's ValueError with its message and exit code 1
    capsys.readouterr()
    assert mtin(["evaluate", "--model-dir", str(tmp_path / "missing"), "--examples", tiny_planted["examples"]]) == 1
    assert f"mtin evaluate: no SavedModel directory at {tmp_path / 'missing'}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown model"):
        train_and_evaluate(tiny_planted["examples"], tiny_planted["items"], str(tmp_path / "x"), model_name="svm")


def test_train_stops_on_validation_scores_test_once_and_reports_the_floors(tiny_planted, tiny_base, tmp_path,
                                                                            monkeypatch, capsys):
    from mtin_tf import features as F
    from mtin_tf import floors
    from mtin_tf import train as T
    from mtin_tf.data.examples import read_split_arrays

    seen, real = {}, T.train_mtin

    def spy(*args, **kwargs):
        seen["eval_arrays"] = kwargs["eval_arrays"]
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "train_mtin", spy)
    sets = [f"{k}={v}" for k, v in dict(tiny_base, epochs=3).items()]
    assert mtin(["train", "--examples", tiny_planted["examples"], "--items", tiny_planted["items"], "--out",
                 str(tmp_path / "mtin"), "--verbose", "0", "--set", *sets]) == 0
    data = read_split_arrays(tiny_planted["examples"], tiny_base["max_history"])
    for key in (F.USER_ID, F.ITEM_ID, F.TIMESTAMP):  # early stopping watched the validation split, not test
        np.testing.assert_array_equal(seen["eval_arrays"][key], data["validation"][key])
    saved = json.load(open(tmp_path / "mtin" / "metrics.json"))
    assert saved["validation_examples"] == len(data["validation"][F.LABEL]) > 0
    assert saved["test_examples"] == len(data["test"][F.LABEL]) > 0
    for block in ("validation", "test"):
        assert set(saved[block]) >= {"auc", "gauc", "precision@50", "recall@50", "f1@50"}
    assert saved["auc"] == saved["test"]["auc"] != saved["validation"]["auc"]  # top level kept: the test metrics
    curve = saved["curves"]["validation_auc"]
    assert len(curve) == saved["epochs_run"] and saved["best_epoch"] == int(np.argmax(curve)) + 1
    # the exported weights are the chosen epoch's: their exact validation AUC is Keras's (200-bucket) value there
    assert saved["validation"]["auc"] == pytest.approx(curve[saved["best_epoch"] - 1], abs=0.02)
    want = floors.floor_metrics(data["train"], data["test"])
    assert set(saved["floors"]) == set(floors.FLOORS)
    for name in floors.FLOORS:
        assert saved["floors"][name] == pytest.approx(want[name], abs=1e-12)
    assert saved["below_floor"] == (saved["test"]["auc"] < max(m["auc"] for m in want.values()))
    # ... and on validation, fitted on train, next to the validation metrics the epoch was chosen on.
    want = floors.floor_metrics(data["train"], data["validation"])
    for name in floors.FLOORS:
        assert saved["validation_floors"][name] == pytest.approx(want[name], abs=1e-12)
    printed = capsys.readouterr().out
    assert "Floor: logit user rate + logit item rate: test AUC" in printed and "chosen on validation" in printed
    # Recommending from the catalogue, next to the most-clicked floor; `mtin evaluate` of the export agrees.
    from mtin_tf.retrieval import popularity_floor_metrics

    before = [data["train"], data["validation"]]
    assert saved["retrieval"]["popular"] == popularity_floor_metrics(before, data["test"])
    assert saved["retrieval"]["model"]["retrieval_users"] == saved["retrieval"]["popular"]["retrieval_users"] > 0
    assert saved["validation_floors"]["popular"] == popularity_floor_metrics([data["train"]], data["validation"])
    assert "catalogue retrieval (test" in printed
    assert mtin(["evaluate", "--model-dir", saved["model_path"], "--examples", tiny_planted["examples"], "--out",
                 str(tmp_path / "evaluated.json")]) == 0
    evaluated = json.load(open(tmp_path / "evaluated.json"))["retrieval"]
    for name, block in saved["retrieval"].items():
        assert evaluated[name] == pytest.approx(block, abs=1e-6), name

    # config.json: exactly the configuration trained (MTINConfig with the --set overrides, every field)
    import dataclasses

    from mtin_tf.config import MTINConfig

    config = json.load(open(tmp_path / "mtin" / "config.json"))
    assert config == json.loads(json.dumps(dataclasses.asdict(MTINConfig(**dict(tiny_base, epochs=3)))))
    # TensorBoard: one scalar per epoch for the training and the validation split; the validation AUC curve is the one
    # metrics.json reports (and early stopping watched)
    scalars = _tensorboard_scalars(tmp_path / "mtin" / "logs")
    assert len(scalars["train"]["epoch_loss"]) == saved["epochs_run"]
    np.testing.assert_allclose(scalars["validation"]["epoch_logit_auc"], curve, atol=1e-6)
    # the restored weights are the best validation epoch's: the exported model's validation AUC, with the same
    # (200-threshold) metric Keras logged per epoch, is that epoch's value
    import tf_keras

    from mtin_tf.train import predict_probabilities

    model = tf_keras.models.load_model(saved["model_path"])
    probabilities = predict_probabilities(model, data["validation"])
    keras_auc = tf_keras.metrics.AUC()
    keras_auc.update_state(data["validation"][F.LABEL], probabilities)
    assert float(keras_auc.result()) == pytest.approx(curve[saved["best_epoch"] - 1], abs=1e-4)


def _tensorboard_scalars(log_dir):
    """{run ("train", "validation"): {tag: [value per step]}} of the tf.summary event files under log_dir."""
    import glob

    import tensorflow as tf

    out = {}
    for path in sorted(glob.glob(os.path.join(str(log_dir), "*", "events.out.tfevents.*"))):
        run = os.path.basename(os.path.dirname(path))
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    out.setdefault(run, {}).setdefault(value.tag, []).append(
                        (event.step, float(tf.make_ndarray(value.tensor))))
    return {run: {tag: [v for _, v in sorted(values)] for tag, values in tags.items()} for run, tags in out.items()}


def test_train_on_examples_built_before_the_validation_split_asks_to_rebuild(tiny_planted, tiny_base, tmp_path,
                                                                               capsys):
    from mtin_tf.data.examples import TEST_FILE, TRAIN_FILE

    old = tmp_path / "old"
    old.mkdir()
    for name in (TRAIN_FILE, TEST_FILE):
        shutil.copy(os.path.join(tiny_planted["examples"], name), old / name)
    with pytest.raises(ValueError, match="re-run `mtin data build`"):
        train_and_evaluate(str(old), tiny_planted["items"], str(tmp_path / "out"), overrides=tiny_base, verbose=0)
    sets = [f"{k}={v}" for k, v in tiny_base.items()]
    assert mtin(["train", "--examples", str(old), "--items", tiny_planted["items"], "--out", str(tmp_path / "out"),
                 "--verbose", "0", "--set", *sets]) == 1
    assert "mtin train: " in (err := capsys.readouterr().err) and "re-run `mtin data build`" in err
