"""A base for the monitor's own widgets: a failure to draw shows a line, not a dead app."""
from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from ..guard import describe, report


class GuardedWidget(Widget):
    """Subclasses draw in `draw()`; an exception there is reported to the app (log pane and a
    toast) and the widget shows one line saying it cannot draw, until the next redraw works."""

    WHERE = "a pane"

    def draw(self) -> Content:
        raise NotImplementedError

    def render(self) -> Content:
        try:
            return self.draw()
        except Exception as error:
            report(self, self.WHERE, error)
            return Content.styled(f"{self.WHERE}: cannot draw ({describe(error)})", "$error")
