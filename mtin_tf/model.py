"""build_mtin: the MTIN model from its layers — the one model builder shared by the TFX Trainer and `mtin train` —
and its two halves on the same weights: ``user_encoder`` (user, histories, impression time → each branch's memory
rows) and ``candidate_scorer`` (those rows and N candidate ids → N logits). The fused model is their composition."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.layers.backend import require_legacy_keras
from mtin_tf.layers.branch import BRANCH_SETTINGS, InterestBranch
from mtin_tf.layers.click_level import ClickLevel
from mtin_tf.layers.combiner import ClickCombiner
from mtin_tf.layers.exposure import UNSEEN_SHARE_FACTOR, ExposurePrior
from mtin_tf.layers.pooling import MaskedPooling
from mtin_tf.layers.readout import InterestReadout
from mtin_tf.layers.retrieval_head import RetrievalHead
from mtin_tf.layers.tables import AnchoredMemory, ItemBias, ItemEmbedding, NpyRows, UserMemory

POSITIVE_MEMORY, NEGATIVE_MEMORY = "positive_memory", "negative_memory"
POSITIVE_BRANCH, NEGATIVE_BRANCH = "positive_branch", "negative_branch"
POSITIVE_READOUT, NEGATIVE_READOUT = "positive_readout", "negative_readout"
ITEM_EMBEDDING = "item_embedding"
ITEM_BIAS = "item_bias"
EXPOSURE_PRIOR = "exposure_prior"
RETRIEVAL_HEAD = "retrieval_head"
HISTORY_MEAN, HISTORY_QUERY = "history_mean", "history_query"  # config.history_query's pooling and its map
RETRIEVAL_USER = "retrieval_user"  # config.retrieval_user_row's table of e_u
CLICK_LEVEL = F.OUTPUT_CLICK_LEVEL


def model_inputs(max_history: int, names=F.MODEL_INPUT_NAMES) -> dict:
    """Keras inputs named after mtin_tf.features (those in ``names``): int64 scalars [B], int64 histories [B, L].
    Every model builder starts here, so each fails clearly when mtin_tf.layers are Keras 3 layers."""
    require_legacy_keras("The model builder (mtin_tf.model)")
    return {spec.name: tf_keras.Input(shape=(max_history,) if spec.is_history else (), dtype=tf.int64,
                                      name=spec.name)
            for spec in F.MODEL_INPUTS if spec.name in names}


def regularizer(config: MTINConfig):
    """λ‖·‖² of eq. 12 for dense kernels and tables (None when λ = 0)."""
    return tf_keras.regularizers.L2(config.l2) if config.l2 else None


def item_embedding(config: MTINConfig, item_ids, item_features) -> ItemEmbedding:
    """The ItemEmbedding layer every model shares: the caller's frozen table (not copied), W_e (+ id embedding)."""
    if not isinstance(item_features, NpyRows):  # an NpyRows file is read by chunks as the table is filled
        item_features = np.asarray(item_features, np.float32)
    return ItemEmbedding(len(item_ids), item_features.shape[1], config.embedding_dim,
                         use_id_embedding=config.use_id_embedding, item_ids=item_ids, item_features=item_features,
                         kernel_regularizer=regularizer(config), id_l2=config.l2, name=ITEM_EMBEDDING)


def item_bias(config: MTINConfig, item_ids) -> ItemBias:
    """The per-item logit bias every model adds when config.use_item_bias, under the model's λ‖·‖²."""
    return ItemBias(len(item_ids), item_ids=item_ids, regularizer=regularizer(config), name=ITEM_BIAS)


def exposure_prior(item_ids) -> ExposurePrior:
    """log q_j per item and its learnt weight γ in retrieval (config.exposure_prior); log q_j is 0 until
    set_exposure_prior fills it."""
    return ExposurePrior(len(item_ids), item_ids=item_ids, name=EXPOSURE_PRIOR)


def set_exposure_prior(model, candidate_ids, share) -> None:
    """Fill an MTIN's exposure prior with log q_j: ``candidate_ids`` int [M] the distinct training candidates and
    ``share`` [M] each one's share of the training impressions (mtin_tf.retrieval_task.impression_share); an item
    absent from them (never shown in training, or unknown) gets UNSEEN_SHARE_FACTOR (one half) × the smallest share,
    as in the retrieval objective's log-q correction."""
    layer = model.get_layer(EXPOSURE_PRIOR)
    ids, share = np.asarray(candidate_ids, np.int64), np.asarray(share, np.float64)
    keys = layer.keys.numpy()
    rows = np.minimum(np.searchsorted(keys, ids), max(len(keys) - 1, 0))
    known = (keys[rows] == ids) if len(keys) else np.zeros(len(ids), bool)
    unseen = UNSEEN_SHARE_FACTOR * share.min() if len(share) else 1.0
    prior = np.full(len(keys) + 1, unseen)  # row 0: padding and unknown ids
    prior[rows[known] + 1] = share[known]
    layer.log_share.assign(np.log(prior).astype(np.float32))
    # The same values in the item table's row order: table_rows maps sorted-key index → table row.
    table_rows = model.get_layer(ITEM_EMBEDDING).table_rows.numpy()
    if len(table_rows) != len(keys):
        raise ValueError(f"the exposure prior has {len(keys)} items, the item table {len(table_rows)}")
    in_table_order = np.empty(len(keys), np.float64)
    in_table_order[table_rows] = prior[1:]
    layer.table_log_share.assign(np.log(in_table_order).astype(np.float32))


def has_exposure_prior(model) -> bool:
    """Whether ``model`` stores the exposure prior (config.exposure_prior)."""
    return EXPOSURE_PRIOR in {layer.name for layer in model.layers}


def _branch(config: MTINConfig, name: str, regularizer) -> InterestBranch:
    return InterestBranch(**{key: getattr(config, key) for key in BRANCH_SETTINGS}, kernel_regularizer=regularizer,
                          name=name)


def user_memory(config: MTINConfig, user_ids, name: str) -> UserMemory:
    """A branch's interest memory table M_u: free rows, or (after pretraining) rows anchored to history items."""
    anchors = config.memory_anchors if config.pretrain_memory else 0
    return UserMemory(len(user_ids), config.num_groups, config.embedding_dim, user_ids=user_ids,
                      row_l2=config.memory_row_l2, anchor_size=anchors, name=name)


# (histories, memory, branch, readout, encoder output) of the positive and the negative branch.
BRANCHES = tuple(zip(F.HISTORY_PAIRS, (POSITIVE_MEMORY, NEGATIVE_MEMORY), (POSITIVE_BRANCH, NEGATIVE_BRANCH),
                     (POSITIVE_READOUT, NEGATIVE_READOUT), F.OUTPUT_ROWS))


def encode_user(layer, inputs: dict, *, report_metrics: bool = True) -> dict:
    """The user half of MTIN, given ``layer(name)`` → the model's layer of that name.

    inputs: user_id [B], timestamp [B] (the impression time), the four histories [B, L] (mtin_tf.features).
    Returns {positive_rows, negative_rows: u [B, s, d] (eq. 10), group_weights [B, s, s] and group_assignment [B, L]
    of the positive branch}, click_level [B] (the logit offset of the user's recent click share) when the model
    has that layer (config.click_level), and retrieval_queries [B, s, d] when it has the retrieval head
    (config.retrieval_head): q_p = u_p (I + W_r) (+ b_r, config.retrieval_bias), or u_p itself without the head;
    with the history query (config.history_query) retrieval_queries [B, s + 1, d] holds one more, q_s = x̄ (I + W_h),
    x̄ [B, d] the mean of the known clicked-history embeddings (0 for an empty history); with the user's retrieval row
    (config.retrieval_user_row) e_u [B, d] is added to every query. ``report_metrics``: whether
    the branches update their routing metrics (the training model does; the serving and scoring paths do not)."""
    embed = layer(ITEM_EMBEDDING)
    embedded = {ids_key: embed(inputs[ids_key]) for (ids_key, _), *_ in BRANCHES}
    out = {}
    click_level = _optional_layer(layer, CLICK_LEVEL)
    if click_level is not None:
        out[F.OUTPUT_CLICK_LEVEL] = click_level([inputs[key] for pair in F.HISTORY_PAIRS for key in pair])
    for (ids_key, times_key), memory_name, branch_name, _, rows_key in BRANCHES:
        memory = layer(memory_name)(inputs[F.USER_ID])
        if isinstance(memory, (tuple, list)):  # anchored rows: residual + mean of the past anchors' embeddings
            residual, anchor_ids, anchor_times = memory
            anchors, anchors_known = embed(anchor_ids)
            memory = layer(f"{memory_name}_anchored")([residual, anchors, anchor_times, inputs[F.TIMESTAMP]],
                                                      mask=anchors_known)
        items, known = embedded[ids_key]
        branch = layer(branch_name)
        # The other history, for the routing loss (clicked items against browsed ones, and the reverse).
        other_items, other_known = [v for key, v in embedded.items() if key != ids_key][0]
        extra, mask = ([other_items], (known, other_known)) if branch.routing_loss else ([], known)
        rows, weights, assignment = branch([items, inputs[times_key], inputs[F.TIMESTAMP], memory, *extra],
                                           mask=mask, report_metrics=report_metrics)
        out[rows_key] = rows
        if branch_name == POSITIVE_BRANCH:
            out[F.OUTPUT_GROUP_WEIGHTS], out[F.OUTPUT_GROUP_ASSIGNMENT] = weights, assignment
    head, history_query = _optional_layer(layer, RETRIEVAL_HEAD), _optional_layer(layer, HISTORY_QUERY)
    queries = out[F.OUTPUT_POSITIVE_ROWS] if head is None else head(out[F.OUTPUT_POSITIVE_ROWS])
    if history_query is not None:
        items, known = embedded[F.CLICKED_ITEMS]
        mean = layer(HISTORY_MEAN)(items, mask=known)  # [B, d]
        queries = tf.concat([queries, history_query(mean[:, None, :])], axis=1)  # [B, s + 1, d]
    user_row = _optional_layer(layer, RETRIEVAL_USER)
    if user_row is not None:
        queries = queries + user_row(inputs[F.USER_ID])  # + e_u [B, 1, d] on every query
    if head is not None or history_query is not None or user_row is not None:
        out[F.OUTPUT_RETRIEVAL_QUERIES] = queries
    return out


def retrieval_queries(encoded: dict):
    """What scores items against the catalogue, from encode_user's (or the fused model's) outputs: its
    retrieval_queries [B, s (+ 1), d] when the model has the retrieval head, the history query or the user's retrieval
    row (config.retrieval_head, config.history_query, config.retrieval_user_row), else the positive rows u_p
    [B, s, d]."""
    return encoded.get(F.OUTPUT_RETRIEVAL_QUERIES, encoded.get(F.OUTPUT_POSITIVE_ROWS))


def _optional_layer(layer, name):
    """``layer(name)``, or None when the model has no layer of that name (``layer`` is Model.get_layer, which
    raises ValueError, or a dict's get)."""
    try:
        return layer(name)
    except ValueError:
        return None


def score_candidates(layer, rows: dict, candidate_ids, *, item_bias: bool, with_candidate: bool = False) -> dict:
    """The candidate half: rows {positive_rows, negative_rows} [B, s, d] (and click_level [B] when the user encoder
    gave it) and candidate ids [B] or [B, N] → {logit, click_probability} [B] or [B, N]:
    ŷ = α·P(x_e|H_pos) + β·P(x_e|H_neg) (+ b_item) (+ the user's click level) (section 4.4);
    ``with_candidate`` adds candidate_embedding x_e [B, d] (or [B, N, d]), the lookup the scores used (a second
    lookup would add the id embedding's L2 term twice)."""
    candidate, _ = layer(ITEM_EMBEDDING)(candidate_ids)
    scores = [layer(readout_name)([rows[rows_key], candidate]) for *_, readout_name, rows_key in BRANCHES]
    if item_bias:
        scores.append(layer(ITEM_BIAS)(candidate_ids))
    if F.OUTPUT_CLICK_LEVEL in rows:  # one offset per user, the same for each of its candidates
        level = rows[F.OUTPUT_CLICK_LEVEL]
        scores.append(level[:, None] * tf.ones_like(scores[0]) if candidate_ids.shape.rank == 2 else level)
    logit = layer(F.OUTPUT_LOGIT)(scores)
    out = {F.OUTPUT_LOGIT: logit, F.OUTPUT_PROBABILITY: layer(F.OUTPUT_PROBABILITY)(logit)}
    if with_candidate:
        out[F.OUTPUT_CANDIDATE_EMBEDDING] = candidate
    return out


def build_mtin(config: MTINConfig, item_ids, item_features, user_ids=None, *, compile: bool = True):
    """The MTIN model as a tf_keras functional Model.

    Args:
      config: hyperparameters (MTINConfig).
      item_ids: int [N] raw ids of every item the model may meet; item_features: float [N, F], their feature vectors.
        The table is frozen and saved inside the model; histories and candidates are looked up by raw id.
      user_ids: int [U] raw ids of the users that get their own interest memory; other users share an OOV memory.
      compile: compile with Adam, the eq. 12 loss (sigmoid cross-entropy on the logit) and AUC.

    Inputs (dict, names from mtin_tf.features): user_id [B], item_id [B] (candidate), timestamp [B] (candidate time),
    clicked_item_ids / clicked_timestamps [B, L], browsed_item_ids / browsed_timestamps [B, L] — int64, histories in
    time order, padded with 0. Outputs (dict): logit [B], click_probability [B], group_weights [B, s, s] (w_{p,g} of
    the positive branch, Fig. 6), group_assignment int32 [B, L] (S_j of the clicked history, −1 = no group); with
    config.exposure_prior exposure_log_share [B] (log q_j of the candidate; recommend adds γ log q_j to its
    retrieval score); with config.retrieval_weight > 0 also positive_rows [B, s, d] and candidate_embedding [B, d],
    which the retrieval objective scores (mtin_tf.retrieval_task), and with config.retrieval_head (or
    config.history_query, config.retrieval_user_row) the retrieval queries retrieval_queries [B, s (+ 1), d], which it
    scores instead of the rows.
    The model is ``candidate_scorer(user_encoder(inputs), item_id)`` on the same layers (see those functions).
    """
    user_ids = np.zeros([0], np.int64) if user_ids is None else np.asarray(user_ids)
    reg = regularizer(config)
    embed = item_embedding(config, item_ids, item_features)
    layers = {ITEM_EMBEDDING: embed}
    for *_, memory_name, branch_name, readout_name, _ in BRANCHES:
        layers[memory_name] = user_memory(config, user_ids, memory_name)
        if layers[memory_name].anchor_size:
            layers[f"{memory_name}_anchored"] = AnchoredMemory(name=f"{memory_name}_anchored")
        layers[branch_name] = _branch(config, branch_name, reg)
        layers[readout_name] = InterestReadout(config.readout, config.activation, kernel_regularizer=reg,
                                               name=readout_name)
    if config.use_item_bias:
        layers[ITEM_BIAS] = item_bias(config, item_ids)
    if config.exposure_prior:
        layers[EXPOSURE_PRIOR] = exposure_prior(item_ids)
    if config.retrieval_head:
        layers[RETRIEVAL_HEAD] = RetrievalHead(kernel_regularizer=reg, use_bias=config.retrieval_bias,
                                               name=RETRIEVAL_HEAD)
    if config.history_query:  # the map of the history's mean: a RetrievalHead of its own (one query, not s)
        layers[HISTORY_MEAN] = MaskedPooling("mean", name=HISTORY_MEAN)
        layers[HISTORY_QUERY] = RetrievalHead(kernel_regularizer=reg, name=HISTORY_QUERY)
    if config.retrieval_user_row:  # e_u: one row per user, from 0, under the L2 λ (averaged over the batch)
        layers[RETRIEVAL_USER] = UserMemory(len(user_ids), 1, config.embedding_dim, user_ids=user_ids,
                                            row_l2=config.l2, initializer="zeros", name=RETRIEVAL_USER)
    if config.click_level:
        layers[CLICK_LEVEL] = ClickLevel(config.click_level, name=CLICK_LEVEL)
    layers[F.OUTPUT_LOGIT] = ClickCombiner(config.learnable_branch_weights, dtype="float32", name=F.OUTPUT_LOGIT)
    layers[F.OUTPUT_PROBABILITY] = tf_keras.layers.Activation("sigmoid", dtype="float32", name=F.OUTPUT_PROBABILITY)
    inputs = model_inputs(config.max_history)
    encoded = encode_user(layers.get, inputs)
    # With the retrieval objective, also what it scores (mtin_tf.retrieval_task): x_e and the clicked branch's rows.
    outputs = score_candidates(layers.get, encoded, inputs[F.ITEM_ID], item_bias=config.use_item_bias,
                               with_candidate=bool(config.retrieval_weight))
    outputs.update({k: encoded[k] for k in (F.OUTPUT_GROUP_WEIGHTS, F.OUTPUT_GROUP_ASSIGNMENT)})
    if config.exposure_prior:  # an output, so that the layer (and log q) is part of the saved model
        outputs[F.OUTPUT_EXPOSURE] = layers[EXPOSURE_PRIOR](inputs[F.ITEM_ID])
    if config.retrieval_weight:
        outputs[F.OUTPUT_POSITIVE_ROWS] = encoded[F.OUTPUT_POSITIVE_ROWS]
        if F.OUTPUT_RETRIEVAL_QUERIES in encoded:
            outputs[F.OUTPUT_RETRIEVAL_QUERIES] = encoded[F.OUTPUT_RETRIEVAL_QUERIES]
    model = tf_keras.Model(inputs, outputs, name="mtin")
    if compile:
        compile_model(model, config)
    return model


def is_mtin(model) -> bool:
    """Whether ``model`` is an MTIN built by build_mtin (or reloaded from one), which splits into encoder and scorer."""
    return {POSITIVE_BRANCH, POSITIVE_READOUT} <= {layer.name for layer in model.layers}


def has_item_bias(model) -> bool:
    """Whether ``model`` has the per-item logit bias layer (config.use_item_bias)."""
    return ITEM_BIAS in {layer.name for layer in model.layers}


def user_encoder(model) -> tf_keras.Model:
    """The user half of an MTIN ``model`` as a Model on the same layers (weights shared, not copied).

    Inputs: user_id, timestamp int64 [B] and the four histories int64 [B, L]. Outputs: positive_rows,
    negative_rows float [B, s, d] (each branch's updated memory rows u_p), group_weights [B, s, s],
    group_assignment int32 [B, L] (as the fused model's), click_level [B] when the model has it, retrieval_queries
    [B, s (+ 1), d] when it has the retrieval head, the history query or the user's retrieval row (encode_user)."""
    check_mtin(model)
    inputs = model_inputs(int(model.input[F.CLICKED_ITEMS].shape[-1]), names=F.USER_INPUT_NAMES)
    return tf_keras.Model(inputs, encode_user(model.get_layer, inputs), name="mtin_user_encoder")


def candidate_scorer(model) -> tf_keras.Model:
    """The candidate half of an MTIN ``model`` as a Model on the same layers.

    Inputs: positive_rows, negative_rows float [B, s, d] (user_encoder's outputs; click_level float [B] too when the
    model has it) and candidate_ids int64 [B, N].
    Outputs: logit, click_probability float [B, N], each candidate scored against its row's user."""
    check_mtin(model)
    branch = model.get_layer(POSITIVE_BRANCH)
    s, d = branch.num_groups, int(model.get_layer(ITEM_EMBEDDING).embedding_dim)
    rows = {key: tf_keras.Input(shape=(s, d), name=key) for *_, key in BRANCHES}
    if CLICK_LEVEL in {layer.name for layer in model.layers}:
        rows[F.OUTPUT_CLICK_LEVEL] = tf_keras.Input(shape=(), name=F.OUTPUT_CLICK_LEVEL)
    candidates = tf_keras.Input(shape=(None,), dtype=tf.int64, name=F.CANDIDATE_IDS)
    outputs = score_candidates(model.get_layer, rows, candidates, item_bias=has_item_bias(model))
    return tf_keras.Model({**rows, F.CANDIDATE_IDS: candidates}, outputs, name="mtin_candidate_scorer")


def check_mtin(model):
    """Raise ValueError unless ``model`` is an MTIN (is_mtin): the user encoder, candidate scorer and the catalogue
    recommender (mtin_tf.retrieval) need its branches and readouts."""
    if not is_mtin(model):
        raise ValueError(f"model {model.name!r} is not an MTIN from build_mtin (no {POSITIVE_BRANCH!r} and "
                         f"{POSITIVE_READOUT!r} layers): only MTIN splits into a user encoder and a candidate scorer")


def compile_model(model, config: MTINConfig):
    """Adam (or config.optimizer), eq. 12's sigmoid cross-entropy on the logit output, AUC on the same output."""
    optimizer = tf_keras.optimizers.get({"class_name": config.optimizer,
                                        "config": {"learning_rate": config.learning_rate}})
    model.compile(optimizer=optimizer,
                  loss={F.OUTPUT_LOGIT: tf_keras.losses.BinaryCrossentropy(from_logits=True)},
                  metrics={F.OUTPUT_LOGIT: [tf_keras.metrics.AUC(from_logits=True, name="auc")]},
                  jit_compile=config.jit_compile)
    return model
