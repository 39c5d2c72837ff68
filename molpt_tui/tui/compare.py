"""`molpt-tui watch RUN_A RUN_B …`: several runs side by side, read-only.

Every run directory is followed by its own `MetricsFollower` (the same tailer as the single-run
monitor, so a run that does not exist yet simply waits) into its own `MonitorState`. Each plot
pane shows one metric of every run, a colour and a legend entry per run name; a table holds the
latest values of each run. Nothing is steered from here: steering keys belong to a single run
(`watch RUN_DIR`), where it is unambiguous which trainer receives them.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, ClassVar

import numpy as np
from rich.text import Text
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable

from molpt_tui.training.events import LogBlock

from .base import ZOOMS, MonitorBase
from .chart import ChartInfo, Curve, rich_colour
from .formatting import column_format, fmt_column, fmt_prob_column, prob_format
from .glyphs import to_ascii, use_ascii_scrollbars, wants_ascii
from .messages import EventBatch, TailerFailed, WatchFileStatus, WatchReset
from .screens import HelpScreen
from .series import smooth_key
from .source import FeedStatus, WatchedRun
from .state import MonitorState
from .watcher import MetricsFollower
from .widgets import KeyBar, TooSmall, ViewBar
from .widgets.guarded import GuardedWidget
from .widgets.metrics_table import WIDEST_ACC, WIDEST_KT, WIDEST_NAIVE
from .widgets.plots import ChartPane, axis_title
from .widgets.run_header import fit_line

# Colours by run, in the order the runs were given.
RUN_COLOURS = ("cyan", "orange", "green", "magenta", "yellow", "blue", "red", "white")
MAX_RUNS = len(RUN_COLOURS)


@dataclass(frozen=True)
class CompareSpec:
    id: str
    title: str
    unit: str
    short: str
    key: str
    evaluation: bool = False  # one point per held-out evaluation (LogBlock) rather than per epoch


COMPARE_SPECS = (
    CompareSpec("cmp-loss", "Total loss L", "kT", "Loss", "loss"),
    CompareSpec("cmp-kl", "Held-out KL", "kT", "KL", "kl_val", evaluation=True),
    CompareSpec("cmp-acc", "Flow-swap acceptance", "", "Acc", "acc_flow", evaluation=True),
    CompareSpec("cmp-ess", "ESS c→h", "%", "ESS", "ess_fwd", evaluation=True),
    CompareSpec("cmp-fwd", "Fwd_E β_h·U(Tx)", "kT", "Fwd_E", "fwd_energy"),
    CompareSpec("cmp-inv", "Inv_E β_c·U(T⁻¹y)", "kT", "Inv_E", "inv_energy"),
)
VIEWS = tuple((spec.id, spec.short) for spec in COMPARE_SPECS) + (("table", "Latest"),)
HOLDERS = {"plots": {spec.id for spec in COMPARE_SPECS}, "bottom": {"table"}}
TABLE_COLUMNS = ("Run", "Status", "Epoch", "Loss", "KL val", "Acc flow ±SE", "Acc naive", "ESS c→h", "ESS h→c",
                 "Best KL", "Alerts")
KEY_PRIORITY = ("quit", "help", "next_view", "scroll_table", "toggle_smooth", "toggle_log", "cycle_zoom")


@dataclass
class RunFeed(Message):
    """A follower's message, tagged with the index of the run it is about."""

    index: int
    message: Message


@dataclass
class Compared:
    """One run of the comparison: where it is read from and what was read."""

    name: str
    colour: str
    source: WatchedRun
    state: MonitorState
    feed: FeedStatus


def run_names(sources: list[WatchedRun]) -> list[str]:
    """Short, distinct names: the directory names, with parents added where they repeat."""
    paths = [s.run_dir.path for s in sources]
    names = [p.name or str(p) for p in paths]
    depth = 1
    while len(set(names)) < len(names) and depth < 6:
        depth += 1
        names = ["/".join(p.parts[-depth:]) for p in paths]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


class ComparePlot(ChartPane):
    def __init__(self, spec: CompareSpec, runs: list[Compared], **kwargs: Any) -> None:
        super().__init__(id=spec.id, **kwargs)
        self.spec = spec
        self.WHERE = f"the {spec.short} comparison"
        self.runs = runs
        self.last_epochs: int | None = None
        self.want_log = False
        self.smooth = False

    @property
    def log_y(self) -> bool:
        return self.want_log

    def set_view(self, last_epochs: int | None, log_y: bool, smooth: bool) -> None:
        self.last_epochs, self.want_log, self.smooth = last_epochs, log_y, smooth
        self.refresh()

    def curves(self, width: int) -> list[Curve]:
        bins = max(width, 20)
        out: list[Curve] = []
        for run in self.runs:
            store, evals = run.state.store, run.state.evals
            if not len(store) and not len(evals):
                out.append(Curve(run.name, run.colour, np.empty(0), np.empty(0)))
                continue
            if self.spec.evaluation:
                first = store.first_epoch(self.last_epochs) if self.last_epochs is not None else None
                x, y, e = evals.series(self.spec.key, first, bins)
                out.append(Curve(run.name, run.colour, x, y, err=e, points=True))
            elif self.smooth:
                x, y = store.decimated(self.spec.key, self.last_epochs, bins)
                out.append(Curve(run.name, run.colour, x, y, faint=True))
                xs, ys = store.decimated(smooth_key(self.spec.key), self.last_epochs, bins)
                out.append(Curve(run.name, run.colour, xs, ys))
            else:
                x, y = store.decimated(self.spec.key, self.last_epochs, bins)
                out.append(Curve(run.name, run.colour, x, y))
        return out

    def title(self, info: ChartInfo, has_data: bool) -> str:
        title = to_ascii(self.spec.title) if self.ascii_only else self.spec.title
        return axis_title(title, self.spec.unit, info, has_data=has_data, log_y=self.log_y,
                          smooth=self.smooth and not self.spec.evaluation)


class CompareHeader(GuardedWidget):
    """The runs by name in their colours, and where each stands."""

    WHERE = "the run list"

    def __init__(self, runs: list[Compared], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs = runs
        self.statuses: list[str] = ["" for _ in runs]
        self.ascii_only = False

    def show(self, statuses: list[str]) -> None:
        self.statuses = statuses
        self.refresh()

    @property
    def text(self) -> str:
        return "\n".join(" · ".join(f"{r.name}: {s}" for r, s in zip(self.runs, self.statuses)).splitlines())

    def draw(self) -> Content:
        width = max(self.size.width, 1)
        ellipsis = "..." if self.ascii_only else "…"
        mark = "#" if self.ascii_only else "■"
        lines = [fit_line([(" COMPARE ", "bold reverse"), (f" {len(self.runs)} runs, read-only", "dim")],
                          width, ellipsis, self.ascii_only)]
        # One line per run: a status sentence has room to say what it is waiting for.
        for run, status in zip(self.runs, self.statuses):
            lines.append(fit_line([(mark, _rich_colour(run.colour)), (" ", ""), (run.name, "bold"),
                                   (f" {status}", "")], width, ellipsis, self.ascii_only))
        return Content("\n").join(lines)


def _rich_colour(name: str) -> str:
    return rich_colour(name)


class CompareTable(DataTable[Text]):
    """The latest values of each run, one row per run, one number format per column."""

    def __init__(self, *, convert: Callable[[str], str] = str, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.convert = convert

    def show(self, runs: list[Compared], statuses: list[str]) -> None:
        last = [r.state.history.blocks[-1] if r.state.history.blocks else None for r in runs]
        metrics = [r.state.last_metrics for r in runs]
        kt = column_format([m.loss for m in metrics if m is not None]
                           + [b.kl_val for b in last if b is not None])
        acc = prob_format([v for b in last if b is not None for v in (b.acc_flow, b.acc_naive)])
        # Fixed widths (see MetricsTable): the widest value each column's format can print.
        samples = [max((r.name for r in runs), key=len, default="Run"), "READ ERROR", "9999999", WIDEST_KT[kt],
                   WIDEST_KT[kt], WIDEST_ACC[acc], WIDEST_NAIVE[acc], "100.0%", "100.0%", WIDEST_KT[kt], "99999"]
        self.clear(columns=True)
        for label, sample in zip(TABLE_COLUMNS, samples):
            self.add_column(self.convert(label), width=max(len(self.convert(label)), len(self.convert(sample))))
        for run, status, block, m in zip(runs, statuses, last, metrics):
            fin = run.state.finished
            row = [run.name, status.split(" (")[0].split(",")[0], str(run.state.history.last_epoch),
                   fmt_column(m.loss, kt) if m is not None else "–", _kt(block, "kl_val", kt),
                   _acc(block, acc), fmt_prob_column(block.acc_naive, acc) if block else "–",
                   _pct(block.ess_fwd) if block else "–", _pct(block.ess_inv) if block else "–",
                   fmt_column(fin.best_score, kt) if fin is not None else "–",
                   str(len(run.state.history.alerts))]
            self.add_row(*(Text(self.convert(v), justify="left" if i < 2 else "right") for i, v in enumerate(row)),
                         key=run.name)


def _kt(block: LogBlock | None, key: str, fmt: str) -> str:
    return fmt_column(float(getattr(block, key)), fmt) if block is not None else "–"


def _acc(block: LogBlock | None, fmt: str) -> str:
    if block is None:
        return "–"
    text = fmt_prob_column(block.acc_flow, fmt)
    if text != "–" and block.acc_flow_se == block.acc_flow_se:
        text += f"±{fmt_prob_column(block.acc_flow_se, fmt)}"
    return text


def _pct(value: float) -> str:
    return f"{value:.1f}%" if value == value and abs(value) != float("inf") else "–"


class CompareApp(MonitorBase):
    CSS_PATH = ["app.tcss", "compare.tcss"]  # noqa: RUF012 - Textual's own class attribute
    TITLE = "molpt-tui watch (compare)"
    VIEWS = VIEWS
    HOLDERS = HOLDERS
    WIDE_MIN_WIDTH = 120
    WIDE_MIN_HEIGHT = 30

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "toggle_log", "Log-y", tooltip="Toggle a logarithmic y-axis (symlog when values are ≤ 0)"),
        Binding("e", "toggle_smooth", "Smooth",
                tooltip="Smooth epoch curves (debiased moving average, ~10 epochs); the raw curves stay in grey"),
        Binding("z", "cycle_zoom", "Zoom", tooltip="Plot all epochs / the last 100 / the last 1000"),
        Binding("v", "next_view", "Pane", tooltip="Show the next pane (compact layout)"),
        Binding("right_square_bracket", "scroll_table", "Scroll", key_display="]",
                tooltip="Scroll the table right (back to the start at its end)"),
        Binding("left_square_bracket", "scroll_table_back", "Scroll back", key_display="[", show=False,
                tooltip="Scroll the table left"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="Show this help"),
        Binding("f1", "help", "Help", show=False, tooltip="Show this help"),
        Binding("q", "quit", "Quit", tooltip="Quit (the runs are not touched)"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, tooltip="Quit at once (the runs are not touched)"),
    ]
    COMMANDS_LIST: ClassVar[tuple[tuple[str, str], ...]] = (
        ("toggle_log", "Toggle log y-axis"),
        ("toggle_smooth", "Toggle smoothing (moving average)"),
        ("cycle_zoom", "Cycle plot zoom"),
        ("next_view", "Next pane"),
        ("scroll_table", "Scroll the table right"),
        ("scroll_table_back", "Scroll the table left"),
        ("help", "Help: keys"),
        ("quit", "Quit"),
    )

    def __init__(self, sources: list[WatchedRun], *, clock: Callable[[], float] = time.time,
                 refresh_hz: float = 2.0, poll_interval: float = 0.5, stale_after: float = 120.0,
                 ascii_only: bool = False, monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ascii_only=ascii_only, monotonic=monotonic)
        if not sources:
            raise ValueError("nothing to compare")
        self.clock = clock
        self.refresh_hz = refresh_hz
        self.poll_interval = poll_interval
        names = run_names(sources)
        self.runs = [Compared(name, RUN_COLOURS[i % len(RUN_COLOURS)], src, MonitorState(),
                              FeedStatus(stale_after=stale_after)) for i, (name, src) in enumerate(zip(names, sources))]
        self.followers: list[MetricsFollower] = []
        self.errors: list[str] = []  # errors seen (there is no log pane here: they are toasted too)
        self._drawn: dict[str, object] = {}

    def compose(self) -> ComposeResult:
        yield TooSmall((60, 15), id="too-small")
        yield CompareHeader(self.runs, id="run-header")
        yield ViewBar(VIEWS, id="views")
        with Vertical(id="body"):
            with Grid(id="plots", classes="holder"):
                for spec in COMPARE_SPECS:
                    yield ComparePlot(spec, self.runs, classes="pane")
            with Horizontal(id="bottom", classes="holder"):
                yield CompareTable(id="table", classes="pane", convert=to_ascii if self.ascii_only else str)
        yield KeyBar(KEY_PRIORITY, id="keys")

    def on_mount(self) -> None:
        self.screen.set_class(self.ascii_only, "-ascii")
        self.query_one("#table").border_title = "Latest values"
        for plot in self.query(ComparePlot):
            plot.monochrome = self.no_color
            plot.ascii_only = self.ascii_only
        self.query_one(CompareHeader).ascii_only = self.ascii_only
        self.query_one(ViewBar).glyphs = self.glyphs
        if self.ascii_only:
            self.query_one(TooSmall).times = "x"
            use_ascii_scrollbars()
        self._set_view(self.view_id)
        now = self.clock()
        for i, run in enumerate(self.runs):
            run.feed = replace(run.feed, attached_at=now)
            follower = MetricsFollower(run.source.run_dir.metrics, self._poster(i), poll_interval=self.poll_interval)
            follower.start()
            self.followers.append(follower)
        self.refresh_now()
        self.set_interval(1.0 / self.refresh_hz, self.refresh_now, name="redraw")

    def _poster(self, index: int) -> Callable[[Message], object]:
        def post(message: Message) -> object:
            return self.post_message(RunFeed(index, message))

        return post

    def on_unmount(self) -> None:
        for follower in self.followers:
            follower.close()
        self.restore_scrollbars()

    def log_error(self, text: str) -> None:
        self.errors.append(text)

    # --- incoming data -----------------------------------------------------------------------
    def on_run_feed(self, feed: RunFeed) -> None:
        self._guarded("reading new events", lambda: self._apply(feed))

    def _apply(self, feed: RunFeed) -> None:
        run, message = self.runs[feed.index], feed.message
        if isinstance(message, EventBatch):
            run.state.apply(message.events, notify=False, warnings=message.warnings)
        elif isinstance(message, WatchFileStatus):
            run.feed = replace(run.feed, exists=message.exists, last_write=message.last_write, error="")
        elif isinstance(message, WatchReset):
            run.state = MonitorState()
            self._drawn.clear()
        elif isinstance(message, TailerFailed) and message.error != run.feed.error:
            run.feed = replace(run.feed, error=message.error)
            self.notify(f"{run.name}: {message.error}", title="Cannot read a run", severity="error", timeout=15)

    # --- redraw ------------------------------------------------------------------------------
    def statuses(self) -> list[str]:
        now = self.clock()
        out = []
        for run in self.runs:
            line = run.source.status(run.state, run.feed, now)
            epoch = run.state.history.last_epoch
            total = f"/{run.state.run.epochs}" if run.state.run is not None else ""
            text = line.label + (f" ({line.note})" if line.note else "")
            if epoch:
                text += f", epoch {epoch}{total}"
            out.append(to_ascii(text) if self.ascii_only else text)
        return out

    def refresh_now(self) -> None:
        if not self._ui_alive:
            return
        statuses = self.statuses()
        self._guarded("the run list", lambda: self.query_one(CompareHeader).show(statuses))
        key = (tuple((r.state.versions["data"], r.state.versions["blocks"], id(r.state)) for r in self.runs),
               self.zoom_index, self.log_y, self.smooth)
        if self._drawn.get("plots") != key:
            for plot in self.query(ComparePlot):
                self._guarded(plot.WHERE, partial(plot.set_view, ZOOMS[self.zoom_index], self.log_y, self.smooth))
            self._drawn["plots"] = key
        table_key = (key[0], tuple(statuses))
        if self._drawn.get("table") != table_key:
            self._guarded("the table", lambda: self.query_one(CompareTable).show(self.runs, statuses))
            self._drawn["table"] = table_key

    # --- keys --------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "next_view":
            return self.compact
        if action in ("scroll_table", "scroll_table_back"):
            return self._table_scrollable()
        return True

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        notes = ["Each pane shows one metric of every run, a colour per run; the table their latest values.",
                 "Nothing is steered from here: `molpt-tui watch RUN_DIR` on one run pauses, checkpoints or "
                 "stops it.", "Quitting leaves every run as it is."]
        self.push_screen(HelpScreen(self.help_rows(), notes))

    async def action_quit(self) -> None:
        self.exit(0, return_code=0)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        tooltips = {b.action: b.tooltip for b in self.BINDINGS if isinstance(b, Binding)}
        for action, title in self.COMMANDS_LIST:
            if action == "next_view" and not self.compact:
                continue
            if action in ("scroll_table", "scroll_table_back") and not self._table_scrollable():
                continue
            method: Callable[[], Any] = getattr(self, f"action_{action}")
            yield SystemCommand(title, tooltips.get(action, ""), method)


def run_compare(sources: list[WatchedRun], *, no_mouse: bool = False, ascii_only: bool = False) -> int:
    """Show the runs side by side until the user quits; 0, or EXIT_UI_CRASHED if the app crashed."""
    from .app import EXIT_UI_CRASHED

    app = CompareApp(sources, ascii_only=ascii_only or wants_ascii(encoding=sys.stdout.encoding))
    code = app.run(mouse=not no_mouse)
    return EXIT_UI_CRASHED if code is None else code
