"""PipelineConfig: every run setting of the TFX pipeline that is not a location, in one place.

:func:`mtin_tf.pipeline.pipeline.create_pipeline` takes one, next to the locations (pipeline root, inputs, serving
directory, ML Metadata, schemas); the runners pass it on; ``mtin pipeline`` generates its options from the fields
(name → ``--kebab-case``, type, default and help from the field; :func:`mtin_tf.pipeline.cli.add_config_options`), so
a setting is added here once. Defaults come from the constants the rest of the project uses (mtin_tf.data.history,
mtin_tf.features, mtin_tf.config.MTINConfig, mtin_tf.pipeline.trainer.SHUFFLE_BUFFER).

Field metadata: ``help`` (the option's help text) and, for the CLI, ``flag`` (an option name other than the field's)
and ``choices``.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Optional, Tuple

from mtin_tf.data.history import TEST_FRACTION, VALIDATION_FRACTION, check_split_options
from mtin_tf.features import DEFAULT_MAX_HISTORY

STOP_POINTS = ("InteractionsValidator", "HistoryGen", "Transform")  # stop_after's values (None: the whole pipeline)
GPU_REQUEST_KEYS = ("type", "count", "cpu_limit", "memory_limit")  # mtin_tf.pipeline.pipeline.accelerator_resource_spec


def _field(default, help_text: str, **cli):
    """A dataclass field with its help text (and CLI hints ``flag``, ``choices``); a ``{}`` default is a factory."""
    metadata = {"help": help_text, **cli}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The pipeline's run settings (see each field's help); :meth:`validate` checks them all."""

    max_history: int = _field(DEFAULT_MAX_HISTORY, "history length L, shared by HistoryGen, Transform and the model")
    test_fraction: float = _field(
        TEST_FRACTION, "HistoryGen: per-user share of the latest interactions in test (when time_cut is 0)")
    time_cut: int = _field(0, "HistoryGen: global time split instead, test = timestamp >= this (if > 0)")
    validation_fraction: float = _field(
        VALIDATION_FRACTION, "HistoryGen: per-user share of the interactions just before test in validation (the "
                             "Trainer's early stopping; when validation_cut is 0)")
    validation_cut: int = _field(
        0, "HistoryGen: global cut instead, non-test interactions with timestamp >= this are validation (if > 0)")
    max_anomalous_features: int = _field(
        0, "data validation: stop the run when more interaction features are anomalous against the schema")
    max_bad_row_fraction: float = _field(
        0.0, "data validation: stop the run when a larger share of the interaction rows is unreadable")
    mtin_config: dict = _field(
        {}, "MTINConfig fields for the Trainer (unset ones: MTINConfig's defaults, the paper's settings); its "
            "max_history is always this config's max_history")
    train_steps: int = _field(
        0, "Trainer: total training steps (TrainArgs.num_steps; 0: the config's epochs over the whole train split)")
    eval_steps: int = _field(
        0, "Trainer: validation steps per epoch (EvalArgs.num_steps; 0: the whole validation split)")
    shuffle_buffer: Optional[int] = _field(
        None, "Trainer: rows in the training shuffle buffer (unset: mtin_tf.pipeline.trainer.SHUFFLE_BUFFER)")
    refit: bool = _field(
        False, "Trainer: after early stopping on validation, train again from the same seed on train + validation "
               "for the epoch count validation chose, and push that model (docs/EVALUATION.md, the refit protocol)")
    gpu_request: Optional[dict] = _field(
        None, "the Trainer's accelerator request on Kubeflow, accelerator_resource_spec's keywords, e.g. "
              "{'type': 'NVIDIA_TESLA_T4', 'count': 1} (platform config; local runs ignore it)")
    auc_floor: float = _field(0.5, "blessing: minimum test AUC")
    max_auc_drop: float = _field(0.01, "blessing: maximum test AUC drop against the latest blessed model")
    beam_pipeline_args: Tuple[str, ...] = _field(
        (), "Beam pipeline arguments, e.g. --runner=DataflowRunner", flag="--beam-arg")
    enable_cache: bool = _field(
        True, "serve components whose inputs and settings are unchanged from the ML Metadata cache (--no-cache: "
              "rerun every component)", flag="--no-cache")
    stop_after: Optional[str] = _field(
        None, "build the pipeline only up to this component (data checks without training)", choices=STOP_POINTS)

    def __post_init__(self):
        # Copies, so that the caller's list or dict cannot change a frozen config; JSON lists become tuples.
        object.__setattr__(self, "mtin_config", dict(self.mtin_config))
        object.__setattr__(self, "beam_pipeline_args", tuple(self.beam_pipeline_args))
        if self.gpu_request is not None:
            object.__setattr__(self, "gpu_request", dict(self.gpu_request))

    def validate(self) -> "PipelineConfig":
        """ValueError naming the field for a value of the wrong type or out of range, the Trainer's MTINConfig
        (``mtin_config`` with this ``max_history``) included; returns the config."""
        from mtin_tf.config import MTINConfig

        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            _check_type(field.name, getattr(self, field.name), hints[field.name])
        if self.max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {self.max_history}")
        for name in ("time_cut", "validation_cut", "train_steps", "eval_steps", "max_anomalous_features",
                     "max_bad_row_fraction", "auc_floor", "max_auc_drop"):
            if not getattr(self, name) >= 0:  # NaN too
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_bad_row_fraction > 1:
            raise ValueError(f"max_bad_row_fraction must be in [0, 1], got {self.max_bad_row_fraction}")
        check_split_options(self.test_fraction, self.validation_fraction, self.time_cut or None,
                            self.validation_cut or None)
        if self.shuffle_buffer is not None and self.shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1 (or None: the Trainer's default), got {self.shuffle_buffer}")
        if self.stop_after not in (None, *STOP_POINTS):
            raise ValueError(f"stop_after must be None or one of {STOP_POINTS}, got {self.stop_after!r}")
        unknown = sorted(set(self.gpu_request or {}) - set(GPU_REQUEST_KEYS))
        if unknown:
            raise ValueError(f"gpu_request: unknown keys {unknown}; known: {list(GPU_REQUEST_KEYS)}")
        try:
            MTINConfig.from_dict({**self.mtin_config, "max_history": self.max_history})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"mtin_config: {exc}") from None
        return self

    def to_dict(self) -> dict:
        """The fields as JSON-able values (``beam_pipeline_args`` a list); :meth:`from_dict` reads them back."""
        values = dataclasses.asdict(self)
        values["beam_pipeline_args"] = list(self.beam_pipeline_args)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "PipelineConfig":
        """A config from :meth:`to_dict`'s output (missing fields: their defaults); ValueError on unknown fields."""
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown PipelineConfig fields: {unknown}")
        return cls(**values)


def annotation_types(hint) -> tuple:
    """The plain types a field annotation admits: Optional[X] → (X, NoneType), Tuple[str, ...] → (tuple,)."""
    admitted = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
    return tuple(typing.get_origin(t) or t for t in admitted)


def _check_type(name: str, value, hint) -> None:
    """ValueError unless ``value`` fits the field's annotation (Optional, int for float, no bool for numbers)."""
    allowed = annotation_types(hint)
    if float in allowed:
        allowed += (int,)
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if ok and isinstance(value, tuple):
        ok = all(isinstance(item, str) for item in value)
    if not ok:
        names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
        raise ValueError(f"{name} must be {names}, got {value!r}")
