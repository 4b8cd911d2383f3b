"""MTINConfig: every hyperparameter of the model and its training, with the paper's defaults (section 5.1)."""
from __future__ import annotations

import dataclasses
import json

from mtin_tf import features

AGGREGATIONS = ("sum", "concat", "concat_pool")


@dataclasses.dataclass
class MTINConfig:
    # Sizes (paper: d = 128, p = 8 parallel masks, s = 6 groups on MicroVideo-1.7M / 4 on KuaiShou).
    embedding_dim: int = 128
    num_masks: int = 8
    num_groups: int = 6
    max_history: int = features.DEFAULT_MAX_HISTORY
    # Training (paper: batch 32, Adam, lr 1e-3, λ = 1e-4).
    batch_size: int = 32
    learning_rate: float = 1e-3
    l2: float = 1e-4
    optimizer: str = "adam"
    epochs: int = 5
    seed: int = 0
    # Algorithm 1 on the matching probabilities σ(p): iterations, threshold ε, discount base b;
    # parallel_routing is the approximate data-parallel variant; jit_routing runs the routing loop under XLA when
    # training and scoring in process (exported models route without XLA unless asked: see mtin_tf.export).
    routing_iterations: int = 3
    routing_epsilon: float = 0.1
    routing_base: float = 2.0
    parallel_routing: bool = False
    jit_routing: bool = True
    # Eq. 5–7: ω_k log-spaced over [omega_min, omega_max]; learnable or fixed; position or real time gaps.
    omega_min: float = 0.05
    omega_max: float = 2.0
    learnable_decay: bool = True
    use_time_gaps: bool = False
    time_scale: float = 86400.0  # seconds per time unit when use_time_gaps (a day by default)
    # Eq. 8–10: threshold τ of the interest mask; straight-through gradient for the hard mask.
    tau: float = 0.1
    straight_through: bool = True
    # Eq. 10–11: how item-level r_p and group-level h_p combine into c_p (Table 3).
    aggregation: str = "concat_pool"
    # Ablations: MTIN-I (use_routing False: one group, no routing), MTIN-P (pretrain_memory False).
    use_routing: bool = True
    pretrain_memory: bool = True
    # Item embedding: features projected to d, plus an optional trainable id embedding.
    use_id_embedding: bool = False
    # ŷ = α·P(x_e|H_pos) + β·P(x_e|H_neg): α, β learnable (else fixed at 1, 1).
    learnable_branch_weights: bool = True
    activation: str = "relu"
    mixed_precision: bool = False  # mixed_float16 compute on GPUs
    # Compile the whole train step with XLA (model.compile(jit_compile=...)). Off by default: measured slower on CPU
    # for MTIN and DIN alike (docs/MODEL.md, "Cost"); worth trying on a GPU.
    jit_compile: bool = False

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if not self.use_routing:
            self.num_groups = 1
        for name in ("embedding_dim", "num_masks", "num_groups", "max_history", "batch_size", "routing_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def variant(cls, name: str, **overrides) -> "MTINConfig":
        """The paper's variants by name: MTIN, MTIN-I (no interest groups), MTIN-P (no memory pretraining)."""
        presets = {"MTIN": {}, "MTIN-I": {"use_routing": False}, "MTIN-P": {"pretrain_memory": False}}
        if name not in presets:
            raise ValueError(f"unknown MTIN variant {name!r}; known: {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "MTINConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MTINConfig fields: {unknown}")
        return cls(**values)
