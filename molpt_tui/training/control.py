"""Requests to a running trainer: from signal handlers and keys in-process, and from any viewer
through the run directory's control channel.

The channel is a folder of request files (`RUN/control/req-*.json`), each written atomically
(temporary name, then rename), so it works between a login node and a compute node that share
only a file system. The trainer polls it between steps, deletes what it read, applies it, and
acknowledges every request with a `RequestAcknowledged` event in metrics.jsonl, so every viewer
sees the answer. Nothing here blocks a UI thread; pausing blocks only the trainer, inside
`wait_if_paused`, and a stop always reaches a paused trainer.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..fileio import atomic_write_text
from .events import CONTROL_ACTIONS, ControlAction, Event, RequestAcknowledged
from .run_dir import RunDirectory

REQUEST_PREFIX = "req-"
REQUEST_SUFFIX = ".json"


@dataclass(frozen=True)
class ControlRequest:
    action: ControlAction
    request_id: str = ""   # "" for in-process requests (keys of the live app, signals)


def send_request(run_dir: RunDirectory, action: ControlAction) -> ControlRequest:
    """Write one request into the run's control channel; returns it (with its id) at once."""
    if action not in CONTROL_ACTIONS:
        raise ValueError(f"unknown control action {action!r}")
    request_id = uuid.uuid4().hex[:12]
    body = {"id": request_id, "action": action, "sent_at": time.time(),
            "sender": f"{socket.gethostname()}:{os.getpid()}"}
    # The name sorts by time, so requests are applied in the order they were sent.
    name = f"{REQUEST_PREFIX}{time.time_ns():020d}-{request_id}{REQUEST_SUFFIX}"
    run_dir.control_dir.mkdir(exist_ok=True)
    atomic_write_text(run_dir.control_dir / name, json.dumps(body) + "\n")
    return ControlRequest(action=action, request_id=request_id)


def read_requests(run_dir: RunDirectory) -> list[ControlRequest]:
    """Take every complete request out of the channel (oldest first); junk files are removed."""
    folder = run_dir.control_dir
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith(REQUEST_PREFIX) and n.endswith(REQUEST_SUFFIX))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError:  # a shared file system hiccup: try again at the next poll
        return []
    out = []
    for name in names:
        path = folder / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            data = None
        try:
            path.unlink()
        except FileNotFoundError:
            continue  # another poller took it
        except OSError:
            pass
        if isinstance(data, dict) and data.get("action") in CONTROL_ACTIONS and isinstance(data.get("id"), str):
            out.append(ControlRequest(action=data["action"], request_id=data["id"]))
    return out


class TrainingControl:
    """Thread-safe requests to one trainer. With `run_dir`, `poll()` also reads its channel."""

    def __init__(self, run_dir: RunDirectory | None = None) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running = threading.Event()   # set = not paused
        self._running.set()
        self._checkpoint: list[ControlRequest] = []
        self._png: list[ControlRequest] = []
        self._acks: list[ControlRequest] = []
        self._acks_done: list[tuple[ControlRequest, str]] = []
        self.stop_reason = ""
        self.epoch = 0  # set by the trainer: the last completed epoch, for acknowledgements
        self.run_dir = run_dir

    # --- requests (any thread) -------------------------------------------------
    def request_stop(self, reason: str = "stop requested", request_id: str = "") -> None:
        with self._lock:
            if not self._stop.is_set():
                self.stop_reason = reason
            self._acks.append(ControlRequest("stop", request_id))
        self._stop.set()
        self._running.set()  # wake a paused trainer so it can stop

    def pause(self, request_id: str = "") -> None:
        with self._lock:
            if not self._stop.is_set():
                self._running.clear()
            self._acks.append(ControlRequest("pause", request_id))

    def resume(self, request_id: str = "") -> None:
        with self._lock:
            self._running.set()
            self._acks.append(ControlRequest("resume", request_id))

    def request_checkpoint(self, request_id: str = "") -> None:
        with self._lock:
            self._checkpoint.append(ControlRequest("checkpoint", request_id))

    def request_png(self, request_id: str = "") -> None:
        with self._lock:
            self._png.append(ControlRequest("png", request_id))

    def apply(self, request: ControlRequest) -> None:
        if request.action == "stop":
            self.request_stop("stop requested through the control channel", request.request_id)
        elif request.action == "pause":
            self.pause(request.request_id)
        elif request.action == "resume":
            self.resume(request.request_id)
        elif request.action == "checkpoint":
            self.request_checkpoint(request.request_id)
        elif request.action == "png":
            self.request_png(request.request_id)

    # --- state -----------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    # --- trainer side ----------------------------------------------------------
    def poll(self) -> None:
        """Apply what arrived through the run directory's channel (cheap: one listdir)."""
        if self.run_dir is None:
            return
        self.run_dir.heartbeat()
        for request in read_requests(self.run_dir):
            self.apply(request)

    def wait_if_paused(self, service: Callable[[], None] | None = None, poll: float = 0.2) -> None:
        """Block while paused, calling `service` (which polls and handles requests) about every
        `poll` seconds; returns at once when running or when a stop is requested."""
        while not self._running.wait(poll):
            if self._stop.is_set():
                return
            if service is not None:
                service()
            else:
                self.poll()

    def take_checkpoint_request(self) -> ControlRequest | None:
        """One pending checkpoint request (several pending are answered by one checkpoint)."""
        return self._take(self._checkpoint, "answered by the same checkpoint")

    def take_png_request(self) -> ControlRequest | None:
        return self._take(self._png, "answered by the same PNG")

    def _take(self, queue: list[ControlRequest], extra_detail: str) -> ControlRequest | None:
        with self._lock:
            pending = list(queue)
            queue.clear()
        for extra in pending[1:]:
            self.acknowledge(extra, extra_detail)
        return pending[0] if pending else None

    def acknowledge(self, request: ControlRequest, detail: str) -> None:
        with self._lock:
            self._acks_done.append((request, detail))

    def take_acknowledgements(self) -> list[Event]:
        """Events for every request applied since the last call, in order."""
        with self._lock:
            state, self._acks = self._acks, []
            done, self._acks_done = self._acks_done, []
        events: list[Event] = []
        for request in state:
            detail = {"pause": "paused before the next step", "resume": "running",
                      "stop": self.stop_reason or "stopping"}.get(request.action, "")
            events.append(RequestAcknowledged(request_id=request.request_id, action=request.action,
                                              epoch=self.epoch, detail=detail))
        for request, detail in done:
            events.append(RequestAcknowledged(request_id=request.request_id, action=request.action,
                                              epoch=self.epoch, detail=detail))
        return events


def request_path_names(folder: Path) -> list[str]:
    """Pending request files (for `control` to tell a dead trainer from a busy one)."""
    try:
        return sorted(n for n in os.listdir(folder) if n.startswith(REQUEST_PREFIX))
    except OSError:
        return []
