"""The training-curve panes: the seed's four panels plus what decides (KL, acceptance, ESS) and LR.

Data is prepared in `render()`, not when events arrive: a pane that is hidden (the 80×24
layout shows one plot at a time) is never rendered and costs nothing, and decimation uses the
pane's real width. A redraw is decimation and rasterisation (`chart.py`, numpy) of ~2 points
per column.

The first row of a pane is its title, quantity and unit, y-axis mode and legend, drawn by the
pane itself so that a legend never covers a curve. Evaluation panes (held-out KL, acceptance,
ESS) plot one point per log block with ± one standard error where the trainer reports one.
With smoothing on, epoch curves are drawn as their debiased moving average over the raw curve
in grey, so the noise stays visible.

Log y-axis: a plain log scale cannot show zero or negative values, and energies in kT,
log-determinants and even the loss can be negative. When every plotted value of a pane is
positive the axis is a true log10; otherwise it is symlog, sign(y)·log10(1 + |y|), linear
within ±1 and logarithmic beyond. The title says which, and tick labels are in data units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.app import RenderResult
from textual.widget import Widget

from ..chart import ChartInfo, Curve, render_chart, rich_colour
from ..glyphs import to_ascii
from ..guard import describe, report
from ..series import EvalSeries, SeriesStore, smooth_key


@dataclass(frozen=True)
class SeriesSpec:
    key: str
    label: str
    color: str
    evaluation: bool = False  # a held-out evaluation (LogBlock field) rather than an epoch series
    smooth: bool = True       # the smoothing toggle applies (epoch series only)


@dataclass(frozen=True)
class PlotSpec:
    id: str
    title: str
    unit: str
    short: str  # tab label in the compact layout
    series: tuple[SeriesSpec, ...]
    ascii_title: str = ""  # the title without Greek letters or superscripts ("" if it has none)


@dataclass(frozen=True)
class PlotView:
    """What every pane draws from: the run's series and how the user wants them shown."""

    store: SeriesStore
    evals: EvalSeries
    last_epochs: int | None = None
    log_y: bool = False
    smooth: bool = False


FWD, INV, TRAIN, HELD_OUT, NAIVE = "cyan", "orange", "green", "magenta", "white"
PLOT_SPECS = (
    PlotSpec("plot-loss", "Total loss L", "kT", "Loss", (SeriesSpec("loss", "loss", TRAIN),)),
    PlotSpec("plot-kl", "KL fwd+inv", "kT", "KL",
             (SeriesSpec("kl", "train", TRAIN), SeriesSpec("kl_val", "val±SE", HELD_OUT, evaluation=True))),
    PlotSpec("plot-acc", "Swap acceptance", "", "Acc",
             (SeriesSpec("acc_flow", "flow±SE", FWD, evaluation=True),
              SeriesSpec("acc_naive", "naive", NAIVE, evaluation=True))),
    PlotSpec("plot-ess", "ESS", "%", "ESS",
             (SeriesSpec("ess_fwd", "c→h", FWD, evaluation=True),
              SeriesSpec("ess_inv", "h→c", INV, evaluation=True))),
    PlotSpec("plot-terms", "βU − log|det J|", "kT", "Fwd/Inv",
             (SeriesSpec("fwd_term", "fwd", FWD), SeriesSpec("inv_term", "inv", INV)),
             ascii_title="bU - log|det J|"),
    PlotSpec("plot-energy", "Energy β·U", "kT", "β·U",
             (SeriesSpec("fwd_energy", "fwd", FWD), SeriesSpec("inv_energy", "inv", INV)),
             ascii_title="Energy b*U"),
    PlotSpec("plot-logdet", "log|det J|", "nat", "logdet",
             (SeriesSpec("fwd_logdet", "fwd", FWD), SeriesSpec("inv_logdet", "inv", INV))),
    PlotSpec("plot-lr", "Learning rate", "", "LR", (SeriesSpec("lr", "LR", TRAIN, smooth=False),)),
)

LEGEND_MARK = "━━"
ASCII_LEGEND_MARK = "--"


def header_text(title: str, legend: list[tuple[str, str]], width: int, *, ascii_only: bool,
                monochrome: bool) -> Text:
    """Title and legend on one row; legend entries that do not fit are left out whole."""
    if ascii_only:
        title = to_ascii(title)
    text = Text(no_wrap=True, end="", overflow="ellipsis")
    if len(title) > width:
        cut = title[: max(width - 1, 0)].rsplit(" ", 1)[0]
        text.append(cut + "…" if not ascii_only else cut + ".", style="bold")
        return text
    text.append(title, style="bold")
    mark = ASCII_LEGEND_MARK if ascii_only else LEGEND_MARK
    used = len(title)
    for i, (label, colour) in enumerate(legend):
        label = to_ascii(label) if ascii_only else label
        entry = f"  {mark} {label}"
        rest = len(legend) - i - 1
        if used + len(entry) + (2 if rest else 0) > width:
            if used + 2 <= width:
                text.append(" …" if not ascii_only else " .", style="dim")
            break
        text.append(f"  {mark}", style=Style(bold=True) if monochrome else Style(color=rich_colour(colour)))
        text.append(f" {label}")
        used += len(entry)
    return text


class ChartPane(Widget):
    """A plot pane: subclasses say what to draw (`curves`, `title`, `log_y`); drawing, the
    title-and-legend row and the error guard are here."""

    WHERE = "a plot"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.monochrome = False
        self.ascii_only = False
        self.info = ChartInfo()
        self.title_line = ""
        self.error = ""  # the last drawing failure ("" while drawing works)

    # What tests and the benchmark read about the last render.
    @property
    def axis_mode(self) -> str:
        return self.info.mode

    @property
    def x_range(self) -> tuple[int, int] | None:
        return self.info.x_range

    @property
    def points_plotted(self) -> int:
        return self.info.points

    @property
    def log_y(self) -> bool:
        return False

    def curves(self, width: int) -> list[Curve]:
        raise NotImplementedError

    def title(self, info: ChartInfo, has_data: bool) -> str:
        raise NotImplementedError

    def render(self) -> RenderResult:
        try:
            text = self._draw()
        except Exception as error:
            self.error = describe(error)
            report(self, self.WHERE, error)
            return Text(f"{self.WHERE}: cannot draw ({self.error})", style="bold red")
        self.error = ""
        return text

    def _draw(self) -> Text:
        width, height = self.size
        curves = self.curves(width)
        body, info = render_chart(curves, width, max(height - 1, 1), log_y=self.log_y, ascii_only=self.ascii_only,
                                  monochrome=self.monochrome)
        self.info = info
        has_data = info.points > 0
        self.title_line = self.title(info, has_data)
        header = header_text(self.title_line, info.legend if has_data else [], width,
                             ascii_only=self.ascii_only, monochrome=self.monochrome)
        if height <= 1:
            return header
        return Text("\n", no_wrap=True, end="").join([header, body])


def axis_title(title: str, unit: str, info: ChartInfo, *, has_data: bool, log_y: bool, smooth: bool) -> str:
    """"Total loss L [kT] (symlog) EMA": quantity, unit, y mode when not linear, smoothing."""
    if unit:
        title += f" [{unit}]"
    if log_y:
        title += f" ({info.mode if has_data else 'log'})"
    if smooth:
        title += " EMA"
    if not has_data:
        title += " (no data yet)"
    return title


class MetricPlot(ChartPane):
    def __init__(self, spec: PlotSpec, **kwargs: Any) -> None:
        super().__init__(id=spec.id, **kwargs)
        self.spec = spec
        self.WHERE = f"the {spec.short} plot"
        self.view: PlotView | None = None

    @property
    def log_y(self) -> bool:
        return bool(self.view and self.view.log_y)

    def set_view(self, view: PlotView) -> None:
        self.view = view
        self.refresh()

    def curves(self, width: int) -> list[Curve]:
        view = self.view
        if view is None or not len(view.store):
            return []
        store, evals = view.store, view.evals
        # Braille gives 2 dots per column; min/max pairs per column match that resolution.
        bins = max(width, 20)
        first = store.first_epoch(view.last_epochs) if view.last_epochs is not None else None
        out: list[Curve] = []
        for s in self.spec.series:
            if s.evaluation:
                x, y, e = evals.series(s.key, first, bins)
                out.append(Curve(s.label, s.color, x, y, err=e, points=True))
            elif view.smooth and s.smooth:
                x, y = store.decimated(s.key, view.last_epochs, bins)
                out.append(Curve(s.label, s.color, x, y, faint=True))
                xs, ys = store.decimated(smooth_key(s.key), view.last_epochs, bins)
                out.append(Curve(s.label, s.color, xs, ys))
            else:
                x, y = store.decimated(s.key, view.last_epochs, bins)
                out.append(Curve(s.label, s.color, x, y))
        return out

    def title(self, info: ChartInfo, has_data: bool) -> str:
        spec, view = self.spec, self.view
        title = spec.ascii_title if (self.ascii_only and spec.ascii_title) else spec.title
        smooth = bool(view and view.smooth and any(s.smooth and not s.evaluation for s in spec.series))
        return axis_title(title, spec.unit, info, has_data=has_data, log_y=self.log_y, smooth=smooth)
