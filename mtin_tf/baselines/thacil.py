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
from mtin_tf.layers.backend import Layer, keras, register
from mtin_tf.layers.interest_mask import masked_softmax


def _heads(dim: int) -> int:
    return 4 if dim % 4 == 0 else 1


@register
class DirectionalMask(Layer):
    """THACIL's direction masks: the attention mask of the forward or the backward self-attention over a history.

      forward: M_ij = known_i ∧ known_j ∧ j ≤ i;   backward: M_ij = known_i ∧ known_j ∧ j ≥ i        [B, L, L]
    Padded queries see nothing; their outputs are never used. The known mask is this layer's input, the data it
    turns into an attention mask (for MultiHeadAttention's ``attention_mask``), not a mask applied to other inputs:
    so it is the positional input, and the layer takes no ``mask=``.

    Args:
      direction: "forward" (default) or "backward".
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      known: bool [B, L], True for real items.

    Input shape:
      (B, L).

    Output shape:
      (B, L, L), bool: query i may see key j.

    Example:

    >>> import numpy as np
    >>> DirectionalMask("forward")(np.array([[True, True, False]])).numpy()[0]
    array([[ True, False, False],
           [ True,  True, False],
           [False, False, False]])
    """

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


@register
class TemporalBlocks(Layer):
    """THACIL's temporal windows: the real items of a history, in order, cut into W equal-count blocks.

      the real item of rank k (of n) goes to block ⌊W·k/n⌋; padded and unknown slots are in none      [B, L, W]
    The known mask is the input the blocks are computed from (no ``mask=``, as DirectionalMask).

    Args:
      blocks: W.
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      known: bool [B, L], True for real items.

    Input shape:
      (B, L).

    Output shape:
      (B, L, W), float 0/1: the block membership of each slot.

    Example:

    >>> import numpy as np
    >>> TemporalBlocks(2)(np.array([[True, True, True, True, False]])).numpy()[0]
    array([[1., 0.],
           [1., 0.],
           [0., 1.],
           [0., 1.],
           [0., 0.]], dtype=float32)
    """

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


@register
class HierarchicalAttention(Layer):
    """THACIL's hierarchical attention: the candidate attends over the items of each block, then over the blocks.

      item level:   a_j = softmax_{j ∈ block w}(v_iᵀ tanh(W_i z_j + U_i x_e));   b_w = Σ_{j∈w} a_j z_j       [B, W, d]
      block level:  β_w = softmax_{w non-empty}(v_bᵀ tanh(W_b b_w + U_b x_e));    u = Σ_w β_w b_w            [B, d]

    Args:
      hidden: the units of the additive attentions.
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      inputs: [z float [B, L, d], blocks float [B, L, W] (TemporalBlocks), candidate x_e float [B, d]]. The block
        membership is the grouping itself (padding is in no block), not a Keras mask: the layer takes no ``mask``.

    Input shape:
      [(B, L, d), (B, L, W), (B, d)].

    Output shape:
      (B, d).

    Example:

    >>> import numpy as np
    >>> z, candidate = np.ones([1, 4, 3], np.float32), np.ones([1, 3], np.float32)
    >>> blocks = TemporalBlocks(2)(np.array([[True, True, True, False]]))
    >>> HierarchicalAttention(hidden=5)([z, blocks, candidate]).numpy()  # every item is 1: so is u
    array([[1., 1., 1.]], dtype=float32)
    """

    def __init__(self, hidden, **kwargs):
        super().__init__(**kwargs)
        self.hidden = int(hidden)
        self.item_key = keras.layers.Dense(self.hidden, name="item_key")
        self.item_query = keras.layers.Dense(self.hidden, use_bias=False, name="item_query")
        self.item_score = keras.layers.Dense(1, use_bias=False, name="item_score")
        self.block_key = keras.layers.Dense(self.hidden, name="block_key")
        self.block_query = keras.layers.Dense(self.hidden, use_bias=False, name="block_query")
        self.block_score = keras.layers.Dense(1, use_bias=False, name="block_score")

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
