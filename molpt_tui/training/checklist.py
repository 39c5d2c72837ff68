"""The good signs of a healthy run, as a live checklist: a pure function over a `History`.

The old prototype's guide listed what a good run looks like as well as what a bad one does (the
alerts). Each sign here is passed (✔), failed (✘) or pending (not enough history yet, or the
numbers are within their error bars), with the epoch its state last changed and the numbers that
decided it. The TUI, `watch` and the headless summary all show `checklist(history)`; nothing here
keeps state.

Units: energies beta*U and KL in kT; acceptances are probabilities; epochs are 1-based counts
(0 is the untrained map). Decisions use the validation split (the test set is for final claims).
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..config.alerts import AlertThresholds
from .events import LogBlock
from .history import History
from .verdict import exploded_mask

CheckState = Literal["pass", "fail", "pending"]
CHECK_STATES: tuple[CheckState, ...] = ("pass", "fail", "pending")

# Stable identifiers, in display order.
INITIAL_LOSS = "initial_loss"
FWD_DECREASING = "fwd_decreasing"
INV_DECREASING = "inv_decreasing"
LR_WARMUP = "lr_warmup"
IMPROVEMENT = "improvement"
ACCEPTANCE = "acceptance"
CHECK_IDS: tuple[str, ...] = (INITIAL_LOSS, FWD_DECREASING, INV_DECREASING, LR_WARMUP, IMPROVEMENT, ACCEPTANCE)

# Trends are judged over the last this many epochs (first quarter against last quarter).
TREND_WINDOW = 20
# ... once this many epochs past the untrained map exist.
TREND_MIN_EPOCHS = 3
# Above this many epochs, "since when" is looked up at the log-block epochs only.
_ALL_EPOCHS_UP_TO = 400


@dataclass(frozen=True)
class Check:
    """One good sign: its state, since which epoch it holds, and the numbers behind it."""

    key: str                 # one of CHECK_IDS
    label: str               # what it means, e.g. "Fwd_E decreasing (or flat)"
    state: CheckState
    since_epoch: int | None  # epoch at which `state` was reached (None: pending from the start)
    detail: str              # e.g. "5.47 -> 5.30 kT over epochs 0-12"


@dataclass(frozen=True)
class _View:
    """The history up to one epoch: slices of arrays converted once per `checklist` call, so a
    long run costs one pass over its epochs plus a little per probe, not a pass per probe."""

    epochs: np.ndarray
    series: dict[str, np.ndarray]
    exploded: dict[str, np.ndarray]   # per epoch, `exploded_mask` (causal: a prefix's is the prefix)
    first_finite_loss: int            # index of the first finite loss in `epochs`, -1 if none yet
    blocks: Sequence[LogBlock]
    warmup: int | None       # training.warmup_epochs, None when the run header is unknown


def _kt(x: float) -> str:
    if not math.isfinite(x):
        return "not finite"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-2):
        return f"{x:.2e}"
    return f"{x:.2f}"


def _prob(x: float) -> str:
    return f"{x:.3f}" if x >= 0.01 or x == 0 else f"{x:.1e}"


# --- the signs, each on a view -------------------------------------------------------------------

def _initial_loss(v: _View, th: AlertThresholds) -> tuple[CheckState, str]:
    i = v.first_finite_loss
    if i < 0:
        return "pending", "no finite loss yet"
    value = float(v.series["loss"][i])
    detail = f"{_kt(value)} kT at epoch {int(v.epochs[i])} (limit {th.initial_loss_max:.0e} kT)"
    return ("pass" if value < th.initial_loss_max else "fail"), detail


def _decreasing(key: str) -> Callable[[_View, AlertThresholds], tuple[CheckState, str]]:
    def sign(v: _View, th: AlertThresholds) -> tuple[CheckState, str]:
        epochs, values = v.epochs[-TREND_WINDOW:], v.series[key][-TREND_WINDOW:]
        keep = np.isfinite(values)
        epochs, values = epochs[keep], values[keep]
        if len(values) < TREND_MIN_EPOCHS + 1:
            return "pending", f"needs {TREND_MIN_EPOCHS + 1} finite epochs, has {len(values)}"
        k = max(1, len(values) // 4)
        start, end = float(np.median(values[:k])), float(np.median(values[-k:]))
        detail = f"{_kt(start)} -> {_kt(end)} kT over epochs {int(epochs[0])}-{int(epochs[-1])}"
        if v.exploded[key][-1]:
            return "fail", detail + ": exploded"
        # "Flat" within the noise of the epoch means, measured on the first half of the window
        # (before any rise), so noise alone does not fail it and a rise does not hide itself.
        first = values[: max(2, len(values) // 2)]
        spread = 1.4826 * float(np.median(np.abs(first - np.median(first))))
        tolerance = 0.1 + 2.0 * spread / math.sqrt(k)
        return ("pass" if end <= start + tolerance else "fail"), detail

    return sign


def _lr_warmup(v: _View, th: AlertThresholds) -> tuple[CheckState, str]:
    if v.warmup is None:
        return "pending", "run header not seen yet"
    if v.warmup == 0:
        return "fail", "no warmup (training.warmup_epochs = 0): the full LR from the first step"
    lrs, epochs = v.series["lr"], v.epochs
    inside = (epochs <= v.warmup) & np.isfinite(lrs)
    lr, ep = lrs[inside], epochs[inside]
    if len(lr) < 2:
        return "pending", f"warmup over epochs 1-{v.warmup}"
    fell = np.flatnonzero(np.diff(lr) < -1e-12 * np.abs(lr[:-1]))
    if fell.size:
        at = int(ep[fell[0] + 1])
        before, after = float(lr[fell[0]]), float(lr[fell[0] + 1])
        return "fail", f"LR fell during the warmup at epoch {at} ({before:.2e} -> {after:.2e}; a NaN rollback?)"
    span = f"{lr[0]:.2e} -> {lr[-1]:.2e} over epochs {int(ep[0])}-{int(ep[-1])}"
    if not lr[-1] > lr[0] * (1 + 1e-9):
        return "fail", f"{span}: flat, the full LR from the first step (training.warmup_epochs = {v.warmup})"
    done = "" if ep[-1] >= v.warmup else f" (warmup to epoch {v.warmup})"
    return "pass", span + done


def _improvement(v: _View, th: AlertThresholds) -> tuple[CheckState, str]:
    blocks = [b for b in v.blocks if math.isfinite(b.kl_val)]
    start = next((b for b in blocks if b.epoch == 0), None)
    later = [b for b in blocks if b.epoch > 0]
    if start is None or not later:
        return "pending", "needs a validation KL after epoch 0"
    last = later[-1]
    best = min(later, key=lambda b: b.kl_val)
    se = last.kl_val_se if math.isfinite(last.kl_val_se) else 0.0
    detail = (f"validation KL {_kt(start.kl_val)} -> {_kt(last.kl_val)} kT (best {_kt(best.kl_val)} at epoch "
              f"{best.epoch})")
    if last.kl_val >= start.kl_val:
        return "fail", detail + ": no better than the untrained map"
    if last.kl_val > best.kl_val + max(2.0 * se, 0.05 * abs(best.kl_val) + 0.01):
        return "fail", detail + ": rising again from its best"
    return "pass", detail


def _acceptance(v: _View, th: AlertThresholds) -> tuple[CheckState, str]:
    blocks = [b for b in v.blocks if math.isfinite(b.acc_flow) and math.isfinite(b.acc_naive)]
    if not blocks:
        return "pending", "needs a validation evaluation"
    b = blocks[-1]
    se = math.hypot(b.acc_flow_se if math.isfinite(b.acc_flow_se) else 0.0,
                    b.acc_naive_se if math.isfinite(b.acc_naive_se) else 0.0)
    err = f" ± {_prob(b.acc_flow_se)}" if math.isfinite(b.acc_flow_se) else ""
    detail = f"flow {_prob(b.acc_flow)}{err} vs naive {_prob(b.acc_naive)} (validation, epoch {b.epoch})"
    if b.acc_flow - b.acc_naive > 2.0 * se:
        return "pass", detail
    if b.acc_flow <= b.acc_naive:
        return "fail", detail
    return "pending", detail + ": within 2 standard errors"


_EXPLODING = ("fwd_energy", "inv_energy")

_SIGNS: dict[str, tuple[str, Callable[[_View, AlertThresholds], tuple[CheckState, str]]]] = {
    INITIAL_LOSS: ("initial loss below {initial_loss_max} kT", _initial_loss),
    FWD_DECREASING: ("Fwd_E decreasing (or flat)", _decreasing("fwd_energy")),
    INV_DECREASING: ("Inv_E decreasing (or flat)", _decreasing("inv_energy")),
    LR_WARMUP: ("LR rising through the warmup", _lr_warmup),
    IMPROVEMENT: ("validation KL improving", _improvement),
    ACCEPTANCE: ("flow-swap acceptance above naive", _acceptance),
}


class _Arrays:
    """A history's series as arrays, once; `view(upto)` slices them."""

    def __init__(self, history: History, th: AlertThresholds) -> None:
        self.epochs = np.asarray(history.epochs, dtype=float)
        self.series = {k: np.asarray(v, dtype=float) for k, v in history.series.items()}
        self.exploded = {k: exploded_mask(self.series[k], th)[0] for k in _EXPLODING}
        finite = np.flatnonzero(np.isfinite(self.series["loss"]))
        self.first_finite_loss = int(finite[0]) if finite.size else -1
        self.blocks = history.blocks  # in epoch order (History replaces a resumed tail)
        self.block_epochs = [b.epoch for b in history.blocks]
        self.warmup = history.run.warmup_epochs if history.run is not None else None

    def view(self, upto: int) -> _View:
        n = int(np.searchsorted(self.epochs, upto, side="right"))
        nb = bisect.bisect_right(self.block_epochs, upto)
        first = self.first_finite_loss if self.first_finite_loss < n else -1
        return _View(epochs=self.epochs[:n], series={k: v[:n] for k, v in self.series.items()},
                     exploded={k: m[:n] for k, m in self.exploded.items()}, first_finite_loss=first,
                     blocks=self.blocks[:nb], warmup=self.warmup)


def _view(history: History, upto: int, th: AlertThresholds | None = None) -> _View:
    """The view of `history` up to epoch `upto` on its own (tests compare `checklist` with it)."""
    return _Arrays(history, th or history.thresholds).view(upto)


def checklist(history: History, thresholds: AlertThresholds | None = None) -> list[Check]:
    """Every good sign for `history` as it stands, in `CHECK_IDS` order, judged by `thresholds`
    (default: the run's own, as its RunStarted recorded them)."""
    th = thresholds or history.thresholds
    if history.epochs:
        if len(history.epochs) <= _ALL_EPOCHS_UP_TO:
            probes = list(history.epochs)
        else:
            probes = sorted({b.epoch for b in history.blocks} | {history.epochs[0], history.last_epoch})
    else:
        probes = []
    arrays = _Arrays(history, th)
    views = [arrays.view(e) for e in probes] or [arrays.view(0)]
    out = []
    for key in CHECK_IDS:
        label, sign = _SIGNS[key]
        label = label.format(initial_loss_max=f"{th.initial_loss_max:.0e}".replace("e+", "e"))
        states = [sign(v, th) for v in views]
        state, detail = states[-1]
        since: int | None = None
        if probes:
            i = len(states) - 1
            while i > 0 and states[i - 1][0] == state:
                i -= 1
            since = None if state == "pending" and i == 0 else int(probes[i])
        out.append(Check(key=key, label=label, state=state, since_epoch=since, detail=detail))
    return out
