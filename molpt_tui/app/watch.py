"""`molpt-tui watch RUN_DIR`: the live monitor attached to a run started elsewhere.

The directory may not exist yet (a SLURM job still pending): the monitor waits for it. Keys
steer the run through its control channel when a live trainer holds the lock, unless
`--read-only`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from ..training.run_dir import RunDirectory


def watch(run_dir: Path, *, read_only: bool = False, no_mouse: bool = False) -> int:
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory (give the run directory of a `molpt-tui train` run)")
    rd = RunDirectory(run_dir)
    if rd.path.is_dir():
        rd.check_entries()
    if not sys.stdout.isatty():
        raise UserError("watch needs a terminal (stdout is not a TTY); use `molpt-tui plot RUN_DIR` for a PNG "
                        "or `molpt-tui control RUN_DIR ...` to steer from a script")
    from ..tui.app import run_monitor
    from ..tui.source import WatchedRun

    return run_monitor(WatchedRun(rd, read_only=read_only), no_mouse=no_mouse)
