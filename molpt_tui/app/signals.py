"""Job signals for a command that must stop cleanly: Ctrl+C, scancel, a closed SSH session.

SIGINT/SIGTERM/SIGHUP ask the work to stop at its next safe point (the trainer finishes its
step and saves); a second SIGINT stops waiting. SIGUSR1 (SLURM's `--signal=USR1@90`) asks for
a checkpoint while training goes on.
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class JobSignals:
    def __init__(self, on_stop: Callable[[str], None], on_checkpoint: Callable[[], None] | None = None) -> None:
        self.on_stop = on_stop
        self.on_checkpoint = on_checkpoint
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> JobSignals:
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._stop)
        if self.on_checkpoint is not None and hasattr(signal, "SIGUSR1"):
            self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._checkpoint)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None and name == "SIGINT":
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the step
        self.received = self.received or name
        self.on_stop(name)

    def _checkpoint(self, signum: int, frame: FrameType | None) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint()
