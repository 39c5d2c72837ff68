"""The one map from how a run ended to the process's exit code (headless, TUI and child alike)."""
from __future__ import annotations

from .events import RunStatus

# 128 + signal number, the shell's convention, so job scripts can tell a preemption apart.
SIGNAL_EXIT_CODES: dict[str, int] = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}

STATUS_EXIT_CODES: dict[RunStatus, int] = {
    "completed": 0,
    "failed": 1,
    "stopped": 130,     # by the user (key, `control stop`, Ctrl+C)
    "diverged": 3,
    "ui-crashed": 4,
}


def exit_code(status: RunStatus, signal_name: str | None = None) -> int:
    """A stop caused by a job signal exits 128 + n; every other outcome by its status."""
    if status == "stopped" and signal_name in SIGNAL_EXIT_CODES:
        return SIGNAL_EXIT_CODES[signal_name]
    return STATUS_EXIT_CODES[status]
