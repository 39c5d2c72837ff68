"""Typed events the trainer emits; every sink (console, JSONL log, TUI) consumes these.

The JSONL metrics log is these events, one per line, so ``watch RUN_DIR`` and ``plot RUN_DIR``
rebuild exactly what a live sink saw. Keep fields JSON-native (str, int, float, bool, None,
lists and dicts of those). Non-finite floats are written as the strings "nan", "inf", "-inf"
so the log stays strict JSON.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA_NAME = "molpt-tui.metrics"
SCHEMA_VERSION = 1


@dataclass
class Event:
    kind: ClassVar[str] = "event"
    t: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind}
        for f in dataclasses.fields(self):
            out[f.name] = _encode(getattr(self, f.name))
        return out


@dataclass
class RunStarted(Event):
    """First event of a run (and of every resumed segment)."""

    kind: ClassVar[str] = "run_started"
    run_dir: str
    preset: str
    model: str                 # e.g. "transformer flow (internal coordinates)"
    t_cold: float              # K
    t_hot: float               # K
    epochs: int                # total epochs planned
    batch_size: int
    lr: float
    device: str
    n_params: int
    engine: str                # energy engine actually used, e.g. "openmm (Reference, 2 workers)"
    engine_reason: str = ""
    steps_per_epoch: int = 1
    start_epoch: int = 0       # >0 when resumed: the epochs before it are already in the log
    resumed: bool = False
    loss_floor: float = math.nan  # beta_c<U>_cold + beta_h<U>_hot over the training data (kT)


@dataclass
class EpochMetrics(Event):
    """Training metrics of one epoch (means over its steps). Energies are beta*U in kT."""

    kind: ClassVar[str] = "epoch"
    epoch: int                 # 1-based
    loss: float
    fwd_energy: float          # E_x~cold[ beta_hot U(T x) ]
    fwd_logdet: float          # E_x~cold[ log|det J_T(x)| ]
    inv_energy: float          # E_y~hot[ beta_cold U(T^-1 y) ]
    inv_logdet: float          # E_y~hot[ log|det J_T^-1(y)| ]
    lr: float
    grad_norm: float = math.nan
    n_regularised: int = 0     # energies above the regularisation threshold this epoch
    n_nonfinite: int = 0       # non-finite energies this epoch
    seconds: float = math.nan  # wall time of the epoch
    kl: float = math.nan       # KL_fwd + KL_inv estimate (kT): the loss above its floor, paired per sample


@dataclass
class LogBlock(Event):
    """An epoch on the adaptive logging schedule, with held-out evaluation."""

    kind: ClassVar[str] = "log_block"
    epoch: int
    loss: float
    fwd_energy: float
    fwd_logdet: float
    inv_energy: float
    inv_logdet: float
    lr: float
    improvement_pct: float     # reduction of the held-out KL (loss above its floor) since epoch 0, in %
    acc_flow: float = math.nan     # flow-swap acceptance on held-out pairs
    acc_naive: float = math.nan    # naive swap acceptance on the same pairs
    ess_fwd: float = math.nan      # % ESS of importance weights, cold -> hot
    ess_inv: float = math.nan      # % ESS, hot -> cold
    roundtrip_err: float = math.nan  # max |T^-1(T(x)) - x| on held-out data
    kl: float = math.nan           # KL_fwd + KL_inv estimate of the epoch (kT)
    kl_val: float = math.nan       # the same on the held-out pairs: rises when the flow overfits


@dataclass
class Alert(Event):
    kind: ClassVar[str] = "alert"
    epoch: int
    rule: str                  # stable identifier, e.g. "inverse_diverging"
    severity: str              # "info" | "warning" | "error"
    message: str
    hint: str


@dataclass
class Message(Event):
    """Free text for the log pane: data generated, resumed, engine chosen, ..."""

    kind: ClassVar[str] = "message"
    text: str
    level: str = "info"        # "info" | "warning" | "error"


@dataclass
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint"
    epoch: int
    path: str
    label: str = "last"        # "last" | "best" | "final" | "manual"


@dataclass
class Finished(Event):
    """Last event of a run segment."""

    kind: ClassVar[str] = "finished"
    status: str                # "completed" | "stopped" | "failed"
    epoch: int
    files: list[str] = field(default_factory=list)
    message: str = ""
    best_loss: float = math.nan
    improvement_pct: float = math.nan


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls for cls in (RunStarted, EpochMetrics, LogBlock, Alert, Message, CheckpointSaved, Finished)
}


def header_line() -> dict[str, Any]:
    return {"schema": SCHEMA_NAME, "version": SCHEMA_VERSION}


def _encode(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode_float(value: Any) -> Any:
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    return value


def from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from its JSON form; unknown keys are ignored (forward compatible)."""
    kind = data.get("kind")
    cls = EVENT_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            kwargs[f.name] = _decode_float(value) if f.type in ("float", float) else value
    return cls(**kwargs)


class Sink:
    """Anything that consumes events: console reporter, JSONL log, TUI bridge."""

    def emit(self, event: Event) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass
