#!/bin/sh
# Reproduces docs/EXPERIMENTS.md from the repository root (about an hour on 2 shared CPU cores).
# Each finished run is cached under runs/experiments/paper/runs/, so an interrupted run resumes where it stopped.
set -e
export TF_USE_LEGACY_KERAS=1
MTIN=${MTIN:-.venv/bin/mtin}
$MTIN data generate --out runs/exp/planted/data --num-users 1000 --num-items 4000 --num-clusters 12 --feature-dim 16 \
  --interactions-per-user 60 --seed 0
$MTIN data build --interactions runs/exp/planted/data/interactions.parquet \
  --items runs/exp/planted/data/item_features.npz --out runs/exp/planted/examples --max-history 20
$MTIN data fetch-movielens --out runs/exp/movielens/data
$MTIN data build --interactions runs/exp/movielens/data/interactions.parquet \
  --items runs/exp/movielens/data/item_features.npz --out runs/exp/movielens/examples --max-history 20
# Priority order (planted comparison and ablations first); the last call trains anything missing and writes
# runs/experiments/paper/results.{csv,json,md} and the PNG plots.
$MTIN experiment --config experiments/paper.json --only overall ablation --datasets planted
$MTIN experiment --config experiments/paper.json --only overall --datasets movielens
$MTIN experiment --config experiments/paper.json --only aggregation groups masks diagnostics
$MTIN experiment --config experiments/paper.json
