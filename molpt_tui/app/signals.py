"""Job signals for a command that must stop cleanly: Ctrl+C, scancel, a closed SSH session.

SIGINT/SIGTERM/SIGHUP ask the work to stop at its next safe point (the trainer finishes its
step and saves); a second SIGINT stops waiting. SIGUSR1 asks for a checkpoint while training
goes on, except under SLURM (`requeue_on_usr1`), where it is the warning of `--signal=USR1@90`
(the Lightning and submitit convention): checkpoint and stop, so that the job can be requeued.

SIGUSR1's default action ends the process. Under SLURM the app holds it (`hold_signal`) from
the start, so a warning that arrives during setup is acted on as soon as training starts.
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

# Signals held by `hold_signal` that arrived before a JobSignals took over, in order.
_HELD: list[str] = []


def hold_signal(name: str) -> None:
    """Until a `JobSignals` is entered, record signal `name` instead of dying of it."""
    sig = getattr(signal, name, None)
    if sig is not None:
        signal.signal(sig, lambda signum, frame: _HELD.append(signal.Signals(signum).name))


class JobSignals:
    def __init__(self, on_stop: Callable[[str], None], on_checkpoint: Callable[[], None] | None = None, *,
                 requeue_on_usr1: bool = False) -> None:
        self.on_stop = on_stop
        self.on_checkpoint = on_checkpoint
        self.requeue_on_usr1 = requeue_on_usr1
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> JobSignals:
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._stop)
        if hasattr(signal, "SIGUSR1") and (self.requeue_on_usr1 or self.on_checkpoint is not None):
            handler = self._stop if self.requeue_on_usr1 else self._checkpoint
            self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, handler)
        held, _HELD[:] = list(_HELD), []
        for name in held:
            if name == "SIGUSR1" and not self.requeue_on_usr1:
                self._checkpoint(signal.SIGUSR1, None)
            else:
                self._stop(signal.Signals[name], None)
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
