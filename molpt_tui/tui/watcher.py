"""The thin adapter between the training layer's tailer and Textual: updates become messages.

`TailThread` (molpt_tui.training.tailer) polls metrics.jsonl from a daemon thread and hands
over what it read; this module only turns that into messages posted to the app (safe from any
thread). One addition: `request_sync()` returns a token that comes back as a `FeedSynced`
message after a poll that started later has been posted in full, so the live monitor knows it
has read every line a trainer wrote before it exited, without timing guesses.
"""
from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from pathlib import Path

from textual.message import Message

from molpt_tui.training.tailer import MetricsTailer, TailThread, TailUpdate

from .messages import EventBatch, FeedSynced, TailerFailed, WatchFileStatus, WatchReset

Post = Callable[[Message], object]


class _SyncingTailer(MetricsTailer):
    """A tailer whose polls also complete sync requests and report a recovery after a failure."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._lock = threading.Lock()
        self._wanted: list[int] = []
        self._done: list[int] = []   # touched only by the polling thread
        self._failed = False

    def want_sync(self, token: int) -> None:
        with self._lock:
            self._wanted.append(token)

    def take_synced(self) -> list[int]:
        done, self._done = self._done, []
        return done

    def poll(self, on_chunk: Callable[[TailUpdate], None] | None = None) -> TailUpdate:
        # Tokens taken before the read are satisfied by it: the file held at least what it held
        # when they were requested.
        with self._lock:
            wanted, self._wanted = self._wanted, []
        try:
            update = super().poll(on_chunk)
        except BaseException:
            with self._lock:
                self._wanted[:0] = wanted
            self._failed = True
            raise
        if wanted or self._failed:
            # Forces TailThread to hand this update over even if nothing changed, so the sync
            # is answered and a recovered reader clears its error on screen.
            update.status_changed = True
        self._failed = False
        self._done.extend(wanted)
        return update


class MetricsFollower:
    """Follows one metrics.jsonl for the monitor and posts EventBatch, WatchFileStatus,
    WatchReset, TailerFailed and FeedSynced messages through `post`."""

    def __init__(self, path: str | os.PathLike[str], post: Post, *, poll_interval: float = 0.25) -> None:
        self._post = post
        self._tailer = _SyncingTailer(path)
        self._thread = TailThread(self._tailer, self._on_update, self._on_error, interval=poll_interval)
        self._tokens = itertools.count(1)

    @property
    def path(self) -> Path:
        return self._tailer.path

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._thread.stop()

    def request_sync(self) -> int:
        token = next(self._tokens)
        self._tailer.want_sync(token)
        return token

    @property
    def pending_bytes(self) -> int:
        return self._tailer.pending_bytes

    def _on_update(self, update: TailUpdate) -> None:
        if update.reset:
            self._post(WatchReset(reason=update.reset))
        if update.events or update.warnings:
            self._post(EventBatch(update.events, backlog=update.backlog, warnings=update.warnings))
        if update.status_changed:
            self._post(WatchFileStatus(exists=update.exists, last_write=update.last_write))
        for token in self._tailer.take_synced():
            self._post(FeedSynced(token))

    def _on_error(self, error: str, traceback: str) -> None:
        self._post(TailerFailed(error=error, traceback=traceback))
