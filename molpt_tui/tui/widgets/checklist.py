"""The good signs of a healthy run (training.checklist): ✔ passed, ✘ failed, … pending, each
with the epoch its state was reached; the numbers that decided it are shown for a sign that
failed or is still pending (a passed one needs no explanation, and rows stay short)."""
from __future__ import annotations

from typing import Any

from textual.content import Content

from molpt_tui.training.checklist import Check

from ..glyphs import UNICODE, Glyphs
from .entries import EntryPane

STYLE = {"pass": "bold $success", "fail": "bold $error", "pending": "dim"}


def check_content(check: Check, glyphs: Glyphs) -> Content:
    mark = {"pass": glyphs.ok, "fail": glyphs.fail}.get(check.state, glyphs.pending)
    since = f" · epoch {check.since_epoch}" if check.since_epoch is not None else ""
    parts: list[str | tuple[str, str]] = [(mark, STYLE.get(check.state, "")), " ", check.label, (since, "dim")]
    if check.detail and check.state != "pass":
        parts += [(": ", "dim"), (check.detail, "dim italic")]
    return Content.assemble(*parts)


class ChecklistPane(EntryPane):
    ANCHOR = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(placeholder="Good signs: waiting for the first epochs…", **kwargs)
        self.checks: list[Check] = []
        self.glyphs: Glyphs = UNICODE

    def show(self, checks: list[Check]) -> None:
        self.checks = list(checks)
        self.set_entries([check_content(c, self.glyphs) for c in self.checks])
