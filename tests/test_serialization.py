"""Every object this project registers with Keras serialization (layers and losses) survives get_config →
from_config → get_config, taken from the models that use it (MTIN in four configurations and every baseline), and
none is left out: a class registered later without a model here fails the coverage check. Whole models saving and
reloading with equal scores are tested in test_model.py, test_export.py and test_baselines.py."""
import json

import numpy as np
import tf_keras

from mtin_tf.baselines import BUILDERS
from mtin_tf.config import MTINConfig
from mtin_tf.model import build_mtin

PACKAGE = "mtin>"


def _table():
    rng = np.random.default_rng(0)
    return np.arange(1, 31) * 10, rng.normal(size=(30, 5)).astype(np.float32), np.arange(1, 6)


def _models():
    items, features, users = _table()
    base = dict(embedding_dim=8, num_masks=2, num_groups=2, max_history=6)
    for overrides in (dict(), dict(readout="target", routing_loss=0.5), dict(readout="paper", memory_anchors=0,
                                                                              use_item_bias=False),
                      dict(use_routing=False, gated_update=True)):
        yield build_mtin(MTINConfig(**base, **overrides), items, features, users, compile=True)
    for builder in BUILDERS.values():
        yield builder(MTINConfig(**base), items, features, users, compile=True)


def _objects(model):
    """Every layer of ``model`` (nested ones too) and the losses it is compiled with."""
    seen = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        seen.setdefault(id(layer), layer)
    losses = model.loss.values() if isinstance(model.loss, dict) else [model.loss]
    return list(seen.values()) + [loss for loss in losses if loss is not None]


def _registered_name(obj):
    name = tf_keras.saving.get_registered_name(type(obj))
    return name if name.startswith(PACKAGE) else None


def test_every_registered_object_round_trips_through_its_config():
    registered = {name for name in tf_keras.saving.get_custom_objects() if name.startswith(PACKAGE)}
    covered = set()
    for model in _models():
        for obj in _objects(model):
            name = _registered_name(obj)
            if name is None:
                continue
            config = obj.get_config()
            clone = tf_keras.saving.get_registered_object(name).from_config(json.loads(json.dumps(config)))
            assert type(clone) is type(obj), name
            assert json.dumps(clone.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True), name
            covered.add(name)
    assert registered and covered == registered, f"registered but used by no model here: {registered - covered}"
