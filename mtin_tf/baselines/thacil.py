"""THACIL (Chen et al., ACM MM 2018): temporal hierarchical attention at category- and item-level over the clicked
history, read with the candidate as query.

  z = LayerNorm(x + MHA_fwd(x) + MHA_bwd(x))   forward / backward multi-head self-attention over the real clicked
                                               items (item i attends to real j ≤ i, resp. j ≥ i)            [B, L, d]
  windows: the n real items, in time order, cut into W equal-count blocks: item of rank k ∈ block ⌊W·k/n⌋  [B, L, W]
  item level:   a_j = softmax_{j ∈ block w}(v_iᵀ tanh(W_i z_j + U_i x_e));   b_w = Σ_{j∈w} a_j z_j         [B, W, d]
  block level:  β_w = softmax_{w non-empty}(v_bᵀ tanh(W_b b_w + U_b x_e));    u = Σ_w β_w b_w              [B, d]
  logit = the shared head of common.history_model: MLP([u, mean browsed, x_e, u ⊙ x_e])
Choices where the paper leaves room or our data differ:
- W = config.num_groups blocks (4 in experiments/paper.json: 5 items a block for a full L = 20 history). Blocks
  are equal-count slices of the *real* items (padding and items absent from the table belong to none), so a short
  history still fills every block it can and padding never changes the output.
- Categories: the builders take the same inputs as every baseline — the item feature table, no category — and the
  planted items have none (their clusters are latent) while MovieLens's category (its first genre) is already in
  its genre multi-hot features. So THACIL's category embedding is left out, and the block-level attention — over
  temporal windows, with the candidate as query — stands in for its category-level attention.
- One self-attention layer in each direction over the whole history (THACIL's forward self-attention for long-range
  correlation, plus the backward direction), post-norm, no feed-forward block and no position embeddings: the
  direction masks carry the order. Built from tf_keras' MultiHeadAttention in the functional graph, as ATRank.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from mtin_tf.baselines.common import history_model
from mtin_tf.config import MTINConfig
from mtin_tf.layers.interest_mask import masked_softmax


def _heads(dim: int) -> int:
    return 4 if dim % 4 == 0 else 1


@tf_keras.saving.register_keras_serializable(package="mtin")
class DirectionalMask(tf_keras.layers.Layer):
    """known bool [B, L] → self-attention mask bool [B, L, L]: query i may see real key j with j ≤ i ("forward")
    or j ≥ i ("backward"). Padded queries see nothing; their outputs are never used."""

    def __init__(self, direction="forward", **kwargs):
        super().__init__(**kwargs)
        if direction not in ("forward", "backward"):
            raise ValueError(f"DirectionalMask direction must be 'forward' or 'backward', got {direction!r}")
        self.direction = direction

    def call(self, known):
        known = tf.cast(known, tf.bool)
        length = tf.shape(known)[1]
        order = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)  # [i, j]: j ≤ i
        if self.direction == "backward":
            order = tf.transpose(order)
        return known[:, :, None] & known[:, None, :] & order[None]

    def get_config(self):
        return {**super().get_config(), "direction": self.direction}


@tf_keras.saving.register_keras_serializable(package="mtin")
class TemporalBlocks(tf_keras.layers.Layer):
    """known bool [B, L] → block membership float [B, L, W]: the n real items of a row, in order, cut into W
    equal-count blocks (real item of rank k goes to block ⌊W·k/n⌋); padded and unknown slots are in none."""

    def __init__(self, blocks, **kwargs):
        super().__init__(**kwargs)
        self.blocks = int(blocks)

    def call(self, known):
        real = tf.cast(known, tf.int32)
        rank = tf.cumsum(real, axis=1) - 1  # [B, L]: rank among the real items
        count = tf.maximum(tf.reduce_sum(real, axis=1, keepdims=True), 1)
        block = (self.blocks * rank) // count
        return tf.one_hot(block, self.blocks) * tf.cast(real, tf.float32)[..., None]

    def get_config(self):
        return {**super().get_config(), "blocks": self.blocks}


@tf_keras.saving.register_keras_serializable(package="mtin")
class HierarchicalAttention(tf_keras.layers.Layer):
    """[items z [B, L, d], blocks [B, L, W], candidate x_e [B, d]] → u [B, d]: additive candidate attention over the
    items of each block (item level), then over the non-empty blocks (block/category level)."""

    def __init__(self, hidden, **kwargs):
        super().__init__(**kwargs)
        self.hidden = int(hidden)
        self.item_key = tf_keras.layers.Dense(self.hidden, name="item_key")
        self.item_query = tf_keras.layers.Dense(self.hidden, use_bias=False, name="item_query")
        self.item_score = tf_keras.layers.Dense(1, use_bias=False, name="item_score")
        self.block_key = tf_keras.layers.Dense(self.hidden, name="block_key")
        self.block_query = tf_keras.layers.Dense(self.hidden, use_bias=False, name="block_query")
        self.block_score = tf_keras.layers.Dense(1, use_bias=False, name="block_score")

    def call(self, inputs):
        items, blocks, candidate = inputs
        blocks = tf.cast(blocks, items.dtype)
        item_logits = self.item_score(tf.tanh(self.item_key(items) + self.item_query(candidate)[:, None]))[..., 0]
        member = tf.transpose(blocks, [0, 2, 1]) > 0  # [B, W, L]
        a = masked_softmax(tf.broadcast_to(item_logits[:, None, :], tf.shape(member)), member)
        pooled = tf.einsum("bwl,bld->bwd", a, items)  # [B, W, d]
        block_logits = self.block_score(tf.tanh(self.block_key(pooled) + self.block_query(candidate)[:, None]))[..., 0]
        beta = masked_softmax(block_logits, tf.reduce_any(member, -1))
        return tf.einsum("bw,bwd->bd", beta, pooled)

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden}


def build_thacil(config: MTINConfig, item_ids, item_features, user_ids=None, *, compile: bool = True):
    """THACIL with MTIN's inputs and outputs (logit [B], click_probability [B]); W = config.num_groups blocks."""
    del user_ids  # THACIL keeps no per-user state
    d = config.embedding_dim
    layers = tf_keras.layers

    def encode(clicked, clicked_known, browsed, browsed_known, candidate):
        attended = [layers.MultiHeadAttention(_heads(d), d // _heads(d), name=f"{direction}_attention")(
            clicked, clicked, attention_mask=DirectionalMask(direction, name=f"{direction}_mask")(clicked_known))
            for direction in ("forward", "backward")]
        z = layers.LayerNormalization(name="temporal_norm")(layers.Add(name="temporal")([clicked, *attended]))
        blocks = TemporalBlocks(config.num_groups, name="temporal_blocks")(clicked_known)
        return HierarchicalAttention(d, name="hierarchical_attention")([z, blocks, candidate])

    return history_model("thacil", encode, config, item_ids, item_features, compile=compile)
