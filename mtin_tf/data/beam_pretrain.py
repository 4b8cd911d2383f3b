"""Memory pretraining as an Apache Beam PTransform: each user's anchors (mtin_tf.pretrain.user_anchors) from the
user's latest training example, joined with the item features by item id.

``(train_examples, item_features) | PretrainAnchors(num_groups=k, anchor_size=m, iterations=..., seed=...)``

Inputs: ``train_examples``, example dicts as :class:`mtin_tf.data.beam_history.BuildExamples` emits them on ``.train``
(user_id, timestamp, clicked / browsed histories as int arrays [<= L] with their times); ``item_features``,
``(item_id, float32 [F])`` pairs (e.g. :func:`mtin_tf.pipeline.inputs.parse_item_example` of the item tf.Examples).

Steps: the latest example of each user (:func:`mtin_tf.pretrain.latest_per_user`, the Trainer's rule) → each
branch's distinct items with the time the user first met each (:func:`mtin_tf.pretrain.user_histories_from_arrays`)
→ keyed by item, CoGroupByKey with the item features (never a side input: the item table can be millions of rows ×
hundreds of floats) → regrouped by user → per branch :func:`mtin_tf.pretrain.user_anchors` on the user's known items
in item-id order, as the in-memory path orders them.

Output: per user one record ``{user_id: int, positive_anchors, positive_anchor_times, negative_anchors,
negative_anchor_times: int64 [k * m]}`` (:data:`mtin_tf.pretrain.ANCHOR_FEATURES`; all 0 for a branch with no known
item), serialized by :func:`mtin_tf.pretrain.anchor_record`. Users without any known item are skipped. Beam metrics
(namespace ``mtin_data``, or the transform's ``namespace``): ``pretraining_users``,
``pretraining_users_without_known_items``, ``pretraining_unknown_items`` (history items absent from the item features,
each (user, branch, item) once).
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np

from mtin_tf import features as F
from mtin_tf.pretrain import (
    ANCHOR_FEATURES,
    KMEANS_ITERATIONS,
    latest_per_user,
    user_anchors,
    user_histories_from_arrays,
)

NAMESPACE = "mtin_data"
_ROW = "row"  # the position of each example among those latest_example compares


def latest_example(examples) -> dict:
    """The latest of one user's example dicts by :func:`mtin_tf.pretrain.latest_per_user`'s rule (a CombineFn
    body: called on any subset, in any order)."""
    examples = list(examples)
    clicked = np.zeros([len(examples), max(len(ex[F.CLICKED_ITEMS]) for ex in examples)], np.int64)
    for row, ex in enumerate(examples):
        clicked[row, :len(ex[F.CLICKED_ITEMS])] = ex[F.CLICKED_ITEMS]
    latest = latest_per_user({F.USER_ID: np.zeros(len(examples), np.int64), F.CLICKED_ITEMS: clicked,
                              F.TIMESTAMP: np.asarray([ex[F.TIMESTAMP] for ex in examples], np.int64),
                              _ROW: np.arange(len(examples))})
    return examples[int(latest[_ROW][0])]


def item_references(user_example):
    """(user, latest example) → (item id, (user, branch, first time)) for each branch's distinct history items."""
    user, ex = user_example
    for branch, (items_key, times_key) in enumerate(F.HISTORY_PAIRS):
        arrays = {F.USER_ID: np.asarray([user], np.int64), items_key: np.asarray(ex[items_key], np.int64)[None],
                  times_key: np.asarray(ex[times_key], np.int64)[None]}
        for ids, times in user_histories_from_arrays(arrays, items_key, times_key).values():
            for item, time in zip(ids.tolist(), times.tolist()):
                yield item, (int(user), branch, time)


class _JoinFeaturesFn(beam.DoFn):
    """(item, {"refs": [(user, branch, time)], "features": [vector]}) → (user, (branch, item, time, vector))."""

    def __init__(self, namespace: str = NAMESPACE):
        self._unknown = beam.metrics.Metrics.counter(namespace, "pretraining_unknown_items")

    def process(self, element):
        item, grouped = element
        vectors = list(grouped["features"])
        refs = list(grouped["refs"])
        if not vectors:
            self._unknown.inc(len(refs))
            return
        for user, branch, time in refs:
            yield user, (branch, item, time, vectors[0])


class _UserAnchorsFn(beam.DoFn):
    """(user, [None (the user's marker), (branch, item, time, vector), ...]) → one anchor record, or none."""

    def __init__(self, num_groups: int, anchor_size: int, iterations: int, seed: int, namespace: str = NAMESPACE):
        self._options = dict(num_groups=num_groups, anchor_size=anchor_size, iterations=iterations, seed=seed)
        self._users = beam.metrics.Metrics.counter(namespace, "pretraining_users")
        self._skipped = beam.metrics.Metrics.counter(namespace, "pretraining_users_without_known_items")

    def process(self, element):
        user, values = element
        known = sorted((v for v in values if v is not None), key=lambda v: v[:2])  # by branch, then item id
        if not known:
            self._skipped.inc()
            return
        record = {F.USER_ID: int(user)}
        for branch, names in enumerate(ANCHOR_FEATURES):
            mine = [v for v in known if v[0] == branch]
            points = np.stack([v[3] for v in mine]) if mine else np.zeros([0, 0], np.float32)
            anchors = user_anchors([v[1] for v in mine], [v[2] for v in mine], points, **self._options,
                                   user_id=user)
            for name, value in zip(names, anchors):
                record[name] = value.reshape(-1)
        self._users.inc()
        yield record


class PretrainAnchors(beam.PTransform):
    """``(train_examples, item_features) | PretrainAnchors(num_groups=k, anchor_size=m)`` → per-user anchor records
    (module docstring). ``iterations`` and ``seed``: user_anchors' k-means (the seed is config.seed, combined with
    each user id). ``namespace``: of the Beam metrics, so that two of these in one pipeline count apart."""

    def __init__(self, *, num_groups: int, anchor_size: int, iterations: int = KMEANS_ITERATIONS, seed: int = 0,
                 namespace: str = NAMESPACE):
        super().__init__()
        if num_groups < 1 or anchor_size < 1:
            raise ValueError(f"num_groups and anchor_size must be >= 1, got {num_groups} and {anchor_size}")
        self._namespace = namespace
        self._fn = _UserAnchorsFn(int(num_groups), int(anchor_size), int(iterations), int(seed), namespace)

    def expand(self, inputs):
        examples, items = inputs
        latest = (examples
                  | "KeyByUser" >> beam.Map(lambda ex: (int(ex[F.USER_ID]), ex))
                  | "LatestExample" >> beam.CombinePerKey(latest_example))
        references = latest | "ItemReferences" >> beam.FlatMap(item_references)
        features = items | "KeyByItem" >> beam.Map(lambda item: (int(item[0]), np.asarray(item[1], np.float32)))
        joined = ({"refs": references, "features": features}
                  | "JoinItemFeatures" >> beam.CoGroupByKey()
                  | "ByUser" >> beam.ParDo(_JoinFeaturesFn(self._namespace)))
        markers = latest | "UserMarkers" >> beam.Map(lambda user_example: (user_example[0], None))
        return ((joined, markers)
                | "FlattenByUser" >> beam.Flatten()
                | "GroupByUser" >> beam.GroupByKey()
                | "UserAnchors" >> beam.ParDo(self._fn))
