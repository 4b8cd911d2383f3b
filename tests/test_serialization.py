"""Every object this project registers with Keras serialization (layers and losses), one test each: it survives
get_config → from_config → get_config, taken from the models that use it (MTIN in four configurations and every
baseline), and the first model holding it saves to a .keras file and reloads with an object of the same class and
config and the same outputs. None is left out: the parameters are the registry itself, so a class registered
later without a model here fails. Training and reloading whole models with equal scores is tested in
test_model.py, test_export.py and test_baselines.py."""
import json

import numpy as np
import pytest
import tf_keras

import mtin_tf.model  # noqa: F401 - registers the objects of the model module
from mtin_tf import features as F
from mtin_tf.baselines import BUILDERS
from mtin_tf.config import MTINConfig
from mtin_tf.model import build_mtin

PACKAGE = "mtin>"
REGISTERED = sorted(name for name in tf_keras.saving.get_custom_objects() if name.startswith(PACKAGE))
LENGTH = 6


def _table():
    rng = np.random.default_rng(0)
    return np.arange(1, 31) * 10, rng.normal(size=(30, 5)).astype(np.float32), np.arange(1, 6)


def _models():
    items, features, users = _table()
    base = dict(embedding_dim=8, num_masks=2, num_groups=2, max_history=LENGTH)
    for overrides in (dict(retrieval_head=True, retrieval_bias=True, history_query=True, retrieval_user_row=True),
                      dict(readout="target", routing_loss=0.5),
                      dict(readout="paper", memory_anchors=0, use_item_bias=False),
                      dict(use_routing=False, gated_update=True)):
        yield build_mtin(MTINConfig(**base, **overrides), items, features, users, compile=True)
    for builder in BUILDERS.values():
        yield builder(MTINConfig(**base), items, features, users, compile=True)


def _batch():
    """A small batch of MTIN's inputs with padding, an unknown item (7) and an unknown user (9)."""
    items, _, _ = _table()
    rng = np.random.default_rng(1)
    x = {F.USER_ID: np.array([1, 2, 9]), F.ITEM_ID: np.array([10, 20, 7]), F.TIMESTAMP: np.array([100, 200, 300])}
    for ids_key, times_key in F.HISTORY_PAIRS:
        ids = rng.choice(np.append(items, 7), (3, LENGTH))
        ids[0, 3:] = 0
        x[ids_key], x[times_key] = ids, np.sort(rng.integers(1, 90, (3, LENGTH)), 1) * (ids > 0)
    return {k: np.asarray(v, np.int64) for k, v in x.items()}


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


def _config(obj):
    return json.dumps(obj.get_config(), sort_keys=True)


@pytest.fixture(scope="module")
def holders(tmp_path_factory):
    """registered name → [every object of that class in the models], the first model holding one, that model
    saved to a .keras file and reloaded; only the models holding a name no earlier model held are saved."""
    found, directory = {}, tmp_path_factory.mktemp("saved")
    for i, model in enumerate(_models()):
        objects = [(name, obj) for obj in _objects(model) if (name := _registered_name(obj))]
        new = {name for name, _ in objects} - set(found)
        loaded = None
        if new:
            model.save(directory / f"{i}.keras")
            loaded = tf_keras.models.load_model(directory / f"{i}.keras")
        for name, obj in objects:
            found.setdefault(name, ([], model, loaded))[0].append(obj)
    return found


@pytest.mark.parametrize("name", REGISTERED)
def test_the_registered_object_round_trips_through_its_config_and_a_saved_model(name, holders):
    assert name in holders, f"{name} is registered but used by no model here"
    objects, model, loaded = holders[name]
    for obj in objects:
        config = obj.get_config()
        clone = tf_keras.saving.get_registered_object(name).from_config(json.loads(json.dumps(config)))
        assert type(clone) is type(obj), name
        assert _config(clone) == _config(obj), name
    # The saved model brings the object back: same class and config, and the model's outputs are unchanged.
    reloaded = [obj for obj in _objects(loaded) if _registered_name(obj) == name]
    assert reloaded and all(type(obj) is type(objects[0]) for obj in reloaded), name
    assert {_config(obj) for obj in reloaded} <= {_config(obj) for obj in objects}, name
    x = _batch()
    want, got = model(x), loaded(x)
    for key in (F.OUTPUT_LOGIT, F.OUTPUT_PROBABILITY):
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=1e-5, atol=1e-6)
