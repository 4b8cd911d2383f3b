"""MTINConfig: every hyperparameter of the model and its training, with the paper's defaults (section 5.1)."""
from __future__ import annotations

import dataclasses
import json

from mtin_tf import features

AGGREGATIONS = ("sum", "concat", "concat_pool")
READOUTS = ("paper", "attention", "target")
RETRIEVAL_NEGATIVES = ("in_batch", "catalogue")


# The paper's model as written (section 4 and 5.1 where it is specific; this project's choices where it is silent):
# eq. 6 strict, eq. 11 sum pooling, free memory rows, features only, learnable α and β, routing on σ(p), ε = 0.1,
# τ = 0.1.
PAPER_FAITHFUL = {"temporal_self": False, "readout": "paper", "memory_anchors": 0, "use_id_embedding": False,
                  "use_item_bias": False, "learnable_branch_weights": True, "routing_epsilon": 0.1,
                  "routing_center": False, "tau": 0.1, "retrieval_weight": 0.0, "retrieval_head": False,
                  "click_level": 0}

VARIANTS = {"MTIN": {}, "MTIN-I": {"use_routing": False}, "MTIN-P": {"pretrain_memory": False},
            "MTIN-paper": PAPER_FAITHFUL}


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
    # parallel_routing is the approximate data-parallel variant; jit_routing runs the routing loop under XLA in
    # training, in process and in the exported model (TF Serving then needs --xla_cpu_compilation_enabled=true;
    # false exports a model any TF Serving runs, about 2x slower per request: docs/SERVING.md).
    routing_iterations: int = 3
    routing_epsilon: float = 0.45
    routing_base: float = 2.0
    # Route σ(p − p̄), p̄ the mean of p over the history (ours): ε then filters relative to the user's own items.
    routing_center: bool = True
    # p_{g←j} = eq. 4 + x_j·c_g/√d (ours): routing starts from the similarity of item and memory row, eq. 2–4 learn
    # a correction (without it eq. 2–4 start random and learn only through the gates).
    routing_similarity: bool = False
    # Weight of the routing loss (ours, 0 = off): a logistic loss that tells the branch's own history items from the
    # other history's by their best matching score p, so that uncentred routing with ε = 0.5 drops the items that look
    # like the other history's (mtin_tf.layers.branch.routing_contrast_loss).
    routing_loss: float = 0.0
    parallel_routing: bool = False
    jit_routing: bool = True
    # Eq. 5–7: ω_k log-spaced over [omega_min, omega_max]; learnable or fixed; position or real time gaps.
    omega_min: float = 0.05
    omega_max: float = 2.0
    learnable_decay: bool = True
    # P_ii = 1 (an item attends to itself, so a one-item group is not the constant MLP(0)); False is eq. 6's strict
    # i > j, the paper's.
    temporal_self: bool = True
    use_time_gaps: bool = False
    time_scale: float = 86400.0  # seconds per time unit when use_time_gaps (a day by default)
    # Eq. 5–7's decay sums are taken over chunks of this many history positions, pairs across chunks through
    # per-(chunk, group) states: exact for any value; the [L, L] pair work becomes [L, chunk] (docs/MODEL.md, "Cost").
    temporal_chunk: int = 50
    # Eq. 8–10: threshold τ of the interest mask (None: 1/s, the weight of a uniform softmax, so that a row keeps the
    # groups it attends to more than average); straight-through gradient for the hard mask.
    tau: float | None = None
    straight_through: bool = True
    # Eq. 10–11: how item-level r_p and group-level h_p combine into c_p (Table 3).
    aggregation: str = "concat_pool"
    # u_p = M_u[p] + γ·c_p with γ learned from 0 (ours): training starts from the memory rows alone and lets the
    # history's update in as it helps; False is eq. 10 as written (γ = 1).
    gated_update: bool = False
    # Ablations: MTIN-I (use_routing False: one group, no routing), MTIN-P (pretrain_memory False).
    use_routing: bool = True
    pretrain_memory: bool = True
    # Memory pretraining anchors each of a user's s memory rows to up to memory_anchors items of one k-means cluster
    # of the user's history: the row is the mean of their current embeddings plus a trained residual, so it moves
    # with the item embeddings (0: the rows are free parameters initialised once).
    memory_anchors: int = 8
    # How the s updated memory rows become the user vector q of the prediction unit: "paper" (eq. 11: sum pooling;
    # head MLP([q, x_e])) or "attention" (ours: label-aware attention of the candidate over the rows,
    # q = Σ_p softmax_p(u_p·x_e/√d) u_p; head MLP([q, x_e, q ⊙ x_e])) or "target" (ours: the same q and head with
    # DIN's activation unit MLP([u_p, x_e, u_p − x_e, u_p ⊙ x_e]) in place of the dot product). The readout sees the
    # candidate only through the rows, never the history, so a user is encoded once for any number of candidates.
    readout: str = "attention"
    # λ of the interest memory's L2 (each batch's rows, averaged over the batch); None: l2. The memory is the only
    # per-user parameter of MTIN (2·s·d per user), and with tens of training rows per user it memorises them.
    memory_l2: float | None = None
    # Item embedding: features projected to d, plus a trainable id embedding (L2 λ on the rows a batch uses) and a
    # per-item logit bias, for data whose test items were seen in training; off for cold-start data (MicroVideo-1.7M).
    use_id_embedding: bool = True
    use_item_bias: bool = True
    # ŷ = α·P(x_e|H_pos) + β·P(x_e|H_neg) (+ item bias): α, β learnable, or fixed at 1 (the branch MLPs' own output
    # layers already carry scale and sign).
    learnable_branch_weights: bool = False
    activation: str = "relu"
    # Weight w of the retrieval objective (ours, 0 = off; mtin_tf.retrieval_task): training minimises eq. 12's
    # ranking loss + w × an in-batch sampled softmax of each clicked candidate against the other candidates of the
    # batch, scored by the best of the user's s interest rows (log-q corrected), so that the rows are good queries for
    # recommending from the catalogue (the recommend signature). w = 1 was chosen on validation: it raised both the
    # click AUC and the catalogue Recall@50 on planted data and MovieLens-100K (docs/EXPERIMENTS.md), at no
    # measurable step cost (docs/MODEL.md, "Cost").
    retrieval_weight: float = 1.0
    # The retrieval head (ours, mtin_tf.layers.RetrievalHead): the retrieval objective and recommend score items with
    # q_p = u_p (I + W_r) instead of the rows u_p themselves, W_r [d, d] trained by the retrieval objective from 0
    # under the L2 λ: the ranking readout and retrieval share the rows, not the metric. On by default, chosen on
    # validation: on MovieLens-100K it raised the catalogue Recall@50 and the click AUC (docs/EXPERIMENTS.md,
    # "2026-12-06 (8)"). Only the retrieval objective trains it: retrieval_weight 0 turns it off.
    retrieval_head: bool = True
    # The retrieval head's bias (ours): q_p = u_p (I + W_r) + b_r, b_r [d] from 0 under the L2 λ, trained by the
    # retrieval objective: b_r · x_j is a per-item retrieval score offset shared by every user (the role a two-tower's
    # query bias plays). Needs the head. Off by default, decided on validation: no gain in catalogue Recall@50 on
    # MovieLens-100K or planted data (docs/EXPERIMENTS.md, "2026-12-06 (9)").
    retrieval_bias: bool = False
    # The history query (ours): one retrieval query beside the s interest rows, q_s = x̄ (I + W_h), x̄ the mean of the
    # clicked history's item embeddings and W_h [d, d] from 0 under the L2 λ (a RetrievalHead of its own): the
    # user-level query of a two-tower model, next to MTIN's per-interest ones. The retrieval objective and recommend
    # score an item by the best of the s + 1 queries; recommend reports interest_row s for an item it retrieved.
    # Only the retrieval objective trains it: retrieval_weight 0 turns it off. Off by default, decided on validation:
    # no gain in catalogue Recall@50 on MovieLens-100K or planted data (docs/EXPERIMENTS.md, "2026-12-06 (9)").
    history_query: bool = False
    # The user's retrieval row (ours): every retrieval query gets the user's own row added, q_p = u_p (I + W_r) + e_u,
    # e_u [d] one trainable row per training user (from 0 under the L2 λ; users unknown to the table share row 0),
    # trained by the retrieval objective alone: the user-id embedding of a two-tower's query, shared by MTIN's
    # per-interest queries. Only the retrieval objective trains it: retrieval_weight 0 turns it off.
    retrieval_user_row: bool = False
    # What the retrieval objective's softmax runs over (ours): "in_batch", the batch's other candidates with the log-q
    # correction (any catalogue size), or "catalogue", every item of the model's item table (an exact softmax: no
    # sampling, no correction; its cost grows with the table, B·s·N·d per step, so it fits catalogues of up to some
    # 10⁵ items). The two-tower baseline (mtin_tf.two_tower) reads the same field.
    retrieval_negatives: str = "in_batch"
    # Temperature T of the retrieval objective's softmax (ours): its logits are divided by T before the log-q
    # correction (TFRS's ``temperature``), a sharper softmax for T < 1. Ranking in recommend does not change with T
    # (every score is divided alike); only training does. The two-tower baseline reads the same field.
    retrieval_temperature: float = 1.0
    # The exposure prior (ours, mtin_tf.layers.ExposurePrior): the model stores log q_j, q_j the item's share of the
    # training impressions (set from the training rows by mtin_tf.train.build_for_training), and learns its weight γ
    # in the retrieval objective; the recommend signature retrieves and ranks the catalogue by max_p u_p·x_j +
    # γ log q_j, an estimate of how likely the user is to be shown the item and click it, the event a catalogue
    # recommendation is judged on. False: u_p·x_j alone (cold-start data, whose test items have no impressions).
    exposure_prior: bool = True
    # The user's recent click level (ours, mtin_tf.layers.ClickLevel): a per-user logit offset learnt from the click
    # share of the last ``click_level`` impressions of the two histories together (0 = off). It moves all of a user's
    # click probabilities together: AUC over users, not gAUC or any one user's ranking. Every baseline gets the same
    # term (mtin_tf.baselines.common.finish). K = 20 was chosen on validation: +0.007 AUC on MovieLens-100K (3 seeds),
    # level on planted data (docs/EXPERIMENTS.md, "2026-12-06 (5)").
    click_level: int = 20
    mixed_precision: bool = False  # mixed_float16 compute on GPUs
    # Compile the whole train step with XLA (model.compile(jit_compile=...)). Off by default: measured slower on CPU
    # for MTIN and DIN alike (docs/MODEL.md, "Cost"); worth trying on a GPU.
    jit_compile: bool = False

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.retrieval_negatives not in RETRIEVAL_NEGATIVES:
            raise ValueError(f"retrieval_negatives must be one of {RETRIEVAL_NEGATIVES}, "
                             f"got {self.retrieval_negatives!r}")
        if not self.retrieval_temperature > 0:
            raise ValueError(f"retrieval_temperature must be > 0, got {self.retrieval_temperature}")
        if not self.use_routing:
            self.num_groups = 1
        if self.retrieval_weight < 0:
            raise ValueError(f"retrieval_weight must be >= 0, got {self.retrieval_weight}")
        if not self.retrieval_weight:  # no retrieval objective: nothing would train the head, the history query or e_u
            self.retrieval_head = self.history_query = self.retrieval_user_row = False
        if not self.retrieval_head:  # the bias is the head's
            self.retrieval_bias = False
        if self.click_level < 0:
            raise ValueError(f"click_level must be >= 0 (0 = off), got {self.click_level}")
        for name in ("embedding_dim", "num_masks", "num_groups", "max_history", "batch_size", "routing_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def variant(cls, name: str, **overrides) -> "MTINConfig":
        """The variants by name (VARIANTS): MTIN, MTIN-I (no interest groups), MTIN-P (no memory pretraining),
        MTIN-paper (the paper's model as written, PAPER_FAITHFUL)."""
        if name not in VARIANTS:
            raise ValueError(f"unknown MTIN variant {name!r}; known: {sorted(VARIANTS)}")
        return cls(**{**VARIANTS[name], **overrides})

    @property
    def memory_row_l2(self) -> float:
        """λ of the memory rows' L2: memory_l2, or l2."""
        return self.l2 if self.memory_l2 is None else float(self.memory_l2)

    @property
    def interest_tau(self) -> float:
        """τ of eq. 9: the configured one, or 1/s."""
        return 1.0 / self.num_groups if self.tau is None else float(self.tau)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def overrides(config_file: str | None = None, pairs=()) -> dict:
        """MTINConfig fields from a JSON file and then ``KEY=VALUE`` pairs (VALUE parsed as JSON, else kept as a
        string), checked against MTINConfig (unknown fields and invalid values raise ValueError) before anything
        runs. What ``--config`` and ``--set`` of `mtin train` and `mtin pipeline` give."""
        values = {}
        if config_file:
            with open(config_file) as f:
                values.update(json.load(f))
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep:
                raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
            try:
                values[key] = json.loads(raw)
            except json.JSONDecodeError:
                values[key] = raw
        MTINConfig.from_dict(values)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "MTINConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MTINConfig fields: {unknown}")
        return cls(**values)
