"""Screens over the monitor: key help, the stop / quit confirmations, and the validation view."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.events import Resize
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Static

from .validation_view import render_validation


class HelpScreen(ModalScreen[None]):
    """Keys of the monitor, built from the app's own bindings so it cannot drift."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("f1", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, rows: list[tuple[str, str]], notes: list[str]) -> None:
        super().__init__()
        self._rows = rows
        self._notes = notes

    def compose(self) -> ComposeResult:
        # A two-column grid keeps wrapped descriptions aligned under their column.
        keys = Table.grid(padding=(0, 2))
        keys.add_column(style="bold", no_wrap=True)
        keys.add_column()
        for key, text in self._rows:
            keys.add_row(key, text)
        with VerticalScroll(id="help-box"):
            yield Static(Content.styled("Keys", "bold $accent"), id="help-title")
            yield Static(keys, id="help-text")
            yield Static(Content("\n").join(Content.styled(n, "dim") for n in self._notes), id="help-notes")
            yield Static(Content.styled("esc / ? / q to close", "dim"), id="help-close")

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; `y` / `n` / escape, or the buttons. Dismisses with the answer."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No", show=False),
    ]

    def __init__(self, text: str, yes: str, no: str) -> None:
        super().__init__()
        self._text = text
        self._yes = yes
        self._no = no

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(self._text, id="confirm-text")
            with Horizontal(id="confirm-buttons"):
                yield Button(f"{self._yes} (y)", id="confirm-yes", variant="error")
                yield Button(f"{self._no} (n)", id="confirm-no", variant="primary")

    def on_mount(self) -> None:
        # The safe answer has the focus, so a stray Enter keeps the run going.
        self.query_one("#confirm-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class ConfirmQuitScreen(ConfirmScreen):
    """Quitting a live run stops it; ask first so a stray `q` does not end hours of training."""

    def __init__(self) -> None:
        super().__init__("Training is still running.\n\nQuit now? The trainer stops after its current step "
                         "and writes a checkpoint and the PNG before the app exits.",
                         yes="Stop and quit", no="Keep training")


class ConfirmStopScreen(ConfirmScreen):
    """Stopping cannot be undone from here (resuming is a new run segment): ask first."""

    def __init__(self, whom: str) -> None:
        super().__init__(f"Stop {whom}?\n\nIt finishes its current step and writes a checkpoint and the PNG; "
                         "the run can be continued later with --resume.",
                         yes="Stop training", no="Keep training")


class ValidationScreen(Screen[None]):
    """The whole terminal for what the map does to the validation pairs: energy histograms of
    data against mapped samples and, for peptides, (phi, psi) densities (tui/validation_view.py),
    from the latest `ValidationHistograms` event; redrawn when a new one arrives or on resize."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("d", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, read: Callable[[], tuple[Any, float | None, float | None]], ascii_only: bool) -> None:
        super().__init__()
        self._read = read          # () -> (latest event or None, t_cold, t_hot)
        self._ascii = ascii_only
        self._drawn: tuple[object, int, int] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="validation-body")
        yield Static(Content.styled("esc / d / q to close", "dim"), id="validation-close")

    def on_mount(self) -> None:
        self.redraw()
        self.set_interval(1.0, self.redraw)

    def on_resize(self, event: Resize) -> None:
        self.redraw()

    def redraw(self) -> None:
        event, t_cold, t_hot = self._read()
        body = self.query_one("#validation-body", Static)
        width, height = self.size.width, max(0, self.size.height - 1)
        key = (event, width, height)
        if key == self._drawn:
            return
        self._drawn = key
        lines = render_validation(event, width, height, ascii_only=self._ascii, t_cold=t_cold, t_hot=t_hot)
        body.update(Content("\n".join(lines)))

    def action_close(self) -> None:
        self.dismiss(None)
