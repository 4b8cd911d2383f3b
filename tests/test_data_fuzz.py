"""Property-based fuzzing of the canonical readers (Hypothesis): no injected row can stop, shift or fool a conversion.

Valid canonical interactions (ids up to int64's maximum, written in several textual forms) are mixed with injected bad
rows of every kind, in CSV and Parquet, and run through ``mtin data convert`` and ``mtin data build`` (memory and Beam
engines). Asserted: every valid row survives with its exact values, every injected row is counted under its kind at its
own file:line, ``rows_read = rows_kept + skipped``, and nothing but a BadInputError ever leaves a reader.

``make test`` runs a small number of examples (well under a minute in total). A longer run:
``MTIN_FUZZ_EXAMPLES=500 make test PYTEST_ARGS=tests/test_data_fuzz.py`` (every test then draws that many examples).
"""
import argparse
import json
import os
import tempfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtin_tf import features as F
from mtin_tf.data import canonical as C
from mtin_tf.data import cli as data_cli
from mtin_tf.data import examples as E
from mtin_tf.data import report as R
from mtin_tf.data.ranges import INT64_MAX

FUZZ_EXAMPLES = int(os.environ.get("MTIN_FUZZ_EXAMPLES", "0"))


def fuzz_settings(max_examples: int):
    """Settings of one fuzz test: ``max_examples`` unless MTIN_FUZZ_EXAMPLES asks for more; no example database."""
    return settings(max_examples=FUZZ_EXAMPLES or max_examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


HEADER = ",".join(F.INTERACTION_COLUMNS)
ids = st.one_of(st.integers(1, 1000), st.integers(1, INT64_MAX), st.just(INT64_MAX))
timestamps = st.one_of(st.integers(0, 10 ** 6), st.integers(0, INT64_MAX), st.just(INT64_MAX))


def render(value: int, form: int, csv: bool) -> str:
    """An integer as a user might write it: plain, +sign, blanks, trailing .0, leading zeros or (CSV) quoted."""
    forms = [str(value), f"+{value}", f" {value} ", f"{value}.0", f"00{value}", f'"{value}"' if csv else str(value)]
    return forms[form % len(forms)]


BAD_VALUES = {  # kind -> (column, values), column None = the row's structure
    R.NON_NUMERIC_ID: ("id", ["abc", "1.5", "0x10", "1_000", "nan", "inf", "12abc", "-", "1e", "\udcff"]),
    R.NONPOSITIVE_ID: ("id", ["0", "-5", "-0", "0.0", "-99999999999999999999999", "-1e400"]),
    R.ID_OUT_OF_RANGE: ("id", ["9223372036854775808", "99999999999999999999999", "1e30", "1e400",
                               "18446744073709551616"]),
    R.BAD_TIMESTAMP: (F.TIMESTAMP, ["-1", "-0.5", "yesterday", "9223372036854775808", "1e400", "\udcff", "inf"]),
    R.BAD_CLICK: (F.CLICK, ["2", "-1", "0.5", "yes", "1e400", "\udcff"]),
    R.MISSING_FIELD: ("any", ["", "   "]),
}
KINDS = [R.MALFORMED_ROW, R.MISSING_FIELD, R.NON_NUMERIC_ID, R.NONPOSITIVE_ID, R.ID_OUT_OF_RANGE, R.BAD_TIMESTAMP,
         R.BAD_CLICK, R.DUPLICATE_ROW, R.ITEM_WITHOUT_FEATURES]


@st.composite
def datasets(draw, csv: bool):
    """(item ids, rows as lists of 4 field strings in file order, valid (u, i, t, c) set, {kind: [row index]})."""
    item_ids = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
    valid = draw(st.lists(st.tuples(ids, st.sampled_from(item_ids), timestamps, st.integers(0, 1)), min_size=1,
                          max_size=30, unique_by=lambda r: r[:3]))
    rows = [[render(v, draw(st.integers(0, 5)), csv) for v in r] for r in valid]
    kinds = KINDS if csv else [k for k in KINDS if k != R.MALFORMED_ROW]  # a Parquet row cannot have extra fields
    injected = draw(st.lists(st.tuples(st.sampled_from(kinds), st.integers(0, 10 ** 6), st.integers(0, 10 ** 6)),
                             max_size=15))
    expected = {}
    unknown_item = max(item_ids) + 1 if max(item_ids) < INT64_MAX else 1
    while unknown_item in item_ids:
        unknown_item += 1
    for n, (kind, where, pick) in enumerate(injected):
        if kind == R.DUPLICATE_ROW:  # after an earlier valid row, with any click
            originals = [k for k, r in enumerate(rows) if k not in {j for v in expected.values() for j in v}]
            src = originals[pick % len(originals)]
            pos = src + 1 + where % (len(rows) - src)
            row = rows[src][:3] + [str(pick % 2)]
        else:
            pos = where % (len(rows) + 1)
            u, t = 1 + n, 10 ** 7 + n  # a (user, item, timestamp) no valid row has
            row = [str(u), str(item_ids[pick % len(item_ids)]), str(t), str(pick % 2)]
            if kind == R.ITEM_WITHOUT_FEATURES:
                row[1] = str(unknown_item)
                unknown_item += 1
                while unknown_item in item_ids:
                    unknown_item += 1
            elif kind == R.MALFORMED_ROW:
                row = row + [["", "x", "1,2"][pick % 3]]
            else:
                column, values = BAD_VALUES[kind]
                col = {"id": pick % 2, "any": pick % 4}.get(column, F.INTERACTION_COLUMNS.index(column)
                                                            if column in F.INTERACTION_COLUMNS else 0)
                row[col] = values[where % len(values)]
                if kind == R.MISSING_FIELD and csv and pick % 3 == 0:
                    row = row[:3]  # a short row: no click field at all
        for k in expected:  # rows at or after pos move down by one
            expected[k] = [j + 1 if j >= pos else j for j in expected[k]]
        rows.insert(pos, row)
        expected.setdefault(kind, []).append(pos)
    return item_ids, rows, set(valid), expected


def _write(directory: str, item_ids, rows, csv: bool) -> tuple[str, str, int]:
    """Write the interactions (CSV or Parquet, all columns text) and items; returns paths and the first row's line."""
    items = C.write_item_features(os.path.join(directory, "items.npz"), item_ids=item_ids,
                                  features=np.arange(2 * len(item_ids), dtype=np.float32).reshape(-1, 2))
    if csv:
        path = os.path.join(directory, "inter.csv")
        text = "\n".join([HEADER] + [",".join(r) for r in rows]) + "\n"
        with open(path, "wb") as f:
            f.write(text.encode("utf-8", "surrogateescape"))  # \udcff -> the byte 0xff: not UTF-8
        return path, items, 2
    path = os.path.join(directory, "inter.parquet")
    table = pd.DataFrame([[None if v == "" else v.replace("\udcff", "\u00ff") for v in r] for r in rows],
                         columns=list(F.INTERACTION_COLUMNS), dtype=object)
    table.to_parquet(path, index=False)
    return path, items, 1


def _check(report: dict, df: pd.DataFrame, path: str, first_line: int, valid: set, expected: dict) -> None:
    got = set(zip(*(df[c].tolist() for c in F.INTERACTION_COLUMNS)))
    assert got == valid and len(df) == len(valid)  # every valid row, with its exact values, and nothing else
    assert set(report["bad_input"]) == set(expected)
    for kind, positions in expected.items():
        entry = report["bad_input"][kind]
        assert entry["count"] == len(positions), kind
        lines = {int(e[len(path) + 1:].split(":")[0]) for e in entry["examples"]}
        assert lines <= {p + first_line for p in positions}, kind
    counts = report["counts"]
    assert counts["rows_read"] == counts["rows_kept"] + sum(len(p) for p in expected.values())


def _args(**kw):
    defaults = dict(click_threshold=4.0, title_hash_dim=0, time_field=None, strict=False, format="canonical",
                    max_history=5, test_fraction=0.2, time_cut=None, validation_fraction=0.1, validation_cut=None,
                    split="auto", min_history=0, history_from="all", engine="memory")
    return argparse.Namespace(**{**defaults, **kw})


@pytest.mark.parametrize("csv", [True, False], ids=["csv", "parquet"])
def test_convert_keeps_every_valid_row_and_counts_every_injected_one(csv):
    @fuzz_settings(40)
    @given(datasets(csv))
    def check(data):
        item_ids, rows, valid, expected = data
        with tempfile.TemporaryDirectory() as d:
            path, items, first_line = _write(d, item_ids, rows, csv)
            out = os.path.join(d, "out")
            assert data_cli.run_convert(_args(input=[path], features=items, out=out, data_command="convert")) == 0
            with open(os.path.join(out, "convert_report.json")) as f:
                report = json.load(f)
            _check(report, pd.read_parquet(os.path.join(out, C.INTERACTIONS_FILE)), path, first_line, valid,
                   expected)
            strict = data_cli.run_convert(_args(input=[path], features=items, out=os.path.join(d, "strict"),
                                                strict=True, data_command="convert"))
            assert strict == (2 if expected else 0)

    check()


@pytest.mark.parametrize("engine, examples", [("memory", 20), ("beam", 5)])
def test_build_turns_exactly_the_valid_rows_into_examples(engine, examples):
    @fuzz_settings(examples)
    @given(datasets(csv=True))
    def check(data):
        item_ids, rows, valid, expected = data
        with tempfile.TemporaryDirectory() as d:
            path, items, first_line = _write(d, item_ids, rows, csv=True)
            out = os.path.join(d, "built")
            assert data_cli.run_build(_args(interactions=[path], items=items, out=out, engine=engine,
                                            data_command="build")) == 0
            with open(os.path.join(out, "build_report.json")) as f:
                report = json.load(f)
            built = [ex for name in E.SPLIT_FILES for ex in E.read_tfrecords(os.path.join(out, E.SPLIT_FILES[name]))]
            targets = pd.DataFrame({F.USER_ID: [ex[F.USER_ID] for ex in built],
                                    F.ITEM_ID: [ex[F.ITEM_ID] for ex in built],
                                    F.TIMESTAMP: [ex[F.TIMESTAMP] for ex in built],
                                    F.CLICK: [ex[F.LABEL] for ex in built]})
            _check(report, targets, path, first_line, valid, expected)  # every valid row is one target

    check()


@fuzz_settings(60)
@given(st.binary(max_size=300), st.sampled_from([b"", HEADER.encode() + b"\n", HEADER.encode() + b",is_test\n"]))
def test_no_bytes_make_a_reader_raise_anything_but_bad_input(body, head):
    with tempfile.TemporaryDirectory() as d:
        for name in ("x.csv", "x.parquet", "x.npz"):
            path = os.path.join(d, name)
            with open(path, "wb") as f:
                f.write(head + body)
            try:
                if name.endswith(".npz"):
                    C.read_item_table(path, R.Report("t"))
                else:
                    C.read_interactions(path, R.Report("t"), items=None)
            except R.BadInputError:
                pass


@fuzz_settings(40)
@given(st.lists(st.lists(st.one_of(st.text(max_size=6), st.integers(-2 ** 70, 2 ** 70).map(str),
                                   st.floats().map(str)), min_size=0, max_size=6), max_size=12))
def test_no_text_rows_make_a_reader_raise_anything_but_bad_input(rows):
    with tempfile.TemporaryDirectory() as d:
        inter = os.path.join(d, "x.csv")
        with open(inter, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write("\n".join([HEADER + ",is_test"] + [",".join(r) for r in rows]) + "\n")
        items = os.path.join(d, "items.csv")
        with open(items, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write("\n".join(["item_id,features,category"] + [",".join(r[:3]) for r in rows]) + "\n")
        report = R.Report("t")
        try:
            df = C.read_interactions(inter, report)
            assert report.counts["rows_read"] == len(df) + sum(v["count"] for v in report.bad.values())
        except R.BadInputError:
            pass
        try:
            C.read_item_table(items, R.Report("t"))
        except R.BadInputError:
            pass
