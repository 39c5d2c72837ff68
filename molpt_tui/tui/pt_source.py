"""Where the pt monitor's run comes from and what it may do to it: the pt twin of `source.py`.

`source.LiveRun` and `WatchedRun` cannot be reused as they are: their status, backlog split and
segment counting read a training `MonitorState` and count `RunStarted` events, which a pt log
never holds. What they share with a pt run (the control channel, the trainer handle, the status
words and feed status) is imported from there; only the rules that depend on pt's events are here.

- `LivePT`: `molpt-tui pt` started the sampler (a child process) and owns it: quitting stops it
  and waits for its checkpoint; the exit code is the sampler's.
- `WatchedPT`: a pt run started elsewhere, or a finished one. Keys steer it while a live sampler
  holds the directory's lock, unless read-only; quitting leaves it running; exit code 0.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from molpt_tui.training.control import ControlRequest, send_request
from molpt_tui.training.events import ControlAction, Finished, PTStarted
from molpt_tui.training.metrics_log import CorruptLine, decode_line
from molpt_tui.training.run_dir import METRICS_FILE, LockOwner, RunDirectory

from .formatting import fmt_ago
from .pt_state import PTState
from .source import EXIT_COMPLETED, EXIT_FAILED, EXIT_STOPPED, FeedStatus, StatusLine, TrainerHandle, shell_code

# A pt run writes progress every few seconds; this long without a write means it is not running.
STALE_AFTER_S = 120.0


def count_pt_markers(path: Path) -> tuple[int, int]:
    """PTStarted and Finished events already in a metrics file (earlier segments of a resumed run)."""
    started = finished = 0
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                if b"pt_started" not in raw and b"finished" not in raw:
                    continue
                try:
                    event = decode_line(raw)
                except CorruptLine:
                    continue
                if isinstance(event, PTStarted):
                    started += 1
                elif isinstance(event, Finished):
                    finished += 1
    except OSError:
        return 0, 0
    return started, finished


class PTSource:
    """What both sources share: the directory, its control channel and the requests sent."""

    badge = "pt"
    owns_sampler = False

    def __init__(self, run_dir: RunDirectory) -> None:
        self.run_dir = run_dir
        self.sent: list[ControlRequest] = []
        self.send_error = ""

    def check(self) -> bool:
        return False

    def sampler_exit(self) -> int | None:
        return None

    def settle_exit(self) -> None:
        return

    def stop_now(self) -> None:
        return

    def reset(self) -> None:
        return

    def steer_refusal(self) -> str:
        raise NotImplementedError

    def finished(self, state: PTState) -> Finished | None:
        return state.finished

    def crash(self, state: PTState) -> str:
        """A sampler that ended without saying how: the sentence for the banner ("" otherwise)."""
        return ""

    def pending(self, state: PTState) -> list[ControlAction]:
        return [r.action for r in self.sent if r.request_id not in state.acked_ids]

    def stopping(self, state: PTState) -> bool:
        return state.stopping or "stop" in self.pending(state)

    def refusal(self, action: ControlAction, state: PTState) -> str:
        reason = self.steer_refusal()
        if reason:
            return reason
        fin = self.finished(state)
        if fin is not None:
            return f"the pt run has finished ({fin.status})"
        if self.stopping(state):
            return "the sampler is already stopping"
        if action == "pause" and state.paused:
            return "the sampler is already paused"
        if action == "resume" and not state.paused:
            return "the sampler is not paused"
        return ""

    def send(self, action: ControlAction) -> ControlRequest | None:
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

    def _pending_note(self, state: PTState) -> str:
        pending = self.pending(state)
        return f"{', '.join(dict.fromkeys(pending))} sent, waiting for the sampler" if pending else ""

    def status(self, state: PTState, feed: FeedStatus, now: float) -> StatusLine:
        raise NotImplementedError

    def help_notes(self) -> list[str]:
        raise NotImplementedError

    def exit_code(self, state: PTState) -> int:
        raise NotImplementedError

    @staticmethod
    def _outcome(fin: Finished) -> StatusLine:
        label = {"completed": "COMPLETED", "stopped": "STOPPED"}.get(fin.status, "FAILED")
        return StatusLine(label, fin.message if label == "FAILED" else "")


class LivePT(PTSource):
    """A sampler this command started; build it right after starting the sampler, before it writes."""

    owns_sampler = True

    def __init__(self, run_dir: RunDirectory, sampler: TrainerHandle) -> None:
        super().__init__(run_dir)
        self.sampler = sampler
        self.prior_segments, self.prior_finished = count_pt_markers(run_dir.metrics)
        self.exit: int | None = None
        self.ended = False

    def check(self) -> bool:
        if self.exit is not None:
            return False
        code = self.sampler.poll()
        if code is None:
            return False
        self.exit = code
        return True

    def sampler_exit(self) -> int | None:
        return self.exit

    def settle_exit(self) -> None:
        self.ended = True

    def stop_now(self) -> None:
        if self.sampler.poll() is None:
            self.sampler.terminate()

    def reset(self) -> None:
        self.prior_segments = self.prior_finished = 0

    def own_segment(self, state: PTState) -> bool:
        return state.segments > self.prior_segments

    def steer_refusal(self) -> str:
        if self.exit is not None:
            return f"the sampler has exited (code {shell_code(self.exit)})"
        return ""

    def finished(self, state: PTState) -> Finished | None:
        return state.finished if state.n_finished > self.prior_finished else None

    def status(self, state: PTState, feed: FeedStatus, now: float) -> StatusLine:
        if feed.error:
            return StatusLine("READ ERROR", feed.error)
        fin = self.finished(state)
        if self.ended:
            if fin is not None:
                return self._outcome(fin)
            return StatusLine("CRASHED", f"exit code {shell_code(self.exit or 0)}, no Finished event")
        if fin is not None:
            outcome = self._outcome(fin)
            return StatusLine(outcome.label, outcome.note or "waiting for the sampler to exit")
        if self.exit is not None:
            return StatusLine("STOPPING", "reading the sampler's last events")
        if self.stopping(state):
            return StatusLine("STOPPING", "finishing the current round and saving")
        if not self.own_segment(state):
            doing = state.last_message.text if state.last_message is not None else ""
            return StatusLine("STARTING", f"{self.sampler.description}: "
                              + (doing or "loading the map, checking it, building the replicas") + feed.waited(now))
        if state.paused:
            return StatusLine("PAUSED", self._pending_note(state))
        return StatusLine("RUNNING", self._pending_note(state))

    def crash(self, state: PTState) -> str:
        if not self.ended or self.finished(state) is not None:
            return ""
        return (f"The sampler ({self.sampler.description}) exited with code {shell_code(self.exit or 0)} "
                "without reporting how the run ended")

    def help_notes(self) -> list[str]:
        return ["Pause, resume and checkpoint go to the sampler through the pt directory's control channel; "
                "the status changes when the sampler acknowledges them.",
                "Quitting asks first, then stops the sampler after its current round; it saves its checkpoint, "
                "trajectories and figures (continue with `molpt-tui pt RUN_DIR --resume`). q again forces."]

    def exit_code(self, state: PTState) -> int:
        code = self.exit if self.exit is not None else self.sampler.poll()
        if code is None:
            return EXIT_STOPPED
        if self.finished(state) is None:
            return EXIT_FAILED
        return shell_code(code)


class WatchedPT(PTSource):
    """A pt directory followed from outside."""

    def __init__(self, run_dir: RunDirectory, read_only: bool = False, *, lock_check_interval: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(run_dir)
        self.badge = "watch pt"
        self.read_only = read_only
        self.lock_check_interval = lock_check_interval
        self._monotonic = monotonic
        self._checked_at = -math.inf
        self.holder: LockOwner | None = None
        self.check()

    def check(self) -> bool:
        if self.read_only:
            return False
        now = self._monotonic()
        # The lock is a file, maybe on a network file system: read it about once a second.
        if now - self._checked_at < self.lock_check_interval:
            return False
        self._checked_at = now
        holder = self.run_dir.live_trainer()
        changed = (holder is None) != (self.holder is None)
        self.holder = holder
        return changed

    def steer_refusal(self) -> str:
        if self.read_only:
            return "read-only (--read-only)"
        if self.holder is None:
            return "no live sampler holds this pt directory's lock"
        return ""

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

    def help_notes(self) -> list[str]:
        notes = ["Pause, resume and checkpoint go through the pt directory's control channel to the sampler "
                 "that holds its lock, wherever it runs. Quitting leaves the sampler running."]
        reason = self.steer_refusal()
        if reason:
            notes.append(f"Steering is off now: {reason}.")
        return notes

    def exit_code(self, state: PTState) -> int:
        return EXIT_COMPLETED
