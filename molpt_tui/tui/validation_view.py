"""The validation pane as text: what the map does to held-out samples, drawn from the latest
`ValidationHistograms` event (the trainer binned them; nothing here computes physics).

Two energy histograms (beta_hot U of hot data against T(cold data), beta_cold U of cold data
against T^-1(hot data)) and, for peptides, coarse (phi, psi) densities of data against mapped
data. A collapsed map shows as a mapped histogram narrower than the data's, or basins missing
from the mapped Ramachandran map; a torn one as mapped samples outside the range.

`render_validation` is a pure function of (event, width, height, ascii) so its layout has
property tests over sizes; the widget only calls it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from molpt_tui.training.events import ValidationHistograms
from molpt_tui.training.validation_hist import overlap

# Cell glyphs: both sets, data only, mapped only (energy histograms); density ramps (Ramachandran).
_UNICODE_BARS = ("█", "▒", "░")
_ASCII_BARS = ("#", ":", "+")
_UNICODE_RAMP = " ·░▒▓█"
_ASCII_RAMP = " .:-=#"

MIN_HIST_WIDTH = 12     # columns of one histogram's plot area
MIN_HIST_HEIGHT = 3


@dataclass(frozen=True)
class _Histogram:
    title: str
    axis: str              # the quantity on x, with its unit
    edges: Sequence[float]
    data: Sequence[int]
    mapped: Sequence[int]
    outside: int           # mapped samples outside the edges (non-finite included)


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "—"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}"


def _resample(counts: Sequence[int], columns: int) -> np.ndarray:
    """Counts of `len(counts)` bins onto `columns` columns (sums when shrinking, repeats when
    widening), relative to the total, so two sets of different size compare by shape."""
    c = np.asarray(counts, dtype=float)
    total = c.sum()
    if c.size == 0 or total <= 0:
        return np.zeros(columns)
    idx = np.minimum((np.arange(c.size) * columns) // c.size, columns - 1)
    out = np.zeros(columns)
    np.add.at(out, idx, c)
    # widening leaves gaps: each column shows the bin that covers it (a height, not a share,
    # or bins spread over two columns would look half as tall as their neighbours)
    if columns > c.size:
        out = c[np.minimum((np.arange(columns) * c.size) // columns, c.size - 1)]
    shares: np.ndarray = out / total
    return shares


def _histogram_lines(h: _Histogram, width: int, height: int, bars: tuple[str, str, str]) -> list[str]:
    """`height` lines of exactly `width` characters: title, plot rows, x-axis labels."""
    lines = [h.title[:width].ljust(width)]
    rows = height - 2
    if not h.edges or rows < 1:
        lines += ["no data yet"[:width].ljust(width)] + [" " * width] * max(0, height - 2)
        return lines[:height]
    data = _resample(h.data, width)
    total_mapped = sum(h.mapped) + h.outside
    # mapped as a fraction of all mapped samples: samples outside the range lower its bars
    mapped = _resample(h.mapped, width) * (sum(h.mapped) / total_mapped if total_mapped else 0.0)
    top = max(float(data.max(initial=0.0)), float(mapped.max(initial=0.0)))
    scale = rows / top if top > 0 else 0.0
    hd, hm = np.ceil(data * scale - 1e-9), np.ceil(mapped * scale - 1e-9)
    for r in range(rows, 0, -1):
        row = []
        for x in range(width):
            d, m = hd[x] >= r, hm[x] >= r
            row.append(bars[0] if d and m else bars[1] if d else bars[2] if m else " ")
        lines.append("".join(row))
    left, right = _fmt(h.edges[0]), _fmt(h.edges[-1])
    middle = h.axis
    gap = width - len(left) - len(right)
    if gap >= len(middle) + 2:
        pad = gap - len(middle)
        axis = left + " " * (pad // 2) + middle + " " * (pad - pad // 2) + right
    elif gap >= 1:
        axis = left + " " * gap + right
    else:
        axis = left[:width]
    lines.append(axis[:width].ljust(width))
    return lines


def _rama_lines(title: str, counts: Sequence[int], bins: int, width: int, height: int, ramp: str) -> list[str]:
    """A density grid, phi across (-180 left), psi up (+180 top), shaded by count relative to
    the grid's largest cell; `height` lines of `width` characters."""
    lines = [title[:width].ljust(width)]
    rows = height - 1
    grid = np.asarray(counts, dtype=float)
    if bins <= 0 or grid.size != bins * bins or rows < 1:
        return (lines + [" " * width] * max(0, rows))[:height]
    grid = grid.reshape(bins, bins)  # [phi, psi]
    cols = min(width, bins)
    nrows = min(rows, bins)
    # merge bins onto the character cells (sum), phi -> columns, psi -> rows (top = +180)
    pi = np.minimum((np.arange(bins) * cols) // bins, cols - 1)
    qi = np.minimum((np.arange(bins) * nrows) // bins, nrows - 1)
    cells = np.zeros((cols, nrows))
    np.add.at(cells, (pi[:, None], qi[None, :]), grid)
    peak = cells.max()
    for r in range(nrows - 1, -1, -1):
        chars = []
        for c in range(cols):
            v = cells[c, r]
            level = 0 if v <= 0 else 1 + int((len(ramp) - 2) * min(1.0, v / peak) + 1e-9) if peak > 0 else 0
            chars.append(ramp[min(level, len(ramp) - 1)])
        lines.append("".join(chars).ljust(width))
    lines += [" " * width] * (rows - nrows)
    return lines[:height]


def _side_by_side(blocks: list[list[str]], widths: list[int], gap: int = 2) -> list[str]:
    height = max(len(b) for b in blocks)
    out = []
    for i in range(height):
        out.append((" " * gap).join(b[i] if i < len(b) else " " * w for b, w in zip(blocks, widths)))
    return out


def render_validation(ev: ValidationHistograms | None, width: int, height: int, ascii_only: bool = False,
                      t_cold: float | None = None, t_hot: float | None = None) -> list[str]:
    """The pane's lines: at most `height` lines of at most `width` characters."""
    width, height = max(0, width), max(0, height)
    if width == 0 or height == 0:
        return []
    if ev is None:
        return ["Validation: waiting for the first evaluation (the untrained map, epoch 0)"[:width]]
    bars = _ASCII_BARS if ascii_only else _UNICODE_BARS
    ramp = _ASCII_RAMP if ascii_only else _UNICODE_RAMP
    tc = f" {t_cold:g} K" if t_cold is not None else ""
    th = f" {t_hot:g} K" if t_hot is not None else ""
    hot = _Histogram(f"β_hot·U{th}: hot data vs T(cold data)", "kT", ev.hot_edges, ev.hot_data, ev.hot_mapped,
                     ev.hot_mapped_below + ev.hot_mapped_above)
    cold = _Histogram(f"β_cold·U{tc}: cold data vs T⁻¹(hot data)", "kT", ev.cold_edges, ev.cold_data,
                      ev.cold_mapped, ev.cold_mapped_below + ev.cold_mapped_above)
    if ascii_only:
        hot = _Histogram(hot.title.replace("β", "beta").replace("·", "*"), hot.axis, hot.edges, hot.data, hot.mapped,
                         hot.outside)
        cold = _Histogram(cold.title.replace("β", "beta").replace("·", "*").replace("⁻¹", "^-1"), cold.axis,
                          cold.edges, cold.data, cold.mapped, cold.outside)
    ov_hot = overlap(list(ev.hot_data), list(ev.hot_mapped), hot.outside)
    ov_cold = overlap(list(ev.cold_data), list(ev.cold_mapped), cold.outside)
    sep = " | " if ascii_only else " · "
    head = (f"{ev.split} pairs ({ev.n_pairs:,}), epoch {ev.epoch}{sep}overlap hot {_fmt(ov_hot)}, "
            f"cold {_fmt(ov_cold)}{sep}outside the range: {hot.outside} / {cold.outside}")
    rama = ev.rama_bins > 0
    legend = f"{bars[1]} data  {bars[2]} mapped  {bars[0]} both"
    if not rama:
        legend += f"{sep}no peptide backbone: energy histograms only"
    lines = [head[:width], legend[:width]]
    body = height - len(lines)
    if body < MIN_HIST_HEIGHT + 2 or width < MIN_HIST_WIDTH:
        return lines[:height]
    two_columns = width >= 2 * MIN_HIST_WIDTH + 2
    if two_columns:
        w = (width - 2) // 2
        hist_h = body if not rama else max(MIN_HIST_HEIGHT + 2, body // 2)
        lines += _side_by_side([_histogram_lines(hot, w, hist_h, bars), _histogram_lines(cold, w, hist_h, bars)],
                               [w, w])
    else:
        hist_h = (body if not rama else body // 2) // 2
        if hist_h < MIN_HIST_HEIGHT + 2:
            hist_h = body // 2
        lines += _histogram_lines(hot, width, hist_h, bars) + _histogram_lines(cold, width, hist_h, bars)
    left = height - len(lines)
    if rama and left >= 3:
        label = f" ({ev.rama_label})" if ev.rama_label else ""
        arrow = "->" if ascii_only else "→"
        inv = "T^-1" if ascii_only else "T⁻¹"
        titles = [(f"phi/psi cold data{label}", ev.rama_cold), (f"{inv}(hot data) {arrow} cold", ev.rama_hot_to_cold),
                  (f"hot data{label}", ev.rama_hot), (f"T(cold data) {arrow} hot", ev.rama_cold_to_hot)]
        n = max(1, min(4, (width + 2) // (min(ev.rama_bins, 24) + 2)))
        w = max(1, (width - 2 * (n - 1)) // n)
        lines += _side_by_side([_rama_lines(t, c, ev.rama_bins, w, left, ramp) for t, c in titles[:n]], [w] * n)
    return [line[:width].rstrip() for line in lines[:height]]
