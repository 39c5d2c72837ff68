"""A scrolling list of styled entries that re-wraps on resize (RichLog renders at write time)."""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static


class EntryPane(VerticalScroll):
    DEFAULT_CSS = """
    EntryPane > Static { width: 1fr; height: auto; }
    """

    def __init__(self, placeholder: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._placeholder = placeholder
        self._count = 0
        self._follow = True

    def compose(self) -> ComposeResult:
        yield Static(Content.styled(self._placeholder, "dim"), classes="entries")

    @property
    def count(self) -> int:
        return self._count

    @property
    def text(self) -> str:
        return str(self.query_one(".entries", Static).content)

    def set_entries(self, entries: list[Content]) -> None:
        if self.size.height:
            # Stay pinned to the newest entry unless the user scrolled up to read. A hidden
            # pane has no size and keeps its last choice.
            self._follow = self.is_vertical_scroll_end or self.max_scroll_y == 0
        self._count = len(entries)
        body = Content("\n").join(entries) if entries else Content.styled(self._placeholder, "dim")
        self.query_one(".entries", Static).update(body)
        self._pin()

    def _pin(self) -> None:
        if self._follow:
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True)

    def on_show(self) -> None:
        self._pin()

    def on_resize(self) -> None:
        self._pin()
