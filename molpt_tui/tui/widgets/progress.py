"""Epoch progress (tqdm-like) and the latest numbers, sized to the pane at render time.

Within an epoch the trainer's step events move the bar and the Loss / Fwd_E / Inv_E / LR
postfix (running means over the epoch so far), and the ETA comes from its time per step. What
does not fit is left out whole, least important first, so nothing is cut mid-word.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from textual.content import Content

from ..fit import cut_words
from ..formatting import fmt_count, fmt_duration, fmt_num, fmt_rate
from ..glyphs import UNICODE, Glyphs
from .guarded import GuardedWidget

STATUS_STYLE = {
    "RUNNING": "bold $success",
    "PAUSED": "bold reverse $warning",
    "STOPPING": "bold $warning",
    "COMPLETED": "bold $success",
    "STOPPED": "bold $warning",
    "FAILED": "bold reverse $error",
    "DIVERGED": "bold reverse $error",
    "CRASHED": "bold reverse $error",
    "FOLLOWING": "bold $success",
    "STALE": "bold reverse $warning",
    "FINISHED": "bold $accent",
    "WAITING": "bold $secondary",
    "STARTING": "bold $secondary",
    "READ ERROR": "bold reverse $error",
}


@dataclass
class ProgressInfo:
    epoch: int = 0              # completed epochs
    total: int | None = None
    elapsed: float | None = None
    eta: float | None = None
    seconds_per_epoch: float | None = None
    loss: float | None = None
    fwd_energy: float | None = None
    inv_energy: float | None = None
    lr: float | None = None
    status: str = "WAITING"
    status_note: str = ""
    view: str = ""
    step: int = 0               # steps done of the epoch in progress (0: none reported)
    steps_per_epoch: int = 0
    n_regularised: int = 0      # energies the regularisation bent (the numbers shown)
    n_nonfinite: int = 0
    energy_evals: int = 0       # target energy evaluations of the run so far


Part = tuple[str, str, int]  # text, style, priority (higher is dropped last)
Item = tuple[list[tuple[str, str]], int]  # styled pieces that go together, priority


def fit_parts(parts: Sequence[Part], width: int) -> list[Part]:
    """Drop whole parts, lowest priority (then rightmost) first, until the line fits."""
    kept = list(parts)
    while kept and sum(len(t) for t, _, _ in kept) > width:
        lowest = min(p for _, _, p in kept)
        index = max(i for i, (_, _, p) in enumerate(kept) if p == lowest)
        del kept[index]
    return kept


def fit_items_parts(items: Sequence[Item], width: int) -> list[Item]:
    """As `fit_parts`, for items made of several styled pieces."""
    kept = list(items)
    while kept and sum(len(t) for pieces, _ in kept for t, _ in pieces) > width:
        lowest = min(p for _, p in kept)
        index = max(i for i, (_, p) in enumerate(kept) if p == lowest)
        del kept[index]
    return kept


class ProgressPane(GuardedWidget):
    WHERE = "the progress line"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.info = ProgressInfo()
        self.glyphs: Glyphs = UNICODE

    def show(self, info: ProgressInfo) -> None:
        self.info = info
        self.refresh()

    def fraction(self) -> float:
        info = self.info
        if not info.total:
            return 0.0
        done = float(info.epoch)
        if info.step and info.steps_per_epoch:
            done += min(info.step / info.steps_per_epoch, 1.0)
        return min(max(done / info.total, 0.0), 1.0)

    def draw(self) -> Content:
        info = self.info
        width = max(self.size.width, 1)
        frac = self.fraction()
        total = info.total or 0
        left = f"Epoch {info.epoch}/{total} {frac * 100:3.0f}%" if total else f"Epoch {info.epoch}"
        step = f" step {info.step}/{info.steps_per_epoch}" if info.step and info.steps_per_epoch > 1 else ""
        times = f" {fmt_duration(info.elapsed)}<{fmt_duration(info.eta)}"
        rate = f" {fmt_rate(info.seconds_per_epoch)}"
        status_style = STATUS_STYLE.get(info.status, "bold")
        note = f" ({info.status_note})" if info.status_note else ""
        fixed = len(left) + len(step) + len(times) + len(rate) + 2 + len(info.status) + len(note)
        bar_width = width - fixed - 2
        parts: list[Part] = [(left, "bold", 9), (step, "", 4)]
        if bar_width >= 6:
            filled = round(frac * bar_width)
            parts += [(" ", "", 3), (self.glyphs.bar_full * filled, "$accent", 3),
                      (self.glyphs.bar_empty * (bar_width - filled), "dim", 3)]
        parts += [(times, "", 7), (rate, "", 5), ("  ", "", 8), (info.status, status_style, 10)]
        kept = fit_parts(parts, width)
        room = width - sum(len(t) for t, _, _ in kept)
        if note and room > 3:
            kept.append((cut_words(note, room, self.glyphs.ellipsis, hard=False), "", 0))
        line1 = Content.assemble(*((t, s) for t, s, _ in kept))
        items: list[Item] = [
            ([("Loss ", "dim"), (fmt_num(info.loss), "")], 9),
            ([("  Fwd_E ", "dim"), (fmt_num(info.fwd_energy), "")], 8),
            ([("  Inv_E ", "dim"), (fmt_num(info.inv_energy), "")], 8),
            ([("  LR ", "dim"), (fmt_num(info.lr, 3), "")], 6)]
        if info.n_regularised or info.n_nonfinite:
            # Kept before everything but the loss: how many energies were bent or left out.
            items.append(([(f"  [{info.n_regularised} regularised, {info.n_nonfinite} non-finite "
                            "energies]", "$warning")], 7))
        if info.energy_evals:
            items.append(([(f"  {fmt_count(info.energy_evals)} U evals", "dim")], 2))
        kept_items = fit_items_parts(items, width - (len(info.view) + 2 if info.view else 0))
        pieces = [piece for item, _ in kept_items for piece in item]
        used = sum(len(t) for t, _ in pieces)
        if info.view and used + 2 + len(info.view) <= width:
            pieces.append((" " * (width - used - len(info.view)) + info.view, "dim"))
        line2 = Content.assemble(*pieces)
        return Content("\n").join([line1, line2])
