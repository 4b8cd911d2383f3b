"""Which query of MTIN's rows retrieves the catalogue best? Validation Recall@K, post hoc on one trained model.

``.venv/bin/python experiments/retrieval_probe.py DATASET SEED`` (DATASET a name in experiments/paper.json, run from
the repository root) trains MTIN at the defaults of docs/EXPERIMENTS.md "2026-12-06 (5)" (the config's base and the
dataset's "set", retrieval objective w = 1, click level K = 20) on train, early-stopped on validation, then scores the
validation queries of mtin_tf.retrieval.catalogue_queries against the whole catalogue with each of:

- ``max rows + bias``: max_p u_p · x_j + γ log q_j — what ``recommend`` ranks by (the library's figure is printed
  too: the two must agree);
- the same without the exposure prior, with the mean of the rows, or with a log-sum-exp over the rows at T;
- MTIN's click logit of every item, alone and added to the retrieval score (raw, or both standardised per user).

An analysis for docs/EXPERIMENTS.md, not part of the library.
"""
import json
import sys

import mtin_tf  # noqa: F401  (before TensorFlow: importing it sets TF_USE_LEGACY_KERAS=1)

# isort: split
import numpy as np
import tensorflow as tf

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.experiment.runner import base_for, load_dataset
from mtin_tf.metrics import retrieval_recall_hit_rate
from mtin_tf.model import EXPOSURE_PRIOR, ITEM_EMBEDDING, build_mtin
from mtin_tf.retrieval import catalogue_metrics, catalogue_queries
from mtin_tf.signatures import model_halves
from mtin_tf.train import train_mtin

dataset, seed = sys.argv[1], int(sys.argv[2])
config = json.load(open("experiments/paper.json"))
base = {**base_for(config, dataset), "retrieval_weight": 1.0, "click_level": 20, "seed": seed}
ds = load_dataset(dataset, config["datasets"][dataset], base["max_history"])
model, history = train_mtin(MTINConfig.from_dict(base), ds.train, ds.item_ids, ds.item_features,
                            eval_arrays=ds.validation, builder=build_mtin, verbose=0, patience=1)
print("val AUC curve", history.history["val_logit_auc"])
print("library", {k: round(v, 4) for k, v in catalogue_metrics(model, [ds.train], ds.validation).items()
                  if "@50" in k})
users, exclusions, rel_u, rel_i = catalogue_queries([ds.train], ds.validation)
encode, score = model_halves(model)
x, ids = model.get_layer(ITEM_EMBEDDING).catalogue()
bias = model.get_layer(EXPOSURE_PRIOR).catalogue_bias().numpy()
x, ids = x.numpy(), ids.numpy()
S, logits = [], []
for start in range(0, len(exclusions), 128):
    batch = {k: tf.constant(v[start:start + 128]) for k, v in users.items()}
    enc = encode(batch)
    rows = enc[F.OUTPUT_POSITIVE_ROWS].numpy()
    S.append(np.einsum("usd,nd->usn", rows, x))
    n = len(rows)
    cand = tf.constant(np.tile(ids[None], [n, 1]))
    logits.append(score(enc, cand)[F.OUTPUT_LOGIT].numpy())
S, logits = np.concatenate(S), np.concatenate(logits)
excluded = np.zeros(S[:, 0].shape, bool)
pos = {int(i): j for j, i in enumerate(ids)}
for u, row in enumerate(exclusions):
    for i in row[row != 0]:
        if int(i) in pos:
            excluded[u, pos[int(i)]] = True


def recall(score_matrix):
    s = np.where(excluded, -np.inf, score_matrix)
    top = np.argsort(-s, axis=1, kind="stable")[:, :100]
    out = retrieval_recall_hit_rate(ids[top], rel_u, rel_i, (20, 50, 100))
    return f"R@20 {out['recall@20']:.4f} R@50 {out['recall@50']:.4f} R@100 {out['recall@100']:.4f}"


mx = S.max(1)
print("max rows + bias       ", recall(mx + bias))
print("max rows              ", recall(mx))
print("mean rows + bias      ", recall(S.mean(1) + bias))
for t in (0.5, 1.0, 2.0):
    lse = t * np.log(np.exp((S - mx[:, None]) / t).sum(1)) + mx
    print(f"lse T={t} + bias      ", recall(lse + bias))
print("click logit           ", recall(logits))
for lam in (0.1, 0.3, 1.0):
    print(f"max+bias + {lam}·logit  ", recall(mx + bias + lam * logits))
z = lambda a: (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-9)
for lam in (0.25, 0.5, 1.0):
    print(f"z(max+bias) + {lam}·z(logit)", recall(z(mx + bias) + lam * z(logits)))
