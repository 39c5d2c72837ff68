"""The live monitor of a `pt` run: flow-enhanced parallel tempering and its naive-ladder baseline.

The same path as the training monitor (`app.py`): a `MetricsFollower` thread follows the pt
directory's metrics.jsonl and posts event batches, the handler folds them into a `PTState`, a
timer redraws what changed, keys write requests into the directory's control channel and the
screen changes when the sampler acknowledges them. Whether the sampler is this command's (live)
or someone else's (watch) is the `PTSource`'s business; following, settling the own sampler's
exit and quitting are the training monitor's (`live_monitor.FollowingMonitor`).

Panes, over MD time per replica: the flow-swap acceptance with its 95 % band and the naive swap
of the same pairs; the ladder's acceptance overall and per neighbour pair; round trips of each
sampler; the numbers of each sampler; the backbone-state populations at the cold temperature
with their errors; the log. Charts, axes, the pane bar, the key bar, the size notice and the
ASCII fallback are the training monitor's own, imported.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from rich.text import Text
from textual import events
from textual.app import ComposeResult, RenderResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widget import Widget

from molpt_tui.training.events import ControlAction, Finished

from .base import MIN_HEIGHT, MIN_WIDTH
from .chart import ChartInfo, Curve, render_chart
from .formatting import fmt_duration
from .glyphs import to_ascii, use_ascii_scrollbars, wants_ascii
from .guard import describe, report
from .live_monitor import FollowingMonitor, run_until_quit
from .live_source import StatusLine
from .messages import EventBatch
from .pt_source import STALE_AFTER_S, PTSource
from .pt_state import MISSING, Z95, PTState, fmt, fmt_int, fmt_ns, fmt_pm
from .screens import ConfirmScreen, HelpScreen
from .widgets import Banner, KeyBar, LogPane, TooSmall, ViewBar
from .widgets.guarded import GuardedWidget
from .widgets.plots import axis_title, header_text
from .widgets.run_header import SEP, Part, fit_line

WIDE_MIN_WIDTH = 120
WIDE_MIN_HEIGHT = 30
# The chart's x axis pads a span below one unit to a unit (it was made for epochs): short runs
# are drawn in ps or fs so that their points spread over the pane.
TIME_UNITS = (("ns", 1.0), ("ps", 1e3), ("fs", 1e6))
FLOW, NAIVE, LADDER = "cyan", "white", "orange"
PAIR_COLOURS = ("green", "magenta", "yellow", "blue", "red", "cyan", "white")
VIEWS = (("pt-acc", "Flow acc"), ("pt-ladder", "Ladder acc"), ("pt-trips", "Round trips"),
         ("pt-numbers", "Numbers"), ("pt-pops", "States"), ("log", "Log"))
HOLDERS = {"plots": {"pt-acc", "pt-ladder", "pt-trips"}, "bottom": {"pt-numbers", "pt-pops", "log"}}
KEY_PRIORITY = ("quit", "help", "pause", "resume", "next_view", "checkpoint")
STEERING: dict[str, ControlAction] = {"pause": "pause", "resume": "resume", "checkpoint": "checkpoint"}
VERBS = {"pause": "pause", "resume": "resume", "checkpoint": "save a checkpoint", "stop": "stop the sampler"}
COMMANDS: tuple[tuple[str, str], ...] = (
    ("pause", "Pause the sampler"), ("resume", "Resume the sampler"), ("checkpoint", "Save a checkpoint now"),
    ("next_view", "Next pane"), ("help", "Help: keys"), ("quit", "Quit"))


class PTTooSmall(TooSmall):
    def message(self) -> str:
        (nw, nh), (w, h) = self.need, self.screen.size
        return (f"terminal too small: need {nw}{self.times}{nh}, have {w}{self.times}{h}. "
                "Resize the terminal; sampling goes on meanwhile (q quits).")


class PTHeader(GuardedWidget):
    """What is sampled with which map, and the check of the map before sampling."""

    WHERE = "the pt header"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines: list[list[Part]] = []
        self.ascii_only = False

    def show(self, state: PTState, badge: str, run_dir: str) -> None:
        label: Part = (f" {badge.upper()} ", "bold reverse")
        s = state.started
        if s is None:
            waiting = state.last_message.text if state.last_message is not None else "waiting for the pt run to start…"
            self.lines = [[label, (" ", ""), (waiting, "dim")], [(run_dir, "dim")]]
        else:
            first: list[Part] = [label, (" ", ""), (f"{s.t_cold:g} K ↔ {s.t_hot:g} K", "bold $accent"), (SEP, "dim"),
                                 (s.system, "bold"), (SEP, "dim"),
                                 (f"map {Path(s.model_path).name} (epoch {s.model_epoch})", ""),
                                 (SEP, "dim"), (f"from {s.source_run}", "dim")]
            check = (f"map check: training acc {fmt(s.train_acc_flow)}, recomputed "
                     f"{fmt_pm(s.check_acc_flow, s.check_acc_flow_se)} (±SE)")
            ladder = f" (ladder {fmt_ns(s.ladder_planned_ns)} ns)" if s.ladder else ""
            second: list[Part] = [(check, ""), (SEP, "dim"),
                                  (f"swap every {s.swap_every} steps of {s.timestep_fs:g} fs", ""), (SEP, "dim"),
                                  (f"planned {fmt_ns(s.planned_ns)} ns per replica{ladder}", ""), (SEP, "dim"),
                                  (f"OpenMM {s.platform}", ""), (SEP, "dim"), (f"seed {s.seed}", "")]
            if s.resumed:
                second.insert(0, (f"resumed at {fmt_ns(s.start_ns)} ns", "bold"))
                second.insert(1, (SEP, "dim"))
            self.lines = [first, second]
        self.refresh()

    @property
    def text(self) -> str:
        return "\n".join("".join(t for t, _ in line) for line in self.lines)

    def draw(self) -> Content:
        width = max(self.size.width, 1)
        ellipsis = "..." if self.ascii_only else "…"
        return Content("\n").join(fit_line(line, width, ellipsis, self.ascii_only) for line in self.lines)


class PTProgressLine(GuardedWidget):
    """Status, the share of the planned MD done, and each sampler's speed and cost."""

    WHERE = "the progress line"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines: list[list[Part]] = []
        self.ascii_only = False

    def show(self, state: PTState, status: StatusLine, now: float, bar_glyphs: tuple[str, str]) -> None:
        full, empty = bar_glyphs
        fraction = state.fraction()
        cells = 20
        done = round(fraction * cells)
        eta = state.eta_s()
        latest = [p for p in (state.latest(n) for n in ("flow", "ladder")) if p is not None]
        if latest and math.isfinite(eta) and status.label in ("RUNNING", "FOLLOWING"):
            eta = max(eta - max(now - max(p.t for p in latest), 0.0), 0.0)
        elif status.label not in ("RUNNING", "FOLLOWING"):
            eta = math.nan
        style = {"RUNNING": "bold $success", "FOLLOWING": "bold $success", "COMPLETED": "bold $success",
                 "PAUSED": "bold $warning", "STOPPING": "bold $warning", "STALE": "bold $warning",
                 "STOPPED": "bold $warning"}.get(status.label, "bold $error" if status.label in
                                                  ("FAILED", "CRASHED", "READ ERROR") else "bold")
        first: list[Part] = [(status.label, style), (" ", ""), (full * done + empty * (cells - done), "$accent"),
                             (f" {100 * fraction:.0f}% of planned MD", ""), (SEP, "dim"),
                             (f"ETA {fmt_duration(eta) if math.isfinite(eta) else MISSING}", "")]
        if status.note:
            first += [(SEP, "dim"), (status.note, "dim")]
        second: list[Part] = []
        for p in latest:
            if second:
                second.append((" │ ", "dim"))
            second += [(f"{state.sampler_title(p.sampler).split(' (')[0]}: ", "bold"),
                       (f"{fmt_ns(p.ns)}/{fmt_ns(p.planned_ns)} ns per replica", ""), (SEP, "dim"),
                       (f"{fmt(p.ns_per_day, 1)} ns/day", ""), (SEP, "dim"),
                       (f"{fmt_int(p.energy_evals)} energy evals", "")]
        if not second:
            second = [("no progress reported yet", "dim")]
        self.lines = [first, second]
        self.refresh()

    @property
    def text(self) -> str:
        return "\n".join("".join(t for t, _ in line) for line in self.lines)

    def draw(self) -> Content:
        width = max(self.size.width, 1)
        ellipsis = "..." if self.ascii_only else "…"
        lines = [[(to_ascii(t), s) for t, s in line] if self.ascii_only else line for line in self.lines]
        return Content("\n").join(fit_line(line, width, ellipsis, self.ascii_only) for line in lines)


def time_unit(state: PTState) -> tuple[str, float]:
    """The largest of ns, ps, fs in which every sampler's MD time spans at least one unit, so the
    charts side by side share one unit."""
    spans = [max(x.ns) - min(x.ns) for x in state.samplers.values() if len(x.ns) > 1]
    span = min((v for v in spans if v > 0), default=0.0)
    for unit, scale in TIME_UNITS:
        if span * scale >= 1.0:
            return unit, scale
    return TIME_UNITS[0] if span == 0 else TIME_UNITS[-1]


def fmt_rate(value: float) -> str:
    """Round trips per ns: thousands in a run of picoseconds, fractions in a long one."""
    if not math.isfinite(value):
        return MISSING
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


class PTChart(Widget):
    """A chart over MD time per replica; `kind` says which. Drawing failures are reported, not raised."""

    def __init__(self, kind: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.WHERE = {"acc": "the flow acceptance chart", "ladder": "the ladder acceptance chart",
                      "trips": "the round-trip chart"}[kind]
        self.state: PTState | None = None
        self.monochrome = False
        self.ascii_only = False
        self.info = ChartInfo()
        self.title_line = ""

    def show(self, state: PTState) -> None:
        self.state = state
        self.refresh()

    def render(self) -> RenderResult:
        try:
            return self._draw()
        except Exception as error:
            report(self, self.WHERE, error)
            return Text(f"{self.WHERE}: cannot draw ({describe(error)})", style="bold red")

    def _draw(self) -> Text:
        width, height = self.size
        curves, title = self.curves(max(width, 20))
        unit, scale = time_unit(self.state) if self.state is not None else TIME_UNITS[0]
        curves = [replace(c, x=np.asarray(c.x, dtype=float) * scale) for c in curves]
        body, info = render_chart(curves, width, max(height - 1, 1), ascii_only=self.ascii_only,
                                  monochrome=self.monochrome, x_label=f"MD time per replica [{unit}]",
                                  integer_x=False)
        self.info = info
        has_data = info.points > 0
        self.title_line = axis_title(title, "", info, has_data=has_data, log_y=False, smooth=False)
        header = header_text(self.title_line, info.legend if has_data else [], width, ascii_only=self.ascii_only,
                             monochrome=self.monochrome)
        if height <= 1:
            return header
        return Text("\n", no_wrap=True, end="").join([header, body])

    def curves(self, bins: int) -> tuple[list[Curve], str]:
        state = self.state
        if state is None:
            return [], {"acc": "Flow PT acceptance", "ladder": "Ladder acceptance", "trips": "Round trips"}[self.kind]
        if self.kind == "acc":
            return self._acceptance(state, bins)
        if self.kind == "ladder":
            return self._ladder(state, bins)
        return self._trips(state, bins)

    @staticmethod
    def _band(x: np.ndarray, y: np.ndarray, se: np.ndarray, colour: str) -> list[Curve]:
        with np.errstate(invalid="ignore"):
            lo, hi = y - Z95 * se, y + Z95 * se
        return [Curve("95% CI", colour, x, lo, faint=True), Curve("95% CI", colour, x, hi, faint=True)]

    def _acceptance(self, state: PTState, bins: int) -> tuple[list[Curve], str]:
        title = "Flow PT acceptance"
        flow = state.samplers.get("flow")
        if flow is None:
            return [], title
        x, y, se = flow.series("acc", bins, "acc_se")
        xn, yn, _ = flow.series("naive", bins)
        return [*self._band(x, y, se, FLOW), Curve("flow ±95%", FLOW, x, y),
                Curve("naive", NAIVE, xn, yn)], title

    def _ladder(self, state: PTState, bins: int) -> tuple[list[Curve], str]:
        ladder = state.samplers.get("ladder")
        if ladder is None:
            if state.started is not None and not state.started.ladder:
                return [], "Ladder acceptance: no ladder in this run (pt --baseline ladder)"
            return [], "Ladder acceptance"
        x, y, se = ladder.series("acc", bins, "acc_se")
        curves = [*self._band(x, y, se, LADDER), Curve("all ±95%", LADDER, x, y)]
        for i in range(ladder.n_pairs):
            xp, yp = ladder.pair_series(i, bins)
            curves.append(Curve(state.ladder_label(i), PAIR_COLOURS[i % len(PAIR_COLOURS)], xp, yp))
        return curves, "Ladder acceptance"

    def _trips(self, state: PTState, bins: int) -> tuple[list[Curve], str]:
        curves = []
        for name, colour in (("flow", FLOW), ("ladder", LADDER)):
            s = state.samplers.get(name)
            if s is None or s.latest is None:
                continue
            x, y, _ = s.series("round_trips", bins)
            rate = s.latest.round_trips_per_ns
            label = f"{name} {s.latest.round_trips}, {fmt_rate(rate)}/ns"
            curves.append(Curve(label, colour, x, y))
        return curves, "Round trips"


class PTNumbers(GuardedWidget):
    """The latest numbers of each sampler, each saying what it measures."""

    WHERE = "the numbers pane"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines: list[tuple[str, str]] = []
        self.ascii_only = False

    def show(self, state: PTState) -> None:
        lines: list[tuple[str, str]] = []
        for name in ("flow", "ladder"):
            p = state.latest(name)
            if p is None:
                continue
            if lines:
                lines.append(("", ""))
            lines.append((state.sampler_title(name), "bold"))
            lines.append((f"  MD {fmt_ns(p.ns)}/{fmt_ns(p.planned_ns)} ns per replica, "
                          f"{fmt_ns(p.total_ns)} ns in all", ""))
            what = "flow-swap acceptance" if name == "flow" else "swap acceptance, all pairs"
            lines.append((f"  {what} {fmt_pm(p.acc, Z95 * p.acc_se)} (95% CI)", ""))
            if name == "flow":
                lines.append((f"  naive swap of the same pairs {fmt_pm(p.acc_naive, Z95 * p.acc_naive_se)} "
                              "(95% CI)", ""))
            elif p.pair_acc:
                pairs = ", ".join(f"{state.ladder_label(i)} {fmt(a)}" for i, a in enumerate(p.pair_acc))
                lines.append((f"  per pair: {pairs}", ""))
            lines.append((f"  swaps accepted {fmt_int(p.accepted)} of {fmt_int(p.attempts)}", ""))
            lines.append((f"  round trips {p.round_trips} ({fmt_rate(p.round_trips_per_ns)} per ns per replica)", ""))
            speed = f"  {fmt(p.ns_per_day, 1)} ns/day per replica"
            if math.isfinite(p.map_share):
                speed += f" ({100 * p.map_share:.0f}% of its time in the map)"
            lines.append((speed, ""))
            lines.append((f"  energy evaluations {fmt_int(p.energy_evals)} · cold samples {fmt_int(p.samples)}", ""))
        if not lines:
            lines = [("No progress reported yet: the first numbers come a few seconds into sampling.", "dim")]
        self.lines = lines
        self.refresh()

    @property
    def text(self) -> str:
        return "\n".join(t for t, _ in self.lines)

    def draw(self) -> Content:
        out = [Content.styled(to_ascii(t) if self.ascii_only else t, s) if s else
               Content(to_ascii(t) if self.ascii_only else t) for t, s in self.lines]
        return Content("\n").join(out)


class PTPopulations(GuardedWidget):
    """Populations of the backbone states at the cold temperature, per sampler, with their errors."""

    WHERE = "the populations pane"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines: list[str] = []
        self.ascii_only = False

    def show(self, state: PTState) -> None:
        s = state.started
        if s is None:
            self.lines = ["Waiting for the pt run to start."]
        elif not s.states:
            self.lines = ["No peptide backbone in this system: no backbone-state populations."]
        else:
            latest = [p for p in (state.latest(n) for n in ("flow", "ladder")) if p is not None]
            columns = [["flow PT" if p.sampler == "flow" else "ladder"]
                       + [fmt_pm(p.populations[j] if j < len(p.populations) else math.nan,
                                 p.populations_se[j] if j < len(p.populations_se) else math.nan)
                          for j in range(len(s.states))] for p in latest]
            # As the headless lines: a cis state no sampler has visited is one note, not a row each.
            unseen = [j for j, name in enumerate(s.states) if "cis" in name and latest
                      and all(j < len(p.populations) and p.populations[j] == 0 for p in latest)]
            rows = [0] + [j + 1 for j in range(len(s.states)) if j not in unseen]
            names = ["state", *s.states]
            first = max(len(names[i]) for i in rows) + 1
            widths = [max(len(col[i]) for i in rows) + 2 for col in columns]
            lines = [f"{s.t_cold:g} K (cold replica), {s.rama_label} φ/ψ states, fraction ± SE"]
            for i in rows:
                lines.append(f"{names[i]:<{first}}" + "".join(f"{col[i]:>{w}}" for col, w in zip(columns, widths)))
            if unseen:
                lines.append(f"not visited: {', '.join(s.states[j] for j in unseen)}")
            if not latest:
                lines.append("(no samples yet)")
            self.lines = lines
        self.refresh()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def draw(self) -> Content:
        lines = [to_ascii(x) if self.ascii_only else x for x in self.lines]
        if not lines:
            return Content("")
        return Content("\n").join([Content.styled(lines[0], "bold"), *(Content(x) for x in lines[1:])])


def resume_command(state: PTState, pt_dir: Path) -> str:
    """How to continue this pt run: its training run, and --out unless it is the default RUN/pt."""
    source = state.started.source_run if state.started is not None else "RUN_DIR"
    default = state.started is not None and Path(source) / "pt" == pt_dir.resolve()
    return f"molpt-tui pt {source} --resume" + ("" if default else f" --out {pt_dir}")


class PTMonitorApp(FollowingMonitor[PTSource, PTState]):
    CSS_PATH = ["app.tcss", "pt_monitor.tcss"]  # noqa: RUF012 - Textual's own class attribute
    TITLE = "molpt-tui pt"
    READ_FAILURE_TITLE = "Cannot read the pt run"
    VIEWS = VIEWS
    HOLDERS = HOLDERS
    WIDE_MIN_WIDTH = WIDE_MIN_WIDTH
    WIDE_MIN_HEIGHT = WIDE_MIN_HEIGHT

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "pause", "Pause", tooltip="Pause the sampler before its next round"),
        Binding("r", "resume", "Resume", tooltip="Resume a paused sampler"),
        Binding("c", "checkpoint", "Ckpt", tooltip="Save a checkpoint (chains and trajectories) after this round"),
        Binding("v", "next_view", "Pane", tooltip="Show the next pane (compact layout)"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="Show this help"),
        Binding("f1", "help", "Help", show=False, tooltip="Show this help"),
        Binding("q", "quit", "Quit",
                tooltip="Quit (a live pt run asks first, then stops its sampler, which saves; watch leaves it)"),
        Binding("ctrl+c", "interrupt", "Interrupt", show=False, priority=True,
                tooltip="Stop the sampler without asking and quit once it has saved; again to quit at once"),
    ]

    def __init__(self, source: PTSource, *, title: str | None = None, clock: Callable[[], float] = time.time,
                 refresh_hz: float = 3.0, poll_interval: float = 0.25, quit_timeout: float = 120.0,
                 sync_timeout: float = 10.0, stale_after: float = STALE_AFTER_S, ascii_only: bool = False,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(source, PTState(), title=title, clock=clock, refresh_hz=refresh_hz,
                         stale_after=stale_after, quit_timeout=quit_timeout, poll_interval=poll_interval,
                         sync_timeout=sync_timeout, ascii_only=ascii_only, monotonic=monotonic)

    # --- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield PTTooSmall((MIN_WIDTH, MIN_HEIGHT), id="too-small")
        yield PTHeader(id="run-header")
        yield PTProgressLine(id="progress")
        yield Banner(id="banner")
        yield ViewBar(VIEWS, id="views")
        with Vertical(id="body"):
            with Grid(id="plots", classes="holder"):
                yield PTChart("acc", id="pt-acc", classes="pane")
                yield PTChart("ladder", id="pt-ladder", classes="pane")
                yield PTChart("trips", id="pt-trips", classes="pane")
            with Horizontal(id="bottom", classes="holder"):
                yield PTNumbers(id="pt-numbers", classes="pane")
                yield PTPopulations(id="pt-pops", classes="pane")
                yield LogPane(id="log", classes="pane")
        yield KeyBar(KEY_PRIORITY, id="keys")

    def on_mount(self) -> None:
        self.screen.set_class(self.ascii_only, "-ascii")
        self.query_one("#pt-numbers").border_title = "Samplers"
        self.query_one("#pt-pops").border_title = "Backbone states"
        self.query_one("#log").border_title = "Log"
        for chart in self.query(PTChart):
            chart.monochrome = self.no_color
            chart.ascii_only = self.ascii_only
        for widget in (self.query_one(PTHeader), self.query_one(PTProgressLine), self.query_one(PTNumbers),
                       self.query_one(PTPopulations)):
            widget.ascii_only = self.ascii_only
        self.query_one(ViewBar).glyphs = self.glyphs
        if self.ascii_only:
            self.query_one(PTTooSmall).times = "x"
            self.query_one(LogPane).use_ascii()
            use_ascii_scrollbars()
        self.start_following()

    @property
    def sampler_done(self) -> bool:
        """The own sampler exited and its last events are in."""
        return self.child_done

    def log_error(self, text: str) -> None:
        self.state.add_log(text, "error")
        self.state.version += 1

    # --- incoming data -----------------------------------------------------------------------
    def on_event_batch(self, message: EventBatch) -> None:
        self._guarded("reading new events", lambda: self._apply(message))

    def _apply(self, message: EventBatch) -> None:
        # The history read at attach time raises no toasts; a live sampler's own lines do.
        self.state.apply(message.events, notify=not message.backlog, warnings=message.warnings)
        for event in message.events:
            if isinstance(event, Finished) and event.status not in ("completed", "stopped") and not message.backlog:
                self.notify(event.message or f"the pt run ended {event.status}", title=f"pt {event.status}",
                            severity="error", timeout=30)

    def _new_state(self) -> PTState:
        return PTState()

    # --- the own sampler -----------------------------------------------------------------------
    def _report_crash(self, crash: str) -> None:
        self.state.add_log(crash + f"; its log: {self.source.run_dir.trainer_log}", "error")
        self.state.version += 1

    # --- redraw ------------------------------------------------------------------------------
    def refresh_now(self) -> None:
        if not self._ui_alive:
            return
        self._guarded("checking the sampler", self._check_source)
        now = self.clock()
        status = self.status(now)
        if self.ascii_only:
            status = StatusLine(status.label, to_ascii(status.note))
        state = self.state
        bar = (self.glyphs.bar_full, self.glyphs.bar_empty)
        self._guarded("the progress line", lambda: self.query_one(PTProgressLine).show(state, status, now, bar))
        key = (state.version, id(state))
        if self._drawn.get("data") != key:
            self._guarded("the pt header", lambda: self.query_one(PTHeader).show(
                state, self.source.badge, str(self.source.run_dir.path)))
            for chart in self.query(PTChart):
                self._guarded(chart.WHERE, lambda chart=chart: chart.show(state))  # type: ignore[misc]
            self._guarded("the numbers pane", lambda: self.query_one(PTNumbers).show(state))
            self._guarded("the populations pane", lambda: self.query_one(PTPopulations).show(state))
            self._guarded("the log", lambda: self.query_one(LogPane).show(state.log))
            self._drawn["data"] = key
        self._guarded("the end banner", self._show_banner)
        self._guarded("toasts", self._toasts)
        steer = (status.label, state.paused, self.source.steer_refusal())
        if self._drawn.get("steer") != steer:
            self._drawn["steer"] = steer
            self.refresh_bindings()

    def _show_banner(self) -> None:
        banner = self.query_one(Banner)
        crash = self.source.crash(self.state)
        fin = self.source.finished(self.state)
        if crash:
            lines = [crash + ".", f"Its log is {self.source.run_dir.trainer_log}. Press q to quit."]
            outcome: str | None = "failed"
        elif fin is None:
            outcome, lines = None, []
        else:
            outcome = fin.status if fin.status in ("completed", "stopped") else "failed"
            lines = [f"pt {fin.status}: {fin.message}" if fin.message else f"pt {fin.status}"]
            if not self.compact and fin.files:
                lines.append("wrote " + ", ".join(Path(f).name for f in fin.files))
            if fin.status == "stopped":
                lines.append(f"continue with: {resume_command(self.state, self.source.run_dir.path)}")
        key = (outcome, tuple(lines))
        if self._drawn.get("banner") != key:
            self._drawn["banner"] = key
            banner.show(outcome, [to_ascii(x) for x in lines] if self.ascii_only else lines)

    def _toasts(self) -> None:
        for alert in self.state.take_alerts()[:3]:
            self.notify(alert.message + (f"\n→ {alert.hint}" if alert.hint else ""), title="pt alert",
                        severity="error" if alert.severity == "error" else "warning", timeout=10)
        for ack in self.state.take_acks():
            self.notify(f"{ack.action}: {ack.detail}" if ack.detail else ack.action, title="Sampler", timeout=5)

    # --- steering ----------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in STEERING:
            return True if not self.source.refusal(STEERING[action], self.state) else None
        if action == "next_view":
            return self.compact
        return True

    def on_key(self, event: events.Key) -> None:
        # Textual does not run the action of a greyed-out key; a key that silently does nothing
        # reads as a broken monitor, so say why it is refused.
        if len(self.screen_stack) > 1 or isinstance(self.screen, ModalScreen):
            return
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and binding.action in STEERING and event.key == binding.key \
                    and self.check_action(binding.action, ()) is not True:
                event.prevent_default()
                event.stop()
                self._steer(binding.action)
                return

    def _steer(self, action: str) -> None:
        request = STEERING[action]
        reason = self.source.refusal(request, self.state)
        if reason:
            self.notify(f"Cannot {VERBS[request]}: {reason}", title="Not sent", severity="warning", timeout=6)
            return
        if self.source.send(request) is None:
            self.notify(f"Cannot {VERBS[request]}: {self.source.send_error}", title="Not sent", severity="error",
                        timeout=8)
            return
        self.notify(f"{request.capitalize()} sent: the sampler acts after its current round", timeout=3)
        self.refresh_now()

    def action_pause(self) -> None:
        self._steer("pause")

    def action_resume(self) -> None:
        self._steer("resume")

    def action_checkpoint(self) -> None:
        self._steer("checkpoint")

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        notes = [*self.source.help_notes(),
                 "Acceptances are means of min(1, exp Δ) over the swap attempts so far; the band and ± of an "
                 "acceptance are its 95% interval (1.96 batch-means standard errors). Populations are "
                 "fractions of the cold replica's samples ± one standard error.",
                 f"Screens narrower than {WIDE_MIN_WIDTH} or lower than {WIDE_MIN_HEIGHT} rows show one pane "
                 f"at a time (v switches). Below {MIN_WIDTH}×{MIN_HEIGHT} the screen asks for a larger terminal."]
        self.push_screen(HelpScreen(self.help_rows(), [to_ascii(n) for n in notes] if self.ascii_only else notes))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        tooltips = {b.action: b.tooltip for b in self.BINDINGS if isinstance(b, Binding)}
        for action, title in COMMANDS:
            if action == "next_view" and not self.compact:
                continue
            method: Callable[[], Any] = getattr(self, f"action_{action}")
            yield SystemCommand(title, tooltips.get(action, ""), method)

    # --- quitting ----------------------------------------------------------------------------
    def _quit_confirmation(self) -> ConfirmScreen:
        return ConfirmScreen("pt is still sampling.\n\nQuit now? The sampler stops after its current round and "
                             "saves its checkpoint, trajectories and figures (resumable with --resume).",
                             yes="Stop and quit", no="Keep sampling")

    def _quit_notice(self, interrupt: bool) -> str:
        return "Quitting: waiting for the sampler to finish its round and save (q again to force)"


def run_pt_monitor(source: PTSource, *, no_mouse: bool = False, title: str | None = None,
                   ascii_only: bool = False) -> int:
    """Show the pt run until the user quits: the source's exit code, or EXIT_UI_CRASHED when the
    monitor itself crashed (then a live sampler still running is the caller's to end)."""
    app = PTMonitorApp(source, title=title, ascii_only=ascii_only or wants_ascii(encoding=sys.stdout.encoding))
    return run_until_quit(app, no_mouse=no_mouse)
