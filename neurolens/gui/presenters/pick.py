"""Which neuron a click on a heatmap selects when one screen pixel covers several neurons.

At the demo model's 768 neurons in a map a few hundred pixels wide a neuron is under one pixel
wide, and the column under the cursor's exact position is often a neighbour of the bright
stripe the user aimed at. A click selects instead the neuron whose value the pixel shows: the
strongest (largest |value|, so a -5 beats a +3 on signed maps) of the columns the pixel covers.

Where the map has more columns than its view has pixels it is drawn downsampled
(:func:`downsample`): bins of ``f`` columns, each shown as its strongest value (``"max"``, the
largest |value| with its sign) or its mean. The data keep their full resolution; a click
selects the strongest column of the bins its pixel touches (:func:`pick_column` with ``bin``).
"""

from __future__ import annotations

import math

import numpy as np

#: how a bin of columns is drawn
REDUCE_MODES = ("max", "mean")


def pixel_columns(x: float, span: float, n: int,
                  bins: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """The columns (first, last, both included) a screen pixel centred at view x-coordinate
    ``x`` and ``span`` columns wide covers in a map of ``n`` columns (column c spans
    [c, c + 1)); clipped to the map, None when the pixel lies outside it. A pixel narrower
    than one column covers the one column under ``x`` only. ``bins`` = (origin, f): the map is
    drawn in bins of f columns from column ``origin`` (:func:`downsample`), and the range
    grows to the whole bins it touches."""
    if span <= 1.0:
        lo = hi = math.floor(x)
    else:
        lo = math.floor(x - span / 2)
        hi = math.ceil(x + span / 2) - 1
    if bins is not None and bins[1] > 1:
        o, f = bins
        lo = o + (lo - o) // f * f
        hi = o + (hi - o) // f * f + f - 1
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


def pick_column(row: np.ndarray, x: float, span: float,
                bins: tuple[int, int] | None = None) -> int | None:
    """The column a click at view x-coordinate ``x`` selects when a screen pixel is ``span``
    columns wide (and the map is drawn in ``bins``): the strongest the pixel covers."""
    cols = pixel_columns(x, span, len(row), bins)
    return None if cols is None else strongest_column(row, *cols)


def bin_width(columns: int, pixels: float) -> int:
    """Columns per drawn bin so that ``columns`` fit in ``pixels``: 1 where they already do."""
    if pixels <= 0 or columns <= pixels:
        return 1
    return int(math.ceil(columns / pixels))


def downsample(data: np.ndarray, start: int, stop: int, f: int, mode: str = "max") -> np.ndarray:
    """Columns ``start`` .. ``stop - 1`` of ``data`` (rows x columns) in bins of ``f``: each
    bin's value with the largest magnitude, sign kept (``"max"``; NaN counts as weaker than
    any number, as in :func:`strongest_column`), or its mean (``"mean"``). The last bin may
    hold fewer than ``f`` columns. A numpy reshape-reduce: ~1-3 ms for 32 x 14,336."""
    if mode not in REDUCE_MODES:
        raise ValueError(f"mode: one of {REDUCE_MODES}, got {mode!r}")
    data = np.asarray(data)
    f = max(1, int(f))
    start, stop = max(0, int(start)), min(int(stop), data.shape[1])
    if f == 1 or stop <= start:
        return np.ascontiguousarray(data[:, start:stop])
    full = (stop - start) // f
    parts = []
    if full:
        parts.append(_reduce(data[:, start:start + full * f].reshape(len(data), full, f), mode))
    if start + full * f < stop:
        rest = data[:, start + full * f:stop]
        parts.append(_reduce(rest.reshape(len(data), 1, rest.shape[1]), mode))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def _reduce(block: np.ndarray, mode: str) -> np.ndarray:
    """rows x bins x f -> rows x bins."""
    if mode == "mean":
        return block.mean(axis=2, dtype=np.float32).astype(block.dtype, copy=False)
    mag = np.abs(block)
    nan = np.isnan(mag)
    if nan.any():
        mag[nan] = -1.0
    k = mag.argmax(axis=2)
    return np.take_along_axis(block, k[..., None], axis=2)[..., 0]


def cell_text(row_label: str, col: int, value: float, token: bool = False) -> str:
    """The hover read-out of a cell: ``L3.N154 = +4.21`` (a layer row), or the neuron and the
    token of a token row."""
    v = f"{value:+.3g}"
    if token:
        return f"N{col} at {row_label!r} = {v}"
    return f"{row_label}.N{col} = {v}"
