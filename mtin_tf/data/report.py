"""Counting and reporting bad input, and the counters of each data step.

Every reader and builder takes a :class:`Report`. A row that is skipped is always counted under one *kind* of bad input
(the ``KINDS`` below) with the first few offending locations (``file:line``); nothing is dropped without being counted.
Kinds in ``KEPT_KINDS`` are warnings: the rows are counted but kept.
With ``strict=True`` the first bad row raises :class:`BadInputError` naming the file and line instead.

At the end a step prints :meth:`Report.summary` and writes :meth:`Report.write_json` beside its output, e.g.::

    {"step": "convert", "strict": false,
     "bad_input": {"duplicate_row": {"count": 2, "examples": ["a.csv:7: user 3 item 9 at 100 seen at line 5"]}},
     "counts": {"rows_read": 1000, "rows_kept": 998}}
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import numpy as np

# Kinds of bad input (keys of the JSON "bad_input" object).
MALFORMED_ROW = "malformed_row"  # a row with more fields than the header, or a record not in the layout's structure
MISSING_FIELD = "missing_field"  # an empty field (or a short row), or a column the format requires is absent
NON_NUMERIC_ID = "non_numeric_id"  # user or item id that is not an integer
NONPOSITIVE_ID = "nonpositive_id"  # id 0 (reserved for padding) or negative, where the format does not remap ids
ID_OUT_OF_RANGE = "id_out_of_range"  # id above ranges.ID_MAX (int64), judged on the text as written
BAD_TIMESTAMP = "bad_timestamp"  # negative, unparsable or beyond-int64 timestamp
BAD_CLICK = "bad_click"  # click (or rating) that is not a number, or a click outside {0, 1}
BAD_IS_TEST = "bad_is_test"  # an is_test split flag that is not 0 or 1
BAD_CATEGORY = "bad_category"  # an item category (MicroVideo: cate_id) that is not an integer in the category range
DUPLICATE_ROW = "duplicate_row"  # same (user, item, timestamp) as an earlier row, or an item id listed again
BAD_FEATURE_VECTOR = "bad_feature_vector"  # NaN/inf values or a vector of the wrong length
ITEM_WITHOUT_FEATURES = "item_without_features"  # an interaction whose item has no (valid) feature vector
HISTORY_MISMATCH = "history_mismatch"  # KuaiShou: a record disagrees with the published history lists (kept)
KEPT_KINDS = (HISTORY_MISMATCH,)  # counted, but the rows are kept
KINDS = (MALFORMED_ROW, MISSING_FIELD, NON_NUMERIC_ID, NONPOSITIVE_ID, ID_OUT_OF_RANGE, BAD_TIMESTAMP, BAD_CLICK,
         BAD_IS_TEST, BAD_CATEGORY, DUPLICATE_ROW, BAD_FEATURE_VECTOR, ITEM_WITHOUT_FEATURES, HISTORY_MISMATCH)

MAX_EXAMPLES = 5  # offending locations kept per kind


class BadInputError(ValueError):
    """Raised in strict mode at the first bad input; the message names the file and line."""


class Report:
    """Bad-input counts with example locations, plus free counters (rows read, examples written, ...)."""

    def __init__(self, step: str, *, strict: bool = False):
        self.step = step
        self.strict = strict
        self.bad: dict[str, dict] = {}
        self.counts: dict[str, int] = {}

    def bad_input(self, kind: str, locations: Sequence[str], *, count: int | None = None) -> None:
        """Count ``count`` (default ``len(locations)``) bad rows of ``kind``; ``locations`` are "file:line: detail"."""
        if kind not in KINDS:
            raise KeyError(f"unknown bad-input kind {kind!r}")
        n = len(locations) if count is None else int(count)
        if n == 0:
            return
        if self.strict:
            where = locations[0] if len(locations) else "(no location)"
            raise BadInputError(f"{kind} at {where} (strict mode stops at the first bad input)")
        entry = self.bad.setdefault(kind, {"count": 0, "examples": []})
        entry["count"] += n
        room = MAX_EXAMPLES - len(entry["examples"])
        if room > 0:
            entry["examples"].extend(str(loc) for loc in list(locations[:room]))

    def bad_rows(self, kind: str, mask: np.ndarray, source: str, lines: np.ndarray, detail: Iterable[str] | None = None,
                 ) -> None:
        """Vectorised :meth:`bad_input`: rows where ``mask`` is true, at ``source:lines[i]``; ``detail`` per bad row."""
        idx = np.flatnonzero(np.asarray(mask))
        if idx.size == 0:
            return
        details = list(detail) if detail is not None else [""] * idx.size
        first = [f"{source}:{int(lines[i])}" + (f": {d}" if d else "") for i, d in zip(idx[:MAX_EXAMPLES], details)]
        self.bad_input(kind, first, count=idx.size)

    def bad_row_checks(self, checks: Sequence[tuple], source: str, lines: np.ndarray) -> None:
        """:meth:`bad_rows` for several ``(kind, mask, details)`` checks with disjoint masks over the same rows, in
        their order; in strict mode the check holding the earliest bad row goes first, so the error names it."""
        if self.strict:
            checks = sorted(checks, key=lambda c: int(np.argmax(c[1])) if np.any(c[1]) else len(c[1]))
        for kind, mask, details in checks:
            self.bad_rows(kind, mask, source, lines, details)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + int(n)

    def to_dict(self) -> dict:
        return {"step": self.step, "strict": self.strict, "bad_input": self.bad, "counts": self.counts}

    def summary(self) -> str:
        lines = [f"[{self.step}] " + ", ".join(f"{k}={v}" for k, v in self.counts.items())]
        if not self.bad:
            lines.append(f"[{self.step}] no bad input")
        for kind, entry in self.bad.items():
            verb = "counted (kept)" if kind in KEPT_KINDS else "skipped"
            lines.append(f"[{self.step}] {verb} {entry['count']} x {kind}, e.g. " + "; ".join(entry["examples"][:3]))
        return "\n".join(lines)

    def write_json(self, path: str) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=False)
        return path
