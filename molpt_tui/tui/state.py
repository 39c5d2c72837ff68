"""What the monitor knows, rebuilt from events; no Textual here so it is testable on its own.

Each part of the screen has a version counter. Events bump counters; the redraw timer compares
them with what each pane last drew, so a pane is only rebuilt when its data really changed.

Whether the trainer is paused or stopping is what its acknowledgements say, never what a key
press asked for: a request can be lost (a trainer that died) or refused, and every viewer of the
run must show the same truth.
"""
from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from molpt_tui.training.events import (
    Alert,
    CheckpointSaved,
    EpochMetrics,
    Event,
    Finished,
    LogBlock,
    Message,
    RequestAcknowledged,
    RunStarted,
)
from molpt_tui.training.history import History

from .formatting import fmt_num, fmt_pct
from .series import SeriesStore

# Per-epoch seconds are averaged over this many recent epochs for s/it and the ETA, so a slow
# first epoch (compilation, data generation) does not skew the estimate for hours.
RATE_WINDOW = 20


@dataclass(frozen=True)
class LogEntry:
    text: str
    level: str = "info"  # info | warning | error | success


class MonitorState:
    def __init__(self, max_log: int = 2000) -> None:
        self.history = History()
        self.store = SeriesStore()
        self.log: deque[LogEntry] = deque(maxlen=max_log)
        self.pending_alerts: list[Alert] = []
        self.pending_acks: list[RequestAcknowledged] = []
        self.acked_ids: set[str] = set()
        self.paused = False     # from the trainer's acknowledgements of pause / resume
        self.stopping = False   # a stop was acknowledged and the segment has not finished yet
        self.last_metrics: EpochMetrics | None = None
        self.first_event_t: float | None = None
        self.last_event_t: float | None = None
        self.segments = 0
        self.n_finished = 0  # Finished events seen (a failed start writes one without RunStarted)
        self.n_events = 0
        self.versions = {"header": 0, "data": 0, "blocks": 0, "alerts": 0, "log": 0, "finished": 0,
                         "steer": 0}

    # --- input -------------------------------------------------------------------------------
    def apply(self, events: list[Event], *, notify: bool = True, warnings: Iterable[str] = ()) -> None:
        """Fold events in. `notify=False` for history read at attach time: no toasts for it.
        `warnings` are the reader's notes on lines it skipped."""
        for warning in warnings:
            self.add_log(warning, "warning")
        dirty_from: int | None = None
        history = self.history
        self.n_events += len(events)
        for event in events:
            if isinstance(event, EpochMetrics):
                keep = bisect.bisect_left(history.epochs, event.epoch)
                dirty_from = keep if dirty_from is None else min(dirty_from, keep)
                history.add(event)
                self.last_metrics = event
            elif isinstance(event, LogBlock):
                history.add(event)
                self._bump("blocks")
            elif isinstance(event, Alert):
                history.add(event)
                if notify:
                    self.pending_alerts.append(event)
                self._bump("alerts")
            elif isinstance(event, RunStarted):
                self._on_run_started(event)
            elif isinstance(event, Message):
                self.add_log(event.text, event.level)
            elif isinstance(event, CheckpointSaved):
                self.add_log(f"checkpoint ({event.label}) saved at epoch {event.epoch}: {event.path}")
            elif isinstance(event, Finished):
                history.add(event)
                self.n_finished += 1
                self._on_finished(event)
            elif isinstance(event, RequestAcknowledged):
                self._on_ack(event, notify)
            else:
                continue
            if self.first_event_t is None:
                self.first_event_t = event.t
            self.last_event_t = event.t
        if dirty_from is not None:
            self.store.sync(history, dirty_from)
            self._bump("data")

    def _on_run_started(self, event: RunStarted) -> None:
        if event.resumed or self.segments:
            # History drops epochs >= the resume point as they are re-emitted, so the curves
            # continue from the checkpoint instead of jumping back.
            self.add_log(f"resumed at epoch {event.start_epoch}", "success")
        else:
            self.add_log(f"run started: {event.model}, {event.epochs} epochs, batch {event.batch_size}")
        if event.engine_reason:
            self.add_log(f"energy engine: {event.engine} ({event.engine_reason})")
        self.segments += 1
        self.paused = self.stopping = False  # a new segment starts running
        self._bump("steer")
        self.history.add(event)
        self._bump("header")
        self._bump("finished")

    def _on_finished(self, event: Finished) -> None:
        level = {"completed": "success", "stopped": "warning", "failed": "error"}.get(event.status, "info")
        text = f"finished ({event.status}) at epoch {event.epoch}"
        if event.message:
            text += f": {event.message}"
        self.add_log(text, level)
        for path in event.files:
            self.add_log(f"  wrote {path}", level if level != "warning" else "info")
        self.paused = self.stopping = False
        self._bump("steer")
        self._bump("finished")

    def _on_ack(self, event: RequestAcknowledged, notify: bool) -> None:
        if event.request_id:
            self.acked_ids.add(event.request_id)
        if event.action == "pause":
            self.paused = True
        elif event.action == "resume":
            self.paused = False
        elif event.action == "stop":
            self.stopping, self.paused = True, False
        self.add_log(ack_text(event), "success" if event.action in ("checkpoint", "png") else "info")
        if notify:
            self.pending_acks.append(event)
        self._bump("steer")

    def add_log(self, text: str, level: str = "info") -> None:
        self.log.append(LogEntry(text, level))
        self._bump("log")

    def take_alerts(self) -> list[Alert]:
        alerts, self.pending_alerts = self.pending_alerts, []
        return alerts

    def take_acks(self) -> list[RequestAcknowledged]:
        acks, self.pending_acks = self.pending_acks, []
        return acks

    def _bump(self, key: str) -> None:
        self.versions[key] += 1

    # --- derived views -----------------------------------------------------------------------
    @property
    def run(self) -> RunStarted | None:
        return self.history.run

    @property
    def finished(self) -> Finished | None:
        return self.history.finished

    def seconds_per_epoch(self, elapsed: float | None = None) -> float:
        recent = [s for s in self.history.series["seconds"][-RATE_WINDOW:] if math.isfinite(s) and s > 0]
        if recent:
            return statistics.fmean(recent)
        run = self.run
        done = self.history.last_epoch - (run.start_epoch if run else 0)
        if elapsed is not None and done > 0:
            return elapsed / done
        return math.nan

    def stale_threshold(self, minimum: float) -> float:
        """Seconds of silence after which a followed run counts as stale. A run with slow epochs
        writes rarely: it is not called stale before ~3 epochs of silence."""
        rate = self.seconds_per_epoch()
        return max(minimum, 3 * rate) if math.isfinite(rate) else minimum

    def elapsed(self, now: float) -> float | None:
        """Seconds since this run segment started; frozen once it finished."""
        run = self.run
        if run is None:
            return None
        finished = self.finished
        end = finished.t if finished is not None else now
        return max(0.0, end - run.t)

    def eta(self, now: float) -> float | None:
        run = self.run
        if run is None or self.finished is not None:
            return 0.0 if self.finished is not None else None
        rate = self.seconds_per_epoch(self.elapsed(now))
        remaining = max(0, run.epochs - self.history.last_epoch)
        return rate * remaining if math.isfinite(rate) else None

    def best_loss(self) -> float:
        finite = [v for v in self.history.series["loss"] if math.isfinite(v)]
        return min(finite) if finite else math.nan

    def summary_lines(self) -> list[str]:
        """Text of the completion banner: outcome, loss, and the files the trainer wrote."""
        fin = self.finished
        if fin is None:
            return []
        best = fin.best_loss if math.isfinite(fin.best_loss) else self.best_loss()
        total = f"/{self.run.epochs}" if self.run is not None else ""
        title = {"completed": "Training completed", "stopped": "Training stopped",
                 "failed": "Training failed"}.get(fin.status, f"Training {fin.status}")
        first = f"{title} at epoch {fin.epoch}{total} · best loss {fmt_num(best)}"
        if math.isfinite(fin.improvement_pct):
            first += f" · improvement {fmt_pct(fin.improvement_pct)}"
        lines = [first]
        if fin.message:
            lines.append(fin.message)
        if fin.files:
            lines.append("Files: " + ", ".join(fin.files))
        return lines


def ack_text(event: RequestAcknowledged) -> str:
    """One line for the log pane and the toast: what the trainer did with a request."""
    detail = event.detail
    if event.action == "checkpoint":
        return f"checkpoint written: {detail}" if detail else "checkpoint written"
    if event.action == "png":
        return f"PNG written: {detail}" if detail else "PNG written"
    if event.action == "pause":
        return f"paused after epoch {event.epoch}"
    if event.action == "resume":
        return f"running again after epoch {event.epoch}"
    return f"stopping after epoch {event.epoch}" + (f": {detail}" if detail else "")
