"""The value ranges of the canonical columns (the one place they are written), and exact parsing into int64.

Ranges (inclusive): user and item ids ``[ID_MIN, ID_MAX]`` (0 is reserved for padding; the top is int64's), timestamps
``[TIMESTAMP_MIN, TIMESTAMP_MAX]``, clicks and the ``is_test`` flag ``{0, 1}``, item categories
``[CATEGORY_MIN, CATEGORY_MAX]`` (0 = no category). :mod:`mtin_tf.data.canonical`, :mod:`mtin_tf.data.schema` and the
pipeline's HistoryGen import them from here.

:func:`parse_int64` turns a column as read (text, Python objects, floats or integers) into exact int64 values and a
status per row. Text is range-checked *as written*, before any conversion to a fixed-width integer, so an id such as
``99999999999999999999999`` is reported as too large instead of wrapping around to a negative number, and an id above
2**53 keeps its last digits (no round trip through float64).
"""
from __future__ import annotations

import re
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

import numpy as np
import pandas as pd

from mtin_tf import features as F

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
ID_MIN, ID_MAX = 1, INT64_MAX
TIMESTAMP_MIN, TIMESTAMP_MAX = 0, INT64_MAX
CLICK_MIN, CLICK_MAX = 0, 1
IS_TEST_MIN, IS_TEST_MAX = 0, 1
CATEGORY_MIN, CATEGORY_MAX = 0, INT64_MAX
# (min, max) of each canonical interaction column
RANGES = {F.USER_ID: (ID_MIN, ID_MAX), F.ITEM_ID: (ID_MIN, ID_MAX), F.TIMESTAMP: (TIMESTAMP_MIN, TIMESTAMP_MAX),
          F.CLICK: (CLICK_MIN, CLICK_MAX)}

# status of each parsed value
OK, EMPTY, INVALID, TOO_LOW, TOO_HIGH = 0, 1, 2, 3, 4
_EXACT_FLOAT = 2.0 ** 53  # below this a float parsed from an integer literal is exact
_EXACT_CHARS = 15  # ... when the literal has at most 15 characters (so at most 15 significant digits)
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_MAX_DIGITS = 25  # a literal whose magnitude has more digits is out of the int64 range without computing it


def parse_int64(col: pd.Series, *, floor: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact int64 values of ``col`` and a status per row (``OK``, ``EMPTY``, ``INVALID``, ``TOO_LOW``, ``TOO_HIGH``).

    Accepted: integers, and decimal literals (``12``, ``+12``, ``12.0``, ``1e3``, surrounding blanks ignored) whose
    value is an integer; with ``floor=True`` a fractional value is floored instead of ``INVALID``. Empty text, None and
    NaN are ``EMPTY``; anything else (words, ``inf``, ``0x10``, ``1_000``) is ``INVALID``; values outside int64 are
    ``TOO_LOW`` / ``TOO_HIGH``. Values are 0 where the status is not ``OK``.
    """
    n = len(col)
    values = np.zeros(n, np.int64)
    status = np.zeros(n, np.int8)
    dtype = col.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return col.to_numpy(np.int64), status
    if pd.api.types.is_integer_dtype(dtype):
        a = col.to_numpy()
        if a.dtype == np.uint64:
            high = a > np.uint64(INT64_MAX)
            status[high] = TOO_HIGH
            a = np.where(high, 0, a)
        return a.astype(np.int64), status
    if pd.api.types.is_float_dtype(dtype):
        text = None
        f = col.to_numpy(np.float64)
        status[np.isnan(f)] = EMPTY
        todo = np.flatnonzero(~np.isnan(f))
    else:
        if pd.api.types.infer_dtype(col, skipna=False) == "string":  # text as read: no copy
            missing, text = np.zeros(n, bool), col
        else:
            missing = col.isna().to_numpy()
            text = col.where(~missing, "").astype(str)
        status[missing | (text == "").to_numpy()] = EMPTY
        todo = np.flatnonzero(status == OK)
        num = pd.to_numeric(text.iloc[todo], errors="coerce")
        if num.dtype.kind == "i":
            values[todo] = num.to_numpy()
            return values, status
        if num.dtype.kind == "u":
            a = num.to_numpy()
            high = a > np.uint64(INT64_MAX)
            status[todo[high]] = TOO_HIGH
            values[todo[~high]] = a[~high].astype(np.int64)
            return values, status
        f = np.full(n, np.nan)
        f[todo] = num.to_numpy(np.float64) if num.dtype.kind == "f" else np.nan
    sub = f[todo]
    small = np.abs(sub) < _EXACT_FLOAT  # false for NaN and inf
    if text is not None:  # pandas' float parser is exact for up to 15 significant digits only
        small &= text.iloc[todo].str.len().to_numpy() <= _EXACT_CHARS
    s_idx, s_val = todo[small], sub[small]
    whole = np.floor(s_val)
    if floor:
        values[s_idx] = whole.astype(np.int64)
    else:
        frac = s_val != whole
        status[s_idx[frac]] = INVALID
        values[s_idx[~frac]] = whole[~frac].astype(np.int64)
    for i in todo[~small]:  # large, non-finite or unparsable: decided exactly on the value as written
        status[i], values[i] = _exact(text.iat[i].strip() if text is not None else repr(float(f[i])), floor)
    return values, status


def _exact(text: str, floor: bool) -> tuple[int, int]:
    """(status, value) of one literal (blanks stripped), computed with exact decimal arithmetic."""
    if not text:
        return EMPTY, 0
    if not _NUMBER.fullmatch(text):
        return INVALID, 0
    try:
        d = Decimal(text)
    except InvalidOperation:
        return INVALID, 0
    if d.adjusted() > _MAX_DIGITS:  # |d| >= 10**26: beyond int64, decided without building the integer
        return (TOO_LOW if d < 0 else TOO_HIGH), 0
    whole = d.to_integral_value(rounding=ROUND_FLOOR)
    if whole != d and not floor:
        return INVALID, 0
    value = int(whole)
    if value > INT64_MAX:
        return TOO_HIGH, 0
    if value < INT64_MIN:
        return TOO_LOW, 0
    return OK, value
