#!/usr/bin/env python3
"""Mutation check: plausible bugs applied one at a time to a temporary copy of the repository; the tests named for
each must fail. Not part of `make test` (about 20 minutes on a 2-core machine).

  .venv/bin/python scripts/mutants.py                 # every mutant; exit 1 if one survives or cannot run
  .venv/bin/python scripts/mutants.py --list          # the mutants, their files and tests
  .venv/bin/python scripts/mutants.py --only NAME ..  # some of them
  .venv/bin/python scripts/mutants.py --no-clean-run  # skip the first run of the named tests on the unmutated copy

Each mutant is (name, file, exact source snippet, replacement, tests): the snippet must occur exactly once in the
file. The copy holds the working tree's files (tracked and untracked, not ignored: `git ls-files -co
--exclude-standard`), so uncommitted changes are checked too; the working tree itself is never written. The tests run
with the copy first on PYTHONPATH (so `mtin_tf`, and through it mtin_tf.pipeline and mtin_tf.serving, resolve to the
mutated copy, in subprocesses too: mtin_tf/__init__.py binds them to the tree it was imported from) and
`pytest -x`: a mutant is caught when pytest reports failing tests (exit 1), survives when they pass (exit 0); any other
outcome (collection error, timeout) is an error, because then the mutant proves nothing. Standard library only.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Mutant(NamedTuple):
    name: str
    path: str
    snippet: str
    replacement: str
    tests: tuple


MODEL_REF = ("tests/test_model_reference.py",)
ROUTING = ("tests/test_routing.py",)
MASKS = ("tests/test_temporal_and_interest_masks.py",)
METRICS = ("tests/test_metrics.py",)
HISTORY = ("tests/test_data_history.py",)
SERVING = ("tests/test_serving_client.py",)
BASELINES = ("tests/test_baselines.py",)

MUTANTS = (
    # The assembled model (section 4.4, eq. 10–12).
    Mutant("combiner-negative-branch-sign", "mtin_tf/model.py",
           "self.alpha * positive + self.beta * negative", "self.alpha * positive - self.beta * negative", MODEL_REF),
    Mutant("rows-forget-the-memory", "mtin_tf/layers/branch.py",
           "rows = memory + (self.update_gate", "rows = (self.update_gate", MODEL_REF),
    Mutant("gates-not-group-normalised", "mtin_tf/layers/branch.py",
           'gate = group_normalized(routed["gate"], assignment, self.num_groups)', 'gate = routed["gate"]', MODEL_REF),
    Mutant("ages-ignore-the-time-scale", "mtin_tf/layers/branch.py",
           "tf.cast(tf.maximum(gap, 0), tf.float32) / time_scale", "tf.cast(tf.maximum(gap, 0), tf.float32)",
           MODEL_REF),
    Mutant("attention-readout-unscaled", "mtin_tf/layers/readout.py",
           "rows * candidate[..., None, :], -1) / scale", "rows * candidate[..., None, :], -1)", MODEL_REF),
    Mutant("readout-without-l2", "mtin_tf/model.py",
           "InterestReadout(config.readout, config.activation, kernel_regularizer=reg,",
           "InterestReadout(config.readout, config.activation, kernel_regularizer=None,", MODEL_REF),
    Mutant("memory-l2-summed-over-the-batch", "mtin_tf/layers/tables.py",
           "self.row_l2 * tf.reduce_mean(tf.reduce_sum(tf.square(memory), axis=[1, 2]))",
           "self.row_l2 * tf.reduce_sum(tf.reduce_sum(tf.square(memory), axis=[1, 2]))", MODEL_REF),
    Mutant("id-l2-not-averaged", "mtin_tf/layers/tables.py",
           "tf.reduce_sum(tf.square(known_e)) / tf.cast(tf.shape(ids)[0], e.dtype)",
           "tf.reduce_sum(tf.square(known_e))", MODEL_REF),
    Mutant("anchored-memory-sums-its-anchors", "mtin_tf/layers/tables.py",
           "residual + tf.math.divide_no_nan(tf.reduce_sum(anchors * weight, 2), tf.reduce_sum(weight, 2))",
           "residual + tf.reduce_sum(anchors * weight, 2)", MODEL_REF),
    Mutant("id-embedding-row-off-by-one", "mtin_tf/layers/tables.py",
           "e = tf.gather(self.id_embedding, rows)", "e = tf.gather(self.id_embedding, tf.maximum(rows - 1, 0))",
           MODEL_REF),
    # Routing (eq. 2–4, Algorithm 1).
    Mutant("epsilon-inclusive-sequential", "mtin_tf/layers/routing.py",
           "(g_star != current) & (pd_star > epsilon)", "(g_star != current) & (pd_star >= epsilon)", ROUTING),
    Mutant("epsilon-inclusive-parallel", "mtin_tf/layers/routing.py",
           "(g_star != assign) & (pd_star > epsilon)", "(g_star != assign) & (pd_star >= epsilon)", ROUTING),
    Mutant("discount-natural-log", "mtin_tf/layers/routing.py",
           "tf.math.log(base + excess) / log_b", "tf.math.log(base + excess)", ROUTING),
    Mutant("ties-to-the-last-group", "mtin_tf/layers/routing.py",
           "return tf.reduce_min(idx, axis=axis), tf.squeeze(best, axis)",
           "return tf.reduce_max(tf.where(idx < n, idx, -1), axis=axis), tf.squeeze(best, axis)", ROUTING),
    Mutant("centre-over-items-not-pairs", "mtin_tf/layers/routing.py",
           "tf.reduce_sum(real, axis=1) * scores.shape[-1]", "tf.reduce_sum(real, axis=1)", ROUTING),
    Mutant("unassigned-items-keep-a-gate", "mtin_tf/layers/routing.py",
           "gate = tf.sigmoid(self.coattention(items, own) - offset) * tf.cast(assignment >= 0, items.dtype)",
           "gate = tf.sigmoid(self.coattention(items, own) - offset)", ROUTING),
    # Temporal mask (eq. 5–7), interest mask (eq. 8–10), aggregation (Table 3).
    Mutant("tau-inclusive", "mtin_tf/layers/interest_mask.py",
           "hard = tf.cast(weights > self.tau, weights.dtype)", "hard = tf.cast(weights >= self.tau, weights.dtype)",
           MASKS),
    Mutant("empty-groups-get-weight", "mtin_tf/layers/interest_mask.py",
           "return weights * tf.cast(mask, logits.dtype)", "return weights", MASKS),
    Mutant("eq6-not-strict", "mtin_tf/layers/temporal_mask.py",
           "else pos[:, None] > pos[None, :]", "else pos[:, None] >= pos[None, :]", MASKS),
    Mutant("decay-divides-by-omega", "mtin_tf/layers/temporal_mask.py",
           "tf.maximum(gaps, 0.0)[..., None] * self.omega", "tf.maximum(gaps, 0.0)[..., None] / self.omega", MASKS),
    Mutant("concat-pool-drops-h", "mtin_tf/layers/aggregation.py",
           'return c + r + h if self.method == "concat_pool" else c',
           'return c + r if self.method == "concat_pool" else c', MASKS),
    # Metrics (docs/EVALUATION.md).
    Mutant("auc-ties-count-zero", "mtin_tf/metrics.py",
           "pos_g * (2 * neg_below + neg_g)", "pos_g * (2 * neg_below)", METRICS),
    Mutant("gauc-weighted-by-positives", "mtin_tf/metrics.py",
           "w = (n_pos + n_neg)[ok].astype(np.float64)", "w = n_pos[ok].astype(np.float64)", METRICS),
    Mutant("precision-over-k-not-rows", "mtin_tf/metrics.py",
           "precision_u = hits / np.minimum(k, n_rows)", "precision_u = hits / k", METRICS),
    Mutant("recall-skips-users-without-clicks", "mtin_tf/metrics.py",
           "p, r = float(precision_u.mean()), float(recall_u.mean())",
           "p, r = float(precision_u.mean()), float(recall_u[n_pos > 0].mean())", METRICS),
    # History building (mtin_tf.data.history, examples).
    Mutant("history-leaks-same-timestamp", "mtin_tf/data/history.py",
           "n_prior = np.searchsorted(p_times, times, side=\"left\")",
           "n_prior = np.searchsorted(p_times, times, side=\"right\")", HISTORY),
    Mutant("history-one-short", "mtin_tf/data/history.py",
           "np.maximum(ends - max_history, 0)", "np.maximum(ends - max_history + 1, 0)", HISTORY),
    Mutant("validation-boundary-ties-to-train", "mtin_tf/data/history.py",
           "return ~test & (times >= before[before.shape[0] - n_validation])",
           "return ~test & (times > before[before.shape[0] - n_validation])", HISTORY),
    Mutant("padding-keeps-the-oldest", "mtin_tf/data/examples.py",
           "values = np.asarray(ex[spec.name], np.int64)[-max_history:]",
           "values = np.asarray(ex[spec.name], np.int64)[:max_history]", HISTORY),
    # Baselines (mtin_tf.baselines).
    Mutant("masked-mean-over-every-slot", "mtin_tf/baselines/common.py",
           "tf.math.divide_no_nan(tf.reduce_sum(values * m, 1), tf.reduce_sum(m, 1))",
           "tf.reduce_mean(values * m, 1)", BASELINES),
    Mutant("mind-softmax-over-items", "mtin_tf/baselines/mind.py",
           "w = tf.nn.softmax(logits, axis=1) * mask", "w = tf.nn.softmax(logits, axis=2) * mask", BASELINES),
    Mutant("thacil-blocks-by-slot", "mtin_tf/baselines/thacil.py",
           "rank = tf.cumsum(real, axis=1) - 1", "rank = tf.cumsum(tf.ones_like(real), axis=1) - 1",
           ("tests/test_baselines.py::test_padding_and_unknown_slots_do_not_change_the_output",
            "tests/test_baselines.py::test_thacil_blocks_cut_the_real_items_into_equal_count_windows_and_masks_look_one_way")),
    Mutant("thacil-backward-looks-forward", "mtin_tf/baselines/thacil.py",
           "order = tf.transpose(order)", "order = order",
           ("tests/test_baselines.py::test_baseline_forward_pass_matches_its_numpy_reference",)),
    Mutant("alpine-edge-ignores-the-time-scale", "mtin_tf/baselines/alpine.py",
           "items.dtype) / self.time_scale", "items.dtype)",
           ("tests/test_baselines.py::test_baseline_forward_pass_matches_its_numpy_reference",)),
    Mutant("alpine-unknown-slot-moves-the-clock", "mtin_tf/baselines/alpine.py",
           "last = tf.where(known[:, j], times[:, j], last)", "last = times[:, j]",
           ("tests/test_baselines.py::test_padding_and_unknown_slots_do_not_change_the_output",)),
    # Serving request validation (mtin_tf.serving.validation).
    Mutant("longer-history-accepted", "serving/validation.py",
           "w is not None and w != d for w, d in zip(want, dims)",
           "w is not None and w > d for w, d in zip(want, dims)", SERVING),
    Mutant("empty-input-accepted", "serving/validation.py", "if a.size == 0:", "if a.size < 0:", SERVING),
    Mutant("batch-disagreement-accepted", "serving/validation.py",
           "if len(set(sizes.values())) > 1:", "if len(set(sizes.values())) > 2:", SERVING),
    # Recommending from the catalogue (mtin_tf.retrieval) and its metrics.
    Mutant("recommend-keeps-duplicates", "mtin_tf/retrieval.py", "        valid &= first\n", "",
           ("tests/test_retrieval.py",)),
    Mutant("recommend-ranks-by-retrieval-score", "mtin_tf/retrieval.py",
           "top = tf.math.top_k(tf.where(valid, ranked[F.OUTPUT_LOGIT]", "top = tf.math.top_k(tf.where(valid, scores",
           ("tests/test_retrieval.py",)),
    Mutant("recommend-rows-share-the-batch-k", "mtin_tf/retrieval.py",
           "valid = ~_isin(ids, excluded) & (ids != F.PADDING_ID) & within_k",
           "valid = ~_isin(ids, excluded) & (ids != F.PADDING_ID)", ("tests/test_retrieval.py",)),
    Mutant("retrieval-metrics-count-repeats", "mtin_tf/metrics.py", "np.cumsum(hit & first, axis=1)",
           "np.cumsum(hit, axis=1)", ("tests/test_metrics.py",)),
    Mutant("retrieval-loss-without-log-q", "mtin_tf/retrieval_task.py",
           "candidate_sampling_probability=self.sampling_probability(ids), ", "", ("tests/test_retrieval_task.py",)),
)


def check(mutants, root=ROOT):
    """Every snippet occurs exactly once in its file and every named test file exists; else SystemExit."""
    problems = []
    for m in mutants:
        text = open(os.path.join(root, m.path), encoding="utf-8").read()
        if text.count(m.snippet) != 1:
            problems.append(f"{m.name}: the snippet occurs {text.count(m.snippet)} times in {m.path}")
        problems += [f"{m.name}: no test file {t}" for t in m.tests
                     if not os.path.exists(os.path.join(root, t.split("::")[0]))]
    if problems:
        raise SystemExit("mutants.py: stale mutants (fix the list):\n  " + "\n  ".join(problems))


def copy_tree(dest, root=ROOT):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = os.path.join(root, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))


def run_tests(copy, tests, python, timeout):
    """(pytest exit code or None on timeout, seconds, the first FAILED/ERROR line)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([copy] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.time()
    try:
        out = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                              *tests], cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.time() - start, "timed out"
    first = next((line for line in out.stdout.splitlines() if re.match(r"(FAILED|ERROR) ", line)), "")
    if out.returncode not in (0, 1) and not first:
        tail = (out.stdout + out.stderr).strip().splitlines()
        first = tail[-1] if tail else ""
    return out.returncode, time.time() - start, first


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    parser.add_argument("--no-clean-run", action="store_true",
                        help="do not first run the named tests on the unmutated copy (they must pass there)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs pytest")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per pytest run")
    args = parser.parse_args(argv)
    mutants = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in MUTANTS})
        if unknown:
            raise SystemExit(f"mutants.py: unknown mutants {unknown}; --list shows them")
        mutants = tuple(m for m in MUTANTS if m.name in args.only)
    if args.list:
        for m in mutants:
            print(f"{m.name:36} {m.path:34} {' '.join(m.tests)}")
        return 0
    check(mutants)
    with tempfile.TemporaryDirectory(prefix="mtin-mutants-") as tmp:
        clean = os.path.join(tmp, "clean")
        copy_tree(clean)
        if not args.no_clean_run:
            tests = sorted({t for m in mutants for t in m.tests})
            code, seconds, first = run_tests(clean, tests, args.python, args.timeout * 2)
            print(f"clean run of {len(tests)} test files: exit {code} ({seconds:.0f} s)", flush=True)
            if code != 0:
                raise SystemExit(f"mutants.py: the tests fail without any mutant ({first}); fix them first")
        results = []
        for m in mutants:
            copy = os.path.join(tmp, m.name)
            shutil.copytree(clean, copy)
            target = os.path.join(copy, m.path)
            text = open(target, encoding="utf-8").read()
            with open(target, "w", encoding="utf-8") as f:
                f.write(text.replace(m.snippet, m.replacement))
            code, seconds, first = run_tests(copy, m.tests, args.python, args.timeout)
            verdict = {1: "caught", 0: "SURVIVED"}.get(code, "ERROR")
            results.append(verdict)
            print(f"{verdict:8} {m.name:36} {seconds:5.0f} s  {first}", flush=True)
            shutil.rmtree(copy, ignore_errors=True)
    caught = results.count("caught")
    print(f"caught {caught}/{len(results)} mutants"
          + "".join(f"; {results.count(v)} {v.lower()}" for v in ("SURVIVED", "ERROR") if v in results))
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
