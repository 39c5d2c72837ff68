"""One plot pane's figure, rasterised with numpy from prepared curves; no Textual here.

A pane hands over `Curve`s (already decimated to ~2 points per column) and a size, and gets back
Rich `Text` (axes, ticks, curves in braille) and a `ChartInfo` saying what was drawn. plotext
drew these figures before; it rebuilt every cell in Python on each repaint (~2.5 ms a pane even
for a few points, twice that for a noisy min/max curve) and its own scaling overflowed near the
largest floats. Here every curve becomes a boolean bitmap at braille resolution (2×4 dots per
cell) in a few numpy operations, and only the frame is assembled character by character.

Everything a figure needs to be correct on any data lives here, tested without a terminal: the
y mode (linear, log10 when every value is positive, symlog otherwise), finite limits that are
never empty, ticks from `axes.py`, error bars, the x label. The legend is drawn by the pane on
its title row, where it can never cover data.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from rich.style import Style
from rich.text import Text

from .axes import Ticks, linear_ticks, log_ticks
from .decimate import log10_transform, symlog_transform

AxisMode = Literal["linear", "log", "symlog"]
# At most this many error bars per curve: more would merge into a band at terminal resolution.
MAX_ERROR_BARS = 24
# The x label costs a row: below this many rows the curve needs it more.
MIN_ROWS_FOR_X_LABEL = 8
# Cell markers by curve index when colour cannot tell curves apart (NO_COLOR; the first curve
# stays braille) or braille cannot be drawn (ASCII terminals).
MONO_MARKERS = ("", "•", "+", "x")
ASCII_MARKERS = ("*", "+", "o", "x")
FAINT_ASCII = "."
# Dot bit of each (row, column) of a braille cell, U+2800 + the sum of the set dots.
BRAILLE_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.int64)
BRAILLE = np.array([chr(0x2800 + i) for i in range(256)], dtype=object)
# Rich colours for the colour names the panes use (plotext's names, which the PNG palette shares).
RICH_COLOURS = {"orange": "dark_orange", "gray": "grey50", "grey": "grey50"}
FAINT_COLOUR = "gray"


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
    legend: list[tuple[str, str]] = field(default_factory=list)  # (label, colour)
    y_ticks: Ticks = field(default_factory=Ticks)
    x_ticks: Ticks = field(default_factory=Ticks)


def rich_colour(name: str) -> str:
    return RICH_COLOURS.get(name, name)


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


def _normalised(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(v - lo) / (hi - lo) in [0, 1] without overflow: everything is divided by the magnitude
    first, so ranges near the largest float and tiny ones both keep their digits."""
    scale = max(abs(lo), abs(hi)) or 1.0
    a, b = lo / scale, hi / scale
    span = b - a
    if not (math.isfinite(span) and span > 0):
        return np.full(np.shape(v), 0.5)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        out: np.ndarray = np.clip((np.asarray(v, dtype=float) / scale - a) / span, 0.0, 1.0)
    return out


@dataclass
class _Layout:
    width: int
    height: int
    label_width: int   # columns of the y tick labels
    plot_cols: int     # cells between the frame's sides
    plot_rows: int     # rows between the frame's top and bottom
    x_label: bool


def _layout(width: int, height: int, y_labels: list[str], want_x_label: bool) -> _Layout | None:
    x_label = want_x_label and height >= MIN_ROWS_FOR_X_LABEL
    rows = height - 3 - (1 if x_label else 0)  # top frame, bottom axis, x tick labels
    label_width = max((len(s) for s in y_labels), default=0)
    cols = width - label_width - 2
    if rows < 1 or cols < 2:
        return None
    return _Layout(width, height, label_width, cols, rows, x_label)


def _rasterise(px: np.ndarray, py: np.ndarray, w: int, h: int) -> np.ndarray:
    """A (h, w) bitmap of the polyline through (px, py) in dot coordinates: every segment is
    sampled once per dot it crosses (the longer of its two extents)."""
    mask = np.zeros((h, w), dtype=bool)
    if px.size == 0:
        return mask
    if px.size == 1:
        mask[int(py[0]), int(px[0])] = True
        return mask
    x0, x1, y0, y1 = px[:-1], px[1:], py[:-1], py[1:]
    counts = np.maximum(np.abs(x1 - x0), np.abs(y1 - y0)).astype(np.int64) + 1
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    t = (np.arange(int(counts.sum())) - starts) / np.maximum(np.repeat(counts, counts) - 1, 1)
    xs = np.rint(np.repeat(x0, counts) + np.repeat(x1 - x0, counts) * t).astype(np.int64)
    ys = np.rint(np.repeat(y0, counts) + np.repeat(y1 - y0, counts) * t).astype(np.int64)
    mask[np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)] = True
    return mask


def _cells(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Braille dot bits per cell of a (rows*4, cols*2) bitmap."""
    blocks = mask.reshape(rows, 4, cols, 2)
    bits: np.ndarray = (blocks * BRAILLE_BITS[None, :, None, :]).sum(axis=(1, 3))
    return bits


def render_chart(curves: Sequence[Curve], width: int, height: int, *, log_y: bool = False,
                 ascii_only: bool = False, monochrome: bool = False, x_label: str = "epoch",
                 integer_x: bool = True) -> tuple[Text, ChartInfo]:
    """The figure of `curves` as `height` lines of at most `width` cells, and what it shows."""
    width, height = max(int(width), 1), max(int(height), 1)
    info = ChartInfo()
    drawn = [c for c in (_finite(c) for c in curves) if c.y.size]
    mode = choose_mode([c for c in drawn if not c.faint], log_y) if drawn else ("log" if log_y else "linear")
    if mode == "log":
        drawn = [c for c in drawn if bool((c.y > 0).all())]  # a faint raw curve with values <= 0
    info.mode = mode
    info.legend = [(c.label, c.color) for c in curves if not c.faint]
    ys = [_transform(mode, c.y) for c in drawn]
    bars = [_error_bars(c, mode) for c in drawn]
    finite = [(c, y[np.isfinite(y)]) for c, y in zip(drawn, ys)]
    lows = [float(y.min()) for _, y in finite if y.size] + [float(b[1].min()) for b in bars if b[1].size]
    highs = [float(y.max()) for _, y in finite if y.size] + [float(b[2].max()) for b in bars if b[2].size]
    if not lows:
        return _empty(width, height, ascii_only), info
    y_lo, y_hi = _limits(min(lows), max(highs))
    x_lo = min(float(c.x.min()) for c in drawn)
    x_hi = max(float(c.x.max()) for c in drawn)
    info.x_range = (math.floor(x_lo), math.ceil(x_hi))
    x_min, x_max = (x_lo - 0.5, x_hi + 0.5) if x_hi - x_lo < 1 else (x_lo, x_hi)
    # About one tick every other row of the plot area.
    budget = max(2, (height - 3 - (1 if x_label and height >= MIN_ROWS_FOR_X_LABEL else 0)) // 2)
    if mode == "linear":
        yt = linear_ticks(y_lo, y_hi, budget)
    else:
        yt = log_ticks(y_lo, y_hi, symlog_axis=mode == "symlog", max_ticks=budget)
    layout = _layout(width, height, yt.labels, bool(x_label))
    if layout is None:
        return _empty(width, height, ascii_only), info
    # Epochs are integers: fractional ticks would print 30.8.
    xt = linear_ticks(x_min, x_max, max(2, layout.plot_cols // 9), integer=integer_x)
    info.y_ticks, info.x_ticks = yt, xt
    rows, cols = layout.plot_rows, layout.plot_cols
    dot_w, dot_h = cols * 2, rows * 4
    layers: list[tuple[np.ndarray, Curve, int]] = []
    solid = 0
    for c, y, (bx, blo, bhi) in zip(drawn, ys, bars):
        keep = np.isfinite(y)
        px = np.rint(_normalised(c.x[keep], x_min, x_max) * (dot_w - 1))
        py = np.rint((1.0 - _normalised(y[keep], y_lo, y_hi)) * (dot_h - 1))
        mask = _rasterise(px, py, dot_w, dot_h)
        info.points += int(keep.sum())
        if bx.size:
            bar_x = np.rint(_normalised(bx, x_min, x_max) * (dot_w - 1)).astype(np.int64)
            top = np.rint((1.0 - _normalised(bhi, y_lo, y_hi)) * (dot_h - 1)).astype(np.int64)
            bottom = np.rint((1.0 - _normalised(blo, y_lo, y_hi)) * (dot_h - 1)).astype(np.int64)
            for xi, a, b in zip(bar_x.tolist(), top.tolist(), bottom.tolist()):
                mask[min(a, b): max(a, b) + 1, xi] = True
        elif c.points and not c.faint and px.size <= cols:
            # Evaluations without error bars: a short tick at each measurement.
            mask[np.clip(py.astype(np.int64) - 1, 0, dot_h - 1), px.astype(np.int64)] = True
            mask[np.clip(py.astype(np.int64) + 1, 0, dot_h - 1), px.astype(np.int64)] = True
        layers.append((mask, c, -1 if c.faint else solid))
        if not c.faint:
            solid += 1
    grid = _compose(layers, rows, cols, ascii_only=ascii_only, monochrome=monochrome)
    return _frame(grid, layout, yt, xt, y_lo, y_hi, x_min, x_max, x_label, ascii_only), info


Cell = tuple[str, str]  # character, rich colour ("" for the default)


def _compose(layers: list[tuple[np.ndarray, Curve, int]], rows: int, cols: int, *, ascii_only: bool,
             monochrome: bool) -> list[list[Cell]]:
    """Characters and colours of the plot area: later curves are drawn over earlier ones (faint
    raw curves first), dots of one cell merge into one braille character."""
    chars = np.full((rows, cols), " ", dtype=object)
    colours = np.full((rows, cols), "", dtype=object)
    bits_all = np.zeros((rows, cols), dtype=np.int64)
    for mask, curve, index in layers:
        bits = _cells(mask, rows, cols)
        hit = bits > 0
        if not hit.any():
            continue
        colour = rich_colour(FAINT_COLOUR if curve.faint else curve.color)
        if ascii_only:
            marker = FAINT_ASCII if curve.faint else ASCII_MARKERS[index % len(ASCII_MARKERS)]
            chars[hit] = marker
        elif monochrome and index > 0:
            chars[hit] = MONO_MARKERS[index % len(MONO_MARKERS)] or "•"
            bits_all[hit] = 0
        else:
            bits_all = np.where(hit, bits_all | bits, bits_all)
            chars[hit] = BRAILLE[bits_all[hit]]
        colours[hit] = "" if monochrome else colour
    return [list(zip(chars[r].tolist(), colours[r].tolist())) for r in range(rows)]


def _frame(grid: list[list[Cell]], layout: _Layout, yt: Ticks, xt: Ticks, y_lo: float, y_hi: float,
           x_min: float, x_max: float, x_label: str, ascii_only: bool) -> Text:
    h_line, v_line = ("-", "|") if ascii_only else ("─", "│")
    corners = ("+", "+", "+", "+") if ascii_only else ("┌", "┐", "└", "┘")
    y_tick, x_tick = ("+", "+") if ascii_only else ("┤", "┬")
    rows, cols, lw = layout.plot_rows, layout.plot_cols, layout.label_width
    # Tick rows and columns of the frame (the first tick that lands on a row or column wins).
    tick_rows: dict[int, str] = {}
    for position, label in zip(_normalised(np.array(yt.positions), y_lo, y_hi).tolist(), yt.labels):
        tick_rows.setdefault(round((1.0 - position) * (rows - 1)), label)
    tick_cols: dict[int, str] = {}
    for position, label in zip(_normalised(np.array(xt.positions), x_min, x_max).tolist(), xt.labels):
        tick_cols.setdefault(round(position * (cols - 1)), label)
    text = Text(no_wrap=True, end="")
    text.append(" " * lw + corners[0] + h_line * cols + corners[1])
    for r in range(rows):
        text.append("\n")
        row_label = tick_rows.get(r)
        text.append((row_label or "").rjust(lw) + (y_tick if row_label is not None else v_line))
        _append_cells(text, grid[r])
        text.append(v_line)
    text.append("\n" + " " * lw + corners[2])
    text.append("".join(x_tick if c in tick_cols else h_line for c in range(cols)) + corners[3])
    text.append("\n" + _x_labels(tick_cols, lw + 1, layout.width))
    if layout.x_label:
        text.append("\n" + x_label.center(layout.width)[: layout.width].rstrip())
    return text


def _append_cells(text: Text, cells: list[Cell]) -> None:
    start = 0
    for i in range(1, len(cells) + 1):
        if i == len(cells) or cells[i][1] != cells[start][1]:
            colour = cells[start][1]
            run = "".join(ch for ch, _ in cells[start:i])
            text.append(run, Style(color=colour) if colour else None)
            start = i


def _x_labels(tick_cols: dict[int, str], offset: int, width: int) -> str:
    """Tick labels centred under their ticks; one that would overlap its left neighbour or leave
    the pane is left out (its tick mark stays)."""
    line = [" "] * width
    end = -1
    for col, label in sorted(tick_cols.items()):
        start = offset + col - len(label) // 2
        start = min(max(start, 0), width - len(label))
        if start <= end or start < 0:
            continue
        line[start: start + len(label)] = label
        end = start + len(label)
    return "".join(line).rstrip()


def _empty(width: int, height: int, ascii_only: bool) -> Text:
    """An empty pane: a frame without ticks, so the layout does not jump when data arrive."""
    if width < 2 or height < 2:
        return Text("", end="")
    h_line, v_line = ("-", "|") if ascii_only else ("─", "│")
    top, bottom = ("+", "+") if ascii_only else ("┌", "└")
    right_top, right_bottom = ("+", "+") if ascii_only else ("┐", "┘")
    rows = [top + h_line * (width - 2) + right_top]
    rows += [v_line + " " * (width - 2) + v_line for _ in range(max(height - 2, 0))]
    rows.append(bottom + h_line * (width - 2) + right_bottom)
    return Text("\n".join(rows), no_wrap=True, end="")
