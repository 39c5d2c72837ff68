"""Where the monitor's run comes from and what the monitor may do to it.

The monitor always follows a run directory's metrics.jsonl and steers through its control
channel; the only difference between `train` and `watch` is who owns the trainer:

- `LiveRun`: the monitor's own command started the trainer (another process in production, a
  thread in tests) and hands over a `TrainerHandle`. Quitting stops that trainer and waits for
  it; the exit code is the trainer's.
- `WatchedRun`: a trainer started elsewhere, or none at all (a finished run, a SLURM job still
  pending). Keys steer it when a live trainer holds the run's lock, unless `--read-only`;
  quitting never stops it; the exit code is 0.

Nothing here touches Textual, so the rules are tested without a terminal.
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from molpt_tui.training.control import ControlRequest, send_request
from molpt_tui.training.events import ControlAction, Event, Finished, RunStarted
from molpt_tui.training.metrics_log import CorruptLine, decode_line
from molpt_tui.training.run_dir import METRICS_FILE, LockOwner, RunDirectory

from .formatting import fmt_ago, fmt_duration
from .state import MonitorState, data_phase_title

EXIT_COMPLETED, EXIT_FAILED, EXIT_STOPPED = 0, 1, 130
# Waits shorter than this go without a clock: every longer wait says how long it has lasted.
WAIT_SHOWN_AFTER = 2.0

# Status words of a finished segment, as the progress line shows them.
OUTCOME_LABELS = {"completed": "COMPLETED", "stopped": "STOPPED", "failed": "FAILED", "diverged": "DIVERGED",
                  "ui-crashed": "FAILED"}
PENDING_WORDS = {"pause": "pause", "resume": "resume", "checkpoint": "checkpoint", "png": "PNG",
                 "stop": "stop"}


class TrainerHandle(Protocol):
    """The monitor's grip on a trainer it started. The application layer implements it over a
    subprocess, the tests over a thread. Every method returns at once."""

    description: str   # for messages, e.g. "trainer PID 4242"

    def poll(self) -> int | None:
        """The exit code once the trainer has ended (a shell-style code: 0, 1, 130, 143, ...)."""

    def terminate(self) -> None:
        """Ask it to stop now; it still finishes writing its checkpoint and Finished event."""

    def kill(self) -> None:
        """End it at once, saving nothing."""


@dataclass(frozen=True)
class FeedStatus:
    """What the monitor knows about the metrics file, apart from its events."""

    exists: bool | None = None      # None until the first poll answered
    last_write: float | None = None  # mtime, seconds since the epoch
    error: str = ""                  # the reader's current failure; "" while reading works
    stale_after: float = 120.0       # seconds of silence before a followed run counts as stale
    attached_at: float | None = None  # when the monitor started following (wall clock)

    def waited(self, now: float) -> str:
        """" (waiting 12 s)" once the monitor has waited more than a moment, else ""."""
        if self.attached_at is None or now - self.attached_at < WAIT_SHOWN_AFTER:
            return ""
        return f" ({fmt_duration(now - self.attached_at)})"


@dataclass(frozen=True)
class StatusLine:
    label: str   # one of the words ProgressPane styles: RUNNING, PAUSED, FOLLOWING, STALE, ...
    note: str = ""


class RunSource(ABC):
    """The run the monitor shows: its directory, its steering rules, its status and exit code."""

    badge: ClassVar[str]          # shown in the header: "train" / "watch"
    owns_trainer: ClassVar[bool]  # quitting must stop the trainer and wait for it

    def __init__(self, run_dir: RunDirectory) -> None:
        self.run_dir = run_dir
        self.sent: list[ControlRequest] = []
        self.send_error = ""

    @property
    @abstractmethod
    def title(self) -> str:
        """The app's default title."""

    # --- what changes outside metrics.jsonl ----------------------------------------------------
    def check(self) -> bool:
        """Refresh what the source learns from outside the metrics file (the trainer's exit, the
        lock). Called on the redraw timer; True when something changed."""
        return False

    def trainer_exit(self) -> int | None:
        """The exit code of the monitor's own trainer once it ended (as of the last `check`)."""
        return None

    def settle_exit(self) -> None:
        """The feed has read everything the trainer wrote before it exited."""
        return

    def split_backlog(self, state: MonitorState, events: list[Event]) -> tuple[list[Event], list[Event]]:
        """Backlog events that were there before this monitor's run (no toasts for them) and
        those that are news: a live trainer's first lines are usually read as backlog too."""
        return events, []

    def stop_now(self) -> None:
        """The user forced quitting: end the monitor's own trainer without waiting for it."""
        return

    def reset(self) -> None:
        """The metrics file was replaced: what was counted from it no longer applies."""
        return

    # --- steering ---------------------------------------------------------------------------------
    @abstractmethod
    def steer_refusal(self) -> str:
        """Why requests cannot be sent now ("" when they can)."""

    def can_steer(self) -> bool:
        return not self.steer_refusal()

    def finished(self, state: MonitorState) -> Finished | None:
        """How the run segment the monitor is about ended, once it has."""
        return state.finished

    def pending(self, state: MonitorState) -> list[ControlAction]:
        """Requests sent from here that the trainer has not acknowledged yet."""
        return [r.action for r in self.sent if r.request_id not in state.acked_ids]

    def stopping(self, state: MonitorState) -> bool:
        return state.stopping or "stop" in self.pending(state)

    def refusal(self, action: ControlAction, state: MonitorState) -> str:
        """Why `action` cannot be sent now ("" when it can)."""
        reason = self.steer_refusal()
        if reason:
            return reason
        fin = self.finished(state)
        if fin is not None:
            return f"the run has finished ({fin.status})"
        if self.stopping(state):
            return "the trainer is already stopping"
        return ""

    def allowed(self, action: ControlAction, state: MonitorState) -> bool:
        return not self.refusal(action, state)

    def send(self, action: ControlAction) -> ControlRequest | None:
        """Write `action` into the run's control channel; None when steering is refused or the
        request could not be written (`send_error` says why)."""
        reason = self.steer_refusal()
        if reason:
            self.send_error = reason
            return None
        try:
            request = send_request(self.run_dir, action)
        except OSError as exc:
            self.send_error = f"cannot write to {self.run_dir.control_dir}: {exc.strerror or exc}"
            return None
        self.send_error = ""
        self.sent.append(request)
        return request

    def _pending_note(self, state: MonitorState) -> str:
        pending = self.pending(state)
        if not pending:
            return ""
        words = ", ".join(dict.fromkeys(PENDING_WORDS[a] for a in pending))
        return f"{words} sent, waiting for the trainer"

    # --- what the screen says ------------------------------------------------------------------
    @abstractmethod
    def status(self, state: MonitorState, feed: FeedStatus, now: float) -> StatusLine:
        """The status word and its note for the progress line."""

    def crash(self, state: MonitorState) -> str:
        """A trainer that ended without saying how: the sentence for the banner ("" otherwise)."""
        return ""

    @abstractmethod
    def help_notes(self) -> list[str]:
        """What the help screen says about steering and quitting this run."""

    @abstractmethod
    def exit_code(self, state: MonitorState) -> int:
        """The process exit code when the monitor quits now."""

    @staticmethod
    def _outcome(fin: Finished) -> StatusLine:
        label = OUTCOME_LABELS.get(fin.status, "FAILED")
        return StatusLine(label, fin.status if label == "FAILED" and fin.status != "failed" else "")


def waiting_for(state: MonitorState) -> str:
    """What the trainer said it is doing before its run started (building the system, generating
    data, compiling kernels): the data generation it reports, else its last message; "" when it
    said nothing yet."""
    data = state.data_phase()
    if data is not None and data.t >= (state.last_message.t if state.last_message is not None else -math.inf):
        return data_phase_title(data)
    message = state.last_message
    return message.text if message is not None else ""


def count_markers(path: Path) -> tuple[int, int]:
    """RunStarted and Finished events already in a metrics file (a resumed run's earlier
    segments). Only lines that can hold one are decoded, so a long log is scanned quickly."""
    started = finished = 0
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                if b"run_started" not in raw and b"finished" not in raw:
                    continue
                try:
                    event = decode_line(raw)
                except CorruptLine:
                    continue
                if isinstance(event, RunStarted):
                    started += 1
                elif isinstance(event, Finished):
                    finished += 1
    except OSError:
        return 0, 0
    return started, finished


class LiveRun(RunSource):
    """A trainer this monitor's command started; the monitor follows the run directory it writes."""

    badge = "train"
    owns_trainer = True

    def __init__(self, run_dir: RunDirectory, trainer: TrainerHandle) -> None:
        super().__init__(run_dir)
        self.trainer = trainer
        # A resumed run's log already holds earlier segments, the last of them finished: that
        # Finished is not this trainer's. What is this trainer's is told by counting past them
        # (build LiveRun right after starting the trainer, before it can write).
        self.prior_segments, self.prior_finished = count_markers(run_dir.metrics)
        self.exit: int | None = None
        self.ended = False  # exited, and the feed has caught up with its last events

    @property
    def title(self) -> str:
        return "molpt-tui"

    def check(self) -> bool:
        if self.exit is not None:
            return False
        code = self.trainer.poll()
        if code is None:
            return False
        self.exit = code
        return True

    def trainer_exit(self) -> int | None:
        return self.exit

    def settle_exit(self) -> None:
        self.ended = True

    def split_backlog(self, state: MonitorState, events: list[Event]) -> tuple[list[Event], list[Event]]:
        segments, finished = state.segments, state.n_finished
        for i, event in enumerate(events):
            if isinstance(event, RunStarted):
                segments += 1
            elif isinstance(event, Finished):
                finished += 1
            if segments > self.prior_segments or finished > self.prior_finished:
                return events[:i], events[i:]
        return events, []

    def stop_now(self) -> None:
        if self.trainer.poll() is None:
            self.trainer.terminate()

    def reset(self) -> None:
        self.prior_segments = self.prior_finished = 0

    def own_segment(self, state: MonitorState) -> bool:
        return state.segments > self.prior_segments

    def steer_refusal(self) -> str:
        if self.exit is not None:
            return f"the trainer has exited (code {shell_code(self.exit)})"
        return ""

    def finished(self, state: MonitorState) -> Finished | None:
        # Not "own segment": a trainer that fails before it starts writes Finished alone.
        return state.finished if state.n_finished > self.prior_finished else None

    def status(self, state: MonitorState, feed: FeedStatus, now: float) -> StatusLine:
        if feed.error:
            return StatusLine("READ ERROR", feed.error)
        fin = self.finished(state)
        if self.ended:
            if fin is not None:
                return self._outcome(fin)
            return StatusLine("CRASHED", f"exit code {shell_code(self.exit or 0)}, no Finished event")
        if fin is not None:
            outcome = self._outcome(fin)
            return StatusLine(outcome.label, outcome.note or "waiting for the trainer to exit")
        if self.exit is not None:
            return StatusLine("STOPPING", "reading the trainer's last events")
        if self.stopping(state):
            return StatusLine("STOPPING", "finishing the current step")
        if not self.own_segment(state):
            doing = waiting_for(state)
            return StatusLine("STARTING", f"waiting for {self.trainer.description}"
                              + (f": {doing}" if doing else "") + feed.waited(now))
        if state.paused:
            return StatusLine("PAUSED", self._pending_note(state))
        return StatusLine("RUNNING", self._pending_note(state))

    def crash(self, state: MonitorState) -> str:
        if not self.ended or self.finished(state) is not None:
            return ""
        return (f"The trainer ({self.trainer.description}) exited with code {shell_code(self.exit or 0)} "
                "without reporting how the run ended")

    def help_notes(self) -> list[str]:
        return ["Pause, checkpoint, PNG and stop go to the trainer through the run directory's control "
                "channel; the status line changes when the trainer acknowledges them.",
                "Quitting while training asks first, stops the trainer and waits for its checkpoint "
                "and PNG (q again forces)."]

    def exit_code(self, state: MonitorState) -> int:
        code = self.exit if self.exit is not None else self.trainer.poll()
        if code is None:
            return EXIT_STOPPED  # the user left before the trainer ended (a forced quit)
        if self.finished(state) is None:
            return EXIT_FAILED  # it died without saying how: never report that as success
        return shell_code(code)


def shell_code(code: int) -> int:
    """A signal death reported as -N (subprocess) becomes 128+N, as a shell reports it."""
    return 128 - code if code < 0 else code


class WatchedRun(RunSource):
    """A run directory followed from outside: a trainer started elsewhere, or none."""

    badge = "watch"
    owns_trainer = False

    def __init__(self, run_dir: RunDirectory, read_only: bool = False, *, lock_check_interval: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(run_dir)
        self.read_only = read_only
        self.lock_check_interval = lock_check_interval
        self._monotonic = monotonic
        self._checked_at = -math.inf
        self.holder: LockOwner | None = None
        self.check()  # steering keys are right from the first frame

    @property
    def title(self) -> str:
        return f"molpt-tui watch {self.run_dir.path.name}"

    def check(self) -> bool:
        if self.read_only:
            return False
        now = self._monotonic()
        # The lock is a file, maybe on a network file system: read it about once a second.
        if now - self._checked_at < self.lock_check_interval:
            return False
        self._checked_at = now
        holder = self.run_dir.live_trainer()
        changed = (holder is None) != (self.holder is None) or (
            holder is not None and self.holder is not None and holder.describe() != self.holder.describe())
        self.holder = holder
        return changed

    def steer_refusal(self) -> str:
        if self.read_only:
            return "read-only (--read-only)"
        if self.holder is None:
            return "no live trainer holds this run's lock"
        return ""

    def status(self, state: MonitorState, feed: FeedStatus, now: float) -> StatusLine:
        if feed.error:
            return StatusLine("READ ERROR", feed.error)
        if feed.exists is False:
            if not self.run_dir.path.is_dir():
                return StatusLine("WAITING", f"no run directory yet: checking every second{feed.waited(now)}")
            return StatusLine("WAITING", f"no {METRICS_FILE} yet: job pending or preparing{feed.waited(now)}")
        fin = state.finished
        if fin is not None:
            return StatusLine("FINISHED", fin.status)
        if self.stopping(state):
            return StatusLine("STOPPING", "the trainer is finishing its step")
        if state.paused:
            return StatusLine("PAUSED", self._pending_note(state))
        if feed.last_write is not None:
            quiet = now - feed.last_write
            if quiet > state.stale_threshold(feed.stale_after):
                return StatusLine("STALE", f"no writes for {fmt_ago(quiet)}")
        if state.run is None:
            doing = waiting_for(state)
            return StatusLine("WAITING", (doing or "no run started yet") + feed.waited(now))
        return StatusLine("FOLLOWING", self._pending_note(state))

    def help_notes(self) -> list[str]:
        notes = ["Pause, checkpoint, PNG and stop go through the run directory's control channel to the "
                 "trainer that holds its lock, wherever it runs; the status line changes when that "
                 "trainer acknowledges them. Quitting leaves the trainer running."]
        reason = self.steer_refusal()
        if reason:
            notes.append(f"Steering is off now: {reason}.")
        return notes

    def exit_code(self, state: MonitorState) -> int:
        return EXIT_COMPLETED
