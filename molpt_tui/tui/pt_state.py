"""What the pt monitor knows, rebuilt from a pt run's events; no Textual here, so it is tested alone.

Every number comes from an event (`PTStarted`, `PTProgress`, `Finished`): the monitor keeps them
as series over MD time per replica and formats them, it never estimates anything itself. The one
sum it makes is the ETA of a run with the ladder beside the flow sampler: each sampler's `eta_s`
counts only its own wall time (the run advances them in turn), so the run's is their sum.

Paused and stopping are what the sampler's acknowledgements say, never what a key asked for,
so every viewer of the run shows the same truth.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from molpt_tui.report.decimation import minmax_decimate
from molpt_tui.training.events import (
    Alert,
    CheckpointSaved,
    Event,
    Finished,
    Message,
    PTProgress,
    PTStarted,
    RequestAcknowledged,
)

from .state import LogEntry

# The band drawn around an acceptance: a 95 % normal interval of the batch-means estimate.
Z95 = 1.96
MISSING = "—"
SAMPLER_LABELS = {"flow": "flow PT", "ladder": "naive ladder"}


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for the screen; NaN, ±inf and None are "—" (not measured yet)."""
    if value is None or not math.isfinite(value):
        return MISSING
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def fmt_pm(mean: float, half_width: float, digits: int = 3) -> str:
    """"0.412 ± 0.031"; the mean alone where the half-width is not known yet."""
    if not math.isfinite(mean):
        return MISSING
    if not math.isfinite(half_width):
        return f"{fmt(mean, digits)} ± {MISSING}"
    return f"{fmt(mean, digits)} ± {fmt(half_width, digits)}"


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_ns(ns: float) -> str:
    """MD time with enough digits for the short runs of a test and the long ones of a study."""
    if not math.isfinite(ns):
        return MISSING
    if ns == 0:
        return "0"
    if abs(ns) < 0.1:
        return f"{ns:.4f}"
    if abs(ns) < 10:
        return f"{ns:.3f}"
    return f"{ns:.1f}"


@dataclass
class SamplerSeries:
    """One sampler's PTProgress events as series over its MD time per replica."""

    name: str
    ns: list[float] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)
    acc_se: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    naive_se: list[float] = field(default_factory=list)
    pair_acc: list[list[float]] = field(default_factory=list)
    round_trips: list[float] = field(default_factory=list)
    latest: PTProgress | None = None

    def add(self, p: PTProgress) -> None:
        if self.ns and p.ns < self.ns[-1]:
            # A log that starts its MD time over is a new run in the same directory: only its
            # own points belong on the axis.
            for values in (self.ns, self.acc, self.acc_se, self.naive, self.naive_se, self.pair_acc,
                           self.round_trips):
                values.clear()
        self.ns.append(p.ns)
        self.acc.append(p.acc)
        self.acc_se.append(p.acc_se)
        self.naive.append(p.acc_naive)
        self.naive_se.append(p.acc_naive_se)
        self.pair_acc.append(list(p.pair_acc))
        self.round_trips.append(float(p.round_trips))
        self.latest = p

    def __len__(self) -> int:
        return len(self.ns)

    def series(self, key: str, bins: int, err_key: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ns, values, their errors) thinned to ~2 points per bin (min/max, as every pane)."""
        x = np.asarray(self.ns, dtype=float)
        y = np.asarray(getattr(self, key), dtype=float)
        e = np.asarray(getattr(self, err_key), dtype=float) if err_key else np.full(x.size, np.nan)
        return _thin(x, y, e, bins)

    def pair_series(self, pair: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(self.ns, dtype=float)
        y = np.array([row[pair] if pair < len(row) else math.nan for row in self.pair_acc], dtype=float)
        xs, ys, _ = _thin(x, y, np.full(x.size, np.nan), bins)
        return xs, ys

    @property
    def n_pairs(self) -> int:
        return max((len(row) for row in self.pair_acc), default=0)


def _thin(x: np.ndarray, y: np.ndarray, e: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, e = x[keep], y[keep], e[keep]
    bins = max(int(bins), 1)
    if x.size <= 2 * bins:
        return x, y, e
    # Decimate by position so that each kept point keeps its own error.
    idx = np.arange(x.size, dtype=float)
    picked, _ = minmax_decimate(idx, y, bins)
    pick = np.asarray(picked, dtype=np.intp)
    return x[pick], y[pick], e[pick]


class PTState:
    """A pt run as its metrics.jsonl tells it, segment after segment (resumes continue the axes)."""

    def __init__(self, max_log: int = 2000) -> None:
        self.started: PTStarted | None = None
        self.samplers: dict[str, SamplerSeries] = {}
        self.finished: Finished | None = None
        self.log: deque[LogEntry] = deque(maxlen=max_log)
        self.last_message: Message | None = None
        self.acked_ids: set[str] = set()
        self.pending_acks: list[RequestAcknowledged] = []
        self.pending_alerts: list[Alert] = []
        self.paused = False
        self.stopping = False
        self.segments = 0      # PTStarted events seen
        self.n_finished = 0    # Finished events seen (a child that fails before starting writes one alone)
        self.n_events = 0
        self.version = 0       # bumped by every event: panes redraw only when it moved
        self.last_event_t: float | None = None

    # --- input -------------------------------------------------------------------------------
    def apply(self, events: Iterable[Event], *, notify: bool = True, warnings: Iterable[str] = ()) -> None:
        for warning in warnings:
            self.add_log(warning, "warning")
            self.version += 1
        for event in events:
            self.n_events += 1
            self.version += 1
            self.last_event_t = event.t
            self._apply(event, notify)

    def _apply(self, event: Event, notify: bool) -> None:
        if isinstance(event, PTStarted):
            self.started = event
            self.segments += 1
            self.finished = None
            self.paused = self.stopping = False
            what = "resumed" if event.resumed else "started"
            self.add_log(f"pt {what}: {event.system}, {event.t_cold:g} K ↔ {event.t_hot:g} K, map "
                         f"{event.model_path} (epoch {event.model_epoch})")
        elif isinstance(event, PTProgress):
            self.samplers.setdefault(event.sampler, SamplerSeries(event.sampler)).add(event)
        elif isinstance(event, Message):
            self.last_message = event
            self.add_log(event.text, event.level)
        elif isinstance(event, Alert):
            self.add_log(f"{event.message}" + (f" → {event.hint}" if event.hint else ""), event.severity)
            if notify:
                self.pending_alerts.append(event)
        elif isinstance(event, CheckpointSaved):
            if event.label == "manual":
                self.add_log(f"checkpoint {event.path}", "success")
        elif isinstance(event, RequestAcknowledged):
            if event.request_id:
                self.acked_ids.add(event.request_id)
            if event.action == "pause":
                self.paused = True
            elif event.action == "resume":
                self.paused = False
            elif event.action == "stop":
                self.stopping, self.paused = True, False
            self.add_log(f"{event.action} acknowledged" + (f": {event.detail}" if event.detail else ""))
            if notify:
                self.pending_acks.append(event)
        elif isinstance(event, Finished):
            self.finished = event
            self.n_finished += 1
            self.stopping = self.paused = False
            level = "success" if event.status == "completed" else "warning" if event.status == "stopped" else "error"
            self.add_log(f"pt {event.status}: {event.message}", level)
            for f in event.files:
                self.add_log(f"wrote {f}")

    def add_log(self, text: str, level: str = "info") -> None:
        self.log.append(LogEntry(text, level))

    def take_alerts(self) -> list[Alert]:
        out, self.pending_alerts = self.pending_alerts, []
        return out

    def take_acks(self) -> list[RequestAcknowledged]:
        out, self.pending_acks = self.pending_acks, []
        return out

    # --- what the panes read -----------------------------------------------------------------
    def latest(self, sampler: str) -> PTProgress | None:
        s = self.samplers.get(sampler)
        return s.latest if s is not None else None

    @property
    def has_ladder(self) -> bool:
        return bool(self.started and self.started.ladder) or "ladder" in self.samplers

    @property
    def states(self) -> list[str]:
        return list(self.started.states) if self.started is not None else []

    def fraction(self) -> float:
        """Share of the planned MD done: the least advanced sampler's (the run ends with it)."""
        parts = [p.ns / p.planned_ns for p in self._latest_all() if p.planned_ns > 0]
        return min(max(min(parts), 0.0), 1.0) if parts else 0.0

    def eta_s(self) -> float:
        """Wall time left for every sampler: their own remaining times add up (see the module)."""
        etas = [p.eta_s for p in self._latest_all()]
        if not etas or not all(math.isfinite(e) for e in etas):
            return math.nan
        return float(sum(etas))

    def _latest_all(self) -> list[PTProgress]:
        return [s.latest for s in self.samplers.values() if s.latest is not None]

    def ladder_label(self, pair: int) -> str:
        ladder = self.started.ladder if self.started is not None else []
        if pair + 1 < len(ladder):
            return f"{ladder[pair]:g}↔{ladder[pair + 1]:g} K"
        return f"pair {pair + 1}"

    def sampler_title(self, sampler: str) -> str:
        """"flow PT (2 replicas: 300, 450 K)", "naive ladder (6 replicas: 300…1000 K)"."""
        started = self.started
        if started is None:
            return SAMPLER_LABELS.get(sampler, sampler)
        temps = [started.t_cold, started.t_hot] if sampler == "flow" else list(started.ladder)
        shown = ", ".join(f"{t:g}" for t in temps)
        return f"{SAMPLER_LABELS.get(sampler, sampler)} ({len(temps)} replicas: {shown} K)"
