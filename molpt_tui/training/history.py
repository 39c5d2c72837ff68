"""Metric history rebuilt from events: what alerts, plots and the TUI read.

Series are plain Python lists (cheap to append from the trainer thread, cheap to decimate
for plotting). A resumed run re-emits nothing: epochs <= an existing one replace the tail, so
a resume after a rollback never shows a jump or a duplicate.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..config.alerts import AlertThresholds
from .events import Alert, DataReport, EpochMetrics, Event, Finished, LogBlock, RunStarted, StepProgress, TestEvaluation

EPOCH_FIELDS = ("loss", "fwd_energy", "fwd_logdet", "inv_energy", "inv_logdet", "lr", "grad_norm",
                "n_regularised", "n_nonfinite", "seconds", "kl", "energy_evals_total", "elapsed_s")
# A value this many orders of magnitude above its start is reported as "diverged", not as a change.
EXPLODED_ORDERS = 2.0


@dataclass
class History:
    epochs: list[int] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in EPOCH_FIELDS})
    blocks: list[LogBlock] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    tests: list[TestEvaluation] = field(default_factory=list)
    data_reports: list[DataReport] = field(default_factory=list)
    progress: StepProgress | None = None   # the latest; cleared by the epoch it belongs to
    run: RunStarted | None = None
    finished: Finished | None = None

    def add(self, event: Event) -> None:
        if isinstance(event, EpochMetrics):
            self._truncate_from(event.epoch)
            if self.progress is not None and self.progress.epoch <= event.epoch:
                self.progress = None
            self.epochs.append(event.epoch)
            for key in EPOCH_FIELDS:
                self.series[key].append(float(getattr(event, key)))
        elif isinstance(event, LogBlock):
            self.blocks = [b for b in self.blocks if b.epoch < event.epoch]
            self.blocks.append(event)
        elif isinstance(event, Alert):
            self.alerts.append(event)
        elif isinstance(event, StepProgress):
            self.progress = event
        elif isinstance(event, TestEvaluation):
            self.tests = [t for t in self.tests if t.label != event.label or t.epoch > event.epoch] + [event]
        elif isinstance(event, DataReport):
            self.data_reports = [r for r in self.data_reports if r.path != event.path] + [event]
        elif isinstance(event, RunStarted):
            self.run = event
            self.finished = None
            self.progress = None
        elif isinstance(event, Finished):
            self.finished = event

    def _truncate_from(self, epoch: int) -> None:
        if self.epochs and self.epochs[-1] >= epoch:
            keep = 0
            while keep < len(self.epochs) and self.epochs[keep] < epoch:
                keep += 1
            del self.epochs[keep:]
            for values in self.series.values():
                del values[keep:]

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def last_epoch(self) -> int:
        return self.epochs[-1] if self.epochs else 0

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> History:
        history = cls()
        for event in events:
            history.add(event)
        return history


    @property
    def thresholds(self) -> AlertThresholds:
        """The run's own [alerts] limits as its RunStarted recorded them (defaults before that,
        or for a log written before they were recorded)."""
        if self.run is None:
            return AlertThresholds()
        return AlertThresholds.from_numeric(self.run.alert_keys, self.run.alert_values)

    def test(self, label: str) -> TestEvaluation | None:
        """The latest test-set evaluation with `label` ("untrained", "final")."""
        hits = [t for t in self.tests if t.label == label]
        return hits[-1] if hits else None


def exploded(first: float, current: float) -> bool:
    """Whether `current` is not finite or orders of magnitude above `first` (kT scale)."""
    if not math.isfinite(current):
        return True
    scale = max(abs(first), 1.0) if math.isfinite(first) else 1.0
    return bool(current - (first if math.isfinite(first) else 0.0) > 10.0 ** EXPLODED_ORDERS * scale)


def improvement_pct(first: float, current: float) -> float:
    """Reduction of the validation KL since the untrained map, in %; NaN where a percentage
    means nothing.

    The trainer passes the held-out KL estimate (the loss above beta_c<U>_cold + beta_h<U>_hot on
    pairs not trained on), which is >= 0 in expectation and, unlike the training value, does not
    reward overfitting. A percentage of it is only a measure where both values are >= 0: on small
    data the estimate can go below 0 (noise around a small KL, where "369 %" would be read as
    progress), and a value that exploded is a verdict, not a change (see `exploded`).
    """
    if not (math.isfinite(first) and math.isfinite(current)) or first <= 0 or current < 0:
        return math.nan
    if exploded(first, current):
        return math.nan
    return (first - current) / first * 100.0
