"""`molpt-tui watch RUN_DIR [RUN_DIR …]`: the live monitor attached to runs started elsewhere.

A directory may not exist yet (a SLURM job still pending): the monitor waits for it. With one
run, keys steer it through its control channel when a live trainer holds the lock, unless
`--read-only`. With several, the monitor compares them side by side and steers none. One pt
directory (`molpt-tui pt`) gets the pt monitor instead of the training one.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from ..training.events import PTStarted
from ..training.metrics_log import CorruptLine, decode_line
from ..training.pt_dir import PTDirectory
from ..training.run_dir import RunDirectory

MAX_COMPARED = 8
# Lines of metrics.jsonl read to find the first event (the schema header comes first).
FIRST_EVENT_LINES = 5


def is_pt_directory(path: Path) -> bool:
    """A pt directory has its settings file from before the first event; an older or copied one
    without it is told by its first event. A directory that does not exist yet is not one: the
    training monitor waits for it, as it waits for any pending job."""
    pt_dir = PTDirectory(path)
    if pt_dir.settings.is_file():
        return True
    try:
        with open(pt_dir.metrics, "rb") as fh:
            for _, raw in zip(range(FIRST_EVENT_LINES), fh):
                try:
                    event = decode_line(raw)
                except CorruptLine:
                    return False
                if event is not None:
                    return isinstance(event, PTStarted)
    except OSError:
        return False
    return False


def watch(run_dirs: Sequence[Path] | Path, *, read_only: bool = False, no_mouse: bool = False,
          ascii_only: bool = False) -> int:
    paths = [run_dirs] if isinstance(run_dirs, Path) else list(run_dirs)
    if not paths:
        raise UserError("watch needs a run directory")
    if len(paths) > MAX_COMPARED:
        raise UserError(f"watch compares at most {MAX_COMPARED} runs at once ({len(paths)} given)")
    seen: set[Path] = set()
    dirs = []
    for path in paths:
        if path.exists() and not path.is_dir():
            raise UserError(f"{path}: not a directory (give the run directory of a `molpt-tui train` run)")
        key = path.resolve()
        if key in seen:
            raise UserError(f"{path}: given twice")
        seen.add(key)
        rd = RunDirectory(path)
        if rd.path.is_dir():
            rd.check_entries()
        dirs.append(rd)
    if not sys.stdout.isatty():
        raise UserError("watch needs a terminal (stdout is not a TTY); use `molpt-tui plot RUN_DIR` for a PNG "
                        "or `molpt-tui control RUN_DIR ...` to steer from a script")
    from ..tui.source import WatchedRun

    if len(dirs) == 1 and is_pt_directory(dirs[0].path):
        from ..tui.pt_monitor import run_pt_monitor
        from ..tui.pt_source import WatchedPT

        return run_pt_monitor(WatchedPT(dirs[0], read_only=read_only), no_mouse=no_mouse, ascii_only=ascii_only)
    if len(dirs) == 1:
        from ..tui.app import run_monitor

        return run_monitor(WatchedRun(dirs[0], read_only=read_only), no_mouse=no_mouse, ascii_only=ascii_only)
    from ..tui.compare import run_compare

    return run_compare([WatchedRun(rd, read_only=True) for rd in dirs], no_mouse=no_mouse, ascii_only=ascii_only)
