"""``mtin experiment --config FILE``: models × datasets × seeds, with tables and plots like the paper's section 5.

The config (JSON) names datasets built by ``mtin data build``, shared MTINConfig fields and a list of tables::

  {"out": "runs/experiments",                       # results directory (relative to the config's cwd)
   "seeds": [0, 1],
   "base": {"embedding_dim": 32, "num_masks": 4, "num_groups": 4, "max_history": 20, "epochs": 4},
   "datasets": {"planted": {"examples": "DIR", "items": "item_features.npz", "planted": "DIR of mtin data generate"},
                "movielens": {"examples": "DIR", "items": "item_features.npz"}},
   "tables": [{"name": "overall", "title": "...", "datasets": ["planted", "movielens"],
               "runs": [{"name": "BPR", "model": "bpr"}, {"name": "MTIN", "model": "mtin"}]},
              {"name": "ablation", "datasets": ["planted"],
               "runs": [{"name": "MTIN"}, {"name": "MTIN-P", "variant": "MTIN-P"}]},
              {"name": "groups", "datasets": ["planted"], "seeds": [0], "sweep": {"field": "num_groups",
               "values": [1, 2, 4, 6], "label": "s"}}],
   "heatmap": {"dataset": "planted", "users": 12}}

A dataset may carry "set" too: MTINConfig fields chosen for that dataset on its validation split (e.g. features-only
items where items are fully described by their features), applied over "base" for every run on it and under each
run's own "set".
A run is {"name", "model" (default mtin), "variant" (default MTIN), "set" (MTINConfig overrides)}; a sweep expands into
runs named "<label>=<value>". Identical (model, variant, overrides, dataset, seed) runs are trained once and shared
between tables, and each finished run is cached as OUT/runs/<key>.json, so an interrupted experiment resumes.

Protocol (docs/EVALUATION.md): every run trains on the train split and early-stops on the validation split (the
restored epoch is the best on validation AUC); the tables report the test split, scored once per run. Each dataset's
popularity floors (:mod:`mtin_tf.floors`, fitted on its training rows, cached in OUT/floors/<dataset>.json) get rows
of their own, and a run whose mean test AUC is under the best floor's is marked "▽ below floor".

Outputs in OUT: results.csv (one row per run × dataset × seed), results.json (rows + per-table mean/std + floors),
results.md (a Markdown table per config table, mean ± std over seeds; floor rows; the oracle AUC on planted data), and
PNG plots: curves_<table>_<dataset>.png (train loss and validation AUC per epoch, first seed), sweep_<table>.png (test
AUC against the swept value), heatmap_<dataset>.png (Fig. 6: per-user mean group attention of MTIN's positive
branch).
A run of model "two_tower" (:mod:`mtin_tf.two_tower`, the TFRS retrieval anchor) trains on the training clicks,
early-stops on validation Recall@50 over the catalogue and reports the catalogue retrieval columns only: it scores no
impressions, so its AUC, gAUC and P/R/F1 cells read "–" and it is never marked below the floor.
On planted data each MTIN run with routing also reports ``ari``: the adjusted Rand index between the routed groups of
each user's clicked history (group_assignment) and the true item clusters, averaged over users, and ``ari_shuffled``,
the same with the assignments permuted inside each user (chance level).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import time

import numpy as np

METRIC_KEYS = ("auc", "gauc", "precision@10", "recall@10", "f1@10", "precision@50", "recall@50", "f1@50",
               "retrieval_recall@50", "retrieval_hit_rate@50")
# Columns shown when some run of a table has them: catalogue retrieval (MTIN and the two-tower; mtin_tf.retrieval).
RETRIEVAL_COLUMNS = (("retrieval_recall@50", "catalogue Recall@50"), ("retrieval_hit_rate@50", "catalogue Hit@50"))
TABLE_METRICS = (("auc", "AUC"), ("gauc", "gAUC"), ("precision@10", "P@10"), ("recall@10", "R@10"), ("f1@10", "F1@10"),
                 ("precision@50", "P@50"), ("recall@50", "R@50"), ("f1@50", "F1@50"))
PROTOCOL = "train/validation/test"  # part of every run's cache key: runs early-stopped on test are never reused
BELOW_FLOOR = "▽ below floor"


def register(subparsers) -> None:
    p = subparsers.add_parser("experiment", help="models x datasets x seeds from a config file: tables and plots",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment config (JSON)")
    p.add_argument("--out", help="results directory (overrides the config's out)")
    p.add_argument("--only", nargs="*", default=None, help="run only these tables (by name)")
    p.add_argument("--datasets", nargs="*", default=None, help="run only these datasets")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One trained model: what to build and with which MTINConfig overrides."""
    name: str
    model: str = "mtin"
    variant: str = "MTIN"
    overrides: tuple = ()  # sorted (key, value) pairs

    def config(self, base: dict, seed: int):
        """The run's MTINConfig: the variant's preset, then ``base``, then the run's overrides, then the seed."""
        from mtin_tf.config import MTINConfig

        return MTINConfig.variant(self.variant, **{**base, **dict(self.overrides), "seed": seed})

    def key(self, base: dict, dataset: str, seed: int) -> str:
        """Stable id of (model, full config, dataset): runs that train the same thing share one training."""
        payload = json.dumps([self.model, dataclasses.asdict(self.config(base, seed)), dataset, PROTOCOL],
                             sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


def parse_runs(table: dict) -> list[RunSpec]:
    """The table's runs: its explicit ``runs`` list, or the expansion of its ``sweep``."""
    from mtin_tf.baselines import MODELS
    from mtin_tf.config import VARIANTS
    from mtin_tf.two_tower import TWO_TOWER

    if "sweep" in table:
        sweep = table["sweep"]
        base_run = sweep.get("run", {})
        raw = [{**base_run, "name": f"{sweep.get('label', sweep['field'])}={v}",
                "set": {**base_run.get("set", {}), sweep["field"]: v}} for v in sweep["values"]]
    else:
        raw = table.get("runs", [])
    if not raw:
        raise ValueError(f"table {table.get('name')!r} has no runs")
    runs = []
    for r in raw:
        spec = RunSpec(r["name"], r.get("model", "mtin"), r.get("variant", "MTIN"),
                       tuple(sorted(r.get("set", {}).items())))
        if spec.model not in MODELS + (TWO_TOWER,):
            raise ValueError(f"run {spec.name!r}: unknown model {spec.model!r}; known: {MODELS + (TWO_TOWER,)}")
        if spec.variant not in VARIANTS:
            raise ValueError(f"run {spec.name!r}: unknown variant {spec.variant!r}; known: {tuple(VARIANTS)}")
        runs.append(spec)
    return runs


def load_config(path: str, out: str | None = None) -> dict:
    """Read and check the experiment config; returns it with ``out`` resolved and each table's runs parsed."""
    with open(path) as f:
        config = json.load(f)
    for key in ("datasets", "tables"):
        if not config.get(key):
            raise ValueError(f"{path}: the experiment config needs a non-empty {key!r}")
    config["out"] = out or config.get("out") or "runs/experiments"
    config.setdefault("seeds", [0])
    config.setdefault("base", {})
    for table in config["tables"]:
        table["parsed_runs"] = parse_runs(table)
        table.setdefault("datasets", list(config["datasets"]))
        unknown = set(table["datasets"]) - set(config["datasets"])
        if unknown:
            raise ValueError(f"table {table['name']!r} names unknown datasets {sorted(unknown)}")
    return config


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass
class Dataset:
    name: str
    train: dict
    validation: dict
    test: dict
    item_ids: np.ndarray
    item_features: np.ndarray
    item_cluster: dict | None = None  # planted: item id -> true cluster
    oracle_auc: float | None = None  # planted: AUC of the true p_click on the test rows


def truth_click_probabilities(planted_dir: str, test: dict) -> np.ndarray:
    """True p_click [N] of the test examples: truth.parquet (row-aligned with interactions.parquet) joined on
    (user_id, item_id, timestamp). Raises if a test row has no truth."""
    import pandas as pd

    from mtin_tf import features as F
    from mtin_tf.data.canonical import INTERACTIONS_FILE
    from mtin_tf.data.planted import P_CLICK, TRUTH_FILE

    keys = [F.USER_ID, F.ITEM_ID, F.TIMESTAMP]
    logged = pd.read_parquet(os.path.join(planted_dir, INTERACTIONS_FILE), columns=keys)
    logged[P_CLICK] = pd.read_parquet(os.path.join(planted_dir, TRUTH_FILE), columns=[P_CLICK])[P_CLICK].to_numpy()
    logged = logged.drop_duplicates(keys)
    rows = pd.DataFrame({k: np.asarray(test[k], np.int64) for k in keys})
    joined = rows.merge(logged, on=keys, how="left")
    missing = int(joined[P_CLICK].isna().sum())
    if missing:
        raise ValueError(f"{missing} test rows have no ground truth in {planted_dir}")
    return joined[P_CLICK].to_numpy(np.float64)


def load_dataset(name: str, spec: dict, max_history: int) -> Dataset:
    """Train/validation/test model arrays of a built dataset (+ ground truth and oracle AUC when ``planted`` is
    given)."""
    from mtin_tf import features as F
    from mtin_tf.data.canonical import read_item_features
    from mtin_tf.data.examples import read_split_arrays
    from mtin_tf.metrics import auc

    try:
        arrays = read_split_arrays(spec["examples"], max_history)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"dataset {name!r}: {e}") from None
    items = read_item_features(spec["items"])
    ds = Dataset(name, arrays["train"], arrays["validation"], arrays["test"], items.item_ids, items.features)
    if spec.get("planted"):
        from mtin_tf.data.planted import GROUND_TRUTH_FILE

        truth = np.load(os.path.join(spec["planted"], GROUND_TRUTH_FILE))
        ds.item_cluster = truth["item_cluster"]  # item id i at row i - 1
        ds.oracle_auc = auc(ds.test[F.LABEL], truth_click_probabilities(spec["planted"], ds.test))
    return ds


# ----------------------------------------------------------------------------- group recovery
def adjusted_rand_index(labels_a, labels_b) -> float:
    """Adjusted Rand index of two labelings [n] (Hubert & Arabie); 1.0 when both put everything in one cluster
    or every item alone (sklearn's convention)."""
    a = np.unique(np.asarray(labels_a), return_inverse=True)[1]
    b = np.unique(np.asarray(labels_b), return_inverse=True)[1]
    if a.shape != b.shape:
        raise ValueError(f"labelings differ in length: {a.shape} vs {b.shape}")
    n = a.size
    table = np.zeros((a.max(initial=-1) + 1, b.max(initial=-1) + 1), np.int64)
    np.add.at(table, (a, b), 1)

    def pairs(x):
        return float((x * (x - 1) // 2).sum())

    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    total = n * (n - 1) / 2
    expected = rows * cols / total if total else 0.0
    top = (rows + cols) / 2
    if top == expected:
        return 1.0
    return (index - expected) / (top - expected)


def group_recovery(user_ids, clicked, assignment, item_cluster, *, seed: int = 0) -> dict:
    """Mean per-user ARI between routed groups and true clusters of the clicked history.

    user_ids [N], clicked [N, L] item ids (0 = padding), assignment [N, L] (−1 = no group), item_cluster [num_items]
    (item id i at row i − 1). Uses each user's example with the longest history; users with < 2 routed items are
    skipped. Returns {"ari", "ari_shuffled", "users"}.
    """
    rng = np.random.default_rng(seed)
    lengths = (np.asarray(assignment) >= 0).sum(1)
    order = np.lexsort((-lengths, user_ids))
    first = order[np.r_[True, np.asarray(user_ids)[order][1:] != np.asarray(user_ids)[order][:-1]]]
    scores, shuffled = [], []
    for row in first:
        routed = assignment[row] >= 0
        if routed.sum() < 2:
            continue
        groups, truth = assignment[row][routed], item_cluster[clicked[row][routed] - 1]
        scores.append(adjusted_rand_index(groups, truth))
        shuffled.append(adjusted_rand_index(rng.permutation(groups), truth))
    return {"ari": float(np.mean(scores)) if scores else float("nan"),
            "ari_shuffled": float(np.mean(shuffled)) if shuffled else float("nan"), "users": len(scores)}


def user_group_attention(user_ids, group_weights) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 6 data: group_weights [N, s, s] (w_{p,g}) → (users [U], attention [U, s]): the weight each group g gets,
    averaged over memory rows p and over each user's examples."""
    per_example = np.asarray(group_weights).mean(axis=1)  # [N, s]
    users, inverse = np.unique(user_ids, return_inverse=True)
    sums = np.zeros((len(users), per_example.shape[1]))
    np.add.at(sums, inverse, per_example)
    return users, sums / np.bincount(inverse)[:, None]


# ----------------------------------------------------------------------------- training one run
def train_run(spec: RunSpec, ds: Dataset, base: dict, seed: int, *, patience: int = 2) -> dict:
    """Train one model on one dataset with one seed (early stopping on validation); returns a result row (test
    metrics, ``validation`` metrics, validation-AUC curve and chosen epoch, timings, ARI)."""
    from mtin_tf import features as F
    from mtin_tf import metrics
    from mtin_tf.baselines import BUILDERS
    from mtin_tf.model import POSITIVE_BRANCH, build_mtin
    from mtin_tf.train import EVAL_AUC, make_dataset, predict_probabilities, train_mtin
    from mtin_tf.two_tower import TWO_TOWER

    config = spec.config(base, seed)
    if spec.model == TWO_TOWER:
        return train_two_tower_run(spec, ds, config, patience=patience)
    builder = build_mtin if spec.model == "mtin" else BUILDERS[spec.model]
    start = time.perf_counter()
    model, history = train_mtin(config, ds.train, ds.item_ids, ds.item_features, eval_arrays=ds.validation,
                                builder=builder, verbose=0, patience=patience)
    seconds = time.perf_counter() - start
    curve = [float(v) for v in history.history.get(EVAL_AUC, [])]
    validation = predict_probabilities(model, ds.validation)
    out = model.predict(make_dataset(ds.test, 1024), verbose=0)
    scores = np.asarray(out[F.OUTPUT_PROBABILITY]).reshape(-1)
    row = {"run": spec.name, "model": spec.model, "variant": spec.variant if spec.model == "mtin" else spec.model,
           "overrides": dict(spec.overrides), "dataset": ds.name, "seed": seed,
           **metrics.summary(ds.test[F.USER_ID], ds.test[F.LABEL], scores, ks=(10, 50)),
           "validation": metrics.summary(ds.validation[F.USER_ID], ds.validation[F.LABEL], validation, ks=(10, 50)),
           "epochs_run": len(history.history["loss"]), "best_epoch": int(np.argmax(curve)) + 1 if curve else None,
           "train_seconds": round(seconds, 1),
           "curves": {"loss": [float(v) for v in history.history["loss"]], "validation_auc": curve}}
    if ds.oracle_auc is not None:
        row["oracle_auc"] = ds.oracle_auc
    if spec.model == "mtin":  # recommending from the whole catalogue (the recommend signature's path)
        from mtin_tf.retrieval import catalogue_metrics

        row.update(catalogue_metrics(model, [ds.train, ds.validation], ds.test))
        row["validation"].update(catalogue_metrics(model, [ds.train], ds.validation))
    dropped = history.history.get(f"val_{POSITIVE_BRANCH}_dropped")
    if dropped and row["best_epoch"]:  # share of the real clicked items routing left out, at the chosen epoch
        row["dropped"] = float(dropped[row["best_epoch"] - 1])
    if F.OUTPUT_GROUP_ASSIGNMENT in out and ds.item_cluster is not None and config.use_routing:
        row.update(group_recovery(ds.test[F.USER_ID], ds.test[F.CLICKED_ITEMS], np.asarray(
            out[F.OUTPUT_GROUP_ASSIGNMENT]), ds.item_cluster, seed=seed))
    if F.OUTPUT_GROUP_WEIGHTS in out and config.use_routing:
        users, attention = user_group_attention(ds.test[F.USER_ID], out[F.OUTPUT_GROUP_WEIGHTS])
        row["group_attention"] = {"users": users.tolist(), "weights": attention.round(5).tolist()}
    return row


def train_two_tower_run(spec: RunSpec, ds: Dataset, config, *, patience: int = 2) -> dict:
    """The result row of a two-tower run (mtin_tf.two_tower): test catalogue retrieval (the queries and exclusions of
    MTIN's rows), ``validation`` Recall@50 at the restored epoch, the per-epoch curves, timings; no click metrics."""
    from mtin_tf.two_tower import EPOCH_LOSS, VALIDATION_METRIC, train_two_tower, two_tower_catalogue_metrics

    start = time.perf_counter()
    model, history = train_two_tower(config, ds.train, ds.item_ids, ds.item_features, validation_arrays=ds.validation,
                                     patience=patience)
    seconds = time.perf_counter() - start
    curve = [float(v) for v in history.history[VALIDATION_METRIC]]
    best = int(np.argmax(curve))
    return {"run": spec.name, "model": spec.model, "variant": spec.model, "overrides": dict(spec.overrides),
            "dataset": ds.name, "seed": config.seed,
            **two_tower_catalogue_metrics(model, [ds.train, ds.validation], ds.test),
            "validation": {VALIDATION_METRIC[len("val_"):]: curve[best]},
            "epochs_run": len(curve), "best_epoch": best + 1, "train_seconds": round(seconds, 1),
            "curves": {"loss": [float(v) for v in history.history[EPOCH_LOSS]], "validation_auc": [],
                       VALIDATION_METRIC: curve}}


# ----------------------------------------------------------------------------- running the grid
def base_for(config: dict, dataset: str) -> dict:
    """The MTINConfig fields every run on ``dataset`` starts from: the config's "base", then the dataset's "set"."""
    return {**config["base"], **config["datasets"][dataset].get("set", {})}


def planned_runs(config: dict, only=None, datasets=None) -> list[tuple[dict, RunSpec, str, int]]:
    """(table, run, dataset, seed) for every cell of the selected tables and datasets: table by table, and inside a
    table dataset by dataset (so a whole dataset's comparison finishes first)."""
    cells = []
    for table in config["tables"]:
        if only and table["name"] not in only:
            continue
        for dataset in table["datasets"]:
            if datasets and dataset not in datasets:
                continue
            for spec in table["parsed_runs"]:
                for seed in table.get("seeds", config["seeds"]):
                    cells.append((table, spec, dataset, seed))
    return cells


def run_experiment(config: dict, *, only=None, datasets=None) -> list[dict]:
    """Train every planned cell (each distinct run once, cached in OUT/runs), then write tables and plots.

    Returns the result rows (one per table × run × dataset × seed).
    """
    from tqdm.auto import tqdm

    out = config["out"]
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    base = config["base"]
    max_history = base.get("max_history")
    if max_history is None:
        from mtin_tf.features import DEFAULT_MAX_HISTORY as max_history
    loaded: dict[str, Dataset] = {}
    rows = []
    cells = planned_runs(config, only, datasets)
    floors = {}
    for dataset in dict.fromkeys(cell[2] for cell in cells):
        floors[dataset] = dataset_floors(config, dataset, loaded, max_history)
    bar = tqdm(cells, desc="mtin experiment", unit="run")
    for table, spec, dataset, seed in bar:
        dataset_base = base_for(config, dataset)
        key = spec.key(dataset_base, dataset, seed)
        cache = os.path.join(out, "runs", f"{key}.json")
        bar.set_postfix_str(f"{table['name']}: {spec.name} on {dataset}, seed {seed}")
        result = None
        if os.path.exists(cache):
            with open(cache) as f:
                result = json.load(f)
            if result["model"] == "mtin" and "retrieval_recall@50" not in result:
                result = None  # cached before catalogue retrieval was scored: train again
        if result is None:
            if dataset not in loaded:
                loaded[dataset] = load_dataset(dataset, config["datasets"][dataset], max_history)
            result = train_run(spec, loaded[dataset], dataset_base, seed, patience=config.get("patience", 2))
            with open(cache, "w") as f:
                json.dump(result, f)
            scores = " ".join(f"{label} {result[m]:.4f}" for m, label in (("auc", "AUC"), ("gauc", "gAUC"),
                                                                           ("retrieval_recall@50", "Recall@50"))
                              if m in result)
            bar.write(f"{spec.name:>12} | {dataset} | seed {seed}: {scores} ({result['epochs_run']} epochs, "
                      f"{result['train_seconds']:.0f} s)")
        rows.append({**result, "run": spec.name, "table": table["name"], "key": key})
    write_results(config, rows, floors)
    return rows


def dataset_floors(config: dict, dataset: str, loaded: dict, max_history: int) -> dict:
    """{floor name: test metrics} of one dataset's popularity floors (fitted on its training rows), cached in
    OUT/floors/<dataset>.json for the same examples directory; loads the dataset into ``loaded`` when needed."""
    from mtin_tf.floors import POPULAR, floor_metrics
    from mtin_tf.retrieval import popularity_floor_metrics

    spec = config["datasets"][dataset]
    path = os.path.join(config["out"], "floors", f"{dataset}.json")
    if os.path.exists(path):
        with open(path) as f:
            cached = json.load(f)
        if cached["examples"] == os.path.abspath(spec["examples"]) and POPULAR in cached["floors"]:
            return cached["floors"]
    if dataset not in loaded:
        loaded[dataset] = load_dataset(dataset, spec, max_history)
    ds = loaded[dataset]
    result = floor_metrics(ds.train, ds.test, ks=(10, 50))
    result[POPULAR] = popularity_floor_metrics([ds.train, ds.validation], ds.test)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"examples": os.path.abspath(spec["examples"]), "floors": result}, f, indent=1)
    return result


# ----------------------------------------------------------------------------- tables
def aggregate(rows: list[dict]) -> dict:
    """{(table, run, dataset): {metric: (mean, std, n)}} over seeds (std with ddof=1; 0 for one seed)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["table"], r["run"], r["dataset"]), []).append(r)
    summary = {}
    for key, rs in groups.items():
        stats = {}
        for metric in METRIC_KEYS + ("ari", "ari_shuffled", "dropped", "oracle_auc", "train_seconds", "epochs_run"):
            values = np.array([r[metric] for r in rs if metric in r], float)
            if values.size:
                std = float(values.std(ddof=1)) if values.size > 1 else 0.0
                stats[metric] = (float(values.mean()), std, int(values.size))
        summary[key] = stats
    return summary


def _cell(stat, metric: str = "auc") -> str:
    if stat is None:
        return "–"
    mean, std, n = stat
    if metric in ("epochs_run", "train_seconds"):
        return f"{mean:.1f}"  # mean only: bookkeeping, not a result
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def markdown_tables(config: dict, rows: list[dict], floors: dict | None = None) -> str:
    """Per config table and dataset, a Markdown table: rows = runs, columns = test metrics (mean ± std over seeds), the
    ARI columns when a run routes on planted data, epochs run and training seconds; the popularity floors' rows
    (``floors``: {dataset: {floor: metrics}}), with runs under the best floor's AUC marked; an oracle row on planted
    data."""
    from mtin_tf.floors import LABELS, best_floor_auc

    floors = floors or {}
    summary = aggregate(rows)
    parts = []
    for table in config["tables"]:
        table_rows = [r for r in rows if r["table"] == table["name"]]
        if not table_rows:
            continue
        seeds = sorted({r["seed"] for r in table_rows})
        parts.append(f"### {table.get('title', table['name'])}\n\nSeeds {seeds}; mean ± std over seeds.\n")
        for d in table["datasets"]:
            stats = {spec.name: summary.get((table["name"], spec.name, d)) for spec in table["parsed_runs"]}
            if not any(stats.values()):
                continue
            columns = list(TABLE_METRICS)
            if any("ari" in (s or {}) for s in stats.values()):
                columns += [("ari", "ARI"), ("ari_shuffled", "ARI shuffled")]
            columns += [c for c in RETRIEVAL_COLUMNS if any(c[0] in (s or {}) for s in stats.values())]
            if any("dropped" in (s or {}) for s in stats.values()):
                columns += [("dropped", "dropped")]
            columns += [("epochs_run", "epochs"), ("train_seconds", "train s")]
            lines = [f"**{d}**\n", "| Model | " + " | ".join(label for _, label in columns) + " |",
                     "|---|" + "---|" * len(columns)]
            floor_auc = best_floor_auc(floors[d]) if floors.get(d) else None
            for name, st in stats.items():
                if st:
                    below = floor_auc is not None and "auc" in st and st["auc"][0] < floor_auc
                    mark = f" {BELOW_FLOOR}" if below else ""
                    lines.append(f"| {name}{mark} | " + " | ".join(_cell(st.get(m), m) for m, _ in columns) + " |")
            for floor, values in floors.get(d, {}).items():
                lines.append(f"| {LABELS[floor]} | " + " | ".join(
                    f"{values[m]:.4f}" if m in values else "–" for m, _ in columns) + " |")
            oracle = [s["oracle_auc"][0] for s in stats.values() if s and "oracle_auc" in s]
            if oracle:
                cells = [f"{oracle[0]:.4f}"] + ["–"] * (len(columns) - 1)
                lines.append("| Oracle (true p_click) | " + " | ".join(cells)
                             + " |")
            if floor_auc is not None:
                lines.append(f"\n{BELOW_FLOOR}: mean test AUC under the best popularity floor's ({floor_auc:.4f}); "
                             "floors are fitted on the training rows (docs/EVALUATION.md).")
            parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def write_results(config: dict, rows: list[dict], floors: dict | None = None) -> dict:
    """results.csv, results.json, results.md and the PNG plots in config['out']; returns {kind: path}.

    ``floors``: {dataset: {floor name: test metrics}}; a row's ``below_floor`` compares its test AUC with the best."""
    from mtin_tf.floors import best_floor_auc

    out = config["out"]
    floors = floors or {}
    rows = [{**r, "validation_auc": r["validation"].get("auc", ""),
             "below_floor": r["auc"] < best_floor_auc(floors[r["dataset"]])
             if floors.get(r["dataset"]) and "auc" in r else ""} for r in rows]
    paths = {"csv": os.path.join(out, "results.csv"), "json": os.path.join(out, "results.json"),
             "markdown": os.path.join(out, "results.md")}
    columns = ["table", "run", "model", "variant", "dataset", "seed", "auc", "gauc", "precision@10", "recall@10",
               "f1@10", "precision@50", "recall@50", "f1@50", "retrieval_recall@20", "retrieval_recall@50",
               "retrieval_recall@100", "retrieval_hit_rate@20", "retrieval_hit_rate@50", "retrieval_hit_rate@100",
               "below_floor", "validation_auc", "oracle_auc", "ari",
               "ari_shuffled", "epochs_run", "best_epoch", "train_seconds", "overrides", "key"]
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "overrides": json.dumps(r.get("overrides", {}), sort_keys=True)})
    summary = {" / ".join(map(str, k)): v for k, v in aggregate(rows).items()}
    with open(paths["json"], "w") as f:
        json.dump({"rows": [{k: v for k, v in r.items() if k != "group_attention"} for r in rows],
                   "summary": summary, "floors": floors, "base": config["base"]}, f, indent=1)
    with open(paths["markdown"], "w") as f:
        f.write(markdown_tables(config, rows, floors))
    paths.update(write_plots(config, rows))
    return paths


# ----------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(config: dict, rows: list[dict]) -> dict:
    """Training curves per (table, dataset), AUC against swept values, and the Fig. 6 heat map; returns paths."""
    plt = _pyplot()
    out, paths = config["out"], {}
    for table in config["tables"]:
        table_rows = [r for r in rows if r["table"] == table["name"]]
        if not table_rows:
            continue
        first_seed = min(r["seed"] for r in table_rows)
        for d in table["datasets"]:
            curves = [r for r in table_rows if r["dataset"] == d and r["seed"] == first_seed]
            if not curves:
                continue
            fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(11, 4))
            for r in curves:
                epochs = np.arange(1, len(r["curves"]["loss"]) + 1)
                ax_loss.plot(epochs, r["curves"]["loss"], marker="o", label=r["run"])
                if r["curves"]["validation_auc"]:
                    ax_auc.plot(epochs, r["curves"]["validation_auc"], marker="o", label=r["run"])
            ax_loss.set(title=f"{d}: training loss", xlabel="epoch", ylabel="loss")
            ax_auc.set(title=f"{d}: validation AUC (seed {first_seed})", xlabel="epoch", ylabel="AUC")
            ax_auc.legend(fontsize=7)
            fig.tight_layout()
            paths[f"curves_{table['name']}_{d}"] = _save(fig, os.path.join(out, f"curves_{table['name']}_{d}.png"))
        if "sweep" in table:
            paths[f"sweep_{table['name']}"] = _sweep_plot(plt, table, table_rows, out)
    heat = config.get("heatmap")
    if heat:
        source = [r for r in rows if r["dataset"] == heat["dataset"] and r.get("group_attention")
                  and r["run"] == heat.get("run", "MTIN")]
        if source:
            paths[f"heatmap_{heat['dataset']}"] = _heatmap(plt, source[0], heat, out)
    return paths


def _sweep_plot(plt, table, table_rows, out) -> str:
    sweep = table["sweep"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for d in table["datasets"]:
        xs, means, stds = [], [], []
        for v in sweep["values"]:
            values = [r["auc"] for r in table_rows
                      if r["dataset"] == d and dict(r["overrides"]).get(sweep["field"]) == v and "auc" in r]
            if values:
                xs.append(v)
                means.append(np.mean(values))
                stds.append(np.std(values))
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=d)
    ax.set(title=table.get("title", table["name"]), xlabel=sweep.get("label", sweep["field"]), ylabel="test AUC")
    ax.legend()
    fig.tight_layout()
    return _save(fig, os.path.join(out, f"sweep_{table['name']}.png"))


def _heatmap(plt, row, heat, out) -> str:
    users = np.asarray(row["group_attention"]["users"])
    weights = np.asarray(row["group_attention"]["weights"])
    n = min(int(heat.get("users", 12)), len(users))
    pick = np.random.default_rng(0).choice(len(users), n, replace=False)
    pick = pick[np.argsort(users[pick])]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * weights.shape[1], 0.8 + 0.35 * n))
    image = ax.imshow(weights[pick], cmap="Blues", aspect="auto")
    ax.set_xticks(range(weights.shape[1]), [f"Group{g + 1}" for g in range(weights.shape[1])])
    ax.set_yticks(range(n), [f"User {u}" for u in users[pick]])
    ax.set_title(f"{heat['dataset']}: group attention (mean w over p and the user's test examples)", fontsize=8)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return _save(fig, os.path.join(out, f"heatmap_{heat['dataset']}.png"))


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def run(args) -> int:
    config = load_config(args.config, args.out)
    run_experiment(config, only=args.only, datasets=args.datasets)
    with open(os.path.join(config["out"], "results.md")) as f:
        print(f.read())
    return 0
