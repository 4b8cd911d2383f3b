"""The commands README.md and docs/*.md show, run through the `mtin` CLI on small data, their outputs checked by
content: `mtin data fetch-movielens`, `mtin data convert --format movielens|kuaishou|microvideo`, `mtin demo
--standalone` (its own code path with the data and model sizes shrunk), and `mtin --help`.

Where each other documented command is tested: `mtin demo` and `mtin pipeline run` (tests/test_pipeline.py, whose one
pipeline run is made by `mtin demo` and rerun through `mtin pipeline run`), `mtin train` / `mtin evaluate`
(tests/test_train_cli.py), `mtin data generate` / `mtin data build` (tests/test_experiment.py's fixture, and `mtin demo
--standalone` here), `mtin serve` / `mtin predict` / `mtin recommend` (tests/test_serving_server.py,
tests/test_serving_resilience.py), `mtin pipeline compile-kubeflow` / `mtin pipeline airflow-dag`
(tests/test_pipeline_orchestration.py), `mtin experiment` (tests/test_experiment.py).
"""
import contextlib
import io
import json
import os
import pickle
import re

import numpy as np
import pandas as pd
import pytest

from mtin_tf import features as F
from mtin_tf.cli import main as mtin
from mtin_tf.data import canonical as C


def _run(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = mtin(argv)
    print(out.getvalue())
    return code, out.getvalue()


def test_help_lists_every_subcommand():
    from mtin_tf.cli import SUBCOMMANDS

    code, stdout = _run([])
    assert code == 0
    flat = " ".join(stdout.split())  # argparse wraps long help lines
    for name, _, help_text in SUBCOMMANDS:
        assert re.search(rf"^    {name}\b", stdout, re.M) and f"{name} {help_text}" in flat, (name, stdout)
    with pytest.raises(SystemExit) as info, contextlib.redirect_stdout(io.StringIO()) as out:
        mtin(["--help"])
    assert info.value.code == 0 and out.getvalue() == stdout


@pytest.fixture(scope="module")
def movielens(tmp_path_factory):
    """`mtin data fetch-movielens` with the default wheel cache (the one tests/test_data_readers.py's fixture fills),
    so the recbole wheel is downloaded at most once per machine."""
    from mtin_tf.data import movielens as ML

    out = str(tmp_path_factory.mktemp("movielens"))
    code, stdout = _run(["data", "fetch-movielens", "--out", out])
    return {"code": code, "stdout": stdout, "out": out, "cache": ML.DEFAULT_CACHE}


def test_fetch_movielens_writes_ml100k_in_the_canonical_format(movielens):
    assert movielens["code"] == 0
    wheel = re.search(r"MovieLens-100K from (\S+)", movielens["stdout"]).group(1)
    assert os.path.dirname(wheel) == movielens["cache"] and os.path.basename(wheel).startswith("recbole-1.2.1-")
    out = movielens["out"]
    df = pd.read_parquet(os.path.join(out, C.INTERACTIONS_FILE))
    assert len(df) == 100_000 and df[F.USER_ID].nunique() == 943 and df[F.ITEM_ID].nunique() == 1682
    assert df[F.CLICK].mean() == pytest.approx(0.55375)  # ratings >= 4
    items = C.read_item_features(os.path.join(out, C.ITEM_FEATURES_FILE))
    assert len(items) == 1682 and items.dim == 19 + 2 and set(df[F.ITEM_ID]) <= set(items.item_ids.tolist())
    report = json.load(open(os.path.join(out, "convert_report.json")))
    assert report["counts"]["rows_read"] == 100_000
    assert "wrote 100000 interactions of 943 users and 1682 items (feature dim 21)" in movielens["stdout"]


def test_convert_movielens_from_the_wheel_equals_fetch_and_adds_title_hashes(movielens, tmp_path):
    wheel = re.search(r"MovieLens-100K from (\S+)", movielens["stdout"]).group(1)
    code, _ = _run(["data", "convert", "--format", "movielens", "--input", wheel, "--out", str(tmp_path),
                    "--title-hash-dim", "8", "--click-threshold", "5"])
    assert code == 0
    fetched = pd.read_parquet(os.path.join(movielens["out"], C.INTERACTIONS_FILE))
    converted = pd.read_parquet(tmp_path / C.INTERACTIONS_FILE)
    cols = [F.USER_ID, F.ITEM_ID, F.TIMESTAMP]
    pd.testing.assert_frame_equal(converted[cols], fetched[cols])
    assert 0 < converted[F.CLICK].sum() < fetched[F.CLICK].sum()  # rating 5 only
    assert set(np.flatnonzero(converted[F.CLICK].to_numpy())) <= set(np.flatnonzero(fetched[F.CLICK].to_numpy()))
    base = C.read_item_features(os.path.join(movielens["out"], C.ITEM_FEATURES_FILE))
    hashed = C.read_item_features(str(tmp_path / C.ITEM_FEATURES_FILE))
    assert hashed.dim == 21 + 8
    np.testing.assert_array_equal(hashed.item_ids, base.item_ids)
    np.testing.assert_array_equal(hashed.features[:, :21], base.features)
    title = hashed.features[:, 21:]
    assert np.count_nonzero(np.abs(title).sum(axis=1)) > 0.95 * len(title)  # (a few titles' signed word hashes cancel)
    assert len(np.unique(title, axis=0)) > 0.3 * len(title)  # 8 signed buckets: short titles collide


def _alpine_files(tmp_path):
    """ALPINE's Dataset I layout: dataset.pkl (consecutive pickles: train, test, positive and negative histories, two
    edge lists) and the visual .npy with a trailing padding row."""
    pos_his, neg_his = [[0, 2], [1]], [[1], [3, 0]]
    train = [((0, 0, 1), 0, 0), ((0, 1, 0), 1, 0), ((1, 3, 0), 0, 0), ((1, 1, 1), 0, 1)]
    test = [((0, 2, 1), 1, 1), ((1, 0, 0), 1, 1)]
    pkl = tmp_path / "dataset.pkl"
    with open(pkl, "wb") as f:
        for obj in (train, test, pos_his, neg_his, [[0, 0], [0]], [[0], [0, 0]]):
            pickle.dump(obj, f)
    visual = np.arange(5 * 64, dtype=np.float32).reshape(5, 64)
    np.save(tmp_path / "visual64_select.npy", visual)
    return str(pkl), str(tmp_path / "visual64_select.npy"), visual


def test_convert_kuaishou_through_the_cli_then_build(tmp_path):
    pkl, npy, visual = _alpine_files(tmp_path)
    out = tmp_path / "canon"
    code, stdout = _run(["data", "convert", "--format", "kuaishou", "--input", pkl, "--features", npy,
                         "--out", str(out)])
    assert code == 0
    df = pd.read_parquet(out / C.INTERACTIONS_FILE)
    # user/item ids + 1; ordinal time = pos_len + neg_len; the official split kept
    assert df.sort_values([F.USER_ID, F.TIMESTAMP])[[F.USER_ID, F.ITEM_ID, F.TIMESTAMP, F.CLICK, C.IS_TEST]] \
        .values.tolist() == [[1, 1, 0, 1, 0], [1, 2, 1, 0, 0], [1, 3, 2, 1, 1],
                             [2, 4, 0, 0, 0], [2, 2, 1, 1, 0], [2, 1, 2, 0, 1]]
    items = C.read_item_features(str(out / C.ITEM_FEATURES_FILE))
    np.testing.assert_array_equal(items.item_ids, [1, 2, 3, 4])
    np.testing.assert_array_equal(items.features, visual[:4])  # the padding row dropped
    assert json.load(open(out / "convert_report.json"))["counts"]["rows_read"] == 6
    assert "wrote 6 interactions of 2 users and 4 items (feature dim 64)" in stdout

    built = tmp_path / "built"
    code, _ = _run(["data", "build", "--interactions", str(out / C.INTERACTIONS_FILE), "--items",
                    str(out / C.ITEM_FEATURES_FILE), "--out", str(built), "--split", "given", "--max-history", "4"])
    assert code == 0
    from mtin_tf.data.examples import TEST_FILE, read_tfrecords

    test = {ex[F.USER_ID]: ex for ex in read_tfrecords(str(built / TEST_FILE))}
    assert test[1][F.ITEM_ID] == 3 and test[1][F.CLICKED_ITEMS].tolist() == [1]
    assert test[1][F.BROWSED_ITEMS].tolist() == [2]
    with pytest.raises(SystemExit, match="--features"):
        mtin(["data", "convert", "--format", "kuaishou", "--input", pkl, "--out", str(tmp_path / "x")])


def test_convert_microvideo_through_the_cli(tmp_path):
    d = tmp_path / "thacil"
    d.mkdir()
    head = "user_id,item_id,cate_id,is_click,timestamp\n"
    (d / "train_data.csv").write_text(head + "0,0,5,1,100\n0,1,6,0,101\n1,1,5,1,50\n")
    (d / "test_data.csv").write_text(head + "0,0,7,1,200\n1,0,7,0,300\n")
    rng = np.random.default_rng(0)
    train_feats, test_feats = rng.standard_normal((2, 512)), rng.standard_normal((1, 512))
    np.save(d / "train_cover_image_feature.npy", train_feats.astype(np.float32))
    np.save(d / "test_cover_image_feature.npy", test_feats.astype(np.float32))
    code, _ = _run(["data", "convert", "--format", "microvideo", "--input", str(d), "--out", str(tmp_path / "out")])
    assert code == 0
    df = pd.read_parquet(tmp_path / "out" / C.INTERACTIONS_FILE)
    assert sorted(df[df[C.IS_TEST] == 1][F.ITEM_ID]) == [3, 3]  # the test item is a new item, id N_train + 1
    items = C.read_item_features(str(tmp_path / "out" / C.ITEM_FEATURES_FILE))
    np.testing.assert_allclose(items.features, np.concatenate([train_feats, test_feats]).astype(np.float32))


def test_demo_standalone_generates_builds_trains_exports_and_reloads(tmp_path, monkeypatch):
    from mtin_tf import demo

    monkeypatch.setattr(demo, "DEMO_DATA", dict(num_users=30, num_items=120, num_clusters=6, feature_dim=8,
                                                interactions_per_user=25))
    monkeypatch.setattr(demo, "DEMO_MODEL", dict(embedding_dim=8, num_masks=2, num_groups=2, max_history=6,
                                                 batch_size=64, epochs=2))
    code, stdout = _run(["demo", "--standalone", "--out", str(tmp_path), "--seed", "3"])
    assert code == 0, stdout
    metrics = json.load(open(tmp_path / "train" / "metrics.json"))
    model_path = re.search(r"exported model: (\S+)", stdout).group(1)
    assert model_path == metrics["model_path"] and os.path.isfile(os.path.join(model_path, "saved_model.pb"))
    assert os.path.dirname(model_path) == str(tmp_path / "train" / "model")
    reloaded, in_process = map(float, re.search(r"reloaded SavedModel AUC (\S+) vs in-process (\S+)", stdout).groups())
    assert reloaded == pytest.approx(in_process, abs=1e-6) and in_process == pytest.approx(metrics["test"]["auc"],
                                                                                           abs=1e-6)
    summary = json.load(open(tmp_path / "data" / "summary.json"))
    assert f"oracle AUC: {summary['oracle_auc']:.4f}" in stdout
    for split in ("train", "validation", "test"):
        assert os.path.getsize(tmp_path / "examples" / f"{split}.tfrecord") > 0
    config = json.load(open(tmp_path / "train" / "config.json"))
    assert config["seed"] == 3 and config["max_history"] == 6 and config["embedding_dim"] == 8


def test_config_overrides_are_checked_before_anything_runs(tmp_path, capsys):
    from mtin_tf.config import MTINConfig

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"embedding_dim": 16, "readout": "paper"}))
    assert MTINConfig.overrides(str(path), ["embedding_dim=8", "optimizer=adam"]) == {
        "embedding_dim": 8, "readout": "paper", "optimizer": "adam"}
    for pairs, message in ((["embeding_dim=8"], "unknown MTINConfig fields"), (["embedding_dim"], "KEY=VALUE"),
                           (["readout=sum"], "readout must be one of")):
        with pytest.raises(ValueError, match=message):
            MTINConfig.overrides(None, pairs)
    # The CLIs answer with the message and exit code 2 before reading any data.
    missing = str(tmp_path / "no-such-dir")
    assert mtin(["train", "--examples", missing, "--items", missing, "--out", str(tmp_path / "out"),
                 "--set", "embeding_dim=8"]) == 2
    assert "mtin train: unknown MTINConfig fields: ['embeding_dim']" in capsys.readouterr().err
    assert mtin(["pipeline", "run", "--data", missing, "--run-dir", str(tmp_path / "run"), "--set", "epochs"]) == 2
    assert "mtin pipeline: --set expects KEY=VALUE" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")
