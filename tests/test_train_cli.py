"""`mtin train` with every --model choice wired, and `mtin evaluate` on an exported model matching in-process AUC."""
import json
import os

import pytest

from mtin_tf.cli import main as mtin
from mtin_tf.train_cli import MODELS, evaluate_saved_model, train_and_evaluate
from test_experiment import TINY_BASE, tiny_planted  # noqa: F401  (module fixture: tiny planted data + examples)


def test_model_choices_cover_mtin_and_every_baseline():
    from mtin_tf.baselines import BUILDERS

    assert set(MODELS) == {"mtin"} | set(BUILDERS)


def test_evaluate_exported_model_matches_in_process_scoring(tiny_planted, tmp_path):  # noqa: F811
    result = train_and_evaluate(tiny_planted["examples"], tiny_planted["items"], str(tmp_path / "run"),
                                model_name="din", overrides=TINY_BASE, verbose=0)
    assert os.path.isdir(result["model_path"])
    for signature in ("keras", "predict_raw"):
        out = tmp_path / f"eval_{signature}.json"
        assert mtin(["evaluate", "--model-dir", result["model_path"], "--examples", tiny_planted["examples"],
                     "--signature", signature, "--out", str(out)]) == 0
        evaluated = json.load(open(out))
        assert evaluated["num_examples"] == result["test_examples"]
        for key in ("auc", "gauc", "precision@50", "recall@50", "f1@50"):
            assert evaluated[key] == pytest.approx(result[key], abs=1e-6), (signature, key)


def test_train_cli_accepts_a_baseline_and_evaluate_reports_clear_errors(tiny_planted, tmp_path):  # noqa: F811
    sets = [f"{k}={v}" for k, v in TINY_BASE.items()]
    assert mtin(["train", "--examples", tiny_planted["examples"], "--items", tiny_planted["items"], "--out",
                 str(tmp_path / "bpr"), "--model", "bpr", "--verbose", "0", "--set", *sets]) == 0
    metrics = json.load(open(tmp_path / "bpr" / "metrics.json"))
    assert metrics["model"] == "bpr" and 0.0 <= metrics["auc"] <= 1.0
    with pytest.raises(SystemExit, match="no SavedModel directory"):
        evaluate_saved_model(str(tmp_path / "missing"), tiny_planted["examples"])
    with pytest.raises(SystemExit, match="does not exist"):
        evaluate_saved_model(metrics["model_path"], str(tmp_path))
    with pytest.raises(ValueError, match="unknown model"):
        train_and_evaluate(tiny_planted["examples"], tiny_planted["items"], str(tmp_path / "x"), model_name="svm")
