"""Cheap series preparation for terminal plots: decimation and log-style y transforms.

plotext's build cost is linear in the number of points it is handed, so every series is reduced
to min/max pairs per bin (about two points per terminal column) before plotting. Min/max keeps
spikes visible, which is the point of the plot: a single exploding epoch must not be averaged
away. Everything here is numpy on contiguous float arrays so a million points costs a few ms.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# Below |y| = 1 (one kT, or a loss of order one) the symlog axis is close to linear, so small
# values around zero stay readable while 1e12 still fits on the same axis.
SYMLOG_LINTHRESH = 1.0


def minmax_decimate(x: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduce (x, y) to about 2*bins points: the min and the max of each bin, in x order, plus
    the first and last points so the curve spans the whole range.

    Non-finite y values are dropped first (plotext cannot draw them and one inf would flatten
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


def symlog_inverse(t: float, linthresh: float = SYMLOG_LINTHRESH) -> float:
    return math.copysign(linthresh * (10.0 ** abs(t) - 1.0), t)


def _pow10(t: float) -> float:
    return float(10.0 ** t)


def format_tick(value: float) -> str:
    """Short tick labels: plotext gives the y axis only a few columns."""
    if value == 0:
        return "0"
    a = abs(value)
    if 1e-2 <= a < 1e3:
        text = f"{value:.3g}"
    else:
        mantissa, exponent = f"{value:.1e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        text = f"{mantissa}e{int(exponent)}"
    return text


def log_ticks(lo: float, hi: float, *, symlog: bool, max_ticks: int = 5) -> tuple[list[float], list[str]]:
    """Tick positions on the transformed axis and labels in data units.

    Ticks sit on round values (0 and ±10^m) when at least two of them are in view; a narrow
    range gets evenly spaced ticks labelled with back-transformed values, so the axis never
    shows raw logarithms.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [], []
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    if symlog:
        top = math.ceil(max(abs(lo), abs(hi))) + 1
        values = [0.0] + [s * 10.0 ** m for m in range(0, top + 1) for s in (1.0, -1.0)]
        pairs = sorted((float(symlog_transform(np.array([v]))[0]), v) for v in values)
        inverse: Callable[[float], float] = symlog_inverse
    else:
        pairs = [(float(d), 10.0 ** d) for d in range(math.ceil(lo), math.floor(hi) + 1)]
        inverse = _pow10
    pairs = [(p, v) for p, v in pairs if lo <= p <= hi]
    if len(pairs) >= 2:
        step = math.ceil(len(pairs) / max_ticks)
        pairs = pairs[::step]
        return [p for p, _ in pairs], [format_tick(v) for _, v in pairs]
    positions = [float(p) for p in np.linspace(lo, hi, 3)]
    return positions, [format_tick(inverse(p)) for p in positions]


def nice_ticks(lo: float, hi: float, max_ticks: int = 5, *, integer: bool = False) -> list[float]:
    """As many round ticks (1, 2, 2.5, 5 × 10^k steps) in [lo, hi] as fit in `max_ticks`."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    max_ticks = max(int(max_ticks), 2)
    magnitude = 10.0 ** math.floor(math.log10((hi - lo) / max_ticks))
    for step in (m * magnitude * scale for scale in (0.1, 1, 10) for m in (1, 2, 2.5, 5)):
        if integer and (step < 1 or step != int(step)):
            continue
        first = math.ceil(lo / step - 1e-9)
        last = math.floor(hi / step + 1e-9)
        if last - first + 1 <= max_ticks:
            break
    return [0.0 if k == 0 else k * step for k in range(first, last + 1)]
