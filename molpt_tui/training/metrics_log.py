"""Append-only JSONL metrics log: the run directory's record of every event.

The writer is a sink like any other. The reader is tolerant: a corrupt or partial line (the
trainer may be mid-write, or the disk filled) is skipped with a warning, never fatal.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterator

from .events import SCHEMA_NAME, SCHEMA_VERSION, Event, from_dict, header_line

METRICS_FILE = "metrics.jsonl"


class MetricsLogSink:
    """Writes each event as one JSON line, flushed at once so `watch` sees it immediately."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        new = not self.path.exists() or self.path.stat().st_size == 0
        torn = not new and not _ends_with_newline(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")
        if new:
            self._write(header_line())
        elif torn:
            # A writer killed mid-line (kill -9, full disk) left a partial last line: end it, so
            # it stays one skipped line instead of swallowing this run's first event.
            self._fh.write("\n")
            self._fh.flush()

    def _write(self, obj: dict) -> None:
        self._fh.write(json.dumps(obj, allow_nan=False) + "\n")
        self._fh.flush()

    def emit(self, event: Event) -> None:
        self._write(event.to_dict())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def parse_line(line: str) -> Event | None:
    """One line -> event; None for the schema header. Raises ValueError on a corrupt line."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("schema") == SCHEMA_NAME:
        if int(data.get("version", 0)) > SCHEMA_VERSION:
            raise ValueError(f"metrics schema version {data['version']} is newer than this molpt-tui understands")
        return None
    return from_dict(data)


def read_events(path: str | os.PathLike, warn: Callable[[str], None] | None = None) -> Iterator[Event]:
    """All complete, valid events of a metrics log, skipping bad lines with a warning."""
    path = Path(path)
    warn = warn or (lambda msg: warnings.warn(msg, stacklevel=2))
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            complete = line.endswith("\n")
            try:
                event = parse_line(line)
            except (ValueError, TypeError, KeyError) as exc:
                if complete:
                    warn(f"{path}:{lineno}: skipped a corrupt line ({exc})")
                else:
                    warn(f"{path}:{lineno}: skipped a partial last line")
                continue
            if event is not None:
                yield event
