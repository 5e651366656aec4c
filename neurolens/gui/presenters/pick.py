"""Which neuron a click on a heatmap selects when one screen pixel covers several neurons.

At the demo model's 768 neurons in a map a few hundred pixels wide a neuron is under one pixel
wide, and the column under the cursor's exact position is often a neighbour of the bright
stripe the user aimed at. A click selects instead the neuron whose value the pixel shows: the
strongest (largest |value|, so a -5 beats a +3 on signed maps) of the columns the pixel covers.
"""

from __future__ import annotations

import math

import numpy as np


def pixel_columns(x: float, span: float, n: int) -> tuple[int, int] | None:
    """The columns (first, last, both included) a screen pixel centred at view x-coordinate
    ``x`` and ``span`` columns wide covers in a map of ``n`` columns (column c spans
    [c, c + 1)); clipped to the map, None when the pixel lies outside it. A pixel narrower
    than one column covers the one column under ``x`` only."""
    if span <= 1.0:
        c = math.floor(x)
        return (c, c) if 0 <= c < n else None
    lo = math.floor(x - span / 2)
    hi = math.ceil(x + span / 2) - 1
    lo, hi = max(lo, 0), min(hi, n - 1)
    return (lo, hi) if lo <= hi else None


def strongest_column(row: np.ndarray, lo: int, hi: int) -> int | None:
    """The column in ``lo`` .. ``hi`` (both included, clipped to the row) whose value has the
    largest magnitude; ties: the first. NaN counts as weaker than any number. None: an empty
    range."""
    lo, hi = max(int(lo), 0), min(int(hi), len(row) - 1)
    if lo > hi:
        return None
    mag = np.abs(np.asarray(row[lo:hi + 1], dtype=np.float64))
    mag[np.isnan(mag)] = -1.0
    return lo + int(np.argmax(mag))


def pick_column(row: np.ndarray, x: float, span: float) -> int | None:
    """The column a click at view x-coordinate ``x`` selects when a screen pixel is ``span``
    columns wide: the strongest the pixel covers."""
    cols = pixel_columns(x, span, len(row))
    return None if cols is None else strongest_column(row, *cols)


def cell_text(row_label: str, col: int, value: float, token: bool = False) -> str:
    """The hover read-out of a cell: ``L3.N154 = +4.21`` (a layer row), or the neuron and the
    token of a token row."""
    v = f"{value:+.3g}"
    if token:
        return f"N{col} at {row_label!r} = {v}"
    return f"{row_label}.N{col} = {v}"
