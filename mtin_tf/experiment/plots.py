"""The PNG plots of `mtin experiment`: training curves per (table, dataset), test AUC against a swept value, and the
Fig. 6 heat map of per-user group attention (matplotlib, Agg backend)."""
from __future__ import annotations

import os

import numpy as np


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
