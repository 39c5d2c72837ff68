"""Modal screens: key help and the quit confirmation."""
from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class HelpScreen(ModalScreen[None]):
    """Keys of the current mode, built from the app's own bindings so it cannot drift."""

    BINDINGS = [
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


class ConfirmQuitScreen(ModalScreen[bool]):
    """Quitting stops the run; ask first so a stray `q` does not end hours of training."""

    BINDINGS = [
        Binding("y", "answer(True)", "Stop and quit"),
        Binding("n", "answer(False)", "Keep training"),
        Binding("escape", "answer(False)", "Keep training", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(
                "Training is still running.\n\nQuit now? The trainer stops after its current step "
                "and writes a checkpoint and the PNG before the app exits.",
                id="confirm-text",
            )
            with Horizontal(id="confirm-buttons"):
                yield Button("Stop and quit (y)", id="confirm-yes", variant="error")
                yield Button("Keep training (n)", id="confirm-no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
