"""What the monitor knows, rebuilt from events; no Textual here so it is testable on its own.

Each part of the screen has a version counter. Events bump counters; the redraw timer compares
them with what each pane last drew, so a pane is only rebuilt when its data really changed.

Whether the trainer is paused or stopping is what its acknowledgements say, never what a key
press asked for: a request can be lost (a trainer that died) or refused, and every viewer of the
run must show the same truth.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from molpt_tui.report.console import MISSING, fmt_change, splits_line
from molpt_tui.training.events import (
    EARLY_END,
    Alert,
    CheckpointSaved,
    DataProgress,
    DataReport,
    EpochMetrics,
    Event,
    Finished,
    LogBlock,
    Message,
    RequestAcknowledged,
    RunStarted,
    StepProgress,
    SystemStats,
    TestEvaluation,
    ValidationHistograms,
)
from molpt_tui.training.history import History

from .formatting import fmt_count, fmt_duration, fmt_kelvin, fmt_num, fmt_prob_column
from .series import EvalSeries, SeriesStore

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
        self.evals = EvalSeries()
        self.last_message: Message | None = None  # what the trainer said last (while it prepares)
        self.system: SystemStats | None = None    # the trainer's latest reading of itself
        # The data-generation MD that `train` runs before its run starts: the latest report of
        # each split, and which split reported last. It is the progress line's subject until a
        # RunStarted arrives; its phases stay in the log.
        self.data_progress: dict[str, DataProgress] = {}
        # What a requeued job would resume from, and since when (the SLURM part of the system line).
        self.last_checkpoint: CheckpointSaved | None = None
        # The latest histograms of what the map does to the validation pairs (the validation screen).
        self.validation: ValidationHistograms | None = None
        self.data_split: str | None = None
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
                         "steer": 0, "progress": 0, "tests": 0, "system": 0, "validation": 0}

    # --- input -------------------------------------------------------------------------------
    def apply(self, events: list[Event], *, notify: bool = True, warnings: Iterable[str] = ()) -> None:
        """Fold events in. `notify=False` for history read at attach time: no toasts for it.
        `warnings` are the reader's notes on lines it skipped."""
        for warning in warnings:
            self.add_log(warning, "warning")
        dirty_from: int | None = None
        blocks_changed = False
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
                blocks_changed = True
                self._bump("blocks")
            elif isinstance(event, StepProgress):
                history.add(event)
                self._bump("progress")
            elif isinstance(event, TestEvaluation):
                history.add(event)
                self.add_log(test_text(event), "success" if event.label == "final" else "info")
                self._bump("tests")
            elif isinstance(event, DataReport):
                history.add(event)
                self.add_log(data_report_text(event), "warning" if event.suggested_n_samples else "info")
            elif isinstance(event, Alert):
                history.add(event)
                if notify:
                    self.pending_alerts.append(event)
                self._bump("alerts")
            elif isinstance(event, RunStarted):
                self._on_run_started(event)
            elif isinstance(event, Message):
                self.last_message = event
                self.add_log(event.text, event.level)
            elif isinstance(event, CheckpointSaved):
                self.last_checkpoint = event
                self.add_log(f"checkpoint ({event.label}) saved at epoch {event.epoch}: {event.path}")
            elif isinstance(event, Finished):
                history.add(event)
                self.n_finished += 1
                self.last_message = None  # what a next segment's trainer is doing is its own news
                self._on_finished(event)
            elif isinstance(event, RequestAcknowledged):
                self._on_ack(event, notify)
            elif isinstance(event, SystemStats):
                self.system = event
                self._bump("system")
            elif isinstance(event, DataProgress):
                self._on_data_progress(event)
            elif isinstance(event, ValidationHistograms):
                if self.validation is None or event.epoch >= self.validation.epoch or event.t >= self.validation.t:
                    self.validation = event
                self._bump("validation")
            else:
                continue
            if self.first_event_t is None:
                self.first_event_t = event.t
            self.last_event_t = event.t
        if dirty_from is not None:
            self.store.sync(history, dirty_from)
            self._bump("data")
            self._bump("progress")
        if blocks_changed:
            self.evals.rebuild(history.blocks)

    def _on_run_started(self, event: RunStarted) -> None:
        if event.resumed or self.segments:
            # History drops epochs >= the resume point as they are re-emitted, so the curves
            # continue from the checkpoint instead of jumping back.
            self.add_log(f"resumed at epoch {event.start_epoch}", "success")
        else:
            self.add_log(f"run started: {event.model}, {event.epochs} epochs, batch {event.batch_size}")
        if event.train_pairs:
            self.add_log(f"splits: {splits_line(event)}")
        if event.engine_reason:
            self.add_log(f"energy engine: {event.engine} ({event.engine_reason})")
        if event.threads_reason:
            self.add_log(f"threads: {event.threads_reason}")
        if event.slurm_job_id:
            self.add_log(f"SLURM job {event.slurm_job_id}" + (f", requeued {event.slurm_restart_count}×"
                                                              if event.slurm_restart_count else ""))
        self.segments += 1
        self.data_split = None  # training has begun: the progress line is about epochs again
        self.paused = self.stopping = False  # a new segment starts running
        self._bump("steer")
        self.history.add(event)
        self._bump("header")
        self._bump("finished")

    def _on_data_progress(self, event: DataProgress) -> None:
        before = self.data_progress.get(event.split)
        first = before is None or before.path != event.path
        if first or before is None or before.phase != event.phase:
            self.add_log(data_phase_log(event, first=first), "success" if event.phase == "written" else "info")
        self.data_progress[event.split] = event
        self.data_split = event.split
        self._bump("progress")

    def data_phase(self) -> DataProgress | None:
        """The data generation to show on the progress line: the split that reported last, while
        no RunStarted has come since."""
        return self.data_progress.get(self.data_split) if self.data_split is not None else None

    def _on_finished(self, event: Finished) -> None:
        level = {"completed": "success", "stopped": "warning", "failed": "error",
                 "diverged": "error", "ui-crashed": "error"}.get(event.status, "info")
        text = f"finished ({event.status}) at epoch {event.epoch}"
        if event.message:
            text += f": {event.message}"
        self.add_log(text, level)
        for path in event.files:
            self.add_log(f"  wrote {path}", level if level != "warning" else "info")
        if event.final_model:
            self.add_log(f"  final model: {event.final_model}", level if level != "warning" else "info")
        if event.resume_command and event.status != "completed":
            self.add_log(f"  resume with: {event.resume_command}")
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

    def step_progress(self) -> StepProgress | None:
        """The latest step event, while its epoch is still in progress."""
        progress = self.history.progress
        if progress is None or progress.epoch <= self.history.last_epoch:
            return None
        return progress

    def best_loss(self) -> float:
        finite = [v for v in self.history.series["loss"] if math.isfinite(v)]
        return min(finite) if finite else math.nan

    def summary_lines(self) -> list[str]:
        """Text of the completion banner: outcome, the best model and what it scored, the test
        set, the files the trainer wrote and how to continue."""
        fin = self.finished
        if fin is None:
            return []
        total = f"/{self.run.epochs}" if self.run is not None else ""
        title = {"completed": "Training completed", "stopped": "Training stopped", "failed": "Training failed",
                 "diverged": "Training DIVERGED"}.get(fin.status, f"Training {fin.status}")
        if fin.status == "completed" and fin.message.startswith(EARLY_END):
            title = "Training ended early"   # training.patience; the reason is a line below
        first = f"{title} at epoch {fin.epoch}{total}"
        if fin.status == "diverged" and fin.verdict:
            first += f": {fin.verdict}"
        best = best_text(fin)
        if best:
            first += f" · {best}"
        if fin.energy_evals:
            first += f" · {fmt_count(fin.energy_evals)} energy evaluations"
        if math.isfinite(fin.elapsed_s):
            first += f" in {fmt_duration(fin.elapsed_s)}"
        lines = [first]
        test = self.history.test("final")
        if test is not None:
            lines.append(test_text(test))
        if fin.message and fin.message != title:  # "Training completed" says nothing new
            lines.append(fin.message)
        if fin.final_model:
            lines.append(f"Final model: {fin.final_model}")
        if fin.files:
            lines.append("Files: " + ", ".join(fin.files))
        if fin.resume_command and fin.status != "completed":
            lines.append(f"Resume: {fin.resume_command}")
        return lines


def best_text(fin: Finished) -> str:
    """"best validation KL 0.27 kT at epoch 58 (start 0.41 kT, −35 %)", or the loss when no KL
    was measured, or "" when the trainer reported neither."""
    if math.isfinite(fin.best_score):
        metric = "validation KL" if "KL" in fin.best_metric or not fin.best_metric else fin.best_metric
        text = f"best {metric} {fmt_num(fin.best_score)} kT"
        if fin.best_epoch >= 0:
            text += f" at epoch {fin.best_epoch}"
        if fin.best_epoch == 0:
            text += " (the untrained map: no later epoch did better)"
        elif math.isfinite(fin.start_score) and metric == "validation KL":
            change = fmt_change(fin.start_score, fin.best_score)
            text += f" (start {fmt_num(fin.start_score)} kT{'' if change == MISSING else ', ' + change})"
        return text
    if math.isfinite(fin.best_loss):
        return f"training loss {fmt_num(fin.best_loss)} kT at the selected epoch"
    return ""


def test_text(test: TestEvaluation) -> str:
    """One line for a test-set evaluation: acceptance against naive, ESS, KL, with errors."""
    which = "untrained map" if test.label == "untrained" else f"epoch {test.epoch}"
    fmt = "sci" if 0 < min(test.acc_flow, test.acc_naive) < 1e-3 else "fixed"

    def pm(value: float, se: float, unit: str = "") -> str:
        text = fmt_prob_column(value, fmt) if not unit else f"{value:.1f}"
        if math.isfinite(se):
            text += f"±{fmt_prob_column(se, fmt) if not unit else f'{se:.1f}'}"
        return text + unit

    parts = [f"Test set ({which}, {test.n_pairs} pairs): acceptance {pm(test.acc_flow, test.acc_flow_se)} vs naive "
             f"{pm(test.acc_naive, test.acc_naive_se)}",
             f"ESS {pm(test.ess_fwd, test.ess_fwd_se, '%')} / {pm(test.ess_inv, test.ess_inv_se, '%')}"]
    if math.isfinite(test.kl):
        parts.append(f"KL {fmt_num(test.kl)}" + (f"±{fmt_num(test.kl_se, 2)}" if math.isfinite(test.kl_se) else "")
                     + " kT")
    return " · ".join(parts)


def data_report_text(report: DataReport) -> str:
    text = (f"{report.split}: {report.n_samples} samples per temperature, "
            f"~{report.n_independent:.0f} independent (slowest: {report.slowest or '?'})")
    if report.suggested_n_samples:
        text += f"; about {report.suggested_n_samples} samples (data.n_samples) would give the {report.needed} wanted"
    return text


DATA_WHAT = {"data": "training data", "test": "the test run"}
DATA_VERBS = {"minimising": "minimising", "equilibrating": "equilibrating", "sampling": "simulating",
              "writing": "writing"}


def data_phase_title(event: DataProgress) -> str:
    """"simulating training data", "equilibrating the test run", "training data written"."""
    what = DATA_WHAT.get(event.split, event.split)
    if event.phase == "written":
        return f"{what.removeprefix('the ')} written"
    verb = DATA_VERBS.get(event.phase)
    return f"{verb} {what}" if verb else f"{what}: {event.phase}"


def swap_pairs(event: DataProgress) -> list[tuple[str, float]]:
    """("300↔367 K", acceptance) per neighbour pair of the ladder, coldest first; NaN where no
    swap was attempted yet."""
    temps = event.temperatures
    return [(f"{fmt_kelvin(temps[i])}↔{fmt_kelvin(temps[i + 1])} K", acc)
            for i, acc in enumerate(event.swap_acceptance[: max(len(temps) - 1, 0)])]


def fmt_acceptance(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "–"


def data_phase_log(event: DataProgress, *, first: bool = False) -> str:
    """One log line per phase of the data generation: the first names the ladder, the last says
    what the file holds."""
    text = f"{data_phase_title(event)}: {event.path}"
    if event.phase == "written":
        text += f" ({event.samples:,} samples per temperature, {event.simulated_ns:.2f} ns per replica"
        if math.isfinite(event.elapsed_s):
            text += f" in {fmt_duration(event.elapsed_s)}"
        text += ")"
        pairs = swap_pairs(event)
        if pairs:
            text += "; swap acceptance " + ", ".join(f"{pair} {fmt_acceptance(acc)}" for pair, acc in pairs)
    elif first and event.temperatures:
        text += f" ({len(event.temperatures)} replicas at " + ", ".join(
            fmt_kelvin(t) for t in event.temperatures) + f" K, {event.planned_ns:.2f} ns each)"
    return text


def snapshot_history(history: History) -> History:
    """A copy of `history` that later events do not change (its lists copied, its events shared:
    they are never modified), for reading in another thread."""
    return dataclasses.replace(history, epochs=list(history.epochs),
                               series={key: list(values) for key, values in history.series.items()},
                               blocks=list(history.blocks), alerts=list(history.alerts))


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
