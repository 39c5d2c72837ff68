"""What the monitor of one run and the comparison of several share: layouts by terminal size
(wide, compact behind a pane bar, too small), the error guard, and the view toggles.

Layouts come from the screen's breakpoint classes: `-wide`+`-tall` is the wide layout, anything
smaller is compact (one pane at a time), and `-tiny-w` / `-tiny-h` (below MIN_WIDTH×MIN_HEIGHT)
show only a notice asking for a larger terminal, while the data keep being read underneath.
"""
from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import ClassVar

from textual.app import App
from textual.binding import Binding
from textual.widgets import DataTable

from .glyphs import ASCII, UNICODE, Glyphs, use_ascii_scrollbars
from .guard import describe
from .widgets import KeyBar, ViewBar

# The smallest compact layout: header (2, and the system line once the trainer reports it),
# progress (2), pane bar (1), a pane of ~8-9 rows and the key bar (1). Below it the screen says
# so instead of drawing clipped panes.
MIN_WIDTH = 60
MIN_HEIGHT = 15
ZOOMS: tuple[int | None, ...] = (None, 100, 1000)
# Lines of a failing pane's traceback copied into the log.
ERROR_TRACEBACK_LINES = 8
# Table scroll step (columns) for [ and ].
TABLE_SCROLL_STEP = 24


class MonitorBase(App[int]):
    """Subclasses set VIEWS (pane id, pane bar label) and HOLDERS (container id -> the panes it
    holds), compose panes with those ids (class "pane"), a ViewBar, a KeyBar and a TooSmall, and
    implement `refresh_now` and `log_error`."""

    VIEWS: ClassVar[tuple[tuple[str, str], ...]] = ()
    HOLDERS: ClassVar[dict[str, set[str]]] = {}
    WIDE_MIN_WIDTH: ClassVar[int] = 140
    WIDE_MIN_HEIGHT: ClassVar[int] = 34

    def __init__(self, *, ascii_only: bool = False, monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        # Textual reads these per instance; they follow the subclass's layout thresholds.
        self.HORIZONTAL_BREAKPOINTS = [(0, "-tiny-w"), (MIN_WIDTH, "-narrow"), (self.WIDE_MIN_WIDTH, "-wide")]
        self.VERTICAL_BREAKPOINTS = [(0, "-tiny-h"), (MIN_HEIGHT, "-short"), (self.WIDE_MIN_HEIGHT, "-tall")]
        self.ascii_only = ascii_only
        self.glyphs: Glyphs = ASCII if ascii_only else UNICODE
        self.monotonic = monotonic
        self.log_y = False
        self.smooth = False
        self.zoom_index = 0
        self.view_id = self.VIEWS[0][0] if self.VIEWS else ""
        self.ui_errors = 0  # exceptions caught in panes and handlers
        self._reported: set[tuple[str, str]] = set()

    def restore_scrollbars(self) -> None:
        if self.ascii_only:
            use_ascii_scrollbars(False)

    # --- layout ------------------------------------------------------------------------------
    def on_resize(self) -> None:
        # Breakpoint classes change with the size; the "Pane" key only exists when compact.
        self.call_after_refresh(self.refresh_bindings)
        self.call_after_refresh(self.query_one(KeyBar).refresh)

    def _screen_classes(self) -> set[str]:
        screen = self.screen_stack[0] if self.screen_stack else None
        return set(screen.classes) if screen is not None else set()

    @property
    def compact(self) -> bool:
        classes = self._screen_classes()
        return bool(classes) and not {"-wide", "-tall"} <= classes

    @property
    def too_small(self) -> bool:
        return bool({"-tiny-w", "-tiny-h"} & self._screen_classes())

    def _set_view(self, view_id: str) -> None:
        self.view_id = view_id
        for view, _ in self.VIEWS:
            self.query_one(f"#{view}").set_class(view == view_id, "-current")
        for holder, members in self.HOLDERS.items():
            self.query_one(f"#{holder}").set_class(view_id in members, "-holds-current")
        self.query_one(ViewBar).select(view_id)
        self.call_after_refresh(self.refresh_bindings)

    def on_view_bar_selected(self, message: ViewBar.Selected) -> None:
        self._set_view(message.view)

    @property
    def _ui_alive(self) -> bool:
        # Messages from follower threads can still arrive while the app is shutting down.
        return self.is_running and bool(self.screen_stack)

    def refresh_now(self) -> None:
        raise NotImplementedError

    # --- errors ------------------------------------------------------------------------------
    def log_error(self, text: str) -> None:
        """Add one line to the log the user can read."""
        raise NotImplementedError

    def report_error(self, where: str, error: BaseException) -> None:
        """A pane or handler raised: log it (once per distinct error), toast it, carry on."""
        try:
            self.ui_errors += 1
            key = (where, describe(error))
            if key in self._reported:
                return
            self._reported.add(key)
            self.log_error(f"display error in {where}: {describe(error)} (the trainer is not affected)")
            lines = "".join(traceback.format_exception(error)).rstrip().splitlines()
            for line in lines[-ERROR_TRACEBACK_LINES:]:
                self.log_error(line)
            self.notify(f"{where} failed: {describe(error)}\nTraining goes on; details in the Log pane.",
                        title="Display error", severity="error", timeout=12)
        except Exception:  # noqa: S110 - the reporter must never be what takes the app down
            pass

    def _guarded(self, where: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as error:
            self.report_error(where, error)

    # --- view toggles ------------------------------------------------------------------------
    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self.refresh_now()

    def action_toggle_smooth(self) -> None:
        self.smooth = not self.smooth
        self.refresh_now()

    def action_cycle_zoom(self) -> None:
        self.zoom_index = (self.zoom_index + 1) % len(ZOOMS)
        self.refresh_now()

    def action_next_view(self) -> None:
        ids = [view for view, _ in self.VIEWS]
        self._set_view(ids[(ids.index(self.view_id) + 1) % len(ids)])

    def _table(self) -> DataTable[object] | None:
        tables = self.query("#table").results(DataTable)
        return next(iter(tables), None)

    def _table_scrollable(self) -> bool:
        table = self._table()
        if table is None or (self.compact and self.view_id != "table"):
            return False
        return table.virtual_size.width > table.scrollable_content_region.width

    def action_scroll_table(self) -> None:
        table = self._table()
        if table is None:
            return
        end = table.max_scroll_x
        target = 0 if table.scroll_x >= end else min(table.scroll_x + TABLE_SCROLL_STEP, end)
        table.scroll_to(x=target, animate=False)

    def action_scroll_table_back(self) -> None:
        table = self._table()
        if table is not None:
            table.scroll_to(x=max(table.scroll_x - TABLE_SCROLL_STEP, 0), animate=False)

    def help_rows(self) -> list[tuple[str, str]]:
        """(keys, what they do) per action; several keys for one action share a row."""
        rows: dict[str, tuple[list[str], str]] = {}
        for binding in self.BINDINGS:
            if not isinstance(binding, Binding):
                continue
            keys, _ = rows.setdefault(binding.action, ([], binding.tooltip or binding.description))
            keys.append(self.get_key_display(binding))
        return [(" / ".join(keys), text) for keys, text in rows.values()]
