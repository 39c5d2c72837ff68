"""The monitor: one app for live training (`train`) and for attaching to a run (`watch`).

Data flow, identical in both modes: a background thread (the trainer via `TuiSink`, or the
`MetricsWatcher`) posts `EventBatch` messages; the handler only folds events into
`MonitorState`; a 3 Hz timer redraws whatever changed. Nothing is drawn per event, so the UI
cost does not grow with the trainer's speed.
"""
from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Tab, Tabs
from textual.worker import get_current_worker

from molpt_tui.training.control import TrainingControl
from molpt_tui.training.events import Finished
from molpt_tui.training.metrics_log import METRICS_FILE

from .formatting import fmt_ago
from .messages import EventBatch, TrainerFinished, WatchFileStatus, WatchReset
from .screens import ConfirmQuitScreen, HelpScreen
from .sink import TuiSink
from .state import MonitorState
from .watcher import MetricsWatcher
from .widgets import (
    PLOT_SPECS,
    AlertsPane,
    Banner,
    LogPane,
    MetricPlot,
    MetricsTable,
    ProgressInfo,
    ProgressPane,
    RunHeader,
)

TrainFn = Callable[[TuiSink, TrainingControl], object]

# Below these the screen switches to the compact layout: one pane at a time behind tabs. The
# metrics table needs ~105 columns, and a 2×2 plot grid over the table needs ~34 rows before
# each plot has the ~8 rows that make a curve readable.
WIDE_MIN_WIDTH = 110
WIDE_MIN_HEIGHT = 34

ZOOMS: tuple[int | None, ...] = (None, 100, 1000)
TRAINER_ACTIONS = frozenset({"toggle_pause", "checkpoint", "write_png", "stop"})
VIEWS = tuple((spec.id, spec.short) for spec in PLOT_SPECS) + (
    ("table", "Metrics"), ("alerts", "Alerts"), ("log", "Log"))
HOLDERS = {"plots": {spec.id for spec in PLOT_SPECS}, "bottom": {"table", "alerts", "log"},
           "side": {"alerts", "log"}}
# Alerts arriving in one redraw beyond this are summarised in a single toast.
MAX_TOASTS_PER_TICK = 3
EXIT_COMPLETED, EXIT_FAILED, EXIT_STOPPED = 0, 1, 130


class MonitorApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "molpt-tui"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE_MIN_WIDTH, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (WIDE_MIN_HEIGHT, "-tall")]

    BINDINGS = [
        Binding("p", "toggle_pause", "Pause",
                tooltip="Pause or resume training (the trainer halts before its next step)"),
        Binding("c", "checkpoint", "Ckpt", tooltip="Save a checkpoint after the current step"),
        Binding("g", "write_png", "PNG", tooltip="Write the training-curve PNG after the current step"),
        Binding("l", "toggle_log", "Log-y", tooltip="Toggle a logarithmic y-axis (symlog when values are ≤ 0)"),
        Binding("z", "cycle_zoom", "Zoom", tooltip="Plot all epochs / the last 100 / the last 1000"),
        Binding("v", "next_view", "Pane", tooltip="Show the next pane (compact layout)"),
        Binding("s", "stop", "Stop",
                tooltip="Stop gracefully: finish the step, write checkpoint and PNG, keep the screen"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="Show this help"),
        Binding("f1", "help", "Help", show=False, tooltip="Show this help"),
        Binding("q", "quit", "Quit", tooltip="Quit (asks first while training; stops the trainer cleanly)"),
    ]

    def __init__(self, *, mode: str = "train", train_fn: TrainFn | None = None,
                 run_dir: str | Path | None = None, title: str | None = None,
                 clock: Callable[[], float] = time.time, refresh_hz: float = 3.0,
                 stale_after: float = 120.0, quit_timeout: float = 60.0,
                 watch_poll: float = 0.25, sink_interval: float = 0.1) -> None:
        """`clock` (wall-clock seconds, like event timestamps) is injectable so tests and
        snapshots can show fixed elapsed/ETA values."""
        if mode not in ("train", "watch"):
            raise ValueError(f"mode must be 'train' or 'watch', not {mode!r}")
        if mode == "train" and train_fn is None:
            raise ValueError("train mode needs a train_fn")
        if mode == "watch" and run_dir is None:
            raise ValueError("watch mode needs a run_dir")
        super().__init__()
        self.mode = mode
        self.title = title or "molpt-tui"
        self.sub_title = mode
        self.run_dir = str(run_dir) if run_dir is not None else None
        self.clock = clock
        self.refresh_hz = refresh_hz
        self.stale_after = stale_after
        self.quit_timeout = quit_timeout
        self.watch_poll = watch_poll
        self.state = MonitorState()
        self.log_y = False
        self.zoom_index = 0
        self.view_id = VIEWS[0][0]
        self._train_fn = train_fn
        self.control: TrainingControl | None = TrainingControl() if mode == "train" else None
        self.sink: TuiSink | None = (TuiSink(self.post_message, interval=sink_interval)
                                     if mode == "train" else None)
        self.trainer_running = False
        self.trainer_done = False
        self.trainer_error: str | None = None
        self.quitting = False
        self.forced_exit = False
        self.watcher: MetricsWatcher | None = None
        self.watch_exists: bool | None = None
        self.watch_last_write: float | None = None
        self._backlog_alerts = 0
        self._drawn: dict[str, object] = {}
        self._last_status: tuple[str, str] | None = None

    # --- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")
        yield ProgressPane(id="progress")
        yield Banner(id="banner")
        yield Tabs(*[Tab(label, id=f"tab-{view}") for view, label in VIEWS], id="views")
        with Vertical(id="body"):
            with Grid(id="plots", classes="holder"):
                for spec in PLOT_SPECS:
                    yield MetricPlot(spec, classes="pane")
            with Horizontal(id="bottom", classes="holder"):
                yield MetricsTable(id="table", classes="pane")
                with Vertical(id="side", classes="holder"):
                    yield AlertsPane(id="alerts", classes="pane")
                    yield LogPane(id="log", classes="pane")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#table").border_title = "Metrics (log blocks)"
        self.query_one("#alerts").border_title = "Alerts"
        self.query_one("#log").border_title = "Log"
        for plot in self.query(MetricPlot):
            plot.monochrome = self.no_color
        self._set_view(self.view_id)
        if self.mode == "train":
            self.trainer_running = True
            self._run_trainer()
        else:
            self.watcher = MetricsWatcher(self.run_dir, self.post_message, poll_interval=self.watch_poll)
            self.watcher.start()
        self.refresh_now()
        self.set_interval(1.0 / self.refresh_hz, self.refresh_now, name="redraw")

    def on_unmount(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        if self.control is not None and self.trainer_running:
            # Whatever tore the app down, the trainer must not keep running headless.
            self.control.request_stop("monitor closed")

    def on_resize(self) -> None:
        # Breakpoint classes change with the size; the "Pane" key only exists when compact.
        self.call_after_refresh(self.refresh_bindings)

    @property
    def compact(self) -> bool:
        screen = self.screen_stack[0] if self.screen_stack else None
        return screen is not None and (screen.has_class("-narrow") or screen.has_class("-short"))

    def _set_view(self, view_id: str) -> None:
        self.view_id = view_id
        for view, _ in VIEWS:
            self.query_one(f"#{view}").set_class(view == view_id, "-current")
        for holder, members in HOLDERS.items():
            self.query_one(f"#{holder}").set_class(view_id in members, "-holds-current")

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tab is not None and event.tab.id:
            self._set_view(event.tab.id.removeprefix("tab-"))

    # --- trainer -----------------------------------------------------------------------------
    @work(thread=True, exit_on_error=False, name="trainer", group="trainer")
    def _run_trainer(self) -> None:
        """Runs train_fn on a daemon thread and waits for it.

        train_fn does not run in the worker's own thread: thread workers live in asyncio's
        default executor, which the interpreter joins at exit, so a trainer stuck in a step
        would make quitting hang. A daemon thread cannot hold the process, and the worker can
        return as soon as the app cancels it.
        """
        worker = get_current_worker()
        done = threading.Event()

        def target() -> None:
            error, tb = None, ""
            try:
                self._train_fn(self.sink, self.control)
            except BaseException as exc:  # noqa: BLE001 - any failure must reach the screen
                error, tb = f"{type(exc).__name__}: {exc}", traceback.format_exc()
            # The sink's last batch is posted before this message, so the UI sees the final
            # events before it learns the trainer is gone.
            self.sink.close()
            self.post_message(TrainerFinished(error=error, traceback=tb))
            done.set()

        threading.Thread(target=target, name="molpt-trainer", daemon=True).start()
        while not done.wait(0.1):
            if worker.is_cancelled:
                return

    def on_trainer_finished(self, message: TrainerFinished) -> None:
        self.trainer_running = False
        self.trainer_done = True
        if message.error:
            self.trainer_error = message.error
            self.state.add_log(f"training crashed: {message.error}", "error")
            for line in message.traceback.rstrip().splitlines()[-12:]:
                self.state.add_log(line, "error")
            self.notify(message.error, title="Training crashed", severity="error", timeout=30)
        elif self.state.finished is None:
            stopped = self.control.stop_requested
            self.state.apply([Finished(
                status="stopped" if stopped else "completed", epoch=self.state.history.last_epoch,
                message="the trainer returned without reporting how it ended")], notify=False)
        if not self._ui_alive:
            return
        self.refresh_bindings()
        self.refresh_now()
        if self.quitting:
            self.exit(self.exit_code, return_code=self.exit_code)

    @property
    def exit_code(self) -> int:
        if self.mode == "watch":
            return EXIT_COMPLETED
        if self.trainer_error:
            return EXIT_FAILED
        fin = self.state.finished
        if fin is not None and self.trainer_done:
            return {"completed": EXIT_COMPLETED, "stopped": EXIT_STOPPED}.get(fin.status, EXIT_FAILED)
        return EXIT_STOPPED  # left while the trainer was still running

    # --- incoming data -----------------------------------------------------------------------
    def on_event_batch(self, message: EventBatch) -> None:
        if message.backlog:
            self._backlog_alerts += sum(1 for e in message.events if e.kind == "alert")
        self.state.apply(message.events, notify=not message.backlog)

    def on_watch_file_status(self, message: WatchFileStatus) -> None:
        self.watch_exists = message.exists
        self.watch_last_write = message.last_write

    def on_watch_reset(self, message: WatchReset) -> None:
        self.state = MonitorState()
        self._drawn.clear()
        self.state.add_log(f"{message.reason}; reloading", "warning")

    # --- redraw ------------------------------------------------------------------------------
    @property
    def _ui_alive(self) -> bool:
        # Messages from the trainer thread can still arrive while the app is shutting down.
        return self.is_running and bool(self.screen_stack)

    def refresh_now(self) -> None:
        """Bring every pane up to date with the state (the timer's job; tests call it too)."""
        if not self._ui_alive:
            return
        state, drawn = self.state, self._drawn
        versions = state.versions
        if drawn.get("header") != versions["header"]:
            self.query_one(RunHeader).show(state.run, mode=self.mode, run_dir=self.run_dir)
            drawn["header"] = versions["header"]
        plot_key = (versions["data"], self.zoom_index, self.log_y, id(state.store))
        if drawn.get("plots") != plot_key:
            for plot in self.query(MetricPlot):
                plot.set_view(state.store, ZOOMS[self.zoom_index], self.log_y)
            drawn["plots"] = plot_key
        if drawn.get("blocks") != versions["blocks"]:
            self.query_one(MetricsTable).show(state.history.blocks)
            drawn["blocks"] = versions["blocks"]
        if drawn.get("alerts") != versions["alerts"]:
            alerts = state.history.alerts
            self.query_one(AlertsPane).show(alerts)
            self.query_one("#tab-alerts", Tab).label = f"Alerts ({len(alerts)})" if alerts else "Alerts"
            drawn["alerts"] = versions["alerts"]
        if drawn.get("log") != versions["log"]:
            self.query_one(LogPane).show(list(state.log))
            drawn["log"] = versions["log"]
        banner_key = (versions["finished"], self.trainer_error)
        if drawn.get("banner") != banner_key:
            self._show_banner()
            drawn["banner"] = banner_key
        now = self.clock()
        info = self._progress_info(now)
        self.query_one(ProgressPane).show(info)
        status = (info.status, info.status_note)
        if status != self._last_status:
            self._last_status = status
            self.refresh_bindings()
        self._toast_alerts()

    def _show_banner(self) -> None:
        banner = self.query_one(Banner)
        if self.trainer_error:
            banner.show("failed", [f"Training crashed: {self.trainer_error}",
                                   "The traceback is in the Log pane. Press q to quit."])
            return
        fin = self.state.finished
        if fin is None:
            banner.show(None, [])
            return
        outcome = fin.status if fin.status in ("completed", "stopped") else "failed"
        banner.show(outcome, self.state.summary_lines())

    def _status(self, now: float) -> tuple[str, str]:
        fin = self.state.finished
        if self.mode == "train":
            if self.trainer_error:
                return "CRASHED", ""
            if self.trainer_running:
                if self.control.stop_requested:
                    return "STOPPING", "finishing the current step"
                if self.control.paused:
                    return "PAUSED", ""
                return "RUNNING", ""
            if fin is not None:
                return {"completed": "COMPLETED", "stopped": "STOPPED"}.get(fin.status, "FAILED"), ""
            return "STOPPED", ""
        if self.watch_exists is False:
            return "WAITING", f"no {METRICS_FILE} yet"
        if fin is not None:
            return "FINISHED", fin.status
        if self.watch_last_write is not None:
            quiet = now - self.watch_last_write
            if quiet > self.stale_threshold():
                return "STALE", f"no writes for {fmt_ago(quiet)}"
        if self.state.run is None:
            return "WAITING", "no run started yet"
        return "FOLLOWING", ""

    def stale_threshold(self) -> float:
        # A run with slow epochs writes rarely; do not call it stale before ~3 epochs of silence.
        rate = self.state.seconds_per_epoch()
        return max(self.stale_after, 3 * rate) if rate == rate else self.stale_after

    def _progress_info(self, now: float) -> ProgressInfo:
        state = self.state
        status, note = self._status(now)
        if self.mode == "watch" and status in ("STALE", "WAITING") and self.watch_last_write:
            now = self.watch_last_write  # a dead run's clock stopped at its last write
        elapsed = state.elapsed(now)
        metrics = state.last_metrics
        zoom = ZOOMS[self.zoom_index]
        return ProgressInfo(
            epoch=state.history.last_epoch,
            total=state.run.epochs if state.run else None,
            elapsed=elapsed,
            eta=None if status == "STALE" else state.eta(now),
            seconds_per_epoch=state.seconds_per_epoch(elapsed),
            loss=metrics.loss if metrics else None,
            fwd_energy=metrics.fwd_energy if metrics else None,
            inv_energy=metrics.inv_energy if metrics else None,
            lr=metrics.lr if metrics else None,
            status=status,
            status_note=note,
            view=f"zoom {'all' if zoom is None else f'last {zoom}'} · y {'log' if self.log_y else 'linear'}",
        )

    def _toast_alerts(self) -> None:
        if self._backlog_alerts:
            n, self._backlog_alerts = self._backlog_alerts, 0
            self.notify(f"{n} alert{'s' if n != 1 else ''} in this run's history: see the Alerts pane",
                        title="Alerts", severity="warning")
        alerts = self.state.take_alerts()
        for alert in alerts[:MAX_TOASTS_PER_TICK]:
            severity = {"error": "error", "warning": "warning"}.get(alert.severity, "information")
            text = alert.message + (f"\n→ {alert.hint}" if alert.hint else "")
            self.notify(text, title=f"Alert at epoch {alert.epoch}", severity=severity, timeout=10)
        if len(alerts) > MAX_TOASTS_PER_TICK:
            self.notify(f"and {len(alerts) - MAX_TOASTS_PER_TICK} more: see the Alerts pane",
                        title="Alerts", severity="warning")

    # --- actions -----------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in TRAINER_ACTIONS:
            if self.mode != "train":
                return False  # watch mode is read-only: hide these keys entirely
            if not self.trainer_running or self.control.stop_requested:
                return None  # shown greyed out: the run is over or ending
        if action == "next_view":
            return self.compact
        return True

    def action_toggle_pause(self) -> None:
        if self.control.paused:
            self.control.resume()
            self.notify("Resumed", timeout=3)
        else:
            self.control.pause()
            self.notify("Paused: the trainer halts before its next step (p to resume)", timeout=4)
        self.refresh_now()

    def action_checkpoint(self) -> None:
        self.control.request_checkpoint()
        self.notify("Checkpoint requested: written after the current step", timeout=4)

    def action_write_png(self) -> None:
        self.control.request_png()
        self.notify("PNG requested: written after the current step", timeout=4)

    def action_stop(self) -> None:
        self.control.request_stop("stopped from the monitor")
        self.notify("Stopping: the trainer finishes its step and writes a checkpoint and the PNG",
                    timeout=6)
        self.refresh_bindings()
        self.refresh_now()

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self.refresh_now()

    def action_cycle_zoom(self) -> None:
        self.zoom_index = (self.zoom_index + 1) % len(ZOOMS)
        self.refresh_now()

    def action_next_view(self) -> None:
        self.query_one(Tabs).action_next_tab()

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        notes = ["Ctrl+P opens the command palette with the same actions."]
        if self.mode == "watch":
            notes.insert(0, "Watch mode is read-only: pause, checkpoint, PNG and stop act on a "
                            "live trainer and are not available here.")
        notes.append(f"Screens narrower than {WIDE_MIN_WIDTH} or lower than {WIDE_MIN_HEIGHT} rows "
                     "show one pane at a time: v or the tabs switch panes.")
        self.push_screen(HelpScreen(self.help_rows(), notes))

    def help_rows(self) -> list[tuple[str, str]]:
        """(keys, what they do) per action of this mode; several keys for one action share a row."""
        rows: dict[str, list] = {}
        for binding in self._bindings_for_mode():
            keys, text = rows.setdefault(binding.action, [[], binding.tooltip or binding.description])
            keys.append(self.get_key_display(binding))
        return [(" / ".join(keys), text) for keys, text in rows.values()]

    def _bindings_for_mode(self) -> Iterable[Binding]:
        for binding in self.BINDINGS:
            if self.mode == "watch" and binding.action in TRAINER_ACTIONS:
                continue
            yield binding

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        titles = {"toggle_pause": "Pause / resume training", "checkpoint": "Save checkpoint now",
                  "write_png": "Write PNG now", "toggle_log": "Toggle log y-axis",
                  "cycle_zoom": "Cycle plot zoom", "next_view": "Next pane",
                  "stop": "Stop training gracefully", "help": "Help: keys"}
        for action, title in titles.items():
            if not self.check_action(action, ()):
                continue
            binding = next(b for b in self.BINDINGS if b.action == action)
            yield SystemCommand(title, binding.tooltip, getattr(self, f"action_{action}"))

    async def action_quit(self) -> None:
        if isinstance(self.screen, ConfirmQuitScreen):
            return
        if self.mode == "train" and self.trainer_running:
            if self.quitting:
                self._force_exit()
            elif self.control.stop_requested:
                self._begin_quit()
            else:
                self.push_screen(ConfirmQuitScreen(), self._on_quit_answer)
            return
        self.exit(self.exit_code, return_code=self.exit_code)

    def _on_quit_answer(self, confirmed: bool | None) -> None:
        if confirmed:
            self._begin_quit()

    def _begin_quit(self) -> None:
        self.quitting = True
        self.control.request_stop("quit from the monitor")
        self.notify("Quitting: waiting for the trainer to finish its step and save (q again to force)",
                    timeout=self.quit_timeout)
        self.set_timer(self.quit_timeout, self._force_exit, name="force-quit")
        self.refresh_bindings()
        self.refresh_now()

    def _force_exit(self) -> None:
        if self.trainer_running:
            # The trainer thread is a daemon: it dies with the process, possibly mid-save.
            self.forced_exit = True
            self.exit(self.exit_code, return_code=self.exit_code)


# --- entry points used by the CLI -------------------------------------------------------------
def run_train_app(train_fn: TrainFn, *, no_mouse: bool = False, title: str | None = None) -> int:
    """Run `train_fn(sink, control)` under the live monitor; returns the process exit code:
    0 completed, 130 stopped or quit before completion, 1 if train_fn raised."""
    app = MonitorApp(mode="train", train_fn=train_fn, title=title)
    app.run(mouse=not no_mouse)
    if app.control is not None and app.trainer_running:
        app.control.request_stop("monitor closed")
    return app.exit_code


def run_watch_app(run_dir: str | Path, *, no_mouse: bool = False, stale_after: float = 120.0) -> int:
    """Attach read-only to RUN_DIR/metrics.jsonl, following it as it grows."""
    path = Path(run_dir)
    if not path.is_dir():
        import sys

        print(f"molpt-tui watch: {path} is not a run directory", file=sys.stderr)
        return 2
    app = MonitorApp(mode="watch", run_dir=path, title=f"molpt-tui watch {path.name}",
                     stale_after=stale_after)
    app.run(mouse=not no_mouse)
    return app.exit_code


def save_screenshot(app: App, path: str | Path) -> Path:
    """Write the app's current screen as SVG (for docs and bug reports)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(app.export_screenshot(), encoding="utf-8")
    return path
