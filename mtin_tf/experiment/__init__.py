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
runs named "<label>=<value>". A run's (or a dataset's) "set" may change the history length max_history too: the
dataset is then read again at that L for the runs that use it. Identical (model, variant, overrides, dataset, seed)
runs are trained once and shared between tables, and each finished run is cached as OUT/runs/<key>.json, so an
interrupted experiment resumes. ``--only``, ``--datasets`` and ``--seeds`` select tables, datasets and seeds; processes
sharing OUT can split a table's seeds between them, and a last run without ``--seeds`` trains nothing and writes the
whole tables.

Protocol (docs/EVALUATION.md): every run trains on the train split and early-stops on the validation split (the
restored epoch is the best on validation AUC); the tables report the test split, scored once per run. Each dataset's
popularity floors (:mod:`mtin_tf.floors`, fitted on its training rows, cached in OUT/floors/<dataset>.json) get rows
of their own, and a run whose mean test AUC is under the best floor's is marked "▽ below floor".
With "refit": true in a table (in the config, or ``--refit``: every table), each of its runs is then trained again
from its seed on train + validation for the epoch count chosen above, and that model scores test (``refit_epochs``
in its row); the validation columns stay those of the model that chose the epoch, and the table's floors are fitted
on train + validation (OUT/floors/<dataset>_refit.json; results.json's ``floors_refit``). Refit runs are cached
under their own keys.

Outputs in OUT: results.csv (one row per run × dataset × seed), results.json (rows + per-table mean/std + floors
fitted on train, ``floors``, and on train + validation, ``floors_refit``),
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

# One module per concern:
#   runner    the config (RunSpec, load_config), the datasets, training one run, the grid with its run cache
#             (OUT/runs/<key>.json) and the floors cache (OUT/floors/<dataset>.json)
#   analysis  planted truth (oracle p_click), group recovery (ARI), user group attention
#   report    aggregation over seeds, the Markdown tables, results.csv / .json / .md
#   plots     training curves, sweeps and the Fig. 6 heat map
#   cli       `mtin experiment` (its --help is this docstring)
