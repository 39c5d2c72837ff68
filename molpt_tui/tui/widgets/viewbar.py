"""Pane switcher of the compact layout: the current pane's name and as many neighbours as fit.

Textual's Tabs scroll their row and cut labels at its edges; here labels are shown whole, with
‹ / › where more panes lie beyond, and a click on a name selects it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from textual import events
from textual.content import Content
from textual.message import Message

from ..glyphs import ASCII, UNICODE, Glyphs, to_ascii
from .guarded import GuardedWidget

GAP = "  "


def visible_window(labels: Sequence[str], current: int, width: int, marker: int = 2) -> tuple[int, int]:
    """[first, last) of the labels around `current` that fit in `width` together with room for
    the ‹ / › markers of what is left out."""
    n = len(labels)
    if not n:
        return 0, 0
    current = min(max(current, 0), n - 1)
    first, last = current, current + 1

    def used(a: int, b: int) -> int:
        body = len(GAP.join(labels[a:b]))
        return body + (marker if a > 0 else 0) + (marker if b < n else 0)

    grew = True
    while grew:
        grew = False
        if last < n and used(first, last + 1) <= width:
            last += 1
            grew = True
        if first > 0 and used(first - 1, last) <= width:
            first -= 1
            grew = True
    return first, last


class ViewBar(GuardedWidget):
    WHERE = "the pane switcher"

    @dataclass
    class Selected(Message):
        view: str

    def __init__(self, views: Sequence[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.views = list(views)
        self.labels = {view: label for view, label in views}
        self.current = views[0][0] if views else ""
        self.glyphs: Glyphs = UNICODE
        self._spans: list[tuple[int, int, str]] = []

    def select(self, view: str) -> None:
        self.current = view
        self.refresh()

    def set_label(self, view: str, label: str) -> None:
        if self.labels.get(view) != label:
            self.labels[view] = label
            self.refresh()

    def label(self, view: str) -> str:
        text = self.labels.get(view, view)
        return to_ascii(text) if self.glyphs is ASCII else text

    def draw(self) -> Content:
        ids = [view for view, _ in self.views]
        labels = [self.label(view) for view in ids]
        index = ids.index(self.current) if self.current in ids else 0
        first, last = visible_window(labels, index, self.size.width)
        parts: list[Content | str | tuple[str, str]] = []
        self._spans = []
        x = 0
        if first > 0:
            parts.append((self.glyphs.more_left + " ", "dim"))
            x += 2
        for i in range(first, last):
            if i > first:
                parts.append(GAP)
                x += len(GAP)
            style = "bold reverse $accent" if i == index else ""
            parts.append((labels[i], style))
            self._spans.append((x, x + len(labels[i]), ids[i]))
            x += len(labels[i])
        if last < len(ids):
            parts.append((" " + self.glyphs.more_right, "dim"))
        return Content.assemble(*parts)

    def on_click(self, event: events.Click) -> None:
        for start, end, view in self._spans:
            if start <= event.x < end:
                self.post_message(self.Selected(view))
                return
