"""TFMA evaluation of MTIN: EvalConfig, blessing thresholds and the per-user ranking metrics as a custom TFMA metric.

Metrics (all on the test split, the Evaluator's only ``example_splits`` — the Trainer early-stopped on validation —,
overall and sliced by clicked-history length ``history_bucket``): example count,
AUC (TFMA's), calibration (mean prediction / mean label), the calibration plot, and :class:`UserRankingMetrics` —
gAUC and Precision/Recall/F1@K with the protocol of docs/EVALUATION.md (per user over that user's impressions ranked by
score,
precision divided by min(K, n_user), recall by the user's positives, uniform average over users). Its combiner
collects (user, label, score) rows and calls :mod:`mtin_tf.metrics`, so the pipeline reports the same numbers as
``mtin train`` / ``mtin evaluate``. TFMA imports this module by name (``module="mtin_tf.pipeline.evaluation"``) on the
Beam workers, so it must be importable there (it is: ``mtin_tf.pipeline`` is installed with mtin-tf).

Blessing: AUC >= ``auc_floor`` and, once a blessed baseline exists, AUC no more than ``max_auc_drop`` below it.
"""
from __future__ import annotations

import json
from typing import Optional

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util

import mtin_tf.model  # noqa: F401  (registers MTIN's Keras layers for TFMA's tf.keras.models.load_model)
from mtin_tf import features as F

USER_RANKING = "user_ranking"
AUC_METRIC = "auc"
DEFAULT_K = 50


def ranking_metric_names(k: int) -> tuple:
    return ("gauc", f"precision@{k}", f"recall@{k}", f"f1@{k}")


class UserRankingMetrics(tfma.metrics.Metric):
    """gAUC and per-user Precision/Recall/F1@k (the docs/EVALUATION.md protocol) from mtin_tf.metrics."""

    def __init__(self, name: str = USER_RANKING, k: int = DEFAULT_K, user_key: str = F.USER_ID):
        super().__init__(_user_ranking_computations, name=name, k=k, user_key=user_key)


def _user_ranking_computations(name: str = USER_RANKING, k: int = DEFAULT_K, user_key: str = F.USER_ID,
                               eval_config: Optional[tfma.EvalConfig] = None, model_names=None, output_names=None,
                               example_weighted: bool = False, **_) -> metric_types.MetricComputations:
    computations = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            keys = [metric_types.MetricKey(name=metric, model_name=model_name, output_name=output_name,
                                           example_weighted=example_weighted) for metric in ranking_metric_names(k)]
            computations.append(metric_types.MetricComputation(
                keys=keys, preprocessors=[metric_types.FeaturePreprocessor(feature_keys=[user_key])],
                combiner=_UserRankingCombiner(keys, k, user_key, eval_config, model_name, output_name)))
    return computations


class _UserRankingCombiner(beam.CombineFn):
    """Collects (user, label, score) rows; extract_output computes the metrics with mtin_tf.metrics."""

    def __init__(self, keys, k, user_key, eval_config, model_name, output_name):
        self._keys, self._k, self._user_key = keys, k, user_key
        self._eval_config, self._model_name, self._output_name = eval_config, model_name, output_name

    def create_accumulator(self):
        return [[], [], []]

    def add_input(self, acc, element):
        user = np.asarray(element.features[self._user_key]).reshape(-1)
        for label, score, _ in metric_util.to_label_prediction_example_weight(
                element, eval_config=self._eval_config, model_name=self._model_name,
                output_name=self._output_name, flatten=True):
            acc[0].append(int(user[0]))
            acc[1].append(float(np.asarray(label).reshape(-1)[0]))
            acc[2].append(float(np.asarray(score).reshape(-1)[0]))
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            for column, values in zip(out, acc):
                column.extend(values)
        return out

    def extract_output(self, acc):
        from mtin_tf import metrics

        users, labels, scores = (np.asarray(c) for c in acc)
        gauc_key, p_key, r_key, f_key = self._keys
        out = {gauc_key: float("nan")}
        if len(labels) and 0 < labels.sum() < len(labels):
            try:
                out[gauc_key] = float(metrics.gauc(users, labels.astype(np.int64), scores))
            except ValueError:  # every user's rows are one class
                pass
        if len(labels):
            p, r, f1 = metrics.precision_recall_f1_at_k(users, labels.astype(np.int64), scores, self._k)
            out.update({p_key: float(p), r_key: float(r), f_key: float(f1)})
        return out


metric_types.register_metric(UserRankingMetrics)


def eval_config(*, auc_floor: float = 0.5, max_auc_drop: float = 0.01, k: int = DEFAULT_K,
                slice_feature: Optional[str] = None) -> tfma.EvalConfig:
    """EvalConfig for the Evaluator: the serving_default signature, click label, click_probability prediction."""
    from mtin_tf.pipeline.components.history import SLICE_FEATURE

    slice_feature = slice_feature or SLICE_FEATURE
    auc_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": auc_floor}),
        change_threshold=tfma.GenericChangeThreshold(direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                                     absolute={"value": -max_auc_drop}))
    metrics = [
        tfma.MetricConfig(class_name="ExampleCount"),
        tfma.MetricConfig(class_name="AUC", config=json.dumps({"name": AUC_METRIC}), threshold=auc_threshold),
        tfma.MetricConfig(class_name="Calibration"),
        tfma.MetricConfig(class_name="MeanLabel"),
        tfma.MetricConfig(class_name="MeanPrediction"),
        tfma.MetricConfig(class_name="CalibrationPlot"),
        tfma.MetricConfig(class_name="UserRankingMetrics", module=__name__, config=json.dumps({"k": k})),
    ]
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key=F.LABEL,
                                    prediction_key=F.OUTPUT_PROBABILITY)],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[slice_feature])],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
        options=tfma.Options(include_default_metrics={"value": False}))


def load_metrics(evaluation_uri: str) -> dict:
    """{slice: {metric name: value}} of an Evaluator output directory ("" is the overall slice)."""
    result = tfma.load_eval_result(evaluation_uri)
    out = {}
    for slice_key, by_output in result.slicing_metrics:
        name = ",".join(f"{k}={v}" for k, v in slice_key) if slice_key else ""
        values = by_output.get("", {}).get("", {})
        out[name] = {metric: next(iter(v.values())) for metric, v in values.items()}
    return out
