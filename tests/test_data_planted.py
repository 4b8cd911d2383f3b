"""The planted-interest generator: deterministic, writes ground truth, and plants a learnable, recoverable signal."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from mtin_tf import features as F
from mtin_tf.data import canonical as C
from mtin_tf.data import examples as E
from mtin_tf.data import history as H
from mtin_tf.data import planted as P
from mtin_tf.metrics import auc

SMALL = dict(num_users=400, num_items=3000, num_clusters=12, feature_dim=16, interactions_per_user=60, seed=7,
             false_positive_rate=0.15, chunk_users=150)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("planted"))
    return P.generate(out, **SMALL)


def test_outputs_are_canonical_and_deterministic(planted, tmp_path):
    df = pd.read_parquet(planted.interactions_path)
    assert list(df.columns) == list(F.INTERACTION_COLUMNS) and len(df) == 400 * 60 == planted.num_interactions
    assert (df[F.USER_ID] >= 1).all() and (df[F.ITEM_ID] >= 1).all() and set(df[F.CLICK]) == {0, 1}
    assert (df.groupby(F.USER_ID)[F.TIMESTAMP].diff().dropna() > 0).all()  # strictly increasing per user
    items = C.read_item_features(planted.item_features_path)
    assert items.features.shape == (3000, 16) and items.category is None
    truth = pd.read_parquet(planted.truth_path)
    assert len(truth) == len(df) and truth[P.P_CLICK].between(0, 1).all()
    with open(os.path.join(planted.out_dir, P.SUMMARY_FILE)) as f:
        assert json.load(f)["num_interactions"] == len(df)
    again = P.generate(str(tmp_path / "again"), **SMALL)
    pd.testing.assert_frame_equal(pd.read_parquet(again.interactions_path), df)
    np.testing.assert_array_equal(C.read_item_features(again.item_features_path).features, items.features)
    other = P.generate(str(tmp_path / "other"), **{**SMALL, "seed": 8})
    assert not pd.read_parquet(other.interactions_path).equals(df)


def test_false_positive_share_and_oracle_auc(planted):
    df = pd.read_parquet(planted.interactions_path)
    truth = pd.read_parquet(planted.truth_path)
    gt = np.load(planted.ground_truth_path)
    clicked = df[F.CLICK].to_numpy() == 1
    # recompute "outside the user's interests" from the ground truth, independently of the truth file
    user_clusters = gt["user_clusters"][df[F.USER_ID].to_numpy() - 1]
    item_cluster = gt["item_cluster"][df[F.ITEM_ID].to_numpy() - 1]
    outside = ~(user_clusters == item_cluster[:, None]).any(axis=1)
    np.testing.assert_array_equal(outside, ~truth[P.IN_INTEREST].to_numpy())
    assert outside[clicked].mean() == pytest.approx(0.15, abs=0.03)
    assert 0.75 < planted.oracle_auc < 0.92
    assert planted.oracle_auc == pytest.approx(auc(df[F.CLICK], truth[P.P_CLICK]))


def test_clusters_recoverable_from_clicked_items(planted):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    df = pd.read_parquet(planted.interactions_path)
    items = C.read_item_features(planted.item_features_path)
    gt = np.load(planted.ground_truth_path)
    k = SMALL["num_clusters"]
    found = KMeans(k, n_init=4, random_state=0).fit_predict(items.features)
    assert adjusted_rand_score(gt["item_cluster"], found) > 0.9  # latent clusters live in the features
    # name each recovered cluster by the planted cluster most of its items belong to
    twin = pd.Series(gt["item_cluster"]).groupby(found).agg(lambda s: s.mode()[0]).to_dict()
    # each user's most clicked recovered clusters name their planted interests far above chance
    hits = picks = 0
    for user, group in df[df[F.CLICK] == 1].groupby(F.USER_ID):
        truth = {c for c in gt["user_clusters"][user - 1] if c >= 0}
        top = pd.Series(found[group[F.ITEM_ID].to_numpy() - 1]).value_counts().index[:len(truth)]
        hits += len({twin[c] for c in top} & truth)
        picks += len(truth)
    chance = np.mean((gt["user_clusters"] >= 0).sum(axis=1)) / k  # a random guess of |interests| clusters
    assert hits / picks > 0.65 and hits / picks > 2 * chance


def test_signal_learnable_from_clicked_history_and_candidate_features(planted):
    df = pd.read_parquet(planted.interactions_path)
    items = C.read_item_features(planted.item_features_path)
    _, _, test, _ = H.build_examples(df, max_history=20, test_fraction=0.2)
    arrays = E.to_model_arrays(test, max_history=20)
    table = np.zeros((items.item_ids.max() + 1, items.dim), np.float32)
    table[items.item_ids] = items.features  # id -> features, row 0 = padding
    hist = table[arrays[F.CLICKED_ITEMS]]  # [N, L, F]
    mask = (arrays[F.CLICKED_ITEMS] > 0)[..., None]
    profile = (hist * mask).sum(1) / np.maximum(mask.sum(1), 1)
    score = (profile * table[arrays[F.ITEM_ID]]).sum(1)  # no training: mean clicked history . candidate
    assert auc(arrays[F.LABEL], score) > 0.7
