"""Where do MTIN's two objectives peak? Validation click AUC and catalogue Recall@50 after every epoch.

``.venv/bin/python experiments/epoch_probe.py DATASET SEED [EPOCHS] [two_tower | two_tower_no_user]`` (DATASET a name in
experiments/paper.json, run from the repository root) trains MTIN at the defaults of docs/EXPERIMENTS.md "2026-12-06
(8)" (the config's base and the dataset's "set", retrieval objective w = 1 with the retrieval head, click level K = 20;
d = 64 on MovieLens-100K, the size its validation chose) on train for EPOCHS epochs (default 8) with no early stopping,
and prints after each epoch the validation click AUC (Keras's, the early-stopping monitor), the catalogue Recall@50 of
``recommend`` on the validation queries (mtin_tf.retrieval.catalogue_metrics, train as the rows before) and the
validation losses (the ranking loss and the in-batch retrieval term). The first epochs are the runs `mtin experiment`
trains (same seed, same data order): their numbers equal the cached runs' at the epoch early stopping restored. With
``two_tower`` last it trains the TFRS two-tower (mtin_tf.two_tower) at the same size for EPOCHS epochs instead and
prints its validation catalogue Recall@50 after each (the figure its early stopping monitors); ``two_tower_no_user``
gives it no user id rows (every user shares the unknown user's row, so its query reads the clicked history's mean
alone).

An analysis for docs/EXPERIMENTS.md, not part of the library.
"""
import json
import sys

import mtin_tf  # noqa: F401  (before TensorFlow: importing it sets TF_USE_LEGACY_KERAS=1)

# isort: split
import tf_keras

from mtin_tf.config import MTINConfig
from mtin_tf.experiment.runner import base_for, load_dataset
from mtin_tf.retrieval import catalogue_metrics
from mtin_tf.train import EVAL_AUC, train_mtin

dataset, seed = sys.argv[1], int(sys.argv[2])
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 8
two_tower = sys.argv[4] if len(sys.argv) > 4 else None
config = json.load(open("experiments/paper.json"))
base = {**base_for(config, dataset), "retrieval_weight": 1.0, "retrieval_head": True, "click_level": 20,
        "embedding_dim": 64 if dataset.startswith("movielens") else 32, "epochs": epochs, "seed": seed}
mtin_config = MTINConfig.from_dict(base)
ds = load_dataset(dataset, config["datasets"][dataset], mtin_config.max_history)


class PerEpoch(tf_keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        ranker = getattr(self.model, "ranker", self.model)  # the training wrapper's ranker (MultiTaskTraining)
        recall = catalogue_metrics(ranker, [ds.train], ds.validation, ks=(50,))["retrieval_recall@50"]
        print(f"{dataset} seed {seed} epoch {epoch + 1}: validation AUC {logs[EVAL_AUC]:.4f}, catalogue Recall@50 "
              f"{recall:.4f}, ranking loss {logs['val_logit_loss']:.4f}, retrieval loss "
              f"{logs['val_retrieval_loss']:.4f}", flush=True)


if two_tower:
    import numpy as np

    from mtin_tf.two_tower import VALIDATION_METRIC, train_two_tower

    assert two_tower in ("two_tower", "two_tower_no_user"), two_tower
    users = np.zeros([0], np.int64) if two_tower == "two_tower_no_user" else None
    _, history = train_two_tower(mtin_config, ds.train, ds.item_ids, ds.item_features, validation_arrays=ds.validation,
                                 patience=epochs, user_ids=users)
    for epoch, recall in enumerate(history.history[VALIDATION_METRIC]):
        print(f"{dataset} seed {seed} {two_tower} epoch {epoch + 1}: catalogue Recall@50 {recall:.4f}", flush=True)
    sys.exit(0)
train_mtin(mtin_config, ds.train, ds.item_ids, ds.item_features, eval_arrays=ds.validation, verbose=0,
           patience=epochs, callbacks=[PerEpoch()])
