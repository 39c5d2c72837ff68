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

    def compose(self) -> ComposeResult:
        yield Static(Content.styled(self._placeholder, "dim"), classes="entries")

    def on_mount(self) -> None:
        # Anchored: the compositor keeps the newest entry in view at every layout until the user
        # scrolls up to read, and again once they scroll back down. Scrolling by hand after each
        # update raced the layout and sometimes landed before the new entries.
        self.anchor()

    @property
    def count(self) -> int:
        return self._count

    @property
    def text(self) -> str:
        return str(self.query_one(".entries", Static).content)

    def set_entries(self, entries: list[Content]) -> None:
        self._count = len(entries)
        body = Content("\n").join(entries) if entries else Content.styled(self._placeholder, "dim")
        self.query_one(".entries", Static).update(body)
