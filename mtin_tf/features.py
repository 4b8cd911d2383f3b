"""The one source of truth for feature names, dtypes and shapes.

The schema files in ``schemas/``, the data readers and history builder, the TFX pipeline, the model's inputs and the
serving signatures all take their names from here; a test checks that ``schemas/`` agrees with this module.

A training example (tf.Example) describes one impression: a user, a candidate item shown at ``timestamp``, whether it
was clicked, and the user's interactions strictly before it, split into clicked and browsed-not-clicked histories.
Histories are in time order (oldest first), hold at most ``max_history`` (L) items each, and in model inputs are padded
on the right with item id 0 / timestamp 0 (0 is never a real item id).
"""
from __future__ import annotations

import dataclasses

# Raw interaction log: user_id, item_id, timestamp, click.
USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
CLICK = "click"
INTERACTION_COLUMNS = (USER_ID, ITEM_ID, TIMESTAMP, CLICK)

# Item features: item_id, a dense float vector, optional category.
ITEM_FEATURES = "features"
ITEM_CATEGORY = "category"

# Training examples: the candidate is (ITEM_ID, TIMESTAMP); the label is CLICK.
LABEL = CLICK
CLICKED_ITEMS = "clicked_item_ids"
CLICKED_TIMES = "clicked_timestamps"
BROWSED_ITEMS = "browsed_item_ids"
BROWSED_TIMES = "browsed_timestamps"

PADDING_ID = 0
DEFAULT_MAX_HISTORY = 50


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    name: str
    dtype: str  # "int64" or "float32"
    is_history: bool  # a list of up to L values, else one value per example


# Every model input, in the order the raw-tensor serving signature lists them.
MODEL_INPUTS = (
    FeatureSpec(USER_ID, "int64", False),
    FeatureSpec(ITEM_ID, "int64", False),
    FeatureSpec(TIMESTAMP, "int64", False),
    FeatureSpec(CLICKED_ITEMS, "int64", True),
    FeatureSpec(CLICKED_TIMES, "int64", True),
    FeatureSpec(BROWSED_ITEMS, "int64", True),
    FeatureSpec(BROWSED_TIMES, "int64", True),
)
MODEL_INPUT_NAMES = tuple(f.name for f in MODEL_INPUTS)
# What a user encoding depends on: every model input but the candidate (TIMESTAMP is the impression time).
USER_INPUT_NAMES = tuple(name for name in MODEL_INPUT_NAMES if name != ITEM_ID)
# The candidates of the score_candidates signature and the candidate scorer: int64 [U, N].
CANDIDATE_IDS = "candidate_ids"
# The number of items the recommend signature returns per user: int64 [U].
RECOMMEND_K = "k"
HISTORY_PAIRS = ((CLICKED_ITEMS, CLICKED_TIMES), (BROWSED_ITEMS, BROWSED_TIMES))
EXAMPLE_FEATURES = MODEL_INPUTS + (FeatureSpec(LABEL, "int64", False),)

# Model outputs (Keras output names and serving signature output keys).
OUTPUT_LOGIT = "logit"
OUTPUT_PROBABILITY = "click_probability"
OUTPUT_GROUP_WEIGHTS = "group_weights"
OUTPUT_GROUP_ASSIGNMENT = "group_assignment"
# The user encoder's outputs: each branch's updated memory rows u_p [B, s, d].
OUTPUT_POSITIVE_ROWS = "positive_rows"
OUTPUT_NEGATIVE_ROWS = "negative_rows"
OUTPUT_ROWS = (OUTPUT_POSITIVE_ROWS, OUTPUT_NEGATIVE_ROWS)  # in the order of HISTORY_PAIRS (clicked, browsed)
# The user's recent click level, a logit offset [B] (config.click_level; mtin_tf.layers.ClickLevel).
OUTPUT_CLICK_LEVEL = "click_level"
# What the user encoder hands the candidate scorer: the rows, and the click level when the model has it.
USER_STATE = OUTPUT_ROWS + (OUTPUT_CLICK_LEVEL,)
# The retrieval queries q_p [B, s (+ 1), d] of the positive rows (config.retrieval_head, mtin_tf.layers.RetrievalHead;
# config.history_query, config.retrieval_user_row; mtin_tf.model.encode_user): what the retrieval objective and
# recommend score items with, in place of the rows themselves.
OUTPUT_RETRIEVAL_QUERIES = "retrieval_queries"
# The candidate's embedding x_e [B, d]: an output of an MTIN trained with the retrieval objective (with positive_rows).
OUTPUT_CANDIDATE_EMBEDDING = "candidate_embedding"
# The candidate's exposure prior log q_j [B]: the log of its share of the training impressions (config.exposure_prior).
OUTPUT_EXPOSURE = "exposure_log_share"
# The recommend signature's outputs besides logit and click_probability, each [U, K]: the recommended item ids, the
# interest row (memory row p of the clicked-history branch) that retrieved each, and that row's retrieval score u_p·x_j.
OUTPUT_ITEM_IDS = "item_ids"
OUTPUT_INTEREST_ROW = "interest_row"
OUTPUT_RETRIEVAL_SCORE = "retrieval_score"
