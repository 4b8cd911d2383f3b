#!/bin/sh
# Reproduces docs/EXPERIMENTS.md from the repository root (about 1.5 hours on 2 CPU cores).
# Each finished run is cached under runs/experiments/paper/runs/, so an interrupted run resumes where it stopped.
set -e
MTIN=${MTIN:-.venv/bin/mtin}
$MTIN data generate --out runs/exp/planted/data --num-users 1000 --num-items 4000 --num-clusters 12 --feature-dim 16 \
  --interactions-per-user 60 --seed 0
$MTIN data build --interactions runs/exp/planted/data/interactions.parquet \
  --items runs/exp/planted/data/item_features.npz --out runs/exp/planted/examples --max-history 20
$MTIN data fetch-movielens --out runs/exp/movielens/data
$MTIN data build --interactions runs/exp/movielens/data/interactions.parquet \
  --items runs/exp/movielens/data/item_features.npz --out runs/exp/movielens/examples --max-history 20
# The same data with histories of up to 50 items (tables length_1206*: the history length L on validation).
$MTIN data build --interactions runs/exp/planted/data/interactions.parquet \
  --items runs/exp/planted/data/item_features.npz --out runs/exp/planted/examples_l50 --max-history 50
$MTIN data build --interactions runs/exp/movielens/data/interactions.parquet \
  --items runs/exp/movielens/data/item_features.npz --out runs/exp/movielens/examples_l50 --max-history 50
# Defaults are chosen on validation first (readout, gated update, item bias, ε: tables "choices" and "identity"),
# then the main comparison, the ablations and the further baselines; the last call trains anything missing and
# writes runs/experiments/paper/results.{csv,json,md} and the PNG plots.
$MTIN experiment --config experiments/paper.json --only choices identity
$MTIN experiment --config experiments/paper.json --only overall ablation baselines --datasets planted
$MTIN experiment --config experiments/paper.json --only overall baselines --datasets movielens
# The tables marked "refit": true (final_1206, final_1206_baselines, ablation_1206: docs/EXPERIMENTS.md "2026-12-06
# (5)" and "(6)") run under the refit protocol: each run trained again on train + validation for the epochs
# validation chose, floors fitted on the same rows.
$MTIN experiment --config experiments/paper.json
