"""Messages that carry trainer and watcher output into the UI thread."""
from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message

from molpt_tui.training.events import Event


@dataclass
class EventBatch(Message):
    """Trainer events in emission order. `backlog` marks history read at attach time (watch),
    whose alerts are summarised rather than each raising a toast."""

    events: list[Event] = field(default_factory=list)
    backlog: bool = False


@dataclass
class TrainerFinished(Message):
    """`train_fn` returned (error is None) or raised; posted after the sink's last batch."""

    error: str | None = None
    traceback: str = ""


@dataclass
class WatchFileStatus(Message):
    """State of the watched metrics file: whether it exists and when it was last written."""

    exists: bool
    last_write: float | None = None


@dataclass
class WatchReset(Message):
    """The metrics file was truncated or replaced: what was shown no longer matches it."""

    reason: str = ""
