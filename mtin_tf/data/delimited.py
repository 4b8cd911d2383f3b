"""Delimited text (CSV, TSV) read so that no row can stop or shift the file: every field kept as text, rows counted.

:func:`iter_blocks` reads the header line, then blocks of physical lines. A row with **more** fields than the header is
skipped and counted as ``malformed_row`` at ``file:line`` (``--strict`` stops there, after the rows before it were
checked); a row with fewer fields is padded with empty fields (the caller counts them as ``missing_field``); blank lines
are not rows. Line numbers are physical (the header is line 1) whatever the other lines hold, and text that is not
valid in the file's encoding is kept with U+FFFD in place of the bad bytes, so the field it is in fails its own check.

Fast path: pandas' C parser on the block, once the lines with too many fields are removed (fields counted per line:
a comma count, or Python's csv module for a line with a quote character). A column of integers comes back as exact
int64 (or uint64); every other column as the text written (a column pandas would read as float or bool is read again
as text, so that no value is rounded or renamed). Should pandas still disagree with the line
count (a quoted line break, a NUL byte), the block is parsed line by line with the csv module instead. A record never
spans lines.
"""
from __future__ import annotations

import csv
import io
import itertools
from typing import BinaryIO, Iterator

import numpy as np
import pandas as pd

from mtin_tf.data import report as R

BLOCK_LINES = 1_000_000


def iter_blocks(f: BinaryIO, source: str, report: R.Report, *, sep: str = ",", quoting: int = csv.QUOTE_MINIMAL,
                encoding: str = "utf-8", block_lines: int = BLOCK_LINES, read_counter: str = "rows_read",
                ) -> Iterator[tuple[list[str], np.ndarray, pd.DataFrame]]:
    """Yield ``(header, line numbers [n], DataFrame of n rows: integer columns or text)`` per block of ``f`` (a file
    opened in binary mode).

    Skipped malformed rows are added to ``read_counter`` so that "read = kept + skipped" holds.
    """
    header = read_header(f, source, sep=sep, quoting=quoting, encoding=encoding)
    line = 2
    while True:
        block = list(itertools.islice(f, block_lines))
        if not block:
            return
        for lines, frame in _parse_block(block, line, header, source, report, sep, quoting, encoding, read_counter):
            yield header, lines, frame
        line += len(block)


def read_header(f: BinaryIO, source: str, *, sep: str = ",", quoting: int = csv.QUOTE_MINIMAL,
                encoding: str = "utf-8") -> list[str]:
    """Column names of the first line (a UTF-8 byte-order mark is dropped); a precise error if there are none."""
    first = f.readline()
    text = first.decode("utf-8-sig" if encoding.replace("_", "-").lower() == "utf-8" else encoding, "replace")
    names = [n.strip() for n in _split(text, sep, quoting) or []]
    if not any(names):
        raise R.BadInputError(f"{source}:1: no header line (expected column names separated by {sep!r})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise R.BadInputError(f"{source}:1: column name(s) {repeated} appear more than once in the header {names}")
    return names


def _split(text: str, sep: str, quoting: int) -> list[str] | None:
    """Fields of one line with the csv module, None where it cannot be parsed."""
    try:
        return next(csv.reader([text.replace("\0", "\ufffd")], delimiter=sep, quoting=quoting,
                               skipinitialspace=True), [])
    except csv.Error:
        return None


def _parse_block(block, first_line, header, source, report, sep, quoting, encoding, read_counter):
    width = len(header)
    data = b"".join(block)
    numbers, counts = _field_counts(block, data, sep, quoting, encoding)
    bad = (counts > width) | (counts < 0)
    if bad.any():
        keep_until = int(np.argmax(bad))
        if report.strict:  # the rows before the first malformed one are checked first; bad_rows below then raises
            yield from _frames(block, None, numbers[:keep_until], first_line, header, source, report, sep, quoting,
                               encoding, read_counter)
        report.count(read_counter, int(bad.sum()))
        report.bad_rows(R.MALFORMED_ROW, bad, source, numbers + first_line,
                        [f"{c} fields, the header has {width}" if c >= 0 else "unparsable quoting"
                         for c in counts[bad][:R.MAX_EXAMPLES]])
    yield from _frames(block, data if numbers.size == len(block) and not bad.any() else None, numbers[~bad],
                       first_line, header, source, report, sep, quoting, encoding, read_counter)


def _field_counts(block, data: bytes, sep: str, quoting: int, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the non-blank lines of ``block`` and their field counts (-1: quoting the csv module refuses).

    Separators are counted with NumPy over the whole block; only lines holding a quote character go through the csv
    module one by one."""
    sep_b = sep.encode(encoding)
    if len(sep_b) != 1 or not block:
        sep_counts = np.array([raw.count(sep_b) for raw in block], np.int64)
        blank = np.array([not raw.strip() for raw in block], bool)
        quoted = np.array([b'"' in raw for raw in block], bool)
    else:
        buf = np.frombuffer(data, np.uint8)
        starts = np.zeros(len(block), np.int64)
        np.cumsum(np.fromiter(map(len, block), np.int64, len(block))[:-1], out=starts[1:])
        sep_counts = np.add.reduceat(buf == sep_b[0], starts).astype(np.int64)  # lines are never empty
        blank = np.add.reduceat(~np.isin(buf, np.frombuffer(b" \t\r\n\x0b\x0c", np.uint8)), starts) == 0
        quoted = np.add.reduceat(buf == ord('"'), starts) > 0
    numbers = np.flatnonzero(~blank)
    counts = sep_counts[numbers] + 1
    if quoting != csv.QUOTE_NONE:
        for j in np.flatnonzero(quoted[numbers]):
            fields = _split(block[numbers[j]].decode(encoding, "replace").rstrip("\r\n"), sep, quoting)
            counts[j] = -1 if fields is None else len(fields)
    return numbers, counts


def _frames(block, data, numbers, first_line, header, source, report, sep, quoting, encoding, read_counter):
    """The rows ``numbers`` of ``block`` as a DataFrame (``data``: their bytes joined, when already at hand)."""
    if numbers.size == 0:
        return
    lines = numbers + first_line
    if data is None:
        data = b"".join(block[k] for k in numbers)
    options = dict(header=None, names=header, na_filter=False, skipinitialspace=True, sep=sep, quoting=quoting,
                   encoding=encoding, encoding_errors="replace", skip_blank_lines=True, index_col=False, engine="c",
                   low_memory=False)
    try:
        frame = pd.read_csv(io.BytesIO(data), **options)  # exact int64/uint64 columns, else text
        if len(frame) == len(numbers):
            as_text = [c for c in frame.columns if frame[c].dtype.kind in "fb"]  # floats and bools: not as written
            if as_text:
                text = pd.read_csv(io.BytesIO(data), **options, usecols=as_text, dtype=str)
                for c in as_text:
                    frame[c] = text[c].to_numpy(object)
            yield lines, frame
            return
    except (pd.errors.ParserError, ValueError):
        pass
    rows, widths = [], []  # slow path: one line at a time
    for k in numbers:
        text = block[k].decode(encoding, "replace").rstrip("\r\n")
        fields = _split(text, sep, quoting) or text.split(sep)  # the csv module refuses e.g. a lone CR: plain split
        widths.append(len(fields))
        rows.append([s.strip() for s in fields[:len(header)]] + [""] * (len(header) - len(fields)))
    widths = np.asarray(widths)
    wide = widths > len(header)
    if wide.any():
        report.count(read_counter, int(wide.sum()))
        report.bad_rows(R.MALFORMED_ROW, wide, source, lines,
                        [f"{w} fields, the header has {len(header)}" for w in widths[wide][:R.MAX_EXAMPLES]])
    yield lines[~wide], pd.DataFrame([r for r, w in zip(rows, wide) if not w], columns=header, dtype=object)
