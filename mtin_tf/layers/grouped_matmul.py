"""Grouped matmul: y_n = x_n W_{g_n}, each row multiplied by the matrix of its own group.

MTIN's eq. 5 applies a different W_g^k to each history item, chosen by the interest group routing put it in. Applying
every W_g to every item and keeping the item's own result costs s× the needed work; this does only the needed work.
Outside XLA the rows are partitioned by group (tf.dynamic_partition), multiplied, and stitched back (s matmuls of
the groups' own sizes; rows with g_n < 0 cost nothing). XLA needs static shapes, so there the rows go into blocks:

  1. every row n with a group g_n ≥ 0 gets a slot in a buffer of blocks of ``block`` rows; each group's rows fill
     whole blocks of their own (block b belongs to one group g_b), in the order the rows come;
  2. one batched matmul [blocks, block, k] × [blocks, k, m] with W gathered per block;
  3. each row reads its result back from its slot; rows with g_n < 0 get zeros.

The buffer has ⌈N / block⌉ + s blocks, enough for any assignment. Both forms have gradients for x and W.
"""
from __future__ import annotations

import tensorflow as tf
from tensorflow.python.ops import control_flow_util


def in_xla_context() -> bool:
    """True while tracing code that XLA will compile (tf.function(jit_compile=True)): shapes must be static."""
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def grouped_matmul(x, groups, weights, block: int = 128):
    """Rows of ``x`` times their group's matrix.

    Args:
      x: float [N, k], the rows.
      groups: int32 [N], each row's group in [0, s), or −1 for rows to skip (their output is 0).
      weights: float [s, k, m], one matrix per group (s static).
      block: rows per block of the batched matmul under XLA (work done there: (N + s·block)·k·m multiply-adds).

    Returns:
      float [N, m]: y_n = x_n @ weights[g_n], 0 where g_n < 0.
    """
    x = tf.convert_to_tensor(x)
    groups = tf.cast(groups, tf.int32)
    weights = tf.convert_to_tensor(weights, x.dtype)
    if in_xla_context():
        return _blocked(x, groups, weights, block)
    num_groups = int(weights.shape[0])
    part = tf.where(groups >= 0, groups, num_groups)  # skipped rows: one extra partition, never multiplied
    rows = tf.dynamic_partition(x, part, num_groups + 1)
    index = tf.dynamic_partition(tf.range(tf.shape(x)[0]), part, num_groups + 1)
    out = [tf.matmul(rows[g], weights[g]) for g in range(num_groups)]
    out.append(tf.zeros([tf.shape(index[-1])[0], tf.shape(weights)[2]], x.dtype))
    return tf.dynamic_stitch(index, out)


def _blocked(x, groups, weights, block):
    """grouped_matmul with static shapes (for XLA): rows in per-group blocks, one batched matmul."""
    num_groups = weights.shape[0] if weights.shape[0] is not None else tf.shape(weights)[0]
    rows = tf.shape(x)[0]
    num_blocks = (rows + block - 1) // block + num_groups
    member = tf.one_hot(groups, num_groups, dtype=tf.int32)  # [N, s], zeros for g < 0
    rank = tf.reduce_sum((tf.cumsum(member, axis=0) - 1) * member, axis=1)  # position of row n within its group
    size = tf.reduce_sum(member, axis=0)  # [s]
    blocks_per_group = (size + block - 1) // block
    first_block = tf.cumsum(blocks_per_group, exclusive=True)  # [s]
    live = groups >= 0
    own = tf.maximum(groups, 0)
    slot = (tf.gather(first_block, own) + rank // block) * block + rank % block  # [N]
    # Skipped rows all go to one spare row past the blocks, which is never read back.
    slot = tf.where(live, slot, num_blocks * block)
    buffer = tf.scatter_nd(slot[:, None], x * tf.cast(live, x.dtype)[:, None],
                           tf.stack([num_blocks * block + 1, tf.shape(x)[1]]))
    buffer = tf.reshape(buffer[:-1], [num_blocks, block, tf.shape(x)[1]])
    # Block b belongs to the group whose range of blocks holds it; unused trailing blocks (all zeros) to the last.
    block_group = tf.searchsorted(tf.cumsum(blocks_per_group), tf.range(num_blocks), side="right")
    block_group = tf.minimum(block_group, num_groups - 1)
    out = tf.matmul(buffer, tf.gather(weights, block_group))  # [blocks, block, m]
    out = tf.reshape(out, [num_blocks * block, tf.shape(weights)[2]])
    return tf.where(live[:, None], tf.gather(out, tf.minimum(slot, num_blocks * block - 1)), tf.zeros_like(out[:1]))
