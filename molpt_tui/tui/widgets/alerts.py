"""Alerts from the trainer's health rules: severity, epoch, what happened, what to do."""
from __future__ import annotations

from typing import Any

from textual.content import Content

from molpt_tui.training.events import Alert

from .entries import EntryPane

# The word is printed as well as coloured so severity survives NO_COLOR and monochrome terminals.
SEVERITY = {
    "error": ("ERROR", "$error"),
    "warning": ("WARN ", "$warning"),
    "info": ("INFO ", "$accent"),
}


def alert_content(alert: Alert) -> Content:
    word, colour = SEVERITY.get(alert.severity, SEVERITY["info"])
    parts: list[str | tuple[str, str]] = [
        (f"{word}", f"bold {colour}"),
        (f" epoch {alert.epoch} ", "bold"),
        alert.message,
    ]
    if alert.hint:
        parts += ["\n      ", ("→ ", colour), (alert.hint, "italic")]
    return Content.assemble(*parts)


class AlertsPane(EntryPane):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(placeholder="No alerts: training looks healthy so far.", **kwargs)

    def show(self, alerts: list[Alert]) -> None:
        self.set_entries([alert_content(a) for a in alerts])
