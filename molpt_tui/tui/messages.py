"""Messages that carry what the metrics follower read into the UI thread."""
from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message

from molpt_tui.training.checklist import Check
from molpt_tui.training.events import Event


@dataclass
class EventBatch(Message):
    """Events in file order. `backlog` marks the history present when the monitor attached, whose
    alerts and acknowledgements are summarised rather than each raising a toast. `warnings` name
    lines the reader skipped."""

    events: list[Event] = field(default_factory=list)
    backlog: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class WatchFileStatus(Message):
    """State of the followed metrics file: whether it exists and when it was last written. Also
    sent after a failed read works again, so the error on screen can be cleared."""

    exists: bool
    last_write: float | None = None


@dataclass
class WatchReset(Message):
    """The metrics file was truncated or replaced: what was shown no longer matches it."""

    reason: str = ""


@dataclass
class TailerFailed(Message):
    """Reading the metrics file failed; the follower keeps trying. Sent on every failed poll."""

    error: str
    traceback: str = ""


@dataclass
class FeedSynced(Message):
    """Everything the file held when sync `token` was requested has been posted before this."""

    token: int


@dataclass
class ChecksReady(Message):
    """The checklist thread's result for the history identified by `key` (or its exception),
    and how long it took."""

    key: tuple[int, int, int, int]
    checks: list[Check] | BaseException
    seconds: float
