"""Cheap series preparation for terminal plots: decimation and log-style y transforms (the
ticks for those axes are `axes.py`'s).

Drawing costs time linear in the number of points a pane is handed, so every series is reduced
to min/max pairs per bin (about two points per terminal column) before plotting. Min/max keeps
spikes visible, which is the point of the plot: a single exploding epoch must not be averaged
away. Everything here is numpy on contiguous float arrays so a million points costs a few ms.
"""
from __future__ import annotations

import math

import numpy as np

from .axes import SYMLOG_LINTHRESH


def minmax_decimate(x: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduce (x, y) to about 2*bins points: the min and the max of each bin, in x order, plus
    the first and last points so the curve spans the whole range.

    Non-finite y values are dropped first (they cannot be drawn and one inf would flatten
    the axis). Input x must be sorted; bins are equal counts of points, which for epochs
    (contiguous integers) are also equal x widths.
    """
    y = np.asarray(y, dtype=float)
    x = np.asarray(x)
    finite = np.isfinite(y)
    if not finite.all():
        x, y = x[finite], y[finite]
    n = y.size
    bins = max(int(bins), 1)
    if n <= 2 * bins:
        return x, y
    k = math.ceil(n / bins)
    full = n // k
    main = y[: full * k].reshape(full, k)
    imin = main.argmin(axis=1)
    imax = main.argmax(axis=1)
    offsets = np.arange(full) * k
    lo = np.minimum(imin, imax) + offsets
    hi = np.maximum(imin, imax) + offsets
    idx = np.empty(2 * full, dtype=np.intp)
    idx[0::2] = lo
    idx[1::2] = hi
    tail = n - full * k
    extra = []
    if tail:
        rest = y[full * k:]
        a = full * k + int(rest.argmin())
        b = full * k + int(rest.argmax())
        extra = [min(a, b), max(a, b)]
    # The newest point is what a live monitor is about: the curve must reach it.
    if (extra[-1] if extra else idx[-1]) != n - 1:
        extra.append(n - 1)
    if idx[0] != 0:
        idx = np.concatenate([[0], idx])
    if extra:
        idx = np.concatenate([idx, extra])
    # A bin whose min and max are one point (a flat stretch) would list it twice.
    idx = np.unique(idx)
    return x[idx], y[idx]


def is_positive(y: np.ndarray) -> bool:
    return bool(y.size) and bool((y > 0).all())


def log10_transform(y: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.log10(y)
    return out


def symlog_transform(y: np.ndarray, linthresh: float = SYMLOG_LINTHRESH) -> np.ndarray:
    """sign(y)·log10(1 + |y|/c): monotonic, defined at 0 and for negative values."""
    out: np.ndarray = np.sign(y) * np.log10(1.0 + np.abs(y) / linthresh)
    return out
