"""The monitor: one app for a run this command trains (`train`) and one it attaches to (`watch`).

Both are the same path. A `MetricsFollower` thread follows the run directory's metrics.jsonl and
posts `EventBatch` messages; the handler only folds events into `MonitorState`; a 3 Hz timer
redraws whatever changed. Keys send requests through the run directory's control channel and
the screen changes when the trainer acknowledges them in metrics.jsonl. What differs between a
live and a watched run (who owns the trainer, whether keys may steer, what quitting does, the
exit code) is the `RunSource`'s business, never a mode switch here. Following, settling the own
trainer's exit and quitting are the pt monitor's too (`live_monitor.FollowingMonitor`).

A failure in any pane or handler is caught here, shown in the log pane and a toast, and the
monitor goes on; the trainer is another process and never hears of it. Only an exception that
escapes to Textual itself ends the app, and `run_monitor` then reports EXIT_UI_CRASHED so that
the application layer leaves the trainer running instead of recording a user stop.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen, Screen

from molpt_tui.training.checklist import Check, checklist
from molpt_tui.training.events import ControlAction, Event, Finished, ValidationHistograms

from .base import MIN_HEIGHT, MIN_WIDTH, ZOOMS
from .glyphs import to_ascii, use_ascii_scrollbars, wants_ascii
from .live_monitor import EXIT_UI_CRASHED, INTERRUPT_WINDOW_S, FollowingMonitor, run_until_quit
from .messages import ChecksReady, EventBatch
from .screens import ConfirmQuitScreen, ConfirmScreen, ConfirmStopScreen, HelpScreen, ValidationScreen
from .source import RunSource
from .state import MonitorState, ack_text, data_phase_title, snapshot_history
from .widgets import (
    PLOT_SPECS,
    AlertsPane,
    Banner,
    ChecklistPane,
    KeyBar,
    LogPane,
    MetricPlot,
    MetricsTable,
    PlotView,
    ProgressInfo,
    ProgressPane,
    RunHeader,
    SystemLine,
    TooSmall,
    ViewBar,
)

# Below these the screen switches to the compact layout: one pane at a time behind a pane bar.
# The wide layout puts 4×2 plots over the table: each plot needs ~35 columns and ~8 rows, and
# the table ~105 columns.
WIDE_MIN_WIDTH = 140
WIDE_MIN_HEIGHT = 34
__all__ = ["EXIT_UI_CRASHED", "MIN_HEIGHT", "MIN_WIDTH", "VIEWS", "MonitorApp", "run_monitor", "save_screenshot"]

STEERING = ("toggle_pause", "checkpoint", "write_png", "stop")
VIEWS = tuple((spec.id, spec.short) for spec in PLOT_SPECS) + (
    ("table", "Metrics"), ("health", "Checks"), ("log", "Log"))
HOLDERS = {"plots": {spec.id for spec in PLOT_SPECS}, "bottom": {"table", "health", "log"},
           "side": {"health", "log"}}
# Alerts arriving in one redraw beyond this are summarised in a single toast.
MAX_TOASTS_PER_TICK = 3
# Lines of the trainer's own log shown when it died without a Finished event.
TRAINER_LOG_TAIL = 12
# The checklist reads the whole history (its cost grows with the run: ~0.4 s at 400 epochs,
# ~13 s at 1e5 on a loaded 2-core node), so it runs in a thread of its own on a snapshot of the
# history, when the history changed, at most every this many seconds or five times its last
# duration.
CHECKLIST_EVERY_S = 2.0
COMMANDS: tuple[tuple[str, str], ...] = (
    ("toggle_pause", "Pause / resume training"),
    ("checkpoint", "Save checkpoint now"),
    ("write_png", "Write PNG now"),
    ("stop", "Stop training gracefully"),
    ("toggle_log", "Toggle log y-axis"),
    ("toggle_smooth", "Toggle smoothing (moving average)"),
    ("cycle_zoom", "Cycle plot zoom"),
    ("next_view", "Next pane"),
    ("validation", "Validation: energy histograms and Ramachandran maps of mapped samples"),
    ("scroll_table", "Scroll the metrics table right"),
    ("scroll_table_back", "Scroll the metrics table left"),
    ("help", "Help: keys"),
    ("interrupt", "Stop training and quit without asking (Ctrl+C)"),
    ("quit", "Quit"),
)
# What the key bar keeps when it is short of room, most important first; help lists the rest.
KEY_PRIORITY = ("quit", "help", "toggle_pause", "stop", "next_view", "scroll_table", "toggle_smooth", "toggle_log",
                "cycle_zoom", "checkpoint", "write_png")
VERBS = {"pause": "pause", "resume": "resume", "checkpoint": "save a checkpoint", "png": "write the PNG",
         "stop": "stop the trainer"}
ACTION_OF: dict[str, ControlAction] = {"checkpoint": "checkpoint", "write_png": "png", "stop": "stop"}


class MonitorApp(FollowingMonitor[RunSource, MonitorState]):
    CSS_PATH = "app.tcss"
    TITLE = "molpt-tui"
    READ_FAILURE_TRACEBACK_LINES = 6
    VIEWS = VIEWS
    HOLDERS = HOLDERS
    WIDE_MIN_WIDTH = WIDE_MIN_WIDTH
    WIDE_MIN_HEIGHT = WIDE_MIN_HEIGHT

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "toggle_pause", "Pause",
                tooltip="Pause or resume training (the trainer halts before its next step)"),
        Binding("c", "checkpoint", "Ckpt", tooltip="Save a checkpoint after the current step"),
        Binding("g", "write_png", "PNG", tooltip="Write the training-curve PNG after the current step"),
        Binding("l", "toggle_log", "Log-y", tooltip="Toggle a logarithmic y-axis (symlog when values are ≤ 0)"),
        Binding("e", "toggle_smooth", "Smooth",
                tooltip="Smooth epoch curves (debiased moving average, ~10 epochs); the raw curve stays in grey"),
        Binding("z", "cycle_zoom", "Zoom", tooltip="Plot all epochs / the last 100 / the last 1000"),
        Binding("v", "next_view", "Pane", tooltip="Show the next pane (compact layout)"),
        Binding("right_square_bracket", "scroll_table", "Scroll", key_display="]",
                tooltip="Scroll the metrics table right (back to the start at its end)"),
        Binding("left_square_bracket", "scroll_table_back", "Scroll back", key_display="[", show=False,
                tooltip="Scroll the metrics table left"),
        Binding("s", "stop", "Stop",
                tooltip="Stop gracefully (asks first): finish the step, write checkpoint and PNG"),
        Binding("d", "validation", "Validation", show=False,
                tooltip="What the map does to the validation pairs: energy histograms, Ramachandran maps"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="Show this help"),
        Binding("f1", "help", "Help", show=False, tooltip="Show this help"),
        Binding("q", "quit", "Quit",
                tooltip="Quit (a live run asks first, then stops its trainer cleanly; watch leaves it running)"),
        Binding("ctrl+c", "interrupt", "Interrupt", show=False, priority=True,
                tooltip="Stop gracefully without asking, as headless does; again within "
                        f"{INTERRUPT_WINDOW_S:.0f} s to quit at once (the trainer still saves)"),
    ]

    def __init__(self, source: RunSource, *, title: str | None = None, clock: Callable[[], float] = time.time,
                 refresh_hz: float = 3.0, stale_after: float = 120.0, quit_timeout: float = 60.0,
                 poll_interval: float = 0.25, sync_timeout: float = 10.0, ascii_only: bool = False,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """`clock` (wall-clock seconds, like event timestamps) is injectable so tests and
        snapshots show fixed elapsed/ETA values. `sync_timeout` bounds how long a trainer's exit
        waits for the reader to catch up before the monitor decides without its last lines.
        `ascii_only`: draw without braille, box drawing or other non-ASCII characters."""
        super().__init__(source, MonitorState(), title=title, clock=clock, refresh_hz=refresh_hz,
                         stale_after=stale_after, quit_timeout=quit_timeout, poll_interval=poll_interval,
                         sync_timeout=sync_timeout, ascii_only=ascii_only, monotonic=monotonic)
        self._backlog_alerts = 0
        self._last_keys: tuple[object, ...] | None = None
        self._checks: list[Check] = []
        self._checks_key: object = None      # what the checks on screen were computed from
        self._checks_running: object = None  # what the checklist thread is computing from
        self._checks_next = -1e9

    # --- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield TooSmall((MIN_WIDTH, MIN_HEIGHT), id="too-small")
        yield RunHeader(id="run-header")
        yield SystemLine(id="system-line")
        yield ProgressPane(id="progress")
        yield Banner(id="banner")
        yield ViewBar(VIEWS, id="views")
        with Vertical(id="body"):
            with Grid(id="plots", classes="holder"):
                for spec in PLOT_SPECS:
                    yield MetricPlot(spec, classes="pane")
            with Horizontal(id="bottom", classes="holder"):
                yield MetricsTable(id="table", classes="pane", convert=to_ascii if self.ascii_only else str)
                with Vertical(id="side", classes="holder"):
                    with Vertical(id="health", classes="pane"):
                        yield ChecklistPane(id="checks")
                        yield AlertsPane(id="alerts")
                    yield LogPane(id="log", classes="pane")
        yield KeyBar(KEY_PRIORITY, id="keys")

    def on_mount(self) -> None:
        self.screen.set_class(self.ascii_only, "-ascii")
        self.query_one("#table").border_title = "Metrics (log blocks)"
        self.query_one("#health").border_title = "Good signs and alerts"
        self.query_one("#log").border_title = "Log"
        for plot in self.query(MetricPlot):
            plot.monochrome = self.no_color
            plot.ascii_only = self.ascii_only
        for widget in (self.query_one(ProgressPane), self.query_one(ChecklistPane), self.query_one(ViewBar),
                       self.query_one(RunHeader)):
            widget.glyphs = self.glyphs
        self.query_one(RunHeader).ascii_only = self.ascii_only
        self.query_one(SystemLine).ascii_only = self.ascii_only
        self.query_one(ProgressPane).ascii_only = self.ascii_only
        if self.ascii_only:
            self.query_one(TooSmall).times = "x"
            for pane in (self.query_one(ChecklistPane), self.query_one(AlertsPane), self.query_one(LogPane)):
                pane.use_ascii()
            use_ascii_scrollbars()
        self.start_following()

    @property
    def trainer_done(self) -> bool:
        """The own trainer exited and its last events are in."""
        return self.child_done

    def log_error(self, text: str) -> None:
        self.state.add_log(text, "error")

    # --- incoming data -----------------------------------------------------------------------
    def on_event_batch(self, message: EventBatch) -> None:
        self._guarded("reading new events", lambda: self._apply_batch(message))

    def _apply_batch(self, message: EventBatch) -> None:
        history, live = self._split_history(message)
        self._backlog_alerts += sum(1 for e in history if e.kind == "alert")
        self.state.apply(history, notify=False, warnings=message.warnings)
        self.state.apply(live)
        for event in live:
            if isinstance(event, Finished) and event.status not in ("completed", "stopped"):
                self.notify(event.message or event.verdict or f"the run ended {event.status}",
                            title=f"Training {event.status}", severity="error", timeout=30)

    def _split_history(self, message: EventBatch) -> tuple[list[Event], list[Event]]:
        if not message.backlog:
            return [], message.events
        return self.source.split_backlog(self.state, message.events)

    def _new_state(self) -> MonitorState:
        return MonitorState()

    def _forget_drawn(self) -> None:
        super()._forget_drawn()
        self._checks_next = -1e9  # the new file's checklist is due at once

    # --- the own trainer ---------------------------------------------------------------------
    def _report_crash(self, crash: str) -> None:
        self.state.add_log(crash, "error")
        for line in self._trainer_log_tail():
            self.state.add_log(line, "error")
        self.notify(crash, title="Trainer died", severity="error", timeout=30)

    def _trainer_log_tail(self) -> list[str]:
        path = self.source.run_dir.trainer_log
        try:
            with open(path, "rb") as fh:
                fh.seek(0, 2)
                size = fh.tell()
                fh.seek(max(0, size - 8192))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        lines = text.rstrip().splitlines()[-TRAINER_LOG_TAIL:]
        return [f"{path.name}: {line}" for line in lines] if lines else []

    # --- redraw ------------------------------------------------------------------------------
    def refresh_now(self) -> None:
        """Bring every pane up to date with the state (the timer's job; tests call it too). Each
        pane is updated on its own: one that fails is reported and the others still update."""
        if not self._ui_alive:
            return
        self._guarded("checking the trainer", self._check_source)
        state, drawn = self.state, self._drawn
        versions = state.versions
        header_key = (versions["header"], versions["log"] if state.run is None else -1)
        if drawn.get("header") != header_key:
            self._guarded("the run header", self._show_header)
            drawn["header"] = header_key
        # Every redraw: the allocation counts down and old readings age (it refreshes only when
        # its text changes).
        self._guarded("the system line", self._show_system)
        plot_key = (versions["data"], versions["blocks"], self.zoom_index, self.log_y, self.smooth, id(state.store))
        if drawn.get("plots") != plot_key:
            view = PlotView(state.store, state.evals, ZOOMS[self.zoom_index], self.log_y, self.smooth)
            for plot in self.query(MetricPlot):
                self._guarded(f"the {plot.spec.short} plot", partial(plot.set_view, view))
            drawn["plots"] = plot_key
        if drawn.get("blocks") != versions["blocks"]:
            self._guarded("the metrics table", lambda: self.query_one(MetricsTable).show(state.history.blocks))
            drawn["blocks"] = versions["blocks"]
        if drawn.get("alerts") != versions["alerts"]:
            self._guarded("the alerts pane", self._show_alerts)
            drawn["alerts"] = versions["alerts"]
        self._guarded("the checklist", self._start_checks)
        if drawn.get("log") != versions["log"]:
            self._guarded("the log pane", lambda: self.query_one(LogPane).show(list(state.log)))
            drawn["log"] = versions["log"]
        banner_key = (versions["finished"], versions["tests"], self.child_done, self.compact)
        if drawn.get("banner") != banner_key:
            self._guarded("the summary banner", self._show_banner)
            drawn["banner"] = banner_key
        self._guarded("the progress line", self._show_progress)
        self._guarded("the notifications", self._toasts)

    def _show_header(self) -> None:
        state = self.state
        waiting = ""
        data = state.data_phase()
        if state.run is None and data is not None:
            waiting = f"waiting for the run to start: {data_phase_title(data)} ({data.path})"
        elif state.run is None and state.last_message is not None:
            waiting = f"waiting for the run to start: {state.last_message.text}"
        self.query_one(RunHeader).show(state.run, badge=self.source.badge, run_dir=str(self.source.run_dir.path),
                                       waiting=waiting)

    def _show_system(self) -> None:
        state = self.state
        self.query_one(SystemLine).show(state.system, state.run, self.clock(), ended=state.finished is not None,
                                        checkpoint_t=state.last_checkpoint.t if state.last_checkpoint else None)

    def _show_alerts(self) -> None:
        alerts = self.state.history.alerts
        self.query_one(AlertsPane).show(alerts)
        self.query_one(ViewBar).set_label("health", f"Checks ({len(alerts)})" if alerts else "Checks")

    def _checks_source(self) -> tuple[int, int, int, int]:
        versions = self.state.versions
        return id(self.state), versions["data"], versions["blocks"], versions["header"]

    def _start_checks(self) -> None:
        key = self._checks_source()
        if self._checks_running is not None or key == self._checks_key or self.monotonic() < self._checks_next:
            return
        self._checks_running = key
        snapshot = snapshot_history(self.state.history)
        started = self.monotonic()

        def work() -> None:
            try:
                result: list[Check] | BaseException = checklist(snapshot)
            except Exception as error:
                result = error
            self.post_message(ChecksReady(key, result, self.monotonic() - started))

        threading.Thread(target=work, name="checklist", daemon=True).start()

    def on_checks_ready(self, message: ChecksReady) -> None:
        self._checks_running = None
        self._checks_next = self.monotonic() + max(CHECKLIST_EVERY_S, 5.0 * message.seconds)
        if isinstance(message.checks, BaseException):
            self._checks_key = message.key  # not retried for the same history
            self.report_error("the checklist", message.checks)
            return
        if message.key[0] != id(self.state):
            return  # computed for a file since replaced
        self._checks_key = message.key
        self._checks = message.checks
        self._guarded("the checklist", lambda: self.query_one(ChecklistPane).show(self._checks))
        self._start_checks()  # the history may have moved on meanwhile

    @property
    def checks(self) -> list[Check]:
        return list(self._checks)

    @property
    def checks_current(self) -> bool:
        """Whether the checklist on screen was computed from the history as it is now."""
        return self._checks_running is None and self._checks_key == self._checks_source()

    def _show_progress(self) -> None:
        now = self.clock()
        info = self._progress_info(now)
        self.query_one(ProgressPane).show(info)
        keys = (info.status, info.status_note, self.compact, self.view_id,
                *(self.check_action(action, ()) for action in STEERING))
        if keys != self._last_keys:
            self._last_keys = keys
            self.refresh_bindings()

    def _show_banner(self) -> None:
        banner = self.query_one(Banner)
        crash = self.source.crash(self.state)
        if crash:
            lines = [crash + ".", f"Its last lines are in the Log pane (from "
                                  f"{self.source.run_dir.trainer_log}). Press q to quit."]
            banner.show("failed", [to_ascii(x) for x in lines] if self.ascii_only else lines)
            return
        fin = self.source.finished(self.state)
        if fin is None:
            banner.show(None, [])
            return
        outcome = fin.status if fin.status in ("completed", "stopped", "diverged") else "failed"
        lines = self.state.summary_lines()
        if self.compact and len(lines) > 1:
            # Few rows to spare: the verdict here, the files and resume command in the Log pane.
            lines = [lines[0]]
        banner.show(outcome, [to_ascii(x) for x in lines] if self.ascii_only else lines)

    def _progress_info(self, now: float) -> ProgressInfo:
        state = self.state
        status = self.status(now)
        if status.label in ("STALE", "WAITING") and self.feed.last_write:
            now = self.feed.last_write  # a dead run's clock stopped at its last write
        elapsed = state.elapsed(now)
        metrics = state.last_metrics
        step = state.step_progress()
        zoom = ZOOMS[self.zoom_index]
        view = f"zoom {'all' if zoom is None else f'last {zoom}'} · y {'log' if self.log_y else 'linear'}"
        if self.smooth:
            view += " · EMA"
        eta = None if status.label == "STALE" else state.eta(now)
        info = ProgressInfo(
            epoch=state.history.last_epoch,
            total=state.run.epochs if state.run else None,
            elapsed=elapsed,
            eta=eta,
            seconds_per_epoch=state.seconds_per_epoch(elapsed),
            loss=metrics.loss if metrics else None,
            fwd_energy=metrics.fwd_energy if metrics else None,
            inv_energy=metrics.inv_energy if metrics else None,
            lr=metrics.lr if metrics else None,
            status=status.label,
            status_note=status.note,
            view=to_ascii(view) if self.ascii_only else view,
            n_regularised=metrics.n_regularised if metrics else 0,
            n_nonfinite=metrics.n_nonfinite if metrics else 0,
            energy_evals=metrics.energy_evals_total if metrics else 0,
        )
        if step is not None and state.finished is None:
            # Within an epoch: the trainer's running means and its time per step.
            info.epoch = step.epoch - 1
            info.step, info.steps_per_epoch = step.step, step.steps_per_epoch
            info.loss, info.fwd_energy, info.inv_energy, info.lr = step.loss, step.fwd_energy, step.inv_energy, step.lr
            info.n_regularised, info.n_nonfinite = step.n_regularised, step.n_nonfinite
            if step.eta_s == step.eta_s and status.label not in ("STALE", "PAUSED"):
                info.eta = max(step.eta_s - max(now - step.t, 0.0), 0.0)
            if step.segment_steps and step.segment_seconds > 0 and step.steps_per_epoch:
                info.seconds_per_epoch = step.segment_seconds / step.segment_steps * step.steps_per_epoch
        info.data = state.data_phase()
        if self.ascii_only:
            info.status_note = to_ascii(info.status_note)
        return info

    def _toasts(self) -> None:
        if self._backlog_alerts:
            n, self._backlog_alerts = self._backlog_alerts, 0
            self.notify(f"{n} alert{'s' if n != 1 else ''} in this run's history: see the Checks pane",
                        title="Alerts", severity="warning")
        alerts = self.state.take_alerts()
        for alert in alerts[:MAX_TOASTS_PER_TICK]:
            text = alert.message + (f"\n→ {alert.hint}" if alert.hint else "")
            if alert.command:
                text += f"\n  {alert.command}"
            if alert.severity == "error":
                self.notify(text, title=f"Alert at epoch {alert.epoch}", severity="error", timeout=10)
            elif alert.severity == "warning":
                self.notify(text, title=f"Alert at epoch {alert.epoch}", severity="warning", timeout=10)
            else:
                self.notify(text, title=f"Alert at epoch {alert.epoch}", timeout=10)
        if len(alerts) > MAX_TOASTS_PER_TICK:
            self.notify(f"and {len(alerts) - MAX_TOASTS_PER_TICK} more: see the Checks pane",
                        title="Alerts", severity="warning")
        for ack in self.state.take_acks():
            self.notify(ack_text(ack), title="Trainer", timeout=5)

    # --- steering ----------------------------------------------------------------------------
    def control_action(self, action: str) -> ControlAction:
        """The request a steering key sends now (the pause key toggles on the trainer's state)."""
        if action == "toggle_pause":
            return "resume" if self.state.paused else "pause"
        return ACTION_OF[action]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in STEERING:
            # None greys the key out; pressing it then says why (on_key).
            return True if self.source.allowed(self.control_action(action), self.state) else None
        if action == "next_view":
            return self.compact
        if action in ("scroll_table", "scroll_table_back"):
            return self._table_scrollable()
        return True

    def on_key(self, event: events.Key) -> None:
        # Textual does not run the action of a greyed-out key; a key that silently does nothing
        # reads as a broken monitor, so say why it is refused.
        if len(self.screen_stack) > 1 or isinstance(self.screen, ModalScreen):
            return
        for binding in self._steering_bindings():
            if event.key == binding.key and self.check_action(binding.action, ()) is not True:
                event.prevent_default()
                event.stop()
                self._refuse(binding.action)
                return

    def _steering_bindings(self) -> Iterable[Binding]:
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and binding.action in STEERING:
                yield binding

    def _refuse(self, action: str) -> None:
        request = self.control_action(action)
        reason = self.source.refusal(request, self.state) or self.source.send_error
        self.notify(f"Cannot {VERBS[request]}: {reason}", title="Not sent", severity="warning", timeout=6)

    def _steer(self, action: str) -> bool:
        """Send the request of a steering key; False (and a toast saying why) if refused."""
        if self.check_action(action, ()) is not True:
            self._refuse(action)
            return False
        request = self.source.send(self.control_action(action))
        if request is None:
            self.notify(f"Cannot {VERBS[self.control_action(action)]}: {self.source.send_error}",
                        title="Not sent", severity="error", timeout=8)
            return False
        self.refresh_now()
        return True

    def action_toggle_pause(self) -> None:
        resume = self.state.paused
        if self._steer("toggle_pause"):
            self.notify("Resume sent" if resume else
                        "Pause sent: the trainer halts before its next step (p to resume)", timeout=3)

    def action_checkpoint(self) -> None:
        if self._steer("checkpoint"):
            self.notify("Checkpoint requested: written after the current step", timeout=3)

    def action_write_png(self) -> None:
        if self._steer("write_png"):
            self.notify("PNG requested: written after the current step", timeout=3)

    def action_stop(self) -> None:
        if isinstance(self.screen, ConfirmScreen):
            return
        if self.check_action("stop", ()) is not True:
            self._refuse("stop")
            return
        whom = "training" if self.source.owns_child else "the trainer writing this run"
        self.push_screen(ConfirmStopScreen(whom), self._on_stop_answer)

    def _on_stop_answer(self, confirmed: bool | None) -> None:
        if confirmed and self._steer("stop"):
            self.notify("Stop sent: the trainer finishes its step and writes a checkpoint and the PNG",
                        timeout=6)

    def action_validation(self) -> None:
        if isinstance(self.screen, ValidationScreen):
            return

        def read() -> tuple[ValidationHistograms | None, float | None, float | None]:
            run = self.state.history.run
            return self.state.validation, (run.t_cold if run else None), (run.t_hot if run else None)

        self.push_screen(ValidationScreen(read, self.ascii_only))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        notes = [*self.source.help_notes(), "Ctrl+P opens the command palette with the same actions.",
                 "Ctrl+C stops gracefully without asking, as headless does; a second Ctrl+C within "
                 f"{INTERRUPT_WINDOW_S:.0f} s quits at once while the trainer still saves.",
                 f"Screens narrower than {WIDE_MIN_WIDTH} or lower than {WIDE_MIN_HEIGHT} rows "
                 "show one pane at a time: v or a click on the pane bar switches panes. Below "
                 f"{MIN_WIDTH}×{MIN_HEIGHT} the screen asks for a larger terminal."]
        self.push_screen(HelpScreen(self.help_rows(), notes))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        # Only the app's own commands, each once: Textual's built-ins (its key panel, its quit,
        # themes, screenshots) would duplicate or bypass these.
        tooltips = {b.action: b.tooltip for b in self.BINDINGS if isinstance(b, Binding)}
        for action, title in COMMANDS:
            if action == "next_view" and not self.compact:
                continue
            if action in ("scroll_table", "scroll_table_back") and not self._table_scrollable():
                continue
            yield SystemCommand(title, tooltips.get(action, ""), self._command(action))

    def _command(self, action: str) -> Callable[[], Any]:
        if action in STEERING:
            return lambda: self._invoke_steering(action)
        method: Callable[[], Any] = getattr(self, f"action_{action}")
        return method

    def _invoke_steering(self, action: str) -> None:
        if self.check_action(action, ()) is not True:
            self._refuse(action)
            return
        method: Callable[[], None] = getattr(self, f"action_{action}")
        method()

    # --- quitting ----------------------------------------------------------------------------
    def _quit_confirmation(self) -> ConfirmScreen:
        return ConfirmQuitScreen()

    def _quit_notice(self, interrupt: bool) -> str:
        if interrupt:
            return (f"Interrupted: stopping after the current step and saving (Ctrl+C again within "
                    f"{INTERRUPT_WINDOW_S:.0f} s quits now; the trainer still saves)")
        return "Quitting: waiting for the trainer to finish its step and save (q again to force)"

    def _still_saving_notice(self) -> str:
        return (f"Still waiting for the trainer to save; Ctrl+C again within {INTERRUPT_WINDOW_S:.0f} s "
                "quits now (it keeps saving)")


# --- entry point used by the application layer -------------------------------------------------


def run_monitor(source: RunSource, *, no_mouse: bool = False, title: str | None = None,
                ascii_only: bool = False) -> int:
    """Show `source` until the user quits; returns the process exit code (the source's: a live
    run's trainer exit code, 0 for watch), or EXIT_UI_CRASHED if the monitor itself crashed. A live trainer
    still running afterwards (forced quit, crash) is the caller's to end. ASCII mode is also chosen
    when the terminal cannot draw braille or box drawing (TERM=linux, vt100, a non-UTF-8 locale)."""
    app = MonitorApp(source, title=title, ascii_only=ascii_only or wants_ascii(encoding=sys.stdout.encoding))
    return run_until_quit(app, no_mouse=no_mouse)


def save_screenshot(app: App[Any], path: str | Path) -> Path:
    """Write the app's current screen as SVG (for docs and bug reports)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(app.export_screenshot(), encoding="utf-8")
    return path
