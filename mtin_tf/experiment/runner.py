"""Running `mtin experiment`: the config (tables of runs, sweeps, datasets), the datasets' splits, training one run
(MTIN, a baseline or the two-tower) on one dataset with one seed, and the grid of every planned cell, each distinct run
trained once and cached as OUT/runs/<key>.json (RunSpec.key), the popularity floors as OUT/floors/<dataset>.json."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import numpy as np

from mtin_tf.experiment.analysis import group_recovery, truth_click_probabilities, user_group_attention
from mtin_tf.experiment.report import is_refit, write_results

PROTOCOL = "train/validation/test"  # part of every run's cache key: runs early-stopped on test are never reused
# The protocol with the config's "refit": the epoch count is chosen on validation as above, then the model is trained
# again from its initialisation on train + validation for that many epochs and scored on test (refit_arrays).
REFIT_PROTOCOL = PROTOCOL + ", refit on train+validation"
# Part of an MTIN run's cache key: how `recommend` ranks the catalogue (mtin_tf.retrieval), which the run's catalogue
# metrics measure; rows recorded under an older rule (by log click probability + log q, before 2026-12-06) are not
# reused.
RECOMMEND_RULE = "max_p u_p.x_j + gamma log q_j, gamma learnt"
# Config fields added after runs were cached, left out of the cache key at these values (which train what the runs
# before them trained), so that those runs keep their ids.
KEY_NEUTRAL = {"retrieval_head": False, "history_query": False, "retrieval_bias": False,
               "retrieval_negatives": "in_batch", "retrieval_temperature": 1.0, "retrieval_user_row": False}


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

    def key(self, base: dict, dataset: str, seed: int, *, refit: bool = False) -> str:
        """Stable id of (model, full config, dataset, protocol): runs that train the same thing share one training."""
        rule = [RECOMMEND_RULE] if self.model == "mtin" else []
        protocol = REFIT_PROTOCOL if refit else PROTOCOL
        config = {name: value for name, value in dataclasses.asdict(self.config(base, seed)).items()
                  if KEY_NEUTRAL.get(name, object()) != value}
        payload = json.dumps([self.model, config, dataset, protocol, *rule], sort_keys=True)
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

    def refit_arrays(self) -> dict:
        """The train and validation rows as one set of model-input arrays (train's rows first): what a refit trains
        on, and what the floors are fitted on under the refit protocol."""
        from mtin_tf.data.examples import join_arrays

        return join_arrays(self.train, self.validation)


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


# ----------------------------------------------------------------------------- training one run
def train_run(spec: RunSpec, ds: Dataset, base: dict, seed: int, *, patience: int = 2, refit: bool = False) -> dict:
    """Train one model on one dataset with one seed (early stopping on validation); returns a result row (test
    metrics, ``validation`` metrics, validation-AUC curve and chosen epoch, timings, ARI).

    refit: once the epoch is chosen, train the model again from the same seed on train + validation for that many
    epochs (no early stopping) and score test with it (``refit_epochs``; ``train_seconds`` counts both trainings);
    the validation metrics stay those of the model trained on train alone, which chose the epoch."""
    from mtin_tf import features as F
    from mtin_tf import metrics
    from mtin_tf.baselines import BUILDERS
    from mtin_tf.model import POSITIVE_BRANCH, build_mtin
    from mtin_tf.retrieval import catalogue_metrics
    from mtin_tf.train import EVAL_AUC, make_dataset, predict_probabilities, refit_mtin, train_mtin
    from mtin_tf.two_tower import TWO_TOWER

    config = spec.config(base, seed)
    if spec.model == TWO_TOWER:
        return train_two_tower_run(spec, ds, config, patience=patience, refit=refit)
    builder = build_mtin if spec.model == "mtin" else BUILDERS[spec.model]
    start = time.perf_counter()
    model, history = train_mtin(config, ds.train, ds.item_ids, ds.item_features, eval_arrays=ds.validation,
                                builder=builder, verbose=0, patience=patience)
    curve = [float(v) for v in history.history.get(EVAL_AUC, [])]
    validation = predict_probabilities(model, ds.validation)
    validation_catalogue = {}
    if spec.model == "mtin":  # recommending from the whole catalogue (the recommend signature's path)
        validation_catalogue = catalogue_metrics(model, [ds.train], ds.validation)
    best_epoch = int(np.argmax(curve)) + 1 if curve else None
    refit_epochs = best_epoch or config.epochs
    if refit:  # the same model and seed, trained on every row before test for the epochs chosen above
        model, _ = refit_mtin(config, ds.train, ds.validation, refit_epochs, ds.item_ids, ds.item_features,
                              builder=builder, verbose=0)
    seconds = time.perf_counter() - start
    out = model.predict(make_dataset(ds.test, 1024), verbose=0)
    scores = np.asarray(out[F.OUTPUT_PROBABILITY]).reshape(-1)
    row = {"run": spec.name, "model": spec.model, "variant": spec.variant if spec.model == "mtin" else spec.model,
           "overrides": dict(spec.overrides), "dataset": ds.name, "seed": seed,
           **metrics.summary(ds.test[F.USER_ID], ds.test[F.LABEL], scores, ks=(10, 50)),
           "validation": {**metrics.summary(ds.validation[F.USER_ID], ds.validation[F.LABEL], validation, ks=(10, 50)),
                          **validation_catalogue},
           "epochs_run": len(history.history["loss"]), "best_epoch": best_epoch, "train_seconds": round(seconds, 1),
           "curves": {"loss": [float(v) for v in history.history["loss"]], "validation_auc": curve}}
    if refit:
        row["refit_epochs"] = refit_epochs
    if ds.oracle_auc is not None:
        row["oracle_auc"] = ds.oracle_auc
    if spec.model == "mtin":
        row.update(catalogue_metrics(model, [ds.train, ds.validation], ds.test))
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


def train_two_tower_run(spec: RunSpec, ds: Dataset, config, *, patience: int = 2, refit: bool = False) -> dict:
    """The result row of a two-tower run (mtin_tf.two_tower): test catalogue retrieval (the queries and exclusions of
    MTIN's rows), ``validation`` Recall@50 at the restored epoch, the per-epoch curves, timings; no click metrics.
    refit: as train_run's (trained again on train + validation for the chosen epochs before test is scored)."""
    from mtin_tf.two_tower import EPOCH_LOSS, VALIDATION_METRIC, train_two_tower, two_tower_catalogue_metrics

    start = time.perf_counter()
    model, history = train_two_tower(config, ds.train, ds.item_ids, ds.item_features, validation_arrays=ds.validation,
                                     patience=patience)
    curve = [float(v) for v in history.history[VALIDATION_METRIC]]
    best = int(np.argmax(curve))
    if refit:
        model, _ = train_two_tower(dataclasses.replace(config, epochs=best + 1), ds.refit_arrays(), ds.item_ids,
                                   ds.item_features, validation_arrays=None)
    seconds = time.perf_counter() - start
    return {"run": spec.name, "model": spec.model, "variant": spec.model, "overrides": dict(spec.overrides),
            "dataset": ds.name, "seed": config.seed,
            **two_tower_catalogue_metrics(model, [ds.train, ds.validation], ds.test),
            "validation": {VALIDATION_METRIC[len("val_"):]: curve[best]},
            "epochs_run": len(curve), "best_epoch": best + 1, "train_seconds": round(seconds, 1),
            **({"refit_epochs": best + 1} if refit else {}),
            "curves": {"loss": [float(v) for v in history.history[EPOCH_LOSS]], "validation_auc": [],
                       VALIDATION_METRIC: curve}}


# ----------------------------------------------------------------------------- running the grid
def base_for(config: dict, dataset: str) -> dict:
    """The MTINConfig fields every run on ``dataset`` starts from: the config's "base", then the dataset's "set"."""
    return {**config["base"], **config["datasets"][dataset].get("set", {})}


def planned_runs(config: dict, only=None, datasets=None, seeds=None) -> list[tuple[dict, RunSpec, str, int]]:
    """(table, run, dataset, seed) for every cell of the selected tables, datasets and seeds (``seeds``: of each
    table's own, the others left out): table by table, and inside a table dataset by dataset (so a whole dataset's
    comparison finishes first)."""
    cells = []
    for table in config["tables"]:
        if only and table["name"] not in only:
            continue
        for dataset in table["datasets"]:
            if datasets and dataset not in datasets:
                continue
            for spec in table["parsed_runs"]:
                for seed in table.get("seeds", config["seeds"]):
                    if seeds is not None and seed not in seeds:
                        continue
                    cells.append((table, spec, dataset, seed))
    return cells


def run_experiment(config: dict, *, only=None, datasets=None, seeds=None) -> list[dict]:
    """Train every planned cell (each distinct run once, cached in OUT/runs), then write tables and plots. Processes
    sharing OUT/runs can split a table's seeds between them (``seeds``); a last run over all seeds then trains
    nothing and writes the whole table.

    Returns the result rows (one per table × run × dataset × seed).
    """
    from tqdm.auto import tqdm

    out = config["out"]
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    base = config["base"]
    max_history = base.get("max_history")
    if max_history is None:
        from mtin_tf.features import DEFAULT_MAX_HISTORY as max_history
    loaded: dict[tuple[str, int], Dataset] = {}  # (dataset, history length L) -> its arrays
    rows = []
    cells = planned_runs(config, only, datasets, seeds)
    floors = {False: {}, True: {}}  # fitted on train / on train + validation (the refit protocol's tables)
    for table, _, dataset, _ in cells:
        fitted = floors[is_refit(config, table)]
        if dataset not in fitted:
            fitted[dataset] = dataset_floors(config, dataset, loaded, max_history, refit=is_refit(config, table))
    bar = tqdm(cells, desc="mtin experiment", unit="run")
    for table, spec, dataset, seed in bar:
        refit = is_refit(config, table)
        dataset_base = base_for(config, dataset)
        key = spec.key(dataset_base, dataset, seed, refit=refit)
        cache = os.path.join(out, "runs", f"{key}.json")
        bar.set_postfix_str(f"{table['name']}: {spec.name} on {dataset}, seed {seed}")
        result = None
        if os.path.exists(cache):
            with open(cache) as f:
                result = json.load(f)
            if result["model"] == "mtin" and "retrieval_recall@50" not in result:
                result = None  # cached before catalogue retrieval was scored: train again
        if result is None:
            length = spec.config(dataset_base, seed).max_history  # a dataset's or a run's "set" may change L
            if (dataset, length) not in loaded:
                loaded[dataset, length] = load_dataset(dataset, config["datasets"][dataset], length)
            result = train_run(spec, loaded[dataset, length], dataset_base, seed,
                               patience=config.get("patience", 2), refit=refit)
            with open(cache, "w") as f:
                json.dump(result, f)
            scores = " ".join(f"{label} {result[m]:.4f}" for m, label in (("auc", "AUC"), ("gauc", "gAUC"),
                                                                           ("retrieval_recall@50", "Recall@50"))
                              if m in result)
            bar.write(f"{spec.name:>12} | {dataset} | seed {seed}: {scores} ({result['epochs_run']} epochs, "
                      f"{result['train_seconds']:.0f} s)")
        rows.append({**result, "run": spec.name, "table": table["name"], "key": key})
    write_results(config, rows, floors[False], floors[True])
    return rows


def dataset_floors(config: dict, dataset: str, loaded: dict, max_history: int, *, refit: bool = False) -> dict:
    """{floor name: test metrics} of one dataset's popularity floors, fitted on the rows the models are fitted on
    before test is scored (train, or train + validation under the refit protocol), cached in
    OUT/floors/<dataset>.json (refit: <dataset>_refit.json) for the same examples directory; loads the dataset into
    ``loaded`` (keyed by (dataset, max_history)) when needed. The floors read no history, so L does not change them."""
    from mtin_tf.floors import POPULAR, floor_metrics
    from mtin_tf.retrieval import popularity_floor_metrics

    spec = config["datasets"][dataset]
    path = os.path.join(config["out"], "floors", f"{dataset}{'_refit' if refit else ''}.json")
    if os.path.exists(path):
        with open(path) as f:
            cached = json.load(f)
        if cached["examples"] == os.path.abspath(spec["examples"]) and POPULAR in cached["floors"]:
            return cached["floors"]
    if (dataset, max_history) not in loaded:
        loaded[dataset, max_history] = load_dataset(dataset, spec, max_history)
    ds = loaded[dataset, max_history]
    result = floor_metrics(ds.refit_arrays() if refit else ds.train, ds.test, ks=(10, 50))
    result[POPULAR] = popularity_floor_metrics([ds.train, ds.validation], ds.test)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"examples": os.path.abspath(spec["examples"]), "floors": result}, f, indent=1)
    return result
