"""Shown instead of every other pane when the terminal is smaller than the smallest layout."""
from __future__ import annotations

from textual.content import Content

from .guarded import GuardedWidget


class TooSmall(GuardedWidget):
    WHERE = "the size notice"

    def __init__(self, need: tuple[int, int], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.need = need
        self.times = "×"

    def message(self) -> str:
        (nw, nh), (w, h) = self.need, self.screen.size
        return (f"terminal too small: need {nw}{self.times}{nh}, have {w}{self.times}{h}. "
                "Resize the terminal; training goes on meanwhile (q quits).")

    def draw(self) -> Content:
        return Content.styled(self.message(), "bold $warning")
