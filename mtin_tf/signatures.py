"""Serving signatures of an exported MTIN model (names and dtypes from mtin_tf.features).

- ``serving_default``: ``examples`` string [N], serialized tf.Example as written by ``mtin data build`` (the label
  may be absent); histories of any length are truncated to the most recent L and right-padded.
- ``predict_raw``: the model inputs as dense tensors, for gRPC clients that do not build tf.Example: int64 [N] for
  user_id, item_id, timestamp and int64 [N, L] for the histories (0 = padding).
Both return click_probability [N], logit [N], group_weights [N, s, s] and group_assignment [N, L].
TF Serving does not accept ragged tensors, so both signatures take dense or serialized inputs only.
"""
from __future__ import annotations

import tensorflow as tf

from mtin_tf import features as F

DEFAULT_SIGNATURE = "serving_default"
RAW_SIGNATURE = "predict_raw"
EXAMPLES_INPUT = "examples"


def example_parse_spec():
    """tf.io feature spec of a training/serving tf.Example (histories variable length)."""
    return {spec.name: tf.io.VarLenFeature(tf.int64) if spec.is_history else tf.io.FixedLenFeature([], tf.int64)
            for spec in F.MODEL_INPUTS}


def parse_examples(serialized, max_history: int) -> dict:
    """Serialized tf.Example [N] → model inputs: int64 [N] scalars, int64 [N, L] histories (most recent L)."""
    parsed = tf.io.parse_example(serialized, example_parse_spec())
    inputs = {}
    for spec in F.MODEL_INPUTS:
        value = parsed[spec.name]
        if spec.is_history:
            value = tf.RaggedTensor.from_sparse(value)[:, -max_history:].to_tensor(
                default_value=F.PADDING_ID, shape=[None, max_history])
        inputs[spec.name] = value
    return inputs


def raw_input_signature(max_history: int) -> dict:
    return {spec.name: tf.TensorSpec([None, max_history] if spec.is_history else [None], tf.int64, name=spec.name)
            for spec in F.MODEL_INPUTS}


def serving_signatures(model, max_history: int) -> dict:
    """{signature name: concrete function} for model.save(signatures=...)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serve_examples(examples):
        return model(parse_examples(examples, max_history), training=False)

    @tf.function(input_signature=[raw_input_signature(max_history)])
    def serve_raw(inputs):
        return model(inputs, training=False)

    return {DEFAULT_SIGNATURE: serve_examples.get_concrete_function(),
            RAW_SIGNATURE: serve_raw.get_concrete_function()}
