"""Where the training monitor's run comes from and what the monitor may do to it.

The monitor always follows a run directory's metrics.jsonl and steers through its control
channel; the only difference between `train` and `watch` is who owns the trainer:

- `LiveRun`: the monitor's own command started the trainer (another process in production, a
  thread in tests) and hands over a `TrainerHandle`. Quitting stops that trainer and waits for
  it; the exit code is the trainer's.
- `WatchedRun`: a trainer started elsewhere, or none at all (a finished run, a SLURM job still
  pending). Keys steer it when a live trainer holds the run's lock, unless `--read-only`;
  quitting never stops it; the exit code is 0.

Those rules are the pt monitor's too and live in `live_source.py`; here is what reads a training
run's events. Nothing here touches Textual, so the rules are tested without a terminal.
"""
from __future__ import annotations

import math

from molpt_tui.training.events import Event, Finished, RunStarted
from molpt_tui.training.run_dir import METRICS_FILE

from .formatting import fmt_ago
from .live_source import (
    EXIT_COMPLETED,
    EXIT_FAILED,
    EXIT_STOPPED,
    ChildHandle,
    FeedStatus,
    LockWatchedSource,
    OwnedChildSource,
    StatusLine,
    SteeredSource,
    shell_code,
)
from .state import MonitorState, data_phase_title

__all__ = ["EXIT_COMPLETED", "EXIT_FAILED", "EXIT_STOPPED", "OUTCOME_LABELS", "FeedStatus", "LiveRun", "RunSource",
           "StatusLine", "TrainerHandle", "WatchedRun", "shell_code", "waiting_for"]

# The application layer hands the monitor a trainer under this name.
TrainerHandle = ChildHandle

# Status words of a finished segment, as the progress line shows them.
OUTCOME_LABELS = {"completed": "COMPLETED", "stopped": "STOPPED", "failed": "FAILED", "diverged": "DIVERGED",
                  "ui-crashed": "FAILED"}


class RunSource(SteeredSource[MonitorState]):
    """A training run the monitor shows: its directory, its steering rules, its status and exit code."""

    child_name = "trainer"
    run_name = "run"
    directory_name = "run"

    def trainer_exit(self) -> int | None:
        """The exit code of the monitor's own trainer once it ended (as of the last `check`)."""
        return self.child_exit()

    def split_backlog(self, state: MonitorState, events: list[Event]) -> tuple[list[Event], list[Event]]:
        """Backlog events that were there before this monitor's run (no toasts for them) and
        those that are news: a live trainer's first lines are usually read as backlog too."""
        return events, []

    def _outcome(self, fin: Finished) -> StatusLine:
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


class LiveRun(OwnedChildSource[MonitorState], RunSource):
    """A trainer this monitor's command started; the monitor follows the run directory it writes."""

    badge = "train"
    started_event = RunStarted
    stopping_note = "finishing the current step"

    @property
    def title(self) -> str:
        return "molpt-tui"

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

    def _starting_note(self, state: MonitorState) -> str:
        doing = waiting_for(state)
        return f"waiting for {self.child.description}" + (f": {doing}" if doing else "")

    def help_notes(self) -> list[str]:
        return ["Pause, checkpoint, PNG and stop go to the trainer through the run directory's control "
                "channel; the status line changes when the trainer acknowledges them.",
                "Quitting while training asks first, stops the trainer and waits for its checkpoint "
                "and PNG (q again forces)."]


class WatchedRun(LockWatchedSource[MonitorState], RunSource):
    """A run directory followed from outside: a trainer started elsewhere, or none."""

    badge = "watch"
    steering_help = ("Pause, checkpoint, PNG and stop go through the run directory's control channel to the "
                     "trainer that holds its lock, wherever it runs; the status line changes when that "
                     "trainer acknowledges them. Quitting leaves the trainer running.")

    @property
    def title(self) -> str:
        return f"molpt-tui watch {self.run_dir.path.name}"

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
