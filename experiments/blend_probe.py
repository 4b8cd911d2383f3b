"""Does MTIN's click logit help rank the catalogue pool its interest rows retrieve? Validation Recall@50 of
``recommend``'s pool re-ranked by retrieval score + λ · click logit.

``.venv/bin/python experiments/blend_probe.py DATASET SEED`` (run from the repository root) trains MTIN at the
defaults of docs/EXPERIMENTS.md "2026-12-06 (8)" on train with early stopping on validation (the config's epochs,
patience 2: the runs `mtin experiment` trains), asks ``recommend`` for the top P items of every validation query
(P = 300: the rows' merged pool ranked by the retrieval score), then re-ranks the first D of them (D = 100, 300) by
retrieval score + λ · click logit and prints the validation catalogue Recall@50 for each λ.

An analysis for docs/EXPERIMENTS.md, not part of the library.
"""
import json
import sys

import mtin_tf  # noqa: F401  (before TensorFlow: importing it sets TF_USE_LEGACY_KERAS=1)

# isort: split
import numpy as np

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.experiment.runner import base_for, load_dataset
from mtin_tf.metrics import retrieval_recall_hit_rate
from mtin_tf.retrieval import catalogue_queries, recommend_all
from mtin_tf.train import train_mtin

dataset, seed = sys.argv[1], int(sys.argv[2])
config = json.load(open("experiments/paper.json"))
base = {**base_for(config, dataset), "retrieval_weight": 1.0, "retrieval_head": True, "click_level": 20,
        "embedding_dim": 64 if dataset.startswith("movielens") else 32, "seed": seed}
mtin_config = MTINConfig.from_dict(base)
ds = load_dataset(dataset, config["datasets"][dataset], mtin_config.max_history)
model, _ = train_mtin(mtin_config, ds.train, ds.item_ids, ds.item_features, eval_arrays=ds.validation, verbose=0)

users, exclusions, relevant_users, relevant_items = catalogue_queries([ds.train], ds.validation)
pool = 300
out = recommend_all(model, users, exclusions, pool, keys=(F.OUTPUT_ITEM_IDS, F.OUTPUT_RETRIEVAL_SCORE, F.OUTPUT_LOGIT))
ids, retrieval, logit = (out[k] for k in (F.OUTPUT_ITEM_IDS, F.OUTPUT_RETRIEVAL_SCORE, F.OUTPUT_LOGIT))
print(f"{dataset} seed {seed}: retrieval score std {retrieval[np.isfinite(retrieval)].std():.3f}, "
      f"logit std {logit[np.isfinite(logit)].std():.3f}", flush=True)
for depth in (100, 300):
    for lam in (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0):
        blended = retrieval[:, :depth] + lam * logit[:, :depth]
        order = np.argsort(-np.where(np.isfinite(blended), blended, -np.inf), axis=1, kind="stable")[:, :50]
        top = np.take_along_axis(ids[:, :depth], order, axis=1)
        recall = retrieval_recall_hit_rate(top, relevant_users, relevant_items, (50,))["recall@50"]
        print(f"{dataset} seed {seed} pool {depth} lambda {lam}: validation Recall@50 {recall:.4f}", flush=True)
