"""Serving signatures of an exported MTIN model (names and dtypes from mtin_tf.features).

- ``serving_default``: ``examples`` string [N], serialized tf.Example as written by ``mtin data build`` (the label
  may be absent); histories of any length are truncated to the most recent L and right-padded.
- ``predict_raw``: the model inputs as dense tensors, for gRPC clients that do not build tf.Example: int64 [N] for
  user_id, item_id, timestamp and int64 [N, L] for the histories (0 = padding).
Both return click_probability [N], logit [N], group_weights [N, s, s] and group_assignment [N, L]; for MTIN, rows
that share (user, impression time, histories) are encoded once (``row_scorer``).
- ``score_candidates``: U users and N candidates each, the user encoded once: user_id, timestamp int64 [U], the
  histories int64 [U, L] and candidate_ids int64 [U, N] → click_probability, logit [U, N] (for MTIN also
  group_weights [U, s, s] and group_assignment [U, L]).
- ``recommend`` (MTIN only): U users, no candidates: user_id, timestamp int64 [U], the histories int64 [U, L] and
  k int64 [U] → the k items of the whole catalogue each user is most likely to click, none of them in the user's
  clicked history (mtin_tf.retrieval: the s interest rows retrieve, MTIN ranks): item_ids int64, click_probability,
  logit, retrieval_score float32 and interest_row int32 [U, K] (K = max k), group_weights [U, s, s] and
  group_assignment [U, L].
TF Serving does not accept ragged tensors, so the signatures take dense or serialized inputs only.
"""
from __future__ import annotations

import tensorflow as tf

from mtin_tf import features as F

DEFAULT_SIGNATURE = "serving_default"
RAW_SIGNATURE = "predict_raw"
SCORE_SIGNATURE = "score_candidates"
RECOMMEND_SIGNATURE = "recommend"
EXAMPLES_INPUT = "examples"


def example_parse_spec():
    """tf.io feature spec of a training/serving tf.Example (histories variable length)."""
    return {spec.name: tf.io.VarLenFeature(tf.int64) if spec.is_history else tf.io.FixedLenFeature([], tf.int64)
            for spec in F.MODEL_INPUTS}


def pad_history(x, max_history: int) -> tf.Tensor:
    """A variable-length history (tf.RaggedTensor, tf.SparseTensor, or dense [B, ?] whose zeros are padding; oldest
    first) → its most recent ``max_history`` entries, right-padded with PADDING_ID: int64 [B, L]. The one TensorFlow
    definition, shared by serving (parse_examples) and the pipeline's Transform; mtin_tf.data.examples.to_model_arrays
    is its NumPy twin."""
    if not isinstance(x, (tf.RaggedTensor, tf.sparse.SparseTensor)):
        x = tf.sparse.from_dense(x)
    if isinstance(x, tf.sparse.SparseTensor):
        x = tf.RaggedTensor.from_sparse(x)
    return tf.cast(x, tf.int64)[:, -max_history:].to_tensor(default_value=F.PADDING_ID, shape=[None, max_history])


def parse_examples(serialized, max_history: int) -> dict:
    """Serialized tf.Example [N] → model inputs: int64 [N] scalars, int64 [N, L] histories (most recent L).

    A history whose item ids and timestamps differ in length in some example is an InvalidArgumentError (TF Serving
    and `mtin serve` answer INVALID_ARGUMENT) naming both features: it cannot be aligned."""
    parsed = tf.io.parse_example(serialized, example_parse_spec())
    ragged = {spec.name: tf.RaggedTensor.from_sparse(parsed[spec.name]) for spec in F.MODEL_INPUTS if spec.is_history}
    checks = [tf.debugging.assert_equal(
        ragged[items].row_lengths(), ragged[times].row_lengths(),
        message=f"tf.Example features {items} and {times} differ in length (each item needs its timestamp)")
        for items, times in F.HISTORY_PAIRS]
    inputs = {}
    with tf.control_dependencies(checks):
        for spec in F.MODEL_INPUTS:
            if spec.is_history:
                inputs[spec.name] = pad_history(ragged[spec.name], max_history)
            else:
                inputs[spec.name] = tf.identity(parsed[spec.name])
    return inputs


def raw_input_signature(max_history: int) -> dict:
    return {spec.name: tf.TensorSpec([None, max_history] if spec.is_history else [None], tf.int64, name=spec.name)
            for spec in F.MODEL_INPUTS}


_HISTORIES = {spec.name for spec in F.MODEL_INPUTS if spec.is_history}


def user_input_signature(max_history: int) -> dict:
    """``score_candidates``' inputs: the user inputs [U] / [U, L] and candidate_ids [U, N]."""
    specs = {k: v for k, v in raw_input_signature(max_history).items() if k in F.USER_INPUT_NAMES}
    specs[F.CANDIDATE_IDS] = tf.TensorSpec([None, None], tf.int64, name=F.CANDIDATE_IDS)
    return specs


def recommend_input_signature(max_history: int) -> dict:
    """``recommend``'s inputs: the user inputs [U] / [U, L] and k [U]."""
    specs = {k: v for k, v in raw_input_signature(max_history).items() if k in F.USER_INPUT_NAMES}
    specs[F.RECOMMEND_K] = tf.TensorSpec([None], tf.int64, name=F.RECOMMEND_K)
    return specs


def distinct_users(inputs: dict):
    """The distinct user rows of a batch of model inputs: ({user input: [D] or [D, L]}, index int [B]) with row b of
    the batch being distinct row index[b]; two rows are the same user row when user, impression time and both
    histories are equal."""
    columns = [tf.cast(inputs[name] if name in _HISTORIES else inputs[name][:, None], tf.int64)
               for name in F.USER_INPUT_NAMES]
    distinct, index = tf.raw_ops.UniqueV2(x=tf.concat(columns, axis=1), axis=tf.constant([0], tf.int64))
    parts = tf.split(distinct, [column.shape[1] for column in columns], axis=1)
    users = {name: part if name in _HISTORIES else part[:, 0] for name, part in zip(F.USER_INPUT_NAMES, parts)}
    return users, index


def model_halves(model):
    """(encode(users) → encoder outputs, score(rows, candidate_ids) → {logit, click_probability}) calling the MTIN
    ``model``'s own layers (mtin_tf.model.encode_user / score_candidates on tensors: no new Keras objects)."""
    from mtin_tf.model import encode_user, has_item_bias, score_candidates

    has_bias = has_item_bias(model)
    return (lambda users: encode_user(model.get_layer, users, report_metrics=False),
            lambda rows, candidate_ids: score_candidates(model.get_layer, rows, candidate_ids, item_bias=has_bias))


_GROUP_OUTPUTS = (F.OUTPUT_GROUP_WEIGHTS, F.OUTPUT_GROUP_ASSIGNMENT)


def row_scorer(model):
    """fn(model inputs [B]) → the model's outputs [B]. For MTIN, each distinct (user, impression time, histories) of
    the batch is encoded once and its candidates scored against the shared rows (the fused model's outputs; a batch
    of one user × N candidates costs one encoding); other models are called as they are."""
    from mtin_tf.model import is_mtin

    if not is_mtin(model):
        return lambda inputs: model(inputs, training=False)
    encode, score = model_halves(model)

    def scored(inputs):
        users, index = distinct_users(inputs)
        encoded = encode(users)
        rows = {key: tf.gather(encoded[key], index) for key in F.USER_STATE if key in encoded}
        out = {key: value[:, 0] for key, value in score(rows, inputs[F.ITEM_ID][:, None]).items()}
        out.update({key: tf.gather(encoded[key], index) for key in _GROUP_OUTPUTS})
        return out

    return scored


def candidates_scorer(model):
    """fn(user inputs [U] / [U, L], candidate_ids [U, N]) → click_probability, logit [U, N] (MTIN: and
    group_weights [U, s, s], group_assignment [U, L]): each user encoded once, its N candidates scored against it.
    A model that does not split (the baselines) is called on the user's row repeated per candidate."""
    from mtin_tf.model import is_mtin

    if is_mtin(model):
        encode, score = model_halves(model)

        def scored(users, candidate_ids):
            encoded = encode(users)
            out = score({key: encoded[key] for key in F.USER_STATE if key in encoded}, candidate_ids)
            out.update({key: encoded[key] for key in _GROUP_OUTPUTS})
            return out
        return scored

    def scored_repeated(users, candidate_ids):
        shape = tf.shape(candidate_ids)
        inputs = {key: tf.repeat(value, shape[1], axis=0) for key, value in users.items()}
        inputs[F.ITEM_ID] = tf.reshape(candidate_ids, [-1])
        out = model(inputs, training=False)
        return {key: tf.reshape(out[key], shape) for key in (F.OUTPUT_LOGIT, F.OUTPUT_PROBABILITY)}
    return scored_repeated


def serving_signatures(model, max_history: int, parse=None) -> dict:
    """{signature name: concrete function} for model.save(signatures=...). ``parse``: serialized tf.Example [N] →
    model inputs for ``serving_default`` (default: parse_examples; the TFX Trainer passes its Transform graph)."""
    candidates = candidates_scorer(model)
    parse = parse or (lambda examples: parse_examples(examples, max_history))
    serve_raw = tf.function(row_scorer(model), input_signature=[raw_input_signature(max_history)])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serve_examples(examples):
        return serve_raw(parse(examples))  # the traced predict_raw graph, called (the model is traced once)

    @tf.function(input_signature=[user_input_signature(max_history)])
    def serve_candidates(inputs):
        users = {key: value for key, value in inputs.items() if key != F.CANDIDATE_IDS}
        return candidates(users, inputs[F.CANDIDATE_IDS])

    signatures = {DEFAULT_SIGNATURE: serve_examples.get_concrete_function(),
                  RAW_SIGNATURE: serve_raw.get_concrete_function(),
                  SCORE_SIGNATURE: serve_candidates.get_concrete_function()}
    from mtin_tf.model import is_mtin

    if is_mtin(model):
        from mtin_tf.retrieval import recommender

        recommend = recommender(model)

        @tf.function(input_signature=[recommend_input_signature(max_history)])
        def serve_recommend(inputs):
            users = {key: value for key, value in inputs.items() if key != F.RECOMMEND_K}
            return recommend(users, inputs[F.RECOMMEND_K], exclusions=users[F.CLICKED_ITEMS])

        signatures[RECOMMEND_SIGNATURE] = serve_recommend.get_concrete_function()
    return signatures
