"""Epoch progress (tqdm-like) and the latest epoch's numbers, sized to the pane at render time."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.content import Content
from textual.widget import Widget

from ..formatting import fmt_duration, fmt_num, fmt_rate

STATUS_STYLE = {
    "RUNNING": "bold $success",
    "PAUSED": "bold reverse $warning",
    "STOPPING": "bold $warning",
    "COMPLETED": "bold $success",
    "STOPPED": "bold $warning",
    "FAILED": "bold reverse $error",
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
    epoch: int = 0
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


class ProgressPane(Widget):
    DEFAULT_CSS = "ProgressPane { height: 2; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.info = ProgressInfo()

    def show(self, info: ProgressInfo) -> None:
        self.info = info
        self.refresh()

    def render(self) -> Content:
        info = self.info
        width = max(self.size.width, 20)
        total = info.total or 0
        frac = min(max(info.epoch / total, 0.0), 1.0) if total else 0.0
        left = f"Epoch {info.epoch}/{total} {frac * 100:3.0f}% " if total else f"Epoch {info.epoch} "
        status = info.status + (f" ({info.status_note})" if info.status_note else "")
        right = f" {fmt_duration(info.elapsed)}<{fmt_duration(info.eta)} {fmt_rate(info.seconds_per_epoch)}  "
        bar_width = width - len(left) - len(right) - len(status)
        if bar_width < 6:
            # Narrow terminals: drop the bar before dropping numbers.
            bar = ""
            right = right.lstrip()
        else:
            filled = round(frac * bar_width)
            bar = "█" * filled + "░" * (bar_width - filled)
        line1 = Content.assemble((left, "bold"), (bar[: round(frac * len(bar))], "$accent"),
                                 (bar[round(frac * len(bar)):], "dim"), right,
                                 (status, STATUS_STYLE.get(info.status, "bold")))
        numbers: list[str | tuple[str, str]] = [
            ("Loss ", "dim"), fmt_num(info.loss), ("  Fwd_E ", "dim"), fmt_num(info.fwd_energy),
            ("  Inv_E ", "dim"), fmt_num(info.inv_energy), ("  LR ", "dim"), fmt_num(info.lr, 3)]
        line2 = Content.assemble(*numbers)
        if info.view:
            pad = width - len(line2.plain) - len(info.view)
            line2 = Content.assemble(line2, " " * max(pad, 2), (info.view, "dim"))
        return Content("\n").join([line1.truncate(width), line2.truncate(width)])
