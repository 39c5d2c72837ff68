"""End-of-run summary kept on screen: outcome, best model, test-set result, files, resume command."""
from __future__ import annotations

from textual.widgets import Static

OUTCOMES = ("completed", "stopped", "failed", "diverged")


class Banner(Static):
    def show(self, outcome: str | None, lines: list[str]) -> None:
        for name in OUTCOMES:
            self.set_class(outcome == name, f"-{name}")
        self.update("\n".join(lines) if outcome else "")
