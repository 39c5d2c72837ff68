"""Divergence as a verdict: a pure rule over the metric history that ends a run `diverged`.

A curve that climbs by orders of magnitude is not something to watch for hours: once Fwd_E,
Inv_E or the loss (beta*U and the loss in kT, means per sample over an epoch) has stood far above
its best for `alerts.diverged_epochs` epochs in a row, the run is over, whatever the NaN guard's
rollbacks did in between. "Far above" is `10**diverged_orders * max(|best|, diverged_scale)`:
relative to the best value so a large molecule's -1e4 kT is judged on its own scale, with a
floor so values near 0 kT are not judged on a scale of nothing. A non-finite epoch mean (every
step of the epoch failed) counts as exploded.

The same function serves the trainer (to stop), the `diverged` alert (to say why, in `watch`
replays too) and the PNG and summary (to say so).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config.alerts import AlertThresholds
from .history import History

# (series key, name on screen): the quantities whose explosion ends a run.
WATCHED: tuple[tuple[str, str], ...] = (("fwd_energy", "Fwd_E"), ("inv_energy", "Inv_E"), ("loss", "loss"))


@dataclass(frozen=True)
class Exploded:
    """One quantity far above its best: where it was best and where it stands now (kT)."""

    key: str
    name: str
    best: float
    best_epoch: int
    value: float        # the latest epoch's value; NaN/inf when it was not finite

    def describe(self) -> str:
        now = "not finite" if not math.isfinite(self.value) else f"{_kt(self.value)} kT"
        return f"{self.name} {_kt(self.best)} kT (epoch {self.best_epoch}) -> {now}"


@dataclass(frozen=True)
class Divergence:
    """The verdict: which quantities exploded, since when, and at which epoch it was reached."""

    epoch: int
    since_epoch: int
    exploded: tuple[Exploded, ...]

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.exploded]

    @property
    def both_directions(self) -> bool:
        keys = {e.key for e in self.exploded}
        return {"fwd_energy", "inv_energy"} <= keys

    def summary(self) -> str:
        """What blew up, in one clause: 'Fwd_E and Inv_E (both directions) and the loss exploded'."""
        energies = [e.name for e in self.exploded if e.key != "loss"]
        parts = []
        if energies:
            parts.append(" and ".join(energies) + (" (both directions)" if self.both_directions else ""))
        if any(e.key == "loss" for e in self.exploded):
            parts.append("the loss")
        return " and ".join(parts) + " exploded"

    def describe(self) -> str:
        n = self.epoch - self.since_epoch + 1
        return (f"{self.summary()}: " + "; ".join(e.describe() for e in self.exploded)
                + f"; {n} epoch{'s' if n != 1 else ''} in a row since epoch {self.since_epoch}")


def _kt(x: float) -> str:
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-2):
        return f"{x:.2e}"
    return f"{x:.2f}"


def exploded_mask(values: Sequence[float] | np.ndarray, th: AlertThresholds) -> tuple[np.ndarray, np.ndarray]:
    """Per epoch: whether the value is exploded against the best before or at it, and that best.

    The best is the running minimum of the finite values (NaN until the first one); a value is
    exploded when it is not finite (after a finite best) or above that best by more than
    `10**diverged_orders * max(|best|, diverged_scale)`.
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    finite = np.where(np.isfinite(v), v, np.inf)
    best = np.minimum.accumulate(finite)
    has_best = np.isfinite(best)
    scale = np.maximum(np.abs(np.where(has_best, best, 0.0)), th.diverged_scale)
    with np.errstate(invalid="ignore", over="ignore"):
        limit = best + 10.0 ** th.diverged_orders * scale
        above = np.isfinite(v) & (v > limit)
    mask: np.ndarray = has_best & (above | ~np.isfinite(v))
    return mask, np.where(has_best, best, np.nan)


def exploded_now(history: History, key: str, th: AlertThresholds) -> bool:
    """Whether `key`'s latest epoch value is exploded (see `exploded_mask`)."""
    mask, _ = exploded_mask(history.series[key], th)
    return bool(mask[-1]) if mask.size else False


def divergence(history: History, th: AlertThresholds) -> Divergence | None:
    """The verdict when at least one watched quantity was exploded in each of the last
    `diverged_epochs` epochs (epoch 0, the untrained map, is its own baseline); else None."""
    k = th.diverged_epochs
    epochs = history.epochs
    if len(epochs) < k:
        return None
    masks = {key: exploded_mask(history.series[key], th) for key, _ in WATCHED}
    any_exploded = np.zeros(len(epochs), dtype=bool)
    for mask, _ in masks.values():
        any_exploded |= mask
    if not any_exploded[-k:].all():
        return None
    start = len(epochs) - k
    while start > 0 and any_exploded[start - 1]:
        start -= 1
    found = []
    for key, name in WATCHED:
        mask, best = masks[key]
        if not mask[start:].any():
            continue
        values = np.asarray(history.series[key], dtype=float)
        b = float(best[-1])
        best_at = int(np.flatnonzero(values == b)[0]) if math.isfinite(b) and (values == b).any() else 0
        found.append(Exploded(key=key, name=name, best=b, best_epoch=int(epochs[best_at]), value=float(values[-1])))
    return Divergence(epoch=int(epochs[-1]), since_epoch=int(epochs[start]), exploded=tuple(found))
