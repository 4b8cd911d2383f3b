"""`mtin experiment` on tiny planted data writes the tables (CSV/JSON/Markdown) and the plots; ARI and oracle join."""
import csv
import json
import os

import numpy as np
import pytest

from mtin_tf import features as F
from mtin_tf.cli import main as mtin
from mtin_tf.experiment.analysis import group_recovery, truth_click_probabilities, user_group_attention
from mtin_tf.experiment.report import markdown_tables
from mtin_tf.experiment.runner import RunSpec, load_config


def test_experiment_writes_tables_and_plots(tiny_planted, tiny_base, tmp_path):
    config = {"out": str(tmp_path / "out"), "seeds": [0, 1], "base": tiny_base,
              "datasets": {"tiny": {**tiny_planted, "set": {"use_id_embedding": False}}},
              "tables": [{"name": "overall", "title": "Table 2", "runs": [{"name": "BPR", "model": "bpr"}]},
                         {"name": "dims", "seeds": [0], "sweep": {"field": "embedding_dim", "values": [4, 8],
                                                                   "label": "d", "run": {"model": "bpr"}}},
                         {"name": "ablation", "seeds": [0], "runs": [{"name": "MTIN", "set": {"num_groups": 2}}]}],
              "heatmap": {"dataset": "tiny", "run": "MTIN", "users": 5}}
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(config))
    assert mtin(["experiment", "--config", str(path)]) == 0
    out = tmp_path / "out"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["table"], r["run"], r["seed"]) for r in rows] == [
        ("overall", "BPR", "0"), ("overall", "BPR", "1"), ("dims", "d=4", "0"), ("dims", "d=8", "0"),
        ("ablation", "MTIN", "0")]
    assert all(0.0 <= float(r["auc"]) <= 1.0 and float(r["oracle_auc"]) > 0.5 for r in rows)
    mtin_row = rows[-1]
    assert mtin_row["ari"] != "" and rows[0]["ari"] == ""  # group recovery only for models that route
    # BPR at d=8 is the same training as the overall BPR seed 0 (identical full config): trained and cached once.
    assert rows[3]["key"] == rows[0]["key"] and len(os.listdir(out / "runs")) == 4
    # The dataset's "set" is part of every run's config on it (and so of its cache key).
    bpr = RunSpec("BPR", "bpr")
    with_set = bpr.key({**tiny_base, "use_id_embedding": False}, "tiny", 0)
    assert rows[0]["key"] == with_set != bpr.key(tiny_base, "tiny", 0)
    markdown = (out / "results.md").read_text()
    assert "### Table 2" in markdown and "| BPR" in markdown and " ± " in markdown and "Oracle" in markdown
    results = json.load(open(out / "results.json"))
    summary = results["summary"]
    assert summary["overall / BPR / tiny"]["auc"][2] == 2  # mean, std, n over seeds
    # protocol: epochs chosen on validation (the curve is validation AUC), the table reports test
    for r in results["rows"]:
        curve = r["curves"]["validation_auc"]
        assert len(curve) == r["epochs_run"] and r["best_epoch"] == int(np.argmax(curve)) + 1
        assert r["validation"]["auc"] != r["auc"]
    # floors: fitted on the training rows, rows of their own, runs under the best one marked
    floors = results["floors"]["tiny"]
    assert set(floors) == {"item_rate", "user_item_rate", "popular"} and (out / "floors" / "tiny.json").exists()
    assert "| Floor: item click rate | " + f"{floors['item_rate']['auc']:.4f}" in markdown
    assert "| Floor: logit user rate + logit item rate |" in markdown and "▽ below floor: mean test AUC" in markdown
    best = max(f["auc"] for f in floors.values() if "auc" in f)  # the retrieval floor ranks no impressions
    assert [r["below_floor"] for r in rows] == [str(float(r["auc"]) < best) for r in rows]
    assert ("| BPR ▽ below floor |" in markdown) == (summary["overall / BPR / tiny"]["auc"][0] < best)
    for name in ("curves_overall_tiny.png", "curves_dims_tiny.png", "sweep_dims.png", "heatmap_tiny.png"):
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, name


def test_group_recovery_uses_each_users_longest_history():
    item_cluster = np.array([0, 0, 1, 1])  # items 1..4
    users = np.array([1, 1, 2])
    clicked = np.array([[1, 3, 0], [1, 2, 3], [1, 2, 4]])
    assignment = np.array([[0, 1, -1], [1, 1, 0], [0, 0, 0]])
    got = group_recovery(users, clicked, assignment, item_cluster)
    assert got["users"] == 2
    np.testing.assert_allclose(got["ari"], (1.0 + 0.0) / 2)  # user 1 (row 1): perfect; user 2: one group vs two


def test_group_recovery_scores_partial_and_opposite_recovery():
    # sklearn.metrics.adjusted_rand_score: [0, 0, 1, 2] vs [0, 0, 1, 1] = 0.5714285714285715; [0, 0, 1, 1] vs
    # [0, 1, 0, 1] = -0.5 (worse than chance); group ids and cluster ids are only names.
    item_cluster = np.array([4, 4, 9, 9, 4, 9])  # items 1..6
    users = np.array([1, 2])
    clicked = np.array([[1, 2, 3, 4], [1, 3, 5, 6]])  # clusters [4, 4, 9, 9] and [4, 9, 4, 9]
    assignment = np.array([[0, 0, 1, 2], [0, 0, 1, 1]])
    got = group_recovery(users, clicked, assignment, item_cluster)
    assert got["users"] == 2
    np.testing.assert_allclose(got["ari"], (0.5714285714285715 - 0.5) / 2)


def test_user_group_attention_averages_over_rows_and_examples():
    weights = np.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]])
    users, att = user_group_attention(np.array([7, 7, 9]), weights)
    assert users.tolist() == [7, 9]
    np.testing.assert_allclose(att, [[0.5, 0.5], [0.5, 0.5]])


def test_oracle_join_aligns_truth_with_test_rows(tiny_planted):
    import pandas as pd

    inter = pd.read_parquet(os.path.join(tiny_planted["planted"], "interactions.parquet"))
    truth = pd.read_parquet(os.path.join(tiny_planted["planted"], "truth.parquet"))
    pick = [5, 0, 17]
    test = {F.USER_ID: inter[F.USER_ID].to_numpy()[pick], F.ITEM_ID: inter[F.ITEM_ID].to_numpy()[pick],
            F.TIMESTAMP: inter[F.TIMESTAMP].to_numpy()[pick]}
    np.testing.assert_allclose(truth_click_probabilities(tiny_planted["planted"], test),
                               truth["p_click"].to_numpy()[pick])
    test[F.TIMESTAMP] = test[F.TIMESTAMP] + 1
    with pytest.raises(ValueError, match="no ground truth"):
        truth_click_probabilities(tiny_planted["planted"], test)


def test_config_errors_are_clear(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"datasets": {"a": {}}, "tables": [{"name": "t", "runs": [{"name": "x",
                                                                                           "model": "svm"}]}]}))
    with pytest.raises(ValueError, match="unknown model 'svm'"):
        load_config(str(path))
    path.write_text(json.dumps({"datasets": {"a": {}}, "tables": [{"name": "t", "datasets": ["b"],
                                                                    "runs": [{"name": "x"}]}]}))
    with pytest.raises(ValueError, match="unknown datasets"):
        load_config(str(path))


def test_planned_runs_select_tables_datasets_and_seeds(tmp_path):
    from mtin_tf.experiment.runner import planned_runs

    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"datasets": {"a": {}, "b": {}}, "seeds": [0, 1, 2], "tables": [
        {"name": "t", "runs": [{"name": "x"}, {"name": "y"}]},
        {"name": "u", "datasets": ["b"], "seeds": [3, 4], "runs": [{"name": "z"}]}]}))
    config = load_config(str(path))
    cell = lambda c: (c[0]["name"], c[1].name, c[2], c[3])
    assert [cell(c) for c in planned_runs(config)] == (
        [("t", run, data, seed) for data in "ab" for run in "xy" for seed in (0, 1, 2)]
        + [("u", "z", "b", 3), ("u", "z", "b", 4)])
    assert [cell(c) for c in planned_runs(config, only=["t"], datasets=["b"], seeds=[2, 4])] == [
        ("t", "x", "b", 2), ("t", "y", "b", 2)]
    assert [cell(c) for c in planned_runs(config, seeds=[4])] == [("u", "z", "b", 4)]


def test_markdown_marks_exactly_the_runs_under_the_best_floor(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"datasets": {"d": {}}, "tables": [{"name": "t", "runs": [
        {"name": "Weak", "model": "bpr"}, {"name": "Strong"}]}]}))
    config = load_config(str(path))
    rows = [{"table": "t", "run": run, "dataset": "d", "seed": seed, "auc": auc}
            for run, aucs in (("Weak", (0.60, 0.64)), ("Strong", (0.80, 0.70))) for seed, auc in enumerate(aucs)]
    floors = {"d": {"item_rate": {"auc": 0.65, "gauc": 0.55}, "user_item_rate": {"auc": 0.66, "gauc": 0.6}}}
    markdown = markdown_tables(config, rows, floors)
    assert "| Weak ▽ below floor | 0.6200 ± " in markdown  # mean 0.62 < best floor 0.66
    assert "| Strong | 0.7500 ± " in markdown and "Strong ▽" not in markdown
    assert "| Floor: logit user rate + logit item rate | 0.6600 | 0.6000 |" in markdown
    assert "(0.6600)" in markdown


def test_refit_trains_again_on_train_and_validation_for_the_chosen_epochs(tiny_planted, tiny_base, tmp_path):
    """A table's "refit" (or --refit, every table): the epoch is chosen on validation by the model trained on train,
    then a model trained from the same seed on train + validation for that many epochs is what test scores; the
    floors of that table are fitted on the same rows, the other table's on train."""
    from mtin_tf import metrics
    from mtin_tf.baselines import BUILDERS
    from mtin_tf.config import MTINConfig
    from mtin_tf.experiment.runner import load_dataset
    from mtin_tf.floors import floor_metrics
    from mtin_tf.train import make_dataset, train_mtin

    base = {**tiny_base, "epochs": 3, "use_id_embedding": False}
    runs = [{"name": "BPR", "model": "bpr"}, {"name": "MTIN"}]
    config = {"out": str(tmp_path / "out"), "seeds": [0], "base": base, "patience": 3,
              "datasets": {"tiny": tiny_planted},
              "tables": [{"name": "plain", "runs": runs}, {"name": "refit", "refit": True, "runs": runs}]}
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(config))
    assert mtin(["experiment", "--config", str(path)]) == 0
    results = json.load(open(tmp_path / "out" / "results.json"))
    plain, refit = ({r["run"]: r for r in results["rows"] if r["table"] == t} for t in ("plain", "refit"))
    ds = load_dataset("tiny", tiny_planted, base["max_history"])
    for name in ("BPR", "MTIN"):
        # The selection is the same training as without refit: same curve, epoch and validation metrics.
        assert refit[name]["curves"]["validation_auc"] == plain[name]["curves"]["validation_auc"]
        assert refit[name]["validation"] == plain[name]["validation"]
        assert refit[name]["refit_epochs"] == refit[name]["best_epoch"] and "refit_epochs" not in plain[name]
        assert refit[name]["key"] != plain[name]["key"]  # another protocol, another cache entry
        assert refit[name]["auc"] != plain[name]["auc"]  # test scored by another model
    # BPR's test AUC is that of BPR trained from seed 0 on train + validation for the chosen epochs.
    model_config = MTINConfig.from_dict({**base, "seed": 0, "epochs": refit["BPR"]["best_epoch"]})
    model, _ = train_mtin(model_config, ds.refit_arrays(), ds.item_ids, ds.item_features, builder=BUILDERS["bpr"],
                          verbose=0)
    scores = np.asarray(model.predict(make_dataset(ds.test, 1024), verbose=0)[F.OUTPUT_PROBABILITY]).reshape(-1)
    assert refit["BPR"]["auc"] == pytest.approx(metrics.auc(ds.test[F.LABEL], scores), abs=1e-6)
    # The floors: fitted on train + validation for the refit table, on train for the other.
    floors = results["floors_refit"]["tiny"]
    expected = floor_metrics(ds.refit_arrays(), ds.test, ks=(10, 50))
    assert floors["user_item_rate"]["auc"] == pytest.approx(expected["user_item_rate"]["auc"])
    assert floors["user_item_rate"]["auc"] != results["floors"]["tiny"]["user_item_rate"]["auc"]
    markdown = (tmp_path / "out" / "results.md").read_text()
    refit_part, plain_part = markdown.split("### refit")[1], markdown.split("### refit")[0]
    assert "trained again on train + validation" in refit_part and "trained again" not in plain_part
    assert f"| Floor: logit user rate + logit item rate | {floors['user_item_rate']['auc']:.4f}" in refit_part
    assert "fitted on the train + validation rows" in refit_part and "fitted on the training rows" in plain_part
    # --refit: every table under the protocol (here served from the refit table's cached runs: the same keys).
    assert mtin(["experiment", "--config", str(path), "--refit", "--only", "plain"]) == 0
    again = json.load(open(tmp_path / "out" / "results.json"))
    assert {r["run"]: r["key"] for r in again["rows"]} == {name: refit[name]["key"] for name in refit}
    assert again["floors"] == {} and again["floors_refit"]["tiny"] == results["floors_refit"]["tiny"]


def test_a_run_may_set_its_own_history_length(tiny_planted, tiny_base, tmp_path):
    """A run's "set" of max_history reads the dataset again at that L: the run scores exactly as the same model
    trained on arrays read at that length, and not as one trained at the config's base length."""
    from mtin_tf import metrics
    from mtin_tf.baselines import BUILDERS
    from mtin_tf.config import MTINConfig
    from mtin_tf.experiment.runner import load_dataset
    from mtin_tf.train import make_dataset, train_mtin

    base = {**tiny_base, "use_id_embedding": False}
    config = {"out": str(tmp_path / "out"), "seeds": [0], "base": base, "datasets": {"tiny": tiny_planted},
              "tables": [{"name": "length", "runs": [{"name": "DIN L=6", "model": "din"},
                                                      {"name": "DIN L=2", "model": "din", "set": {"max_history": 2}}]}]}
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(config))
    assert mtin(["experiment", "--config", str(path)]) == 0
    rows = {r["run"]: r for r in json.load(open(tmp_path / "out" / "results.json"))["rows"]}

    def direct_auc(length):
        ds = load_dataset("tiny", tiny_planted, length)
        assert ds.train[F.CLICKED_ITEMS].shape[1] == length
        model, _ = train_mtin(MTINConfig.from_dict({**base, "max_history": length, "seed": 0}), ds.train, ds.item_ids,
                              ds.item_features, eval_arrays=ds.validation, builder=BUILDERS["din"], verbose=0)
        out = model.predict(make_dataset(ds.test, 1024), verbose=0)
        return metrics.auc(ds.test[F.LABEL], np.asarray(out[F.OUTPUT_PROBABILITY]).reshape(-1))

    assert rows["DIN L=2"]["auc"] == pytest.approx(direct_auc(2), abs=1e-6)
    assert rows["DIN L=6"]["auc"] == pytest.approx(direct_auc(6), abs=1e-6)
    assert rows["DIN L=2"]["auc"] != rows["DIN L=6"]["auc"]
