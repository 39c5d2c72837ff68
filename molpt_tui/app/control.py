"""`molpt-tui control RUN_DIR ACTION`: steer a running trainer from a script.

Writes one request into the run's control channel and waits for the trainer's acknowledgement
in metrics.jsonl: exit 0 when acknowledged within the timeout, 1 when not, 2 on bad input.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import UserError
from ..training.control import send_request
from ..training.events import CONTROL_ACTIONS, ControlAction, RequestAcknowledged
from ..training.run_dir import RunDirectory
from ..training.tailer import MetricsTailer


def control(run_dir: Path, action: str, *, timeout: float = 60.0, poll: float = 0.2) -> int:
    if action not in CONTROL_ACTIONS:
        raise UserError(f"control: unknown action {action!r} (one of {', '.join(CONTROL_ACTIONS)})")
    if not timeout > 0:
        raise UserError(f"--timeout {timeout}: must be a positive number of seconds")
    rd = RunDirectory(run_dir)
    if not rd.path.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    rd.check_entries()
    owner = rd.live_trainer()
    if owner is None:
        raise UserError(f"{run_dir}: no live trainer holds this run's lock (the run has ended or not started); "
                        f"nothing to {action}")
    act: ControlAction = action  # type: ignore[assignment]  # checked against CONTROL_ACTIONS above
    tailer = MetricsTailer(rd.metrics)
    tailer.poll()  # skip the history: only an acknowledgement after this request counts
    request = send_request(rd, act)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for event in tailer.poll().events:
                if isinstance(event, RequestAcknowledged) and event.request_id == request.request_id:
                    detail = f": {event.detail}" if event.detail else ""
                    print(f"{action} acknowledged by the trainer at epoch {event.epoch}{detail}")
                    return 0
            if rd.live_trainer() is None:
                print(f"molpt-tui: the trainer ended before acknowledging {action}", file=sys.stderr)
                return 1
            time.sleep(poll)
    finally:
        tailer.close()
    print(f"molpt-tui: no acknowledgement of {action} within {timeout:g} s (the trainer is busy with a long "
          f"step, paused in a way that cannot read requests, or stuck); the request stays queued", file=sys.stderr)
    return 1
