"""A scrolling list of styled entries, wrapped by `fit.wrap_spans` at the pane's width.

Wrapping is done here rather than by Textual so that a path is broken after a '/' instead of
mid-name, and continuation lines are indented under their entry. Re-wrapped on every resize
(`get_content_height` and `render` both use the current width).
"""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.geometry import Size

from ..fit import wrap_lines
from ..glyphs import ascii_content
from .guarded import GuardedWidget

# Continuation lines of an entry start this far in, so entries stay apart without blank lines.
INDENT = 2


class WrappedEntries(GuardedWidget):
    WHERE = "a list pane"

    def __init__(self, placeholder: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.placeholder = placeholder
        self.ascii_only = False
        self.entries: list[Content] = []
        self._cache: tuple[int, int, list[Content]] | None = None

    def set_entries(self, entries: list[Content]) -> None:
        self.entries = [ascii_content(e) for e in entries] if self.ascii_only else entries
        self._cache = None
        self.refresh(layout=True)

    def lines(self, width: int) -> list[Content]:
        key = (width, id(self.entries))
        if self._cache is not None and self._cache[:2] == key:
            return self._cache[2]
        entries = self.entries or [Content.styled(self.placeholder, "dim")]
        out: list[Content] = []
        for entry in entries:
            for a, b, continued in wrap_lines(entry.plain, width, INDENT):
                piece = entry[a:b]
                out.append(Content(" " * min(INDENT, max(width - 1, 0))) + piece if continued else piece)
        self._cache = (width, id(self.entries), out)
        return out

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.lines(max(width, 1)))

    def draw(self) -> Content:
        return Content("\n").join(self.lines(max(self.size.width, 1)))


class EntryPane(VerticalScroll):
    ANCHOR = True  # follow the newest entry (logs); False for lists read from the top

    def __init__(self, placeholder: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._placeholder = placeholder
        self._count = 0

    def compose(self) -> ComposeResult:
        yield WrappedEntries(self._placeholder, classes="entries")

    def on_mount(self) -> None:
        if not self.ANCHOR:
            return
        # Anchored: the compositor keeps the newest entry in view at every layout until the user
        # scrolls up to read, and again once they scroll back down. Scrolling by hand after each
        # update raced the layout and sometimes landed before the new entries.
        self.anchor()

    @property
    def count(self) -> int:
        return self._count

    @property
    def text(self) -> str:
        entries = self.query_one(WrappedEntries).entries
        return "\n".join(e.plain for e in entries) if entries else self._placeholder

    def set_entries(self, entries: list[Content]) -> None:
        self._count = len(entries)
        self.query_one(WrappedEntries).set_entries(entries)

    def use_ascii(self) -> None:
        self.query_one(WrappedEntries).ascii_only = True
