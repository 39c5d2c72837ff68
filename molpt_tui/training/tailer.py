"""Follows a run's metrics.jsonl as it grows: the one tailer behind the live monitor and `watch`.

Textual-free, so it is tested (and usable) without a terminal. Only complete lines are decoded:
the trainer may be half-way through writing the last one, so the bytes after the final newline
are kept and completed by the next read. A file that shrinks or is replaced (a `--force` run in
the same directory) is reported as a reset and read again from the start.
"""
from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .events import Event
from .metrics_log import CorruptLine, decode_line


@dataclass
class TailUpdate:
    """What one poll found. `events` are in file order; `warnings` name skipped lines."""

    events: list[Event] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exists: bool = False
    last_write: float | None = None       # mtime of the file, seconds since the epoch
    reset: str = ""                       # non-empty: what was read before no longer applies
    backlog: bool = False                 # the history present when the tailer first read the file
    status_changed: bool = False          # exists / last_write differ from the previous poll


class MetricsTailer:
    def __init__(self, path: str | os.PathLike[str], *, chunk_bytes: int = 4 << 20) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self._fh: IO[bytes] | None = None
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._remainder = b""
        self._lineno = 0
        self._exists: bool | None = None
        self._mtime: float | None = None
        self._backlog = True

    def poll(self, on_chunk: Callable[[TailUpdate], None] | None = None) -> TailUpdate:
        """Read what is new. With `on_chunk`, long backlogs are handed over chunk by chunk
        (each a TailUpdate with events only) so a viewer can draw before the end of a big log."""
        update = TailUpdate()
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            if self._exists is not False:
                self._exists = False
                self.close()
                update.status_changed = True
            return update
        update.exists = True
        identity = (st.st_dev, st.st_ino)
        if self._fh is not None and (identity != self._identity or st.st_size < self._offset):
            self.close()
            reason = f"{self.path.name} was truncated or replaced"
            if on_chunk is not None:  # the reset must reach the viewer before the new file's events
                on_chunk(TailUpdate(exists=True, reset=reason))
            else:
                update.reset = reason
        if self._fh is None:
            self._fh = open(self.path, "rb")
            self._identity = identity
            self._offset = 0
            self._remainder = b""
            self._lineno = 0
        update.backlog = self._backlog
        while True:
            chunk = self._fh.read(self.chunk_bytes)
            if not chunk:
                break
            self._offset += len(chunk)
            if on_chunk is not None:
                part = TailUpdate(exists=True, backlog=self._backlog)
                self._decode(chunk, part)
                on_chunk(part)
            else:
                self._decode(chunk, update)
        self._backlog = False
        if self._exists is not True or st.st_mtime != self._mtime:
            self._exists = True
            self._mtime = st.st_mtime
            update.status_changed = True
        update.last_write = st.st_mtime
        return update

    def _decode(self, chunk: bytes, into: TailUpdate) -> None:
        lines = (self._remainder + chunk).split(b"\n")
        self._remainder = lines.pop()
        for raw in lines:
            self._lineno += 1
            try:
                event = decode_line(raw)
            except CorruptLine as exc:
                into.warnings.append(f"{self.path.name}:{self._lineno}: skipped a corrupt line ({exc})")
                continue
            if event is not None:
                into.events.append(event)

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished last line held back until its newline arrives."""
        return len(self._remainder)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class TailThread:
    """Polls a tailer from a daemon thread and hands each update to `on_update`.

    A failing poll never ends the thread silently: `on_error` gets one line (and the traceback
    text) and the thread goes on polling, so a viewer can say on screen that reading failed.
    """

    def __init__(self, tailer: MetricsTailer, on_update: Callable[[TailUpdate], None],
                 on_error: Callable[[str, str], None], *, interval: float = 0.25) -> None:
        self.tailer = tailer
        self.on_update = on_update
        self.on_error = on_error
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="molpt-tui-tailer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                update = self.tailer.poll(on_chunk=self._chunk)
                if update.events or update.warnings or update.reset or update.status_changed:
                    self.on_update(update)
            except Exception as exc:  # noqa: BLE001 - reported, and the thread keeps following
                self.on_error(f"reading {self.tailer.path}: {type(exc).__name__}: {exc}", traceback.format_exc())
            if self._stop.wait(self.interval):
                break

    def _chunk(self, part: TailUpdate) -> None:
        if part.events or part.warnings or part.reset:
            self.on_update(part)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self.tailer.close()
