"""The footer: the keys that work now, each whole, the most important kept when space is short.

Textual's Footer cuts its last key mid-word on a narrow terminal and, in some terminals, is not
redrawn after a resize (it waits for focus events). This bar re-fits itself on every render
(every resize), listens to the screen's bindings signal, and leaves out whole entries by priority;
"?" (help, which lists every key) is kept as long as anything is.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from textual import events
from textual.content import Content
from textual.screen import Screen

from .guarded import GuardedWidget

SEPARATOR = "  "


@dataclass(frozen=True)
class KeyEntry:
    key: str          # as displayed, e.g. "?" or "^p"
    description: str
    action: str
    enabled: bool
    namespace: Any = None

    @property
    def text(self) -> str:
        return f"{self.key} {self.description}"


def choose_entries(entries: Sequence[KeyEntry], width: int, priority: Sequence[str]) -> list[KeyEntry]:
    """The entries that fit in `width` (in their own order), dropping the lowest-priority ones
    first; actions not in `priority` rank after those that are, last declared first dropped."""
    rank = {action: i for i, action in enumerate(priority)}
    order = sorted(range(len(entries)), key=lambda i: (rank.get(entries[i].action, len(rank)), i))
    kept = list(order)
    while kept:
        shown = [entries[i] for i in sorted(kept)]
        if len(SEPARATOR.join(e.text for e in shown)) <= width:
            return shown
        kept.pop()
    return []


class KeyBar(GuardedWidget):
    WHERE = "the key bar"

    def __init__(self, priority: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.priority = tuple(priority)
        self._spans: list[tuple[int, int, KeyEntry]] = []

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[Any]) -> None:
        self.refresh()

    def entries(self) -> list[KeyEntry]:
        out: list[KeyEntry] = []
        seen: set[str] = set()
        app = self.app
        for active in self.screen.active_bindings.values():
            binding = active.binding
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            out.append(KeyEntry(app.get_key_display(binding), binding.description, binding.action,
                                active.enabled, active.node))
        if app.ENABLE_COMMAND_PALETTE:
            out.append(KeyEntry("^p", "Commands", "command_palette", True, app))
        return out

    @property
    def text(self) -> str:
        return SEPARATOR.join(entry.text for _, _, entry in self._spans)

    def draw(self) -> Content:
        shown = choose_entries(self.entries(), self.size.width, self.priority)
        parts: list[Content | str | tuple[str, str]] = []
        self._spans = []
        x = 0
        for i, entry in enumerate(shown):
            if i:
                parts.append(SEPARATOR)
                x += len(SEPARATOR)
            style = "" if entry.enabled else "dim"
            parts.append((entry.key, f"bold $accent {style}".strip() if entry.enabled else "dim"))
            parts.append((f" {entry.description}", style))
            self._spans.append((x, x + len(entry.text), entry))
            x += len(entry.text)
        return Content.assemble(*parts)

    async def on_click(self, event: events.Click) -> None:
        for start, end, entry in self._spans:
            if start <= event.x < end and entry.enabled:
                await self.app.run_action(entry.action, entry.namespace)
                return
