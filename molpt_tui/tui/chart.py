"""One plot pane's figure, built with plotext from prepared curves; no Textual here.

A pane hands over `Curve`s (already decimated to ~2 points per column) and gets back the
plotext figure filled in and a `ChartInfo` saying what was drawn. Everything a figure needs to
be correct on any data lives here, so it is tested without a terminal: the y mode (linear, log10
when every value is positive, symlog otherwise), finite limits that are never empty, ticks from
`axes.py`, error bars, the x label. The legend is not plotext's (which sits over the curves in a
corner): the pane prints it on its title line, where it can never cover data.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .axes import Ticks, linear_ticks, log_ticks
from .decimate import log10_transform, symlog_transform

AxisMode = Literal["linear", "log", "symlog"]
# At most this many error bars per curve: more would merge into a band at terminal resolution.
MAX_ERROR_BARS = 40
# The x label costs a row: below this many rows the curve needs it more.
MIN_ROWS_FOR_X_LABEL = 8
# Markers by curve index when colours cannot tell curves apart (NO_COLOR) or braille cannot be
# drawn (ASCII terminals).
MONO_MARKERS = ("braille", "dot", "+", "x")
ASCII_MARKERS = ("*", "+", "o", "x")


@dataclass(frozen=True)
class Curve:
    """One line of a pane. `err`: ± one standard error per point (NaN where none). A `faint`
    curve is the raw series under its smoothed version: drawn first, in grey."""

    label: str
    color: str
    x: np.ndarray
    y: np.ndarray
    err: np.ndarray | None = None
    faint: bool = False
    points: bool = False  # sparse evaluations: mark each point as well as the line


@dataclass
class ChartInfo:
    mode: AxisMode = "linear"
    x_range: tuple[int, int] | None = None
    points: int = 0
    legend: list[tuple[str, str]] = field(default_factory=list)  # (label, plotext colour)
    y_ticks: Ticks = field(default_factory=Ticks)
    x_ticks: Ticks = field(default_factory=Ticks)


def _finite(curve: Curve) -> Curve:
    x = np.asarray(curve.x, dtype=float)
    y = np.asarray(curve.y, dtype=float)
    n = min(x.size, y.size)
    x, y = x[:n], y[:n]
    err = None if curve.err is None else np.asarray(curve.err, dtype=float)[:n]
    if err is not None and err.size < n:
        err = np.concatenate([err, np.full(n - err.size, np.nan)])
    keep = np.isfinite(x) & np.isfinite(y)
    if not keep.all():
        x, y = x[keep], y[keep]
        err = None if err is None else err[keep]
    return Curve(curve.label, curve.color, x, y, err, curve.faint, curve.points)


def choose_mode(curves: Sequence[Curve], log_y: bool) -> AxisMode:
    if not log_y or not curves:
        return "linear"
    return "log" if all(c.y.size and bool((c.y > 0).all()) for c in curves) else "symlog"


def _transform(mode: AxisMode, y: np.ndarray) -> np.ndarray:
    if mode == "log":
        return log10_transform(y)
    if mode == "symlog":
        return symlog_transform(y)
    return y


def _error_bars(curve: Curve, mode: AxisMode) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, low, high) of the drawable error bars, on the transformed axis, thinned evenly."""
    if curve.err is None:
        empty = np.empty(0)
        return empty, empty, empty
    ok = np.isfinite(curve.err) & (curve.err > 0)
    x, y, e = curve.x[ok], curve.y[ok], curve.err[ok]
    if x.size > MAX_ERROR_BARS:
        pick = np.unique(np.linspace(0, x.size - 1, MAX_ERROR_BARS).round().astype(int))
        x, y, e = x[pick], y[pick], e[pick]
    with np.errstate(over="ignore", invalid="ignore"):
        low, high = y - e, y + e
        if mode == "log":
            # A bar reaching zero or below ends at the value itself on a log axis.
            low = np.where(low > 0, low, y)
        low, high = _transform(mode, low), _transform(mode, high)
    ok = np.isfinite(low) & np.isfinite(high)
    return x[ok], low[ok], high[ok]


def _limits(lo: float, hi: float) -> tuple[float, float]:
    """A finite, non-empty range around [lo, hi]: a constant series gets ±1 % (or ±1)."""
    if hi - lo > 1e-12 * max(abs(lo), abs(hi), 1e-300) and math.isfinite(hi - lo):
        return lo, hi
    pad = max(abs(lo), abs(hi)) * 0.01 or 1.0
    a, b = lo - pad, hi + pad
    if not (math.isfinite(a) and math.isfinite(b)) or not b > a:
        return lo, hi
    return a, b


def _marker(index: int, curve: Curve, *, ascii_only: bool, monochrome: bool) -> str:
    if ascii_only:
        return "." if curve.faint else ASCII_MARKERS[index % len(ASCII_MARKERS)]
    if monochrome and not curve.faint:
        return MONO_MARKERS[index % len(MONO_MARKERS)]
    return "braille"


def draw_chart(plt: Any, curves: Sequence[Curve], width: int, height: int, *, log_y: bool = False,
               ascii_only: bool = False, monochrome: bool = False, x_label: str = "epoch",
               integer_x: bool = True) -> ChartInfo:
    """Fill plotext figure `plt` (cleared first) with `curves` for a width×height canvas."""
    plt.clear_figure()
    info = ChartInfo()
    width, height = max(int(width), 1), max(int(height), 1)
    drawn = [c for c in (_finite(c) for c in curves) if c.y.size]
    mode = choose_mode([c for c in drawn if not c.faint], log_y) if drawn else ("linear" if not log_y else "log")
    if mode == "log" and not all(bool((c.y > 0).all()) for c in drawn):
        drawn = [c for c in drawn if bool((c.y > 0).all())]  # a faint raw curve with values <= 0
    info.mode = mode
    info.legend = [(c.label, c.color) for c in curves if not c.faint]
    if not drawn:
        return info
    ys = [_transform(mode, c.y) for c in drawn]
    bars = [_error_bars(c, mode) for c in drawn]
    finite_ys = [y[np.isfinite(y)] for y in ys]
    lows = [float(y.min()) for y in finite_ys if y.size] + [float(b[1].min()) for b in bars if b[1].size]
    highs = [float(y.max()) for y in finite_ys if y.size] + [float(b[2].max()) for b in bars if b[2].size]
    if not lows:
        return info
    y_lo, y_hi = _limits(min(lows), max(highs))
    x_lo = min(float(c.x.min()) for c in drawn)
    x_hi = max(float(c.x.max()) for c in drawn)
    info.x_range = (math.floor(x_lo), math.ceil(x_hi))
    rows = max(height, 3)
    cols = max(width, 10)
    x_min, x_max = (x_lo - 0.5, x_hi + 0.5) if x_hi - x_lo < 1 else (x_lo, x_hi)
    if mode == "linear":
        yt = linear_ticks(y_lo, y_hi, max(2, rows // 3))
    else:
        yt = log_ticks(y_lo, y_hi, symlog_axis=mode == "symlog", max_ticks=max(2, rows // 3))
    # Epochs are integers: plotext's own ticks would print 30.8.
    xt = linear_ticks(x_min, x_max, max(2, cols // 9), integer=integer_x)
    info.y_ticks, info.x_ticks = yt, xt
    # plotext maps data to cells with (v - lo) / (hi - lo), which overflows for ranges near the
    # largest float and loses every digit for tiny ones: it is handed coordinates scaled to
    # [0, 1] instead, and the ticks keep their labels in data units.
    ny, nx = _normaliser(y_lo, y_hi), _normaliser(x_min, x_max)
    solid = 0
    for c, y, (bx, blo, bhi) in zip(drawn, ys, bars):
        keep = np.isfinite(y)
        marker = _marker(solid, c, ascii_only=ascii_only, monochrome=monochrome)
        color = "gray" if c.faint else c.color
        if not c.faint:
            solid += 1
        xs, yv = nx(c.x[keep]).tolist(), ny(y[keep]).tolist()
        plt.plot(xs, yv, color=color, marker=marker)
        info.points += int(keep.sum())
        if c.points and not c.faint and keep.sum() <= cols:
            plt.scatter(xs, yv, color=color, marker="o" if ascii_only else "●")
        if bx.size:
            bar_x, bar_y = _bar_points(nx(bx), ny(blo), ny(bhi), 1.0 / rows)
            plt.scatter(bar_x, bar_y, color=color, marker="|" if ascii_only else "│")
    plt.xlim(0.0, 1.0)
    plt.ylim(0.0, 1.0)
    plt.yticks(ny(np.array(yt.positions)).tolist(), yt.labels)
    plt.xticks(nx(np.array(xt.positions)).tolist(), xt.labels)
    if x_label and height >= MIN_ROWS_FOR_X_LABEL:
        plt.xlabel(x_label)
    return info


def _normaliser(lo: float, hi: float) -> Callable[[np.ndarray], np.ndarray]:
    """v -> (v - lo) / (hi - lo) without overflow: everything is divided by the magnitude first."""
    scale = max(abs(lo), abs(hi)) or 1.0
    a, b = lo / scale, hi / scale
    span = b - a
    if not (math.isfinite(span) and span > 0):
        return lambda v: np.full(np.shape(v), 0.5)

    def norm(v: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            out: np.ndarray = np.clip((np.asarray(v, dtype=float) / scale - a) / span, 0.0, 1.0)
        return out

    return norm


def _bar_points(x: np.ndarray, low: np.ndarray, high: np.ndarray, cell: float) -> tuple[list[float], list[float]]:
    """Error bars as one scatter: each bar sampled at the height of one text row."""
    xs: list[float] = []
    ys: list[float] = []
    cell = cell if math.isfinite(cell) and cell > 0 else 1.0
    for xi, a, b in zip(x.tolist(), low.tolist(), high.tolist()):
        span = (b - a) / cell
        n = min(int(span) + 2, 64) if math.isfinite(span) else 64
        for v in np.linspace(a, b, n).tolist():
            xs.append(xi)
            ys.append(v)
    return xs, ys
