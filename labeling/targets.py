"""Numeric targets: when a table's label column is a quantity, and how one answer is read.

A regression project's labels are numbers, stored like class labels (a
one-element list of strings) so every table, export and audit path stays
the same; this module decides what counts as a number and writes it in one
canonical form, so "3.50", " 3.5" and "3.5e0" are the same answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd


def is_regression_target(values: Sequence[object] | pd.Series) -> bool:
    """Whether a table column of numbers is better predicted as a number than as classes.

    Numbers with many distinct values are a quantity, few are categories:
    at least 10 distinct values when some are fractional, more than 20 when
    all are whole numbers (so digits 0-9 and 1-5 star ratings stay classes,
    while prices, ages and counts become regression). Text, booleans and
    empty columns are never regression targets.
    """
    series = pd.Series(values, dtype=object).dropna()
    series = series[series.map(lambda v: not (isinstance(v, str) and not v.strip()))]
    if series.empty or any(isinstance(v, (bool, np.bool_)) for v in series):
        return False
    numbers = pd.to_numeric(series, errors="coerce")
    if numbers.isna().any():
        return False
    numbers = numbers.astype(float)
    if not np.isfinite(numbers).all():
        return False
    distinct = numbers.nunique()
    fractional = bool((numbers != np.round(numbers)).any())
    return distinct >= 10 if fractional else distinct > 20


def parse_number(value: object) -> float | None:
    """A finite number from a cell or an answer; None when it is not one (or is empty)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, str):
        value = value.strip()
        if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?", value):  # 1,234.5: thousands
            value = value.replace(",", "")
        if not value:
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def number_label(number: float) -> str:
    """The canonical text of a numeric answer: shortest form that reads back the same float."""
    number = float(number)
    if number == 0:
        return "0"
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return repr(number)
