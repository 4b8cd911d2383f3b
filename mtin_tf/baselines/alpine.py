"""ALPINE (Li et al., ACM MM 2019): a temporal-graph-guided LSTM over the clicked history (interest) and over the
browsed-not-clicked history (uninterest), a user-interest memory, and a click score from the interest and uninterest
similarity to the candidate.

  temporal graph of a history: nodes = its real items; an edge k → j between consecutive real items, of weight
      e_j = exp(−Δt_j / τ),  Δt_j = (t_j − t_k) / config.time_scale,  τ = exp(log τ) learned (starts at 1)
  graph-guided LSTM: the state reaches node j along its in-edge, (h̃, c̃) = e_j · (h_k, c_k) (zeros at the first
      node), then (h_j, c_j) = LSTMCell(x_j, h̃, c̃) with gates i, f, g, o;  F = [h_j]                        [B, L, d]
  readout with the candidate:  r = Σ_j softmax_j(h_j · W_q x_e / √d) h_j  over the real items              [B, d]
  interest   r_in = r(F_in) + m_u   (m_u: the user's interest memory, a trainable row per user; unknown users
             share row 0);   uninterest  r_un = r(F_un) from a second graph LSTM over the browsed history    [B, d]
  logit = w_in · (r_in · P_in x_e) + w_un · (r_un · P_un x_e) + b   (+ the item bias b_i of common.finish)   [B]
Choices where the paper leaves room or our data differ:
- Graph: one temporal graph per history, over that user's items only, with edges between consecutive items. The
  builder sees no interaction log, so ALPINE's graph over all users' click sequences (the edge lists of its
  Kuaishou release, which mtin_tf.data.kuaishou does not read) cannot be built. Each node then has one in-neighbour,
  so ALPINE's extra cross-time neighbour state vanishes; the edge carries the time gap instead, and a long gap lets
  less of the past state through. The browsed history gets its own graph and LSTM the same way.
- The user-interest memory is one trainable vector per user added to the attended interest (common.user_vector).
- No like/follow signals exist in our data, so ALPINE's multi-level interest is left out.
- Similarities are bilinear dot products (P_in, P_un learned d × d) rather than fixed cosines, and the two are
  combined by a learned dense layer; no MLP head (ALPINE scores from the similarities).
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf.baselines.common import finish, inputs_and_items, user_vector
from mtin_tf.config import MTINConfig
from mtin_tf.layers.backend import Layer, keras, register, split_mask
from mtin_tf.layers.interest_mask import masked_softmax


@register
class TemporalGraphLSTM(Layer):
    """ALPINE's temporal-graph-guided LSTM over one history (module docstring).

      e_j = exp(−Δt_j / τ) on the edge from the previous real item;  (h̃, c̃) = e_j · (h_k, c_k);
      (h_j, c_j) = LSTMCell(x_j, h̃, c̃)                                       x [B, L, d_in] → h [B, L, units]
    The state moves along the edges of the history's temporal graph (consecutive real items), scaled by the edge
    weight; padded and unknown slots are not nodes: they leave the state unchanged (their outputs repeat the last
    state and are never read). τ = exp(log τ) is learned (starts at 1).

    Args:
      units: the LSTM's units.
      time_scale: seconds per unit of Δt (config.time_scale: a day).
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      inputs: [items x float [B, L, d_in], times int [B, L]] (the history in time order, with its timestamps).
      mask: known bool [B, L], True for real items (required). The form models saved before the ``mask=``
        convention recorded, [items, known, times] and no mask, is still accepted.

    Input shape:
      [(B, L, d_in), (B, L)] with L static; mask (B, L).

    Output shape:
      (B, L, units).

    Example:

    >>> import numpy as np
    >>> items, times = np.ones([2, 3, 4], np.float32), np.array([[1, 2, 3], [5, 0, 0]])
    >>> known = np.array([[True, True, True], [True, False, False]])
    >>> states = TemporalGraphLSTM(6, time_scale=1.0)([items, times], mask=known)
    >>> states.shape, bool(np.allclose(states[1, 0], states[1, 2]))  # padding leaves the state as it was
    (TensorShape([2, 3, 6]), True)
    """

    def __init__(self, units, time_scale=86400.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.time_scale = int(units), float(time_scale)

    def build(self, input_shape):
        dim = int(input_shape[0][-1])
        self.kernel = self.add_weight(name="kernel", shape=[dim, 4 * self.units], initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=[self.units, 4 * self.units],
                                                initializer="orthogonal")
        forget_bias = keras.initializers.Constant([0.0] * self.units + [1.0] * self.units + [0.0] * 2 * self.units)
        self.bias = self.add_weight(name="bias", shape=[4 * self.units], initializer=forget_bias)
        self.log_tau = self.add_weight(name="log_tau", shape=[], initializer="zeros")
        super().build(input_shape)

    def call(self, inputs, mask=None):
        (items, times), known = split_mask(self, inputs, mask, 3)
        known = tf.cast(known, tf.bool)
        times = tf.cast(times, tf.int64)
        tau = tf.exp(self.log_tau)
        projected = tf.einsum("bld,de->ble", items, self.kernel) + self.bias
        batch = tf.shape(items)[0]
        h = c = tf.zeros([batch, self.units], items.dtype)
        last = tf.zeros([batch], tf.int64)  # time of the previous real item (unused before the first)
        outputs = []
        for j in range(items.shape[1]):
            gap = tf.cast(tf.maximum(times[:, j] - last, 0), items.dtype) / self.time_scale  # in int64, then days
            edge = tf.exp(-gap / tau)[:, None]
            z = projected[:, j] + tf.matmul(edge * h, self.recurrent_kernel)
            i, f, g, o = tf.split(z, 4, axis=-1)
            c_new = tf.sigmoid(f) * edge * c + tf.sigmoid(i) * tf.tanh(g)
            h_new = tf.sigmoid(o) * tf.tanh(c_new)
            real = known[:, j][:, None]
            h, c = tf.where(real, h_new, h), tf.where(real, c_new, c)
            last = tf.where(known[:, j], times[:, j], last)
            outputs.append(h)
        return tf.stack(outputs, axis=1)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "time_scale": self.time_scale}


@register
class CandidateReadout(Layer):
    """ALPINE's readout with the candidate: attention over a history's LSTM states.

      r = Σ_j softmax_j(h_j · W_q x_e / √u) h_j over the real items (0 for an empty history)
    with h [B, L, u], x_e [B, d] → r [B, u].

    Args:
      units: u, the states' size (W_q maps x_e to it).
      **kwargs: Layer arguments (name, dtype, ...).

    Call arguments:
      inputs: [states h float [B, L, u], candidate x_e float [B, d]].
      mask: known bool [B, L], True for real items (required). The form models saved before the ``mask=``
        convention recorded, [states, known, candidate] and no mask, is still accepted.

    Input shape:
      [(B, L, u), (B, d)]; mask (B, L).

    Output shape:
      (B, u).

    Example:

    >>> import numpy as np
    >>> states, candidate = np.ones([2, 3, 4], np.float32), np.ones([2, 5], np.float32)
    >>> CandidateReadout(4)([states, candidate], mask=np.array([[True, True, False], [False] * 3])).numpy()
    array([[1., 1., 1., 1.],
           [0., 0., 0., 0.]], dtype=float32)
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.query = keras.layers.Dense(self.units, use_bias=False, name="query")

    def call(self, inputs, mask=None):
        (states, candidate), known = split_mask(self, inputs, mask, 3)
        logits = tf.einsum("blu,bu->bl", states, self.query(candidate)) / tf.sqrt(float(self.units))
        return tf.einsum("bl,blu->bu", masked_softmax(logits, known), states)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def build_alpine(config: MTINConfig, item_ids, item_features, user_ids=None, *, compile: bool = True):
    """ALPINE with MTIN's inputs and outputs (logit [B], click_probability [B])."""
    layers = tf_keras.layers
    d = config.embedding_dim
    inputs, embed = inputs_and_items(config, item_ids, item_features)
    candidate, _ = embed(inputs[F.ITEM_ID])
    memory = user_vector(config, user_ids, inputs[F.USER_ID])
    similarities = []
    for name, (ids_key, times_key) in zip(("interest", "uninterest"), F.HISTORY_PAIRS):
        items, known = embed(inputs[ids_key])
        states = TemporalGraphLSTM(d, config.time_scale, name=f"{name}_graph_lstm")([items, inputs[times_key]],
                                                                                     mask=known)
        represented = CandidateReadout(d, name=f"{name}_readout")([states, candidate], mask=known)
        if name == "interest":
            represented = layers.Add(name="interest_with_memory")([represented, memory])
        projected = layers.Dense(d, use_bias=False, name=f"{name}_projection")(candidate)
        similarities.append(layers.Dot(axes=1, name=f"{name}_similarity")([represented, projected]))
    combined = layers.Dense(1, name="similarity_out")(layers.Concatenate(name="similarities")(similarities))
    score = layers.Reshape((), name="alpine_score")(combined)
    return finish(inputs, score, "alpine", config, item_ids, compile=compile)
