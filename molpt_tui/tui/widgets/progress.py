"""Epoch progress (tqdm-like) and the latest numbers, sized to the pane at render time.

Within an epoch the trainer's step events move the bar and the Loss / Fwd_E / Inv_E / LR
postfix (running means over the epoch so far), and the ETA comes from its time per step. What
does not fit is left out whole, least important first, so nothing is cut mid-word.

Before the run starts, `train` may first simulate its training data and its independent test
run (minutes on a cluster node): then the bar is that MD's, in ns per replica, with its speed,
ETA and the swap acceptance of each neighbour pair of the ladder, all as its DataProgress events
report them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from textual.content import Content

from molpt_tui.training.events import DataProgress

from ..fit import cut_words, keep_by_priority
from ..formatting import fmt_ago, fmt_count, fmt_duration, fmt_num, fmt_rate, fmt_scaled
from ..glyphs import UNICODE, Glyphs, ascii_content
from ..state import data_phase_title, fmt_acceptance, swap_pairs
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
    data: DataProgress | None = None  # the data generation before the run starts (replaces the epochs)


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
        self.ascii_only = False

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
        if info.data is not None:
            return self.draw_data(info.data, width)
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

    # --- the data generation before the run ---------------------------------------------------
    def draw_data(self, data: DataProgress, width: int) -> Content:
        line1 = self._data_bar(data, width)
        line2 = Content.assemble(*data_detail(data, width))
        lines = [line1, line2]
        return Content("\n").join([ascii_content(x) for x in lines] if self.ascii_only else lines)

    def _data_bar(self, data: DataProgress, width: int) -> Content:
        info = self.info
        frac = data_fraction(data)
        title = data_phase_title(data)
        done, planned = fmt_ns(data.simulated_ns), fmt_ns(data.planned_ns)
        status = info.status
        pct = f" {frac * 100:3.0f}%"
        rate = f" · {fmt_ns_per_day(data.ns_per_day)} ns/day" if _ok(data.ns_per_day) else ""
        eta = f" · ETA {fmt_ago(data.eta_s)}" if _ok(data.eta_s) and data.phase != "written" else ""
        left = f"{title}: {done} / {planned} ns per replica"
        if len(left) + len(rate) + len(eta) + 2 + len(status) > width:
            # Speed and ETA matter more than the words "per replica".
            left = f"{title}: {done}/{planned} ns"
        fixed = len(left) + len(pct) + len(rate) + len(eta) + 2 + len(status)
        bar_width = width - fixed - 1
        parts: list[Part] = [(left, "bold", 9)]
        if bar_width >= 6:
            filled = round(frac * bar_width)
            parts += [(" ", "", 3), (self.glyphs.bar_full * filled, "$accent", 3),
                      (self.glyphs.bar_empty * (bar_width - filled), "dim", 3)]
        parts += [(pct, "", 5), (rate, "", 7), (eta, "", 8), ("  ", "", 8),
                  (status, STATUS_STYLE.get(status, "bold"), 10)]
        kept = fit_parts(parts, width)
        return Content.assemble(*((t, s) for t, s, _ in kept))


def _ok(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def data_fraction(data: DataProgress) -> float:
    if data.phase == "written":
        return 1.0
    if not (_ok(data.simulated_ns) and _ok(data.planned_ns)) or data.planned_ns <= 0:
        return 0.0
    return min(max(data.simulated_ns / data.planned_ns, 0.0), 1.0)


def fmt_ns(value: float) -> str:
    """MD time per replica: '1.23', '40.0', '1200'."""
    if not _ok(value):
        return "–"
    if value < 100:
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 1000 else f"{fmt_scaled(value)}"


def fmt_ns_per_day(value: float) -> str:
    """'4,900', '12.5': thousands apart so a rate of MD reads at a glance."""
    if value >= 1e7:
        return fmt_scaled(value)
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def data_detail(data: DataProgress, width: int) -> list[tuple[str, str]]:
    """The second line: swap acceptance per neighbour pair (whole pairs, coldest first, then how
    many did not fit), the samples saved and the elapsed time, as far as they fit."""
    pieces: list[tuple[str, str]] = []
    used = 0
    pairs = swap_pairs(data)
    if pairs and not any(math.isfinite(acc) for _, acc in pairs):
        text = "swap acceptance: no swap attempted yet"
        if len(text) <= width:
            pieces.append((text, "dim"))
            used = len(text)
    elif pairs:
        head = "swap acceptance "
        texts = [f"{pair} {fmt_acceptance(acc)}" for pair, acc in pairs]
        room = width - len(head)
        kept = keep_by_priority([len(t) for t in texts], [0] * len(texts), room, 3)
        if len(kept) < len(texts):
            # Room for the count of pairs left out, so a cut ladder does not look whole.
            kept = keep_by_priority([len(t) for t in texts], [0] * len(texts),
                                    room - len(f" · +{len(texts)} more pairs"), 3)
        if kept:
            pieces.append((head, "dim"))
            for n, index in enumerate(kept):
                if n:
                    pieces.append((" · ", "dim"))
                pieces.append((texts[index], ""))
            if len(kept) < len(texts):
                pieces.append((f" · +{len(texts) - len(kept)} more pairs", "dim"))
            used = sum(len(t) for t, _ in pieces)
    extras: list[str] = []
    if data.planned_samples > 0:
        extras.append(f"{data.samples:,} / {data.planned_samples:,} samples per temperature")
    if _ok(data.elapsed_s):
        extras.append(f"elapsed {fmt_duration(data.elapsed_s)}")
    for extra in extras:
        sep = " · " if used else ""
        if used + len(sep) + len(extra) > width:
            break
        pieces += [(sep, "dim"), (extra, "dim")] if sep else [(extra, "dim")]
        used += len(sep) + len(extra)
    return pieces
