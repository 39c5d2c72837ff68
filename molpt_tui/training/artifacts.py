"""What the trainer is handed to leave results behind: it names no file and draws no figure.

The application layer implements this with the run directory (its file names) and the report
layer's plotting; tests implement it in a few lines. Keeping it a Protocol keeps `training`
below `report` in the layers.

`BackgroundWriter` runs such writes off the training thread: a figure costs about as much as
a held-out evaluation of a small split (matplotlib's text layout, not the data), and on a GPU far
more than one, so drawing it inline would stall the steps that follow.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from .evaluation import MappedSamples
from .history import History

ArtifactLabel = Literal["last", "best", "final"]


class RunArtifacts(Protocol):
    @property
    def location(self) -> str:
        """Where the results go (the run directory), as RunStarted reports it."""
        ...

    def save_checkpoint(self, label: ArtifactLabel, payload: dict[str, Any]) -> Path:
        """Write `payload` (see `checkpoint.make_payload`) as the `label` checkpoint, atomically;
        returns its path. "final" is the model file a completed run leaves."""
        ...

    def write_png(self, history: History, status: str) -> Path | None:
        """Draw the loss curves of `history`; `status` is "running" for a mid-run request, else
        how the run ended. May raise: the trainer reports a failure and carries on."""
        ...

    def write_validation(self, samples: MappedSamples) -> Path | None:
        """Draw the validation figure of held-out pairs and their images (Ramachandran maps where
        `samples.backbone` is a peptide's, beta*U histograms), atomically; None when this run
        writes none. Called from the trainer's writer thread, never twice at once. May raise:
        the trainer reports a failure and carries on."""
        ...


Outcome = Path | None | Exception


class BackgroundWriter:
    """Runs one write at a time in a daemon thread. A write submitted while another runs
    replaces any still waiting: it would overwrite the same file a moment later anyway.

    Outcomes (the path written, None, or the exception raised) are collected by the owner's
    thread with `take()`, so events about them are emitted where every other event is.
    """

    def __init__(self, name: str = "molpt-artifacts") -> None:
        self._name = name
        self._cond = threading.Condition()
        self._pending: Callable[[], Path | None] | None = None
        self._busy = False
        self._closed = False
        self._done: list[Outcome] = []
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], Path | None]) -> None:
        with self._cond:
            if self._closed:
                return
            self._pending = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                job, self._pending = self._pending, None
                self._busy = True
            outcome: Outcome
            try:
                outcome = job()
            except Exception as exc:  # reported by the owner; the thread lives on
                outcome = exc
            with self._cond:
                self._done.append(outcome)
                self._busy = False
                self._cond.notify_all()

    def take(self) -> list[Outcome]:
        """The outcomes of the writes finished since the last call."""
        with self._cond:
            done, self._done = self._done, []
        return done

    def wait(self, timeout: float) -> bool:
        """Block until nothing runs or waits (False if `timeout` seconds pass first)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        """Let the thread end once idle; later submissions are dropped."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
