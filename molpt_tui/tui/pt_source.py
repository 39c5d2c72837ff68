"""Where the pt monitor's run comes from and what it may do to it.

The rules for a source, live or watched, are the training monitor's (`live_source.py`); here is
what reads a pt run: its segments open with `PTStarted`, its child is a sampler that stops after
a round, and its outcomes and waits are worded for sampling.

- `LivePT`: `molpt-tui pt` started the sampler (a child process) and owns it: quitting stops it
  and waits for its checkpoint; the exit code is the sampler's.
- `WatchedPT`: a pt run started elsewhere, or a finished one. Keys steer it while a live sampler
  holds the directory's lock, unless read-only; quitting leaves it running; exit code 0.
"""
from __future__ import annotations

from molpt_tui.training.events import ControlAction, Finished, PTStarted
from molpt_tui.training.run_dir import METRICS_FILE

from .formatting import fmt_ago
from .live_source import FeedStatus, LockWatchedSource, OwnedChildSource, StatusLine, SteeredSource
from .pt_state import PTState

# A pt run writes progress every few seconds; this long without a write means it is not running.
STALE_AFTER_S = 120.0


class PTSource(SteeredSource[PTState]):
    """A pt run the monitor shows."""

    badge = "pt"
    child_name = "sampler"
    run_name = "pt run"
    directory_name = "pt directory"

    @property
    def title(self) -> str:
        return f"molpt-tui {self.badge} {self.run_dir.path.name}"

    def _action_refusal(self, action: ControlAction, state: PTState) -> str:
        # Pause and resume have keys of their own here (training toggles one key), so either can
        # be pressed at the wrong time.
        if action == "pause" and state.paused:
            return "the sampler is already paused"
        if action == "resume" and not state.paused:
            return "the sampler is not paused"
        return ""

    def _outcome(self, fin: Finished) -> StatusLine:
        label = {"completed": "COMPLETED", "stopped": "STOPPED"}.get(fin.status, "FAILED")
        return StatusLine(label, fin.message if label == "FAILED" else "")


class LivePT(OwnedChildSource[PTState], PTSource):
    """A sampler this command started; build it right after starting the sampler, before it writes."""

    started_event = PTStarted
    stopping_note = "finishing the current round and saving"

    def _starting_note(self, state: PTState) -> str:
        doing = state.last_message.text if state.last_message is not None else ""
        return f"{self.child.description}: " + (doing or "loading the map, checking it, building the replicas")

    def help_notes(self) -> list[str]:
        return ["Pause, resume and checkpoint go to the sampler through the pt directory's control channel; "
                "the status changes when the sampler acknowledges them.",
                "Quitting asks first, then stops the sampler after its current round; it saves its checkpoint, "
                "trajectories and figures (continue with `molpt-tui pt RUN_DIR --resume`). q again forces."]


class WatchedPT(LockWatchedSource[PTState], PTSource):
    """A pt directory followed from outside."""

    badge = "watch pt"
    steering_help = ("Pause, resume and checkpoint go through the pt directory's control channel to the sampler "
                     "that holds its lock, wherever it runs. Quitting leaves the sampler running.")

    def status(self, state: PTState, feed: FeedStatus, now: float) -> StatusLine:
        if feed.error:
            return StatusLine("READ ERROR", feed.error)
        if feed.exists is False:
            return StatusLine("WAITING", f"no {METRICS_FILE} yet{feed.waited(now)}")
        if state.finished is not None:
            return StatusLine("FINISHED", state.finished.status)
        if self.stopping(state):
            return StatusLine("STOPPING", "the sampler is finishing its round")
        if state.paused:
            return StatusLine("PAUSED", self._pending_note(state))
        # A live lock holder that writes nothing is preparing (the map check, the replicas), not gone.
        if feed.last_write is not None and now - feed.last_write > feed.stale_after and self.holder is None:
            return StatusLine("STALE", f"no writes for {fmt_ago(now - feed.last_write)}")
        if state.started is None:
            return StatusLine("WAITING", "no pt run started yet" + feed.waited(now))
        return StatusLine("FOLLOWING", self._pending_note(state))
