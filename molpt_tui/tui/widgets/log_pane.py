"""Run log: messages, checkpoints, resumes and the end of the run."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual.content import Content

from ..state import LogEntry
from .entries import EntryPane

LEVEL_STYLE = {"info": "", "success": "$success", "warning": "$warning", "error": "bold $error"}


def log_content(entry: LogEntry) -> Content:
    style = LEVEL_STYLE.get(entry.level, "")
    if entry.level in ("warning", "error"):
        # A prefix keeps the level readable without colour.
        return Content.assemble((f"{entry.level.upper()}: {entry.text}", style))
    return Content.styled(entry.text, style) if style else Content(entry.text)


class LogPane(EntryPane):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(placeholder="Waiting for the trainer…", **kwargs)

    def show(self, entries: Iterable[LogEntry]) -> None:
        self.set_entries([log_content(e) for e in entries])
