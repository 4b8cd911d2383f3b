"""Versioned SavedModel export with the tf.Example, raw-tensor and score_candidates serving signatures."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from model_support import L, raw_batch, small_config

from mtin_tf import features as F
from mtin_tf.baselines import build_din
from mtin_tf.data.examples import serialize_example
from mtin_tf.export import export_saved_model, latest_version
from mtin_tf.model import build_mtin
from mtin_tf.signatures import (
    DEFAULT_SIGNATURE,
    EXAMPLES_INPUT,
    RAW_SIGNATURE,
    RECOMMEND_SIGNATURE,
    SCORE_SIGNATURE,
)


def _table():
    rng = np.random.default_rng(0)
    return rng.permutation(np.arange(1, 41)) * 1000, rng.normal(size=(40, 6)).astype(np.float32), np.arange(1, 11) * 7


# What production exports: the attention readout, id embeddings and item bias, anchored memory rows, routing under XLA.
CONFIG = dict(readout="attention", use_id_embedding=True, use_item_bias=True, pretrain_memory=True, memory_anchors=2,
              jit_routing=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A DIN exported as version 1, then an MTIN (trained-looking id embeddings, so that a row mix-up would show) as
    the next version of the same base: each model, its path, tf.saved_model.load and tf_keras.models.load_model of
    it. One export per model for every test of this file."""
    table = _table()
    base = str(tmp_path_factory.mktemp("export") / "models")
    out = {}
    for name, builder, version in (("din", build_din, 1), ("mtin", build_mtin, None)):
        model = builder(small_config(**CONFIG), *table)
        embed = model.get_layer("item_embedding")
        embed.id_embedding.assign(np.random.default_rng(3).normal(size=embed.id_embedding.shape))
        path = export_saved_model(model, base, version=version)
        out[name] = dict(model=model, path=path, saved=tf.saved_model.load(path),
                         keras=tf_keras.models.load_model(path))
    return table, base, out


def test_export_writes_numeric_versions_with_every_signature(exported):
    table, base, models = exported
    model, first, second = models["mtin"]["model"], models["din"]["path"], models["mtin"]["path"]
    x = raw_batch(np.random.default_rng(1), table)
    want = model(x)
    assert os.path.basename(first) == "1" and int(os.path.basename(second)) > 1
    assert latest_version(base) == second
    assert sorted(os.listdir(base)) == sorted(["1", os.path.basename(second)])  # no staging directory left behind

    loaded = models["mtin"]["saved"]
    assert set(loaded.signatures) == {DEFAULT_SIGNATURE, RAW_SIGNATURE, SCORE_SIGNATURE, RECOMMEND_SIGNATURE}
    raw = loaded.signatures[RAW_SIGNATURE](**{k: tf.constant(v) for k, v in x.items()})
    for key in (F.OUTPUT_PROBABILITY, F.OUTPUT_LOGIT, F.OUTPUT_GROUP_WEIGHTS, F.OUTPUT_GROUP_ASSIGNMENT):
        np.testing.assert_allclose(raw[key].numpy(), want[key].numpy(), atol=1e-5)

    # tf.Example: unpadded histories, one longer than L (the most recent L are kept), no label.
    examples = []
    for row in range(len(x[F.USER_ID])):
        ex = {spec.name: x[spec.name][row] for spec in F.MODEL_INPUTS}
        for items_key, times_key in F.HISTORY_PAIRS:
            keep = x[items_key][row] != 0
            ex[items_key], ex[times_key] = x[items_key][row][keep], x[times_key][row][keep]
        ex[F.LABEL] = 0
        examples.append(ex)
    # One more example whose clicked history is L + 3 long: the signature keeps the most recent L.
    long = dict(examples[0])
    long[F.CLICKED_ITEMS] = np.sort(table[0])[: L + 3]
    long[F.CLICKED_TIMES] = np.arange(1, L + 4) * 100
    expected = {k: v[:1].copy() for k, v in x.items()}
    expected[F.CLICKED_ITEMS] = long[F.CLICKED_ITEMS][None, -L:]
    expected[F.CLICKED_TIMES] = long[F.CLICKED_TIMES][None, -L:]
    serialized = tf.constant([serialize_example(e) for e in examples + [long]])
    by_example = loaded.signatures[DEFAULT_SIGNATURE](**{EXAMPLES_INPUT: serialized})
    np.testing.assert_allclose(by_example[F.OUTPUT_PROBABILITY].numpy()[:-1], want[F.OUTPUT_PROBABILITY].numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(by_example[F.OUTPUT_PROBABILITY].numpy()[-1],
                               model(expected)[F.OUTPUT_PROBABILITY].numpy()[0], atol=1e-5)

    # The same directory reloads as the Keras model with its layers (what TFMA needs).
    keras_model = models["mtin"]["keras"]
    np.testing.assert_allclose(keras_model(x)[F.OUTPUT_LOGIT].numpy(), want[F.OUTPUT_LOGIT].numpy(), atol=1e-6)


@pytest.mark.parametrize("name", ["mtin", "din"])
def test_export_carries_the_pre_projected_item_table_with_equal_scores(exported, name):
    table, _, models = exported
    model, served, signatures = models[name]["model"], models[name]["keras"], models[name]["saved"].signatures
    x = raw_batch(np.random.default_rng(1), table)
    x[F.ITEM_ID][:3] = [999_999, 0, x[F.ITEM_ID][3]]  # an unknown candidate and a padding id score as before too
    want = model(x)[F.OUTPUT_LOGIT].numpy()
    layer = served.get_layer("item_embedding")
    assert layer.projected and tuple(layer.table.shape) == (40, small_config(**CONFIG).embedding_dim)
    assert not any("feature_table" in v.name or "feature_projection" in v.name for v in served.variables)
    np.testing.assert_allclose(served(x)[F.OUTPUT_LOGIT].numpy(), want, atol=1e-5)
    raw = signatures[RAW_SIGNATURE](**{k: tf.constant(v) for k, v in x.items()})
    np.testing.assert_allclose(raw[F.OUTPUT_LOGIT].numpy(), want, atol=1e-5)
    # score_candidates: each row's user against [its candidate, row 0's candidate] (DIN repeats the user's row).
    candidates = np.stack([x[F.ITEM_ID], np.full_like(x[F.ITEM_ID], x[F.ITEM_ID][0])], axis=1)
    by_user = signatures[SCORE_SIGNATURE](**{k: tf.constant(x[k]) for k in F.USER_INPUT_NAMES},
                                          candidate_ids=tf.constant(candidates))
    np.testing.assert_allclose(by_user[F.OUTPUT_LOGIT].numpy()[:, 0], want, atol=1e-5)
    np.testing.assert_allclose(by_user[F.OUTPUT_LOGIT].numpy()[:, 1],
                               model({**x, F.ITEM_ID: candidates[:, 1]})[F.OUTPUT_LOGIT].numpy(), atol=1e-5)


_EXTRA_WEIGHT = {"on": False}


@tf_keras.saving.register_keras_serializable(package="test_export")
class _Grows(tf_keras.layers.Layer):
    """A layer that creates one more weight when _EXTRA_WEIGHT is on: a model saved without it stands for one
    exported by an older mtin-tf (before ItemEmbedding's item_table_ids, say)."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=[1], initializer="ones")
        if _EXTRA_WEIGHT["on"]:
            self.extra = self.add_weight(name="extra", shape=[1], initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        return x * self.w


def test_a_model_saved_with_other_weights_is_refused_with_what_to_do(tmp_path):
    from mtin_tf.export import load_keras_model

    inputs = tf_keras.Input(shape=(1,))
    tf_keras.Model(inputs, _Grows()(inputs)).save(str(tmp_path / "old"), save_format="tf")
    assert load_keras_model(str(tmp_path / "old")) is not None  # the same layers: it loads
    _EXTRA_WEIGHT["on"] = True
    try:
        with pytest.raises(ValueError, match=r"cannot be loaded as a Keras model .*extra.*--signature predict_raw"):
            load_keras_model(str(tmp_path / "old"))
    finally:
        _EXTRA_WEIGHT["on"] = False
