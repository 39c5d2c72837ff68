"""The one map from how a run ended to the process's exit code (headless, TUI and child alike)."""
from __future__ import annotations

from .events import RunStatus

# 128 + signal number, the shell's convention, so job scripts can tell a preemption apart.
SIGNAL_EXIT_CODES: dict[str, int] = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}
# Stopped on SLURM's warning signal (SIGUSR1 under SLURM) after writing last.pt: requeue the job
# and it resumes. 75 is EX_TEMPFAIL of sysexits.h, "try again later".
REQUEUE_EXIT_CODE = 75

STATUS_EXIT_CODES: dict[RunStatus, int] = {
    "completed": 0,
    "failed": 1,
    "stopped": 130,     # by the user (key, `control stop`, Ctrl+C)
    "diverged": 3,
    "ui-crashed": 4,
}


def signal_exit_code(signal_name: str) -> int:
    """What a stop by `signal_name` exits with (SIGUSR1 stops only under SLURM: requeue)."""
    if signal_name == "SIGUSR1":
        return REQUEUE_EXIT_CODE
    return SIGNAL_EXIT_CODES.get(signal_name, STATUS_EXIT_CODES["stopped"])


def exit_code(status: RunStatus, signal_name: str | None = None) -> int:
    """A stop caused by a job signal exits 128 + n (75 for SLURM's SIGUSR1); every other
    outcome by its status."""
    if status == "stopped" and signal_name is not None:
        return signal_exit_code(signal_name)
    return STATUS_EXIT_CODES[status]
