"""Run the trainer in a child process and relay its events and the user's requests.

Under the TUI the trainer used to share the interpreter with Textual, and on a 2-core machine
the UI's Python rendering took the GIL from the trainer's many small torch calls: quickstart
ran at 0.63x of its headless speed. In its own process the trainer only shares cores, not the
GIL. Events cross a pipe as their JSON dicts (the same form as metrics.jsonl); requests (pause,
resume, stop, checkpoint, png) go the other way and drive a TrainingControl in the child.
"""
from __future__ import annotations

import multiprocessing as mp
import sys
import threading
import traceback
from pathlib import Path

from .control import TrainingControl
from .events import Event, Sink, from_dict

CHILD_LOG = "train.log"


class _PipeSink(Sink):
    def __init__(self, conn):
        self.conn = conn
        self.lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self.lock:
            self.conn.send(("event", event.to_dict()))


def _listen(conn, control: TrainingControl) -> None:
    actions = {"pause": control.pause, "resume": control.resume, "checkpoint": control.request_checkpoint,
               "png": control.request_png}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            control.request_stop("monitor gone")  # the UI died: save and stop, do not run on unseen
            return
        if msg == "stop":
            control.request_stop("stop requested")
        elif msg in actions:
            actions[msg]()


def _child_main(conn, run_dir: str, resume: bool) -> None:
    from ..physics.openmm_bridge import ignore_job_signals
    from .metrics_log import METRICS_FILE, MetricsLogSink
    from .runner import load_run_config
    from .trainer import Trainer

    # The parent owns the terminal and decides when to stop; it relays signals as requests.
    ignore_job_signals()
    log_path = Path(run_dir) / CHILD_LOG
    # Anything printed here (library warnings) would scribble over the TUI: it goes to the run's log.
    sys.stdout = sys.stderr = open(log_path, "a", buffering=1, encoding="utf-8")
    control = TrainingControl()
    threading.Thread(target=_listen, args=(conn, control), daemon=True).start()
    metrics = MetricsLogSink(Path(run_dir) / METRICS_FILE)
    try:
        cfg = load_run_config(Path(run_dir), [])
        finished = Trainer(cfg, Path(run_dir), [_PipeSink(conn), metrics], control, resume=resume).run()
        conn.send(("done", finished.status))
    except BaseException as exc:  # report everything: the parent shows it in the UI
        traceback.print_exc()
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        except OSError:
            pass
    finally:
        metrics.close()


def prepare() -> None:
    """Call before a Textual app takes over stdout/stderr: multiprocessing's resource tracker
    hands the child sys.stderr's file descriptor, which Textual's capture object does not have."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def run_in_child(run_dir: Path, resume: bool, sink: Sink, control: TrainingControl, poll: float = 0.1):
    """Blocking: start the child, forward its events to `sink` and `control`'s requests to it.
    Returns the final status; raises RuntimeError if the child failed or died. Call `prepare()`
    first when running under a Textual app."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child_main, args=(child, str(run_dir), resume), daemon=False)
    proc.start()
    child.close()
    sent_stop, sent_paused = False, False
    try:
        while True:
            if control.stop_requested and not sent_stop:
                parent.send("stop")
                sent_stop = True
            if control.paused != sent_paused:
                parent.send("pause" if control.paused else "resume")
                sent_paused = control.paused
            if control.take_checkpoint_request():
                parent.send("checkpoint")
            if control.take_png_request():
                parent.send("png")
            if not parent.poll(poll):
                if not proc.is_alive() and not parent.poll(0):
                    raise RuntimeError(f"the trainer process died (exit code {proc.exitcode}); "
                                       f"see {Path(run_dir) / CHILD_LOG}")
                continue
            try:
                msg = parent.recv()
            except EOFError:
                proc.join(timeout=5)
                raise RuntimeError(f"the trainer process died (exit code {proc.exitcode}); "
                                   f"see {Path(run_dir) / CHILD_LOG}") from None
            if msg[0] == "event":
                sink.emit(from_dict(msg[1]))
            elif msg[0] == "done":
                return msg[1]
            elif msg[0] == "error":
                raise RuntimeError(msg[1])
    finally:
        try:
            if proc.is_alive() and not sent_stop:
                parent.send("stop")
        except OSError:
            pass
        proc.join(timeout=120)  # finishing a step and writing checkpoints can take a while
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        parent.close()
