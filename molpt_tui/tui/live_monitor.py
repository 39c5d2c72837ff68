"""What the training monitor (`app.py`) and the pt monitor (`pt_monitor.py`) share as monitors
of one followed directory: the follower thread, how the monitor's own child ended, and quitting.

A `MetricsFollower` thread follows the directory's metrics.jsonl and posts messages. How the
source's own child ended is decided once the follower has caught up after its exit (or after
`sync_timeout`). Quitting a run whose child the monitor owns asks first, sends stop, and waits for the child to
save; a second q or Ctrl+C forces. Each monitor keeps its panes, its keys and its wording: the
hooks below are where they differ.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from molpt_tui.training.exit_codes import STATUS_EXIT_CODES

from .base import MonitorBase
from .live_source import FeedStatus, FollowedState, StatusLine, SteeredSource
from .messages import FeedSynced, TailerFailed, WatchFileStatus, WatchReset
from .screens import ConfirmScreen
from .watcher import MetricsFollower

# What `run_until_quit` returns when the monitor itself crashed: the application layer then
# leaves a live child running instead of recording a user stop.
EXIT_UI_CRASHED = STATUS_EXIT_CODES["ui-crashed"]
# A second Ctrl+C within this many seconds quits at once (the child, another process, still saves).
INTERRUPT_WINDOW_S = 3.0


class LoggedState(FollowedState, Protocol):
    def add_log(self, text: str, level: str = "info") -> None: ...


SourceT = TypeVar("SourceT", bound=SteeredSource[Any])
StateT = TypeVar("StateT", bound=LoggedState)


class FollowingMonitor(MonitorBase, Generic[SourceT, StateT]):
    """Subclasses compose their panes, call `start_following` at the end of `on_mount`, and fill
    in the hooks. Textual calls a message handler of every class in the MRO, so the handlers here
    are not to be defined again in a subclass."""

    READ_FAILURE_TITLE: ClassVar[str] = "Cannot read the run"
    # Lines of the reader's traceback copied into the log when reading fails.
    READ_FAILURE_TRACEBACK_LINES: ClassVar[int] = 0

    def __init__(self, source: SourceT, state: StateT, *, title: str | None, clock: Callable[[], float],
                 refresh_hz: float, stale_after: float, quit_timeout: float, poll_interval: float,
                 sync_timeout: float, ascii_only: bool, monotonic: Callable[[], float]) -> None:
        super().__init__(ascii_only=ascii_only, monotonic=monotonic)
        self.source = source
        self.title = title or source.title
        self.sub_title = source.badge
        self.clock = clock
        self.refresh_hz = refresh_hz
        self.quit_timeout = quit_timeout
        self.poll_interval = poll_interval
        self.sync_timeout = sync_timeout
        self.state = state
        self.feed = FeedStatus(stale_after=stale_after)
        self.follower: MetricsFollower | None = None
        self.child_done = False  # the own child exited and its last events are in
        self.quitting = False
        self.forced_exit = False
        self.exited_by_user = False  # False after run(): an exception ended the app
        self._interrupted_at: float | None = None
        self._sync_token: int | None = None
        self._drawn: dict[str, object] = {}

    # --- hooks -------------------------------------------------------------------------------
    def _new_state(self) -> StateT:
        """An empty state, for a metrics file that was replaced."""
        raise NotImplementedError

    def _forget_drawn(self) -> None:
        """The metrics file was replaced: nothing on screen was drawn from the new one."""
        self._drawn.clear()

    def _report_crash(self, crash: str) -> None:
        """Tell the user that the own child ended without saying how (`crash` is the sentence)."""
        raise NotImplementedError

    def _quit_confirmation(self) -> ConfirmScreen:
        """The question asked before quitting stops the own child."""
        raise NotImplementedError

    def _quit_notice(self, interrupt: bool) -> str:
        """The toast while quitting waits for the own child to save (`interrupt`: by Ctrl+C)."""
        raise NotImplementedError

    def _still_saving_notice(self) -> str:
        """The toast for a Ctrl+C outside the window while quitting waits ("": none)."""
        return ""

    # --- following ---------------------------------------------------------------------------
    def start_following(self) -> None:
        """The last step of `on_mount`: the panes exist, so the feed and the redraw timer may start."""
        self._set_view(self.view_id)
        self.feed = replace(self.feed, attached_at=self.clock())
        self.follower = MetricsFollower(self.source.run_dir.metrics, self.post_message,
                                        poll_interval=self.poll_interval)
        self.follower.start()
        self.refresh_now()
        self.set_interval(1.0 / self.refresh_hz, self.refresh_now, name="redraw")

    def on_unmount(self) -> None:
        # The child is not ours to stop here: a live run's child is the application layer's to
        # end (it knows whether the monitor crashed), a watched one is never stopped.
        if self.follower is not None:
            self.follower.close()
        self.restore_scrollbars()

    def on_watch_file_status(self, message: WatchFileStatus) -> None:
        self.feed = replace(self.feed, exists=message.exists, last_write=message.last_write, error="")

    def on_watch_reset(self, message: WatchReset) -> None:
        self.state = self._new_state()
        self.source.reset()
        self._forget_drawn()
        self.state.add_log(f"{message.reason}; reloading", "warning")

    def on_tailer_failed(self, message: TailerFailed) -> None:
        # The follower retries every poll and reports each failure: say it once per new error.
        if message.error == self.feed.error:
            return
        self.feed = replace(self.feed, error=message.error)
        self.log_error(message.error)
        if self.READ_FAILURE_TRACEBACK_LINES:
            for line in message.traceback.rstrip().splitlines()[-self.READ_FAILURE_TRACEBACK_LINES:]:
                self.log_error(line)
        self.notify(f"{message.error}\nThe screen may be out of date; retrying.", title=self.READ_FAILURE_TITLE,
                    severity="error", timeout=15)
        self.refresh_now()

    def on_feed_synced(self, message: FeedSynced) -> None:
        if message.token == self._sync_token:
            self._settle_child()

    def status(self, now: float | None = None) -> StatusLine:
        return self.source.status(self.state, self.feed, self.clock() if now is None else now)

    # --- the own child -----------------------------------------------------------------------
    def _check_source(self) -> None:
        self.source.check()
        if self.source.child_exit() is None or self.child_done or self._sync_token is not None:
            return
        # Its last lines may not be read yet: decide how it ended only once the follower has
        # posted everything the file held after the exit.
        if self.follower is not None:
            self._sync_token = self.follower.request_sync()
            self.set_timer(self.sync_timeout, self._settle_child, name=f"settle-{self.source.child_name}")
        else:
            self._settle_child()

    def _settle_child(self) -> None:
        if self.child_done or not self._ui_alive:
            return
        self.child_done = True
        self.source.settle_exit()
        crash = self.source.crash(self.state)
        if crash:
            self._report_crash(crash)
        self.refresh_now()
        if self.quitting:
            self._leave()

    # --- quitting ----------------------------------------------------------------------------
    def _owns_live_child(self) -> bool:
        return self.source.owns_child and not self.child_done

    async def action_quit(self) -> None:
        if isinstance(self.screen, ConfirmScreen):
            return
        if not self._owns_live_child():
            self._leave()
        elif self.quitting:
            self._force_exit()
        elif self.source.stopping(self.state) or self.source.child_exit() is not None:
            self._begin_quit()
        else:
            self.push_screen(self._quit_confirmation(), self._on_quit_answer)

    def action_interrupt(self) -> None:
        """Ctrl+C, as headless handles SIGINT: stop gracefully without asking and wait; a second
        one within INTERRUPT_WINDOW_S quits at once (the child, another process, still saves)."""
        now = self.monotonic()
        again = self._interrupted_at is not None and now - self._interrupted_at <= INTERRUPT_WINDOW_S
        self._interrupted_at = now
        if not self._owns_live_child():
            self._leave()
            return
        if isinstance(self.screen, ConfirmScreen):
            self.screen.dismiss(False)
        if again and self.quitting:
            self._force_exit()
        elif not self.quitting:
            self._begin_quit(interrupt=True)
        elif self._still_saving_notice():
            self.notify(self._still_saving_notice(), timeout=INTERRUPT_WINDOW_S)

    def _on_quit_answer(self, confirmed: bool | None) -> None:
        if confirmed:
            self._begin_quit()

    def _begin_quit(self, *, interrupt: bool = False) -> None:
        self.quitting = True
        if not self.source.stopping(self.state) and self.source.child_exit() is None:
            if self.source.send("stop") is None:
                # The channel is unwritable: the handle's own stop still saves.
                self.state.add_log(f"cannot send stop ({self.source.send_error}); terminating the "
                                   f"{self.source.child_name}", "warning")
                self.source.stop_now()
        self.notify(self._quit_notice(interrupt), timeout=self.quit_timeout)
        self.set_timer(self.quit_timeout, self._force_exit, name="force-quit")
        self.refresh_now()

    def _force_exit(self) -> None:
        if self.child_done or not self._ui_alive:
            return
        if self.source.child_exit() is not None:
            return  # it has exited: its last lines are being read, and the settle timer bounds that
        self.forced_exit = True
        self.source.stop_now()
        self._leave()

    def _leave(self) -> None:
        self.exited_by_user = True
        code = self.exit_code
        self.exit(code, return_code=code)

    @property
    def exit_code(self) -> int:
        return self.source.exit_code(self.state)


def run_until_quit(app: FollowingMonitor[Any, Any], *, no_mouse: bool = False) -> int:
    """Run `app` until the user quits: the source's exit code, or EXIT_UI_CRASHED when the
    monitor itself crashed (then a live child still running is the caller's to end)."""
    app.run(mouse=not no_mouse)
    if not app.exited_by_user:
        return EXIT_UI_CRASHED  # an exception took it down: never report that as the run's outcome
    return app.exit_code
