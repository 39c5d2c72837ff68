"""Follows a run's metrics.jsonl from a small thread and posts what it reads to the UI.

Only complete lines are parsed: the trainer may be half-way through writing the last one, so
the bytes after the final newline are kept and completed by the next read. The file's mtime is
reported so the UI can tell a quiet run ("stale") from a busy one.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

from textual.message import Message as TextualMessage

from molpt_tui.training.events import Event, Message
from molpt_tui.training.metrics_log import METRICS_FILE, parse_line

from .messages import EventBatch, WatchFileStatus, WatchReset


class MetricsWatcher:
    def __init__(self, run_dir: str | os.PathLike, post: Callable[[TextualMessage], object], *,
                 poll_interval: float = 0.25, chunk_bytes: int = 4 << 20) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self._post = post
        self.poll_interval = poll_interval
        self.chunk_bytes = chunk_bytes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fh = None
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._remainder = b""
        self._lineno = 0
        self._exists: bool | None = None
        self._mtime: float | None = None
        self._backlog = True

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="molpt-tui-watcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._close_file()

    def _run(self) -> None:
        while True:
            try:
                self.poll_once()
            except OSError as exc:  # e.g. NFS hiccup: report and keep following
                self._post(EventBatch([Message(text=f"reading {self.path}: {exc}", level="warning")]))
            if self._stop.wait(self.poll_interval):
                break

    # --- one poll (also called directly by tests) --------------------------------------------
    def poll_once(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._exists is not False:
                self._exists = False
                self._close_file()
                self._post(WatchFileStatus(exists=False))
            return
        identity = (st.st_dev, st.st_ino)
        if self._fh is not None and (identity != self._identity or st.st_size < self._offset):
            self._close_file()
            self._post(WatchReset(reason=f"{self.path.name} was truncated or replaced"))
        if self._fh is None:
            self._fh = open(self.path, "rb")
            self._identity = identity
            self._offset = 0
            self._remainder = b""
            self._lineno = 0
        while not self._stop.is_set():
            chunk = self._fh.read(self.chunk_bytes)
            if not chunk:
                break
            self._offset += len(chunk)
            events = self._parse(chunk)
            if events:
                self._post(EventBatch(events, backlog=self._backlog))
        self._backlog = False
        if self._exists is not True or st.st_mtime != self._mtime:
            self._exists = True
            self._mtime = st.st_mtime
            self._post(WatchFileStatus(exists=True, last_write=st.st_mtime))

    def _parse(self, chunk: bytes) -> list[Event]:
        lines = (self._remainder + chunk).split(b"\n")
        self._remainder = lines.pop()
        events: list[Event] = []
        for raw in lines:
            self._lineno += 1
            if not raw.strip():
                continue
            try:
                event = parse_line(raw.decode("utf-8", errors="replace"))
            except (ValueError, TypeError, KeyError) as exc:
                events.append(Message(text=f"{self.path.name}:{self._lineno}: skipped a corrupt line ({exc})",
                                      level="warning"))
                continue
            if event is not None:
                events.append(event)
        return events

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished last line held back until its newline arrives."""
        return len(self._remainder)

    def _close_file(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
