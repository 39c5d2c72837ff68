"""Min/max decimation: the one series thinner behind the terminal panes and the PNG.

Min/max per bin keeps spikes visible, which is the point of a training plot: a single exploding
epoch must not be averaged away.
"""
from __future__ import annotations

import math

import numpy as np


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
