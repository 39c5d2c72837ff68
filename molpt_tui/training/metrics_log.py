"""Append-only JSONL metrics log: the run directory's record of every event.

The writer is a sink like any other. Every reader (the `plot` command, `--resume`, the tailer
behind the live monitor and `watch`) decodes lines with `decode_line`, so a bad line is judged
the same way everywhere: skipped with one warning, never fatal.
"""
from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .events import SCHEMA_NAME, SCHEMA_VERSION, Event, EventDecodeError, Sink, from_dict, header_line


class CorruptLine(ValueError):
    """A line of metrics.jsonl that is not a valid event; the message says why."""


class MetricsLogSink(Sink):
    """Writes each event as one JSON line, flushed at once so a tailer sees it immediately.
    Thread-safe: the system sampler emits from its own thread, and a line must never interleave."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        new = not self.path.exists() or self.path.stat().st_size == 0
        torn = not new and not _ends_with_newline(self.path)
        self._fh: IO[str] = open(self.path, "a", encoding="utf-8")
        if new:
            self._write(header_line())
        elif torn:
            # A writer killed mid-line (kill -9, full disk) left a partial last line: end it, so
            # it stays one skipped line instead of swallowing this run's first event.
            self._fh.write("\n")
            self._fh.flush()

    def _write(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, allow_nan=False) + "\n"
        with self._lock:
            if self._fh.closed:  # a sampler's last reading after the run closed its log
                return
            self._fh.write(line)
            self._fh.flush()

    def emit(self, event: Event) -> None:
        self._write(event.to_dict())

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def decode_line(line: str | bytes) -> Event | None:
    """One line -> event; None for the schema header or a blank line. Raises CorruptLine."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    if not line.strip():
        return None
    try:
        data = json.loads(line)
    except RecursionError:  # deeply nested arrays: json's recursion gives up before we would
        raise CorruptLine("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        raise CorruptLine(f"not JSON: {str(exc).splitlines()[0][:120]}") from None
    if not isinstance(data, dict):
        raise CorruptLine(f"not a JSON object but {type(data).__name__}")
    if data.get("schema") == SCHEMA_NAME:
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise CorruptLine(f"schema header with a version that is not an integer: {version!r}")
        if version > SCHEMA_VERSION:
            raise CorruptLine(f"metrics schema version {version} is newer than this molpt-tui understands "
                              "(upgrade molpt-tui)")
        return None
    try:
        return from_dict(data)
    except EventDecodeError as exc:
        raise CorruptLine(str(exc)) from None
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. a dataclass __post_init__ refusing a value
        raise CorruptLine(f"{type(exc).__name__}: {exc}") from None


def read_events(path: str | os.PathLike[str], warn: Callable[[str], None] | None = None) -> Iterator[Event]:
    """All complete, valid events of a metrics log, skipping bad lines with a warning each."""
    path = Path(path)
    report: Callable[[str], None] = warn or (lambda msg: warnings.warn(msg, stacklevel=2))
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                event = decode_line(raw)
            except CorruptLine as exc:
                if raw.endswith(b"\n"):
                    report(f"{path}:{lineno}: skipped a corrupt line ({exc})")
                else:
                    report(f"{path}:{lineno}: skipped a partial last line")
                continue
            if event is not None:
                yield event
