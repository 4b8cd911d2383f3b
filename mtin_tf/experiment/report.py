"""The tables of `mtin experiment`: aggregation over seeds (mean ± std), the Markdown tables with the popularity
floors' rows and the oracle, and results.csv / results.json / results.md (the plots: mtin_tf.experiment.plots)."""
from __future__ import annotations

import csv
import json
import os

import numpy as np

from mtin_tf.experiment.plots import write_plots

METRIC_KEYS = ("auc", "gauc", "precision@10", "recall@10", "f1@10", "precision@50", "recall@50", "f1@50",
               "retrieval_recall@50", "retrieval_hit_rate@50")
# Columns shown when some run of a table has them: catalogue retrieval (MTIN and the two-tower; mtin_tf.retrieval).
RETRIEVAL_COLUMNS = (("retrieval_recall@50", "catalogue Recall@50"), ("retrieval_hit_rate@50", "catalogue Hit@50"))
TABLE_METRICS = (("auc", "AUC"), ("gauc", "gAUC"), ("precision@10", "P@10"), ("recall@10", "R@10"), ("f1@10", "F1@10"),
                 ("precision@50", "P@50"), ("recall@50", "R@50"), ("f1@50", "F1@50"))
BELOW_FLOOR = "▽ below floor"


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


def is_refit(config: dict, table: dict) -> bool:
    """Whether ``table``'s runs follow the refit protocol: the table's own "refit", or the config's ("refit": true,
    or ``mtin experiment --refit``: every table)."""
    return bool(config.get("refit") or table.get("refit"))


def markdown_tables(config: dict, rows: list[dict], floors: dict | None = None,
                    refit_floors: dict | None = None) -> str:
    """Per config table and dataset, a Markdown table: rows = runs, columns = test metrics (mean ± std over seeds), the
    ARI columns when a run routes on planted data, epochs run and training seconds; the popularity floors' rows
    (``floors``: {dataset: {floor: metrics}} fitted on train; ``refit_floors`` the same fitted on train + validation,
    for the tables under the refit protocol: is_refit), with runs under the best floor's AUC marked; an oracle row on
    planted data."""
    from mtin_tf.floors import LABELS, best_floor_auc

    summary = aggregate(rows)
    parts = []
    for table in config["tables"]:
        table_rows = [r for r in rows if r["table"] == table["name"]]
        if not table_rows:
            continue
        refit = is_refit(config, table)
        table_floors = (refit_floors if refit else floors) or {}
        seeds = sorted({r["seed"] for r in table_rows})
        protocol = (" Epochs chosen on validation, then each model trained again on train + validation for that many "
                    "epochs and scored on test." if refit else "")
        parts.append(f"### {table.get('title', table['name'])}\n\nSeeds {seeds}; mean ± std over seeds.{protocol}\n")
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
            floor_auc = best_floor_auc(table_floors[d]) if table_floors.get(d) else None
            for name, st in stats.items():
                if st:
                    below = floor_auc is not None and "auc" in st and st["auc"][0] < floor_auc
                    mark = f" {BELOW_FLOOR}" if below else ""
                    lines.append(f"| {name}{mark} | " + " | ".join(_cell(st.get(m), m) for m, _ in columns) + " |")
            for floor, values in table_floors.get(d, {}).items():
                lines.append(f"| {LABELS[floor]} | " + " | ".join(
                    f"{values[m]:.4f}" if m in values else "–" for m, _ in columns) + " |")
            oracle = [s["oracle_auc"][0] for s in stats.values() if s and "oracle_auc" in s]
            if oracle:
                cells = [f"{oracle[0]:.4f}"] + ["–"] * (len(columns) - 1)
                lines.append("| Oracle (true p_click) | " + " | ".join(cells)
                             + " |")
            if floor_auc is not None:
                lines.append(f"\n{BELOW_FLOOR}: mean test AUC under the best popularity floor's ({floor_auc:.4f}); "
                             f"floors are fitted on the {'train + validation' if refit else 'training'} "
                             "rows (docs/EVALUATION.md).")
            parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def write_results(config: dict, rows: list[dict], floors: dict | None = None,
                  refit_floors: dict | None = None) -> dict:
    """results.csv, results.json, results.md and the PNG plots in config['out']; returns {kind: path}.

    ``floors``: {dataset: {floor name: test metrics}} fitted on train, ``refit_floors`` on train + validation (the
    tables under the refit protocol); a row's ``below_floor`` compares its test AUC with the best of its table's."""
    from mtin_tf.floors import best_floor_auc

    out = config["out"]
    floors, refit_floors = floors or {}, refit_floors or {}
    refit = {table["name"]: is_refit(config, table) for table in config["tables"]}
    rows = [{**r, "validation_auc": r["validation"].get("auc", "")} for r in rows]
    for r in rows:
        fitted = (refit_floors if refit.get(r["table"]) else floors).get(r["dataset"])
        r["below_floor"] = r["auc"] < best_floor_auc(fitted) if fitted and "auc" in r else ""
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
                   "summary": summary, "floors": floors, "floors_refit": refit_floors, "base": config["base"]}, f,
                  indent=1)
    with open(paths["markdown"], "w") as f:
        f.write(markdown_tables(config, rows, floors, refit_floors))
    paths.update(write_plots(config, rows))
    return paths
