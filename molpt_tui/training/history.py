"""Metric history rebuilt from events: what alerts, plots and the TUI read.

Series are plain Python lists (cheap to append from the trainer thread, cheap to decimate
for plotting). A resumed run re-emits nothing: epochs <= an existing one replace the tail, so
a resume after a rollback never shows a jump or a duplicate.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from .events import Alert, EpochMetrics, Event, Finished, LogBlock, RunStarted

EPOCH_FIELDS = ("loss", "fwd_energy", "fwd_logdet", "inv_energy", "inv_logdet", "lr", "grad_norm",
                "n_regularised", "n_nonfinite", "seconds", "kl")


@dataclass
class History:
    epochs: list[int] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in EPOCH_FIELDS})
    blocks: list[LogBlock] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    run: RunStarted | None = None
    finished: Finished | None = None

    def add(self, event: Event) -> None:
        if isinstance(event, EpochMetrics):
            self._truncate_from(event.epoch)
            self.epochs.append(event.epoch)
            for key in EPOCH_FIELDS:
                self.series[key].append(float(getattr(event, key)))
        elif isinstance(event, LogBlock):
            self.blocks = [b for b in self.blocks if b.epoch < event.epoch]
            self.blocks.append(event)
        elif isinstance(event, Alert):
            self.alerts.append(event)
        elif isinstance(event, RunStarted):
            self.run = event
            self.finished = None
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


def improvement_pct(first: float, current: float) -> float:
    """Improvement from start in %.

    The trainer passes the held-out KL estimate (the loss above beta_c<U>_cold + beta_h<U>_hot on
    pairs not trained on), which is >= 0 in expectation and, unlike the training value, does not
    reward overfitting; the raw loss in kT can sit near or below zero, where a percentage of it
    means nothing.
    """
    if not (math.isfinite(first) and math.isfinite(current)) or first == 0:
        return math.nan
    return (first - current) / abs(first) * 100.0
