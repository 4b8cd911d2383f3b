"""``mtin data``: convert, fetch-movielens, generate, build.

- ``mtin data convert --format {microvideo,kuaishou,movielens,canonical} --input ... --out DIR``
  -> ``DIR/interactions.parquet``, ``DIR/item_features.npz``, ``DIR/convert_report.json``
- ``mtin data fetch-movielens --out DIR [--cache CACHE]``: download the recbole 1.2.1 wheel (no install) and convert
- ``mtin data generate --out DIR [--num-users 10000 --interactions-per-user 100 --seed 0 ...]``: planted data
- ``mtin data build --interactions FILE --out DIR [--items FILE] [--max-history 50] [--engine memory|beam]``
  -> ``DIR/train.tfrecord``, ``DIR/validation.tfrecord``, ``DIR/test.tfrecord``, ``DIR/build_report.json``
  (validation: per user the interactions just before test, carved from the training period; docs/DATA.md)

Every step prints its report summary at the end and writes it as JSON beside the output. ``--strict`` stops at the
first bad input with an error naming file and line (exit code 2).
"""
from __future__ import annotations

import argparse
import os
import sys

from mtin_tf import features as F
from mtin_tf.data.history import TEST_FRACTION, VALIDATION_FRACTION


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="convert, fetch, generate and build training examples from click logs",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = data.add_subparsers(dest="data_command", metavar="STEP", required=True)

    conv = sub.add_parser("convert", help="a dataset in its published layout -> canonical interactions + items")
    conv.add_argument("--format", required=True, choices=("microvideo", "kuaishou", "movielens", "canonical"))
    conv.add_argument("--input", required=True, nargs="+",
                      help="microvideo: directory with train_data.csv etc.; kuaishou: dataset.pkl; movielens: the "
                           "recbole wheel; canonical: interaction CSV/Parquet file(s)")
    conv.add_argument("--features", help="kuaishou: visual features .npy; canonical: item features .npz/.csv/.parquet")
    conv.add_argument("--out", required=True)
    conv.add_argument("--click-threshold", type=float, default=4.0, help="movielens: rating >= this is a click")
    conv.add_argument("--title-hash-dim", type=int, default=0, help="movielens: add a title hash embedding")
    conv.add_argument("--time-field", type=int, default=None,
                      help="kuaishou: field of the impression tuple holding a timestamp (default: ordinal position)")
    _strict(conv)
    conv.set_defaults(func=run_convert)

    fetch = sub.add_parser("fetch-movielens", help="download MovieLens-100K (inside the recbole wheel) and convert")
    fetch.add_argument("--out", required=True)
    fetch.add_argument("--cache", default=None, help="wheel cache directory (default ~/.cache/mtin-tf/wheels)")
    fetch.add_argument("--click-threshold", type=float, default=4.0)
    fetch.add_argument("--title-hash-dim", type=int, default=0)
    _strict(fetch)
    fetch.set_defaults(func=run_fetch_movielens)

    gen = sub.add_parser("generate", help="planted-interest synthetic data with ground truth")
    gen.add_argument("--out", required=True)
    gen.add_argument("--num-users", type=int, default=10_000)
    gen.add_argument("--num-items", type=int, default=50_000)
    gen.add_argument("--num-clusters", type=int, default=20)
    gen.add_argument("--feature-dim", type=int, default=32)
    gen.add_argument("--interactions-per-user", type=int, default=100)
    gen.add_argument("--total-interactions", type=int, default=None, help="overrides --interactions-per-user")
    gen.add_argument("--false-positive-rate", type=float, default=0.1)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=run_generate)

    build = sub.add_parser("build", help="canonical interactions -> train/validation/test TFRecords of tf.Example")
    build.add_argument("--interactions", required=True, nargs="+", help="canonical CSV/Parquet file(s)")
    build.add_argument("--items", default=None,
                       help="item features (.npz/.csv/.parquet): interactions of items without features are dropped "
                            "and counted")
    build.add_argument("--out", required=True)
    build.add_argument("--max-history", type=int, default=F.DEFAULT_MAX_HISTORY)
    build.add_argument("--test-fraction", type=float, default=TEST_FRACTION,
                       help=f"per user, the last fraction goes to test (default {TEST_FRACTION})")
    build.add_argument("--time-cut", type=int, default=None, help="global cut: timestamp >= this goes to test")
    build.add_argument("--validation-fraction", type=float, default=VALIDATION_FRACTION,
                       help="per user, this fraction of the interactions (the latest before test) goes to validation "
                            f"(default {VALIDATION_FRACTION})")
    build.add_argument("--validation-cut", type=int, default=None,
                       help="global cut instead: non-test interactions with timestamp >= this go to validation")
    build.add_argument("--split", default="auto", choices=("auto", "given", "fraction", "time"),
                       help="auto: the is_test column if present, else --time-cut if given, else --test-fraction")
    build.add_argument("--min-history", type=int, default=0, help="emit a target only with this many prior clicks")
    build.add_argument("--history-from", default="all", choices=("all", "train"))
    build.add_argument("--engine", default="memory", choices=("memory", "beam"),
                       help="memory: stream users in this process; beam: the Beam transform on the DirectRunner")
    _strict(build)
    build.set_defaults(func=run_build)


def _strict(parser) -> None:
    parser.add_argument("--strict", action="store_true", help="stop at the first bad input (default: skip, report)")


def _finish(report, out_dir: str, name: str) -> None:
    path = report.write_json(os.path.join(out_dir, name))
    print(report.summary())
    print(f"report: {path}")


def _guard(step):
    """Run ``step(args)``; a BadInputError (strict mode, or an unreadable file) becomes exit code 2."""
    from mtin_tf.data.report import BadInputError

    def run(args) -> int:
        try:
            return step(args)
        except BadInputError as e:
            print(f"mtin data {args.data_command}: error: {e}", file=sys.stderr)
            return 2
    run.__name__ = step.__name__
    return run


def _write_converted(df, items, report, out_dir: str) -> int:
    from mtin_tf.data import canonical as C

    C.write_interactions(df, os.path.join(out_dir, C.INTERACTIONS_FILE))
    C.write_item_features(os.path.join(out_dir, C.ITEM_FEATURES_FILE), items)
    print(f"wrote {len(df)} interactions of {df[F.USER_ID].nunique()} users and {len(items)} items "
          f"(feature dim {items.dim}) to {out_dir}")
    _finish(report, out_dir, "convert_report.json")
    return 0


@_guard
def run_convert(args) -> int:
    from mtin_tf.data import canonical as C
    from mtin_tf.data.report import Report

    report = Report("convert", strict=args.strict)
    if args.format == "microvideo":
        from mtin_tf.data.microvideo import read_microvideo

        df, items = read_microvideo(args.input[0], report)
    elif args.format == "kuaishou":
        from mtin_tf.data.kuaishou import read_kuaishou

        if not args.features:
            raise SystemExit("--features (the visual .npy) is required for --format kuaishou")
        df, items = read_kuaishou(args.input[0], args.features, report, time_field=args.time_field)
    elif args.format == "movielens":
        from mtin_tf.data.movielens import read_movielens

        df, items = read_movielens(args.input[0], report, click_threshold=args.click_threshold,
                                   title_hash_dim=args.title_hash_dim)
    else:
        if not args.features:
            raise SystemExit("--features (item features .npz/.csv/.parquet) is required for --format canonical")
        items = C.read_item_table(args.features, report)
        df = C.read_interactions(args.input, report, items=items)
    return _write_converted(df, items, report, args.out)


@_guard
def run_fetch_movielens(args) -> int:
    from mtin_tf.data import movielens
    from mtin_tf.data.report import Report

    wheel = movielens.fetch_wheel(args.cache or movielens.DEFAULT_CACHE)
    print(f"MovieLens-100K from {wheel}")
    report = Report("convert", strict=args.strict)
    df, items = movielens.read_movielens(wheel, report, click_threshold=args.click_threshold,
                                         title_hash_dim=args.title_hash_dim)
    return _write_converted(df, items, report, args.out)


def run_generate(args) -> int:
    from mtin_tf.data import planted

    s = planted.generate(args.out, num_users=args.num_users, num_items=args.num_items, num_clusters=args.num_clusters,
                         feature_dim=args.feature_dim, interactions_per_user=args.interactions_per_user,
                         total_interactions=args.total_interactions, seed=args.seed,
                         false_positive_rate=args.false_positive_rate, progress=True)
    print(s.describe())
    return 0


@_guard
def run_build(args) -> int:
    from mtin_tf.data import canonical as C
    from mtin_tf.data.history import check_split_options
    from mtin_tf.data.report import Report

    try:
        check_split_options(args.test_fraction, args.validation_fraction)
    except ValueError as e:
        print(f"mtin data build: error: {e}", file=sys.stderr)
        return 2
    report = Report("build", strict=args.strict)
    items = C.read_item_table(args.items, report) if args.items else None
    df = C.read_interactions(args.interactions, report, items=items)
    options = dict(max_history=args.max_history, test_fraction=args.test_fraction, time_cut=args.time_cut,
                   validation_fraction=args.validation_fraction, validation_cut=args.validation_cut,
                   min_history=args.min_history, split=args.split, history_from=args.history_from)
    if args.engine == "beam":
        paths = _build_beam(df, args.out, options, report)
    else:
        from mtin_tf.data.examples import write_split_tfrecords
        from mtin_tf.data.history import iter_examples

        paths = write_split_tfrecords(iter_examples(df, report=report, progress=True, **options), args.out)
    print("wrote " + ", ".join(paths.values()))
    _finish(report, args.out, "build_report.json")
    return 0


def _build_beam(df, out_dir: str, options: dict, report) -> dict:
    import apache_beam as beam

    from mtin_tf.data.beam_history import BuildExamples
    from mtin_tf.data.examples import SPLIT_FILES, serialize_example
    from mtin_tf.data.history import resolve_split

    options = dict(options, split=resolve_split(df, options["split"], options["time_cut"]))
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, file) for name, file in SPLIT_FILES.items()}
    with beam.Pipeline() as p:
        result = (p | beam.Create(df.to_dict("records")) | BuildExamples(**options))
        for name in SPLIT_FILES:
            (getattr(result, name) | f"Serialize{name}" >> beam.Map(serialize_example)
             | f"Write{name}" >> beam.io.WriteToTFRecord(paths[name], shard_name_template=""))
    counters = p.result.metrics().query()["counters"]
    for c in counters:
        report.count(c.key.metric.name, c.committed)
    return paths
