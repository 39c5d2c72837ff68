"""The bridge from the trainer thread to the UI: buffered events, posted in batches.

Posting one message per event would flood the UI's queue at thousands of epochs per second and
`call_from_thread` would block the trainer until the UI ran. The trainer thread only appends to
a list; a small flusher thread posts what accumulated every `interval` seconds, and a full batch
is posted at once, so latency is bounded and the trainer never waits on the UI.
"""
from __future__ import annotations

import threading
from typing import Callable

from molpt_tui.training.events import Event, Sink

from .messages import EventBatch


class TuiSink(Sink):
    def __init__(self, post: Callable[[EventBatch], object], *, interval: float = 0.1,
                 max_batch: int = 500) -> None:
        """`post` is usually `app.post_message`, which is safe to call from any thread."""
        self._post = post
        self.interval = interval
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._buffer: list[Event] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches_posted = 0

    def emit(self, event: Event) -> None:
        with self._lock:
            self._buffer.append(event)
            full = len(self._buffer) >= self.max_batch
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="molpt-tui-sink", daemon=True)
                self._thread.start()
        if full:
            self.flush()

    def flush(self) -> None:
        # Posting under the lock keeps batches in emission order when the flusher thread and a
        # full-batch flush race; posting only enqueues, so the lock is held for microseconds.
        with self._lock:
            events, self._buffer = self._buffer, []
            if events:
                self.batches_posted += 1
                self._post(EventBatch(events))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        self.flush()
