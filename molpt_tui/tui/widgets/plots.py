"""The four training-curve panes, mirroring the PNG the trainer writes.

Data is prepared in `render()`, not when events arrive: a pane that is hidden (the 80×24
layout shows one plot at a time) is never rendered and costs nothing, and decimation uses the
pane's real width. A redraw is decimation (numpy) plus plotext on ~2 points per column.

Log y-axis: plotext's own log scale cannot show zero or negative values, and energies in kT,
log-determinants and even the loss can be negative. When every plotted value of a pane is
positive the axis is a true log10; otherwise it is symlog, sign(y)·log10(1 + |y|), linear
within ±1 and logarithmic beyond, so a loss falling from 1e12 to -50 stays on one axis. The
pane title says which ("log" or "symlog") and tick labels are always in data units.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from plotext import _utility as plotext_utility
from rich.ansi import AnsiDecoder
from rich.style import Style
from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from ..decimate import (
    format_tick,
    is_positive,
    log10_transform,
    log_ticks,
    nice_ticks,
    symlog_transform,
)
from ..series import SeriesStore


@dataclass(frozen=True)
class SeriesSpec:
    key: str
    label: str
    color: str


@dataclass(frozen=True)
class PlotSpec:
    id: str
    title: str
    short: str  # tab label in the compact layout
    series: tuple[SeriesSpec, ...]


FWD, INV = "cyan", "orange"
PLOT_SPECS = (
    PlotSpec("plot-loss", "Total loss", "Loss", (SeriesSpec("loss", "loss", "green"),)),
    PlotSpec("plot-terms", "Forward vs inverse term [kT]", "Fwd/Inv",
             (SeriesSpec("fwd_term", "fwd βU−logdet", FWD), SeriesSpec("inv_term", "inv βU−logdet", INV))),
    PlotSpec("plot-energy", "Energy β·U [kT]", "β·U",
             (SeriesSpec("fwd_energy", "fwd β_h·U(Tx)", FWD), SeriesSpec("inv_energy", "inv β_c·U(T⁻¹y)", INV))),
    PlotSpec("plot-logdet", "log|det J|", "logdet",
             (SeriesSpec("fwd_logdet", "forward", FWD), SeriesSpec("inv_logdet", "inverse", INV))),
)


@lru_cache(maxsize=256)
def _cell_style(fullground: str, style: str, background: str) -> Style:
    ansi = plotext_utility.colors_to_ansi(fullground, style, background)
    decoded = AnsiDecoder().decode_line(ansi + "x")
    if not decoded.spans:
        return Style.null()
    found = decoded.spans[0].style
    return found if isinstance(found, Style) else Style.parse(found)


def matrix_text(matrix: Any) -> Text:
    """Rich Text from plotext's cell matrices (marker, colours, style), top row first."""
    text = Text(no_wrap=True, end="")
    append = text.append
    for r in range(matrix.rows - 1, -1, -1):
        markers = matrix.marker[r]
        keys = list(zip(matrix.fullground[r], matrix.style[r], matrix.background[r]))
        start = 0
        for c in range(1, len(keys) + 1):
            if c == len(keys) or keys[c] != keys[start]:
                append("".join(markers[start:c]), _cell_style(*keys[start]))
                start = c
        if r:
            append("\n")
    return text


class MetricPlot(PlotextPlot):
    def __init__(self, spec: PlotSpec, **kwargs: Any) -> None:
        super().__init__(id=spec.id, **kwargs)
        self.spec = spec
        self.store: SeriesStore | None = None
        self.last_epochs: int | None = None
        self.log_y = False
        self.monochrome = False
        self.axis_mode = "linear"  # what the last render used: linear | log | symlog
        self.x_range: tuple[int, int] | None = None  # epochs shown by the last render
        self.points_plotted = 0

    def set_view(self, store: SeriesStore, last_epochs: int | None, log_y: bool) -> None:
        self.store, self.last_epochs, self.log_y = store, last_epochs, log_y
        self.refresh()

    def render(self) -> RenderResult:
        self.prepare()
        # plotext's figure object is untyped; its private build steps are used on purpose.
        plot: Any = self.plt
        width, height = self.size
        plot.plotsize(width, height)
        plot._set_size(width, height)  # as PlotextPlot.render does (textual-plotext issue #5)
        plot.theme(self._get_plotext_theme_name(self.app.theme))
        try:
            # plotext would serialise its cell matrix to an ANSI string that Rich then parses
            # back; reading the matrix directly skips both and is ~a third of a redraw.
            plot._set_sizes()
            plot._build_matrix()
            return matrix_text(plot.monitor.matrix)
        except AttributeError:  # plotext internals changed: take the documented path
            return super().render()

    def prepare(self) -> None:
        """Load the decimated, transformed series into the plotext figure."""
        plt = self.plt
        plt.clear_figure()
        spec = self.spec
        # Braille gives 2 dots per column; min/max pairs per column match that resolution.
        bins = max(self.size.width, 20)
        series: list[tuple[SeriesSpec, np.ndarray, np.ndarray]] = []
        if self.store is not None and len(self.store):
            for s in spec.series:
                x, y = self.store.decimated(s.key, self.last_epochs, bins)
                if y.size:
                    series.append((s, x, y))
        mode = "linear"
        if self.log_y and series:
            mode = "log" if all(is_positive(y) for _, _, y in series) else "symlog"
            transform = log10_transform if mode == "log" else symlog_transform
            series = [(s, x, transform(y)) for s, x, y in series]
        self.axis_mode = mode
        self.points_plotted = sum(int(y.size) for _, _, y in series)
        self.x_range = None
        title = spec.title
        if self.log_y:
            title += f"  [{mode}]" if series else "  [log]"
        if not series:
            title += "  (no data yet)"
        plt.title(title)
        for i, (s, x, y) in enumerate(series):
            # Without colour the two directions must still differ: second series gets dots.
            marker = "dot" if (self.monochrome and i) else "braille"
            plt.plot(x.tolist(), y.tolist(), label=s.label, color=s.color, marker=marker)
        if not series:
            return
        lo = min(float(np.min(y)) for _, _, y in series)
        hi = max(float(np.max(y)) for _, _, y in series)
        rows = max(self.size.height, 6)
        if mode == "linear":
            yt = nice_ticks(lo, hi, max(3, rows // 3))
            plt.yticks(yt, [format_tick(v) for v in yt])
        else:
            yt, labels = log_ticks(lo, hi, symlog=mode == "symlog", max_ticks=max(3, rows // 3))
            if yt:
                plt.yticks(yt, labels)
        x_lo = min(int(x[0]) for _, x, _ in series)
        x_hi = max(int(x[-1]) for _, x, _ in series)
        self.x_range = (x_lo, x_hi)
        if x_hi > x_lo:
            plt.xlim(x_lo, x_hi)
        # Epochs are integers: plotext's own ticks would print 30.8.
        xt = nice_ticks(x_lo, x_hi, max(2, bins // 14), integer=True)
        plt.xticks(xt, [str(int(v)) for v in xt])
