"""Thread-safe requests from a UI (or a signal handler) to a running trainer.

The trainer polls this once per step; nothing here blocks the UI thread. Pausing blocks the
trainer inside `checkpoint()` until resumed or stopped, so a stop always reaches a paused
trainer and quitting never hangs.
"""
from __future__ import annotations

import threading


class TrainingControl:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()   # set = not paused
        self._running.set()
        self._checkpoint = threading.Event()
        self._png = threading.Event()
        self.stop_reason = ""

    # --- requests (any thread) -------------------------------------------------
    def request_stop(self, reason: str = "stop requested") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
        self._stop.set()
        self._running.set()  # wake a paused trainer so it can stop

    def pause(self) -> None:
        if not self._stop.is_set():
            self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def request_checkpoint(self) -> None:
        self._checkpoint.set()

    def request_png(self) -> None:
        self._png.set()

    # --- state -----------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    # --- trainer side ----------------------------------------------------------
    def wait_if_paused(self, poll: float = 0.1) -> None:
        """Block while paused; returns at once when running or when a stop is requested."""
        while not self._running.wait(poll):
            if self._stop.is_set():
                return

    def take_checkpoint_request(self) -> bool:
        if self._checkpoint.is_set():
            self._checkpoint.clear()
            return True
        return False

    def take_png_request(self) -> bool:
        if self._png.is_set():
            self._png.clear()
            return True
        return False
