"""What a monitor's source is, whatever writes the directory it follows: a trainer (`source.py`)
or a pt sampler (`pt_source.py`).

Every source follows one directory's metrics.jsonl and steers through its control channel. It is
one of two kinds, and the kind, not the run, decides what quitting does:

- `OwnedChildSource`: the monitor's own command started the child process that writes the
  directory and hands over a `ChildHandle`. Quitting stops the child and waits for it; the exit
  code is the child's.
- `LockWatchedSource`: the directory is written from elsewhere, or by no one any more. Keys steer
  it while a live process holds its lock, unless read-only; quitting never stops it; exit code 0.

What depends on the run (which event starts a segment, what the child is called, how an outcome
reads, what the status says while it prepares) is the business of the subclasses in `source.py`
and `pt_source.py`. Nothing here touches Textual, so the rules are tested without a terminal.
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

from molpt_tui.training.control import ControlRequest, send_request
from molpt_tui.training.events import ControlAction, Event, Finished
from molpt_tui.training.metrics_log import CorruptLine, decode_line
from molpt_tui.training.run_dir import LockOwner, RunDirectory

from .formatting import fmt_duration

EXIT_COMPLETED, EXIT_FAILED, EXIT_STOPPED = 0, 1, 130
# Waits shorter than this go without a clock: every longer wait says how long it has lasted.
WAIT_SHOWN_AFTER = 2.0
PENDING_WORDS = {"pause": "pause", "resume": "resume", "checkpoint": "checkpoint", "png": "PNG",
                 "stop": "stop"}


class ChildHandle(Protocol):
    """The monitor's grip on a child process it started (a trainer, a pt sampler). The application
    layer implements it over a subprocess, the tests over a thread. Every method returns at once."""

    description: str   # for messages, e.g. "trainer PID 4242"

    def poll(self) -> int | None:
        """The exit code once the child has ended (a shell-style code: 0, 1, 130, 143, ...)."""

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
    label: str   # one of the words the progress line styles: RUNNING, PAUSED, FOLLOWING, STALE, ...
    note: str = ""


class FollowedState(Protocol):
    """What a source reads of the state its monitor folds the events into (`MonitorState`,
    `PTState`)."""

    @property
    def acked_ids(self) -> set[str]: ...
    @property
    def paused(self) -> bool: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def finished(self) -> Finished | None: ...
    @property
    def segments(self) -> int: ...   # segment-start events seen
    @property
    def n_finished(self) -> int: ...  # Finished events seen


StateT = TypeVar("StateT", bound=FollowedState)


def shell_code(code: int) -> int:
    """A signal death reported as -N (subprocess) becomes 128+N, as a shell reports it."""
    return 128 - code if code < 0 else code


def count_markers(path: Path, started: type[Event]) -> tuple[int, int]:
    """`started` and Finished events already in a metrics file (a resumed run's earlier
    segments). Only lines that can hold one are decoded, so a long log is scanned quickly."""
    started_tag, finished_tag = started.kind.encode(), Finished.kind.encode()
    n_started = n_finished = 0
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                if started_tag not in raw and finished_tag not in raw:
                    continue
                try:
                    event = decode_line(raw)
                except CorruptLine:
                    continue
                if isinstance(event, started):
                    n_started += 1
                elif isinstance(event, Finished):
                    n_finished += 1
    except OSError:
        return 0, 0
    return n_started, n_finished


class SteeredSource(ABC, Generic[StateT]):
    """The directory the monitor shows, its steering rules, its status and exit code."""

    badge: ClassVar[str]           # shown in the header: "train", "watch", "pt", "watch pt"
    owns_child: ClassVar[bool]     # quitting must stop the child process and wait for it
    # The words messages use, so that one rule reads right for a trainer and for a sampler.
    child_name: ClassVar[str]      # who acts on requests: "trainer", "sampler"
    run_name: ClassVar[str]        # what finishes: "run", "pt run"
    directory_name: ClassVar[str]  # whose lock it is: "run", "pt directory"

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
        """Refresh what the source learns from outside the metrics file (the child's exit, the
        lock). Called on the redraw timer; True when something changed."""
        return False

    def child_exit(self) -> int | None:
        """The exit code of the monitor's own child once it ended (as of the last `check`)."""
        return None

    def settle_exit(self) -> None:
        """The feed has read everything the child wrote before it exited."""
        return

    def stop_now(self) -> None:
        """The user forced quitting: end the monitor's own child without waiting for it."""
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

    def finished(self, state: StateT) -> Finished | None:
        """How the run segment the monitor is about ended, once it has."""
        return state.finished

    def pending(self, state: StateT) -> list[ControlAction]:
        """Requests sent from here that the child has not acknowledged yet."""
        return [r.action for r in self.sent if r.request_id not in state.acked_ids]

    def stopping(self, state: StateT) -> bool:
        return state.stopping or "stop" in self.pending(state)

    def refusal(self, action: ControlAction, state: StateT) -> str:
        """Why `action` cannot be sent now ("" when it can)."""
        reason = self.steer_refusal()
        if reason:
            return reason
        fin = self.finished(state)
        if fin is not None:
            return f"the {self.run_name} has finished ({fin.status})"
        if self.stopping(state):
            return f"the {self.child_name} is already stopping"
        return self._action_refusal(action, state)

    def _action_refusal(self, action: ControlAction, state: StateT) -> str:
        """Why this action in particular makes no sense now, though steering works ("" if it does)."""
        return ""

    def allowed(self, action: ControlAction, state: StateT) -> bool:
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

    def _pending_note(self, state: StateT) -> str:
        pending = self.pending(state)
        if not pending:
            return ""
        words = ", ".join(dict.fromkeys(PENDING_WORDS[a] for a in pending))
        return f"{words} sent, waiting for the {self.child_name}"

    # --- what the screen says ------------------------------------------------------------------
    @abstractmethod
    def status(self, state: StateT, feed: FeedStatus, now: float) -> StatusLine:
        """The status word and its note for the progress line."""

    def crash(self, state: StateT) -> str:
        """A child that ended without saying how: the sentence for the banner ("" otherwise)."""
        return ""

    @abstractmethod
    def help_notes(self) -> list[str]:
        """What the help screen says about steering and quitting this run."""

    @abstractmethod
    def exit_code(self, state: StateT) -> int:
        """The process exit code when the monitor quits now."""

    @abstractmethod
    def _outcome(self, fin: Finished) -> StatusLine:
        """The status line of a finished segment."""


class OwnedChildSource(SteeredSource[StateT]):
    """A child process this monitor's command started; the monitor follows the directory it
    writes. Build it right after starting the child, before the child can write."""

    owns_child = True
    started_event: ClassVar[type[Event]]  # the event that opens each segment of the run
    stopping_note: ClassVar[str]          # the status note while a stop is under way

    def __init__(self, run_dir: RunDirectory, child: ChildHandle) -> None:
        super().__init__(run_dir)
        self.child = child
        # A resumed run's log already holds earlier segments, the last of them finished: that
        # Finished is not this child's. What is this child's is told by counting past them.
        self.prior_segments, self.prior_finished = count_markers(run_dir.metrics, self.started_event)
        self.exit: int | None = None
        self.ended = False  # exited, and the feed has caught up with its last events

    @abstractmethod
    def _starting_note(self, state: StateT) -> str:
        """What the status line says while the child prepares, before its segment starts."""

    def check(self) -> bool:
        if self.exit is not None:
            return False
        code = self.child.poll()
        if code is None:
            return False
        self.exit = code
        return True

    def child_exit(self) -> int | None:
        return self.exit

    def settle_exit(self) -> None:
        self.ended = True

    def stop_now(self) -> None:
        if self.child.poll() is None:
            self.child.terminate()

    def reset(self) -> None:
        self.prior_segments = self.prior_finished = 0

    def own_segment(self, state: StateT) -> bool:
        return state.segments > self.prior_segments

    def steer_refusal(self) -> str:
        if self.exit is not None:
            return f"the {self.child_name} has exited (code {shell_code(self.exit)})"
        return ""

    def finished(self, state: StateT) -> Finished | None:
        # Not "own segment": a child that fails before it starts writes Finished alone.
        return state.finished if state.n_finished > self.prior_finished else None

    def status(self, state: StateT, feed: FeedStatus, now: float) -> StatusLine:
        if feed.error:
            return StatusLine("READ ERROR", feed.error)
        fin = self.finished(state)
        if self.ended:
            if fin is not None:
                return self._outcome(fin)
            return StatusLine("CRASHED", f"exit code {shell_code(self.exit or 0)}, no Finished event")
        if fin is not None:
            outcome = self._outcome(fin)
            return StatusLine(outcome.label, outcome.note or f"waiting for the {self.child_name} to exit")
        if self.exit is not None:
            return StatusLine("STOPPING", f"reading the {self.child_name}'s last events")
        if self.stopping(state):
            return StatusLine("STOPPING", self.stopping_note)
        if not self.own_segment(state):
            return StatusLine("STARTING", self._starting_note(state) + feed.waited(now))
        if state.paused:
            return StatusLine("PAUSED", self._pending_note(state))
        return StatusLine("RUNNING", self._pending_note(state))

    def crash(self, state: StateT) -> str:
        if not self.ended or self.finished(state) is not None:
            return ""
        return (f"The {self.child_name} ({self.child.description}) exited with code "
                f"{shell_code(self.exit or 0)} without reporting how the run ended")

    def exit_code(self, state: StateT) -> int:
        code = self.exit if self.exit is not None else self.child.poll()
        if code is None:
            return EXIT_STOPPED  # the user left before the child ended (a forced quit)
        if self.finished(state) is None:
            return EXIT_FAILED  # it died without saying how: never report that as success
        return shell_code(code)


class LockWatchedSource(SteeredSource[StateT]):
    """A directory followed from outside: written by a process started elsewhere, or by none."""

    owns_child = False
    steering_help: ClassVar[str]  # the help screen's note on steering and quitting

    def __init__(self, run_dir: RunDirectory, read_only: bool = False, *, lock_check_interval: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(run_dir)
        self.read_only = read_only
        self.lock_check_interval = lock_check_interval
        self._monotonic = monotonic
        self._checked_at = -math.inf
        self.holder: LockOwner | None = None
        self.check()  # steering keys are right from the first frame

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
            return f"no live {self.child_name} holds this {self.directory_name}'s lock"
        return ""

    def help_notes(self) -> list[str]:
        notes = [self.steering_help]
        reason = self.steer_refusal()
        if reason:
            notes.append(f"Steering is off now: {reason}.")
        return notes

    def exit_code(self, state: StateT) -> int:
        return EXIT_COMPLETED
