"""The TUI's trainer process: events arrive in order, requests reach it, stop saves."""
from __future__ import annotations

import threading

from molpt_tui.training.checkpoint import load_checkpoint
from molpt_tui.training.child import run_in_child
from molpt_tui.training.control import TrainingControl
from molpt_tui.training.events import EpochMetrics, Finished, RunStarted
from molpt_tui.training.runner import _write_config


class Collect:
    def __init__(self):
        self.events = []
        self.first_epoch = threading.Event()

    def emit(self, event):
        self.events.append(event)
        if isinstance(event, EpochMetrics) and event.epoch >= 1:
            self.first_epoch.set()


def test_child_relays_events_and_honours_stop(tiny_config, tmp_path):
    cfg = tiny_config("training.epochs=500", "training.checkpoint_every=1000")
    _write_config(cfg, tmp_path)
    sink, control = Collect(), TrainingControl()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("status", run_in_child(tmp_path, False, sink, control)))
    thread.start()
    assert sink.first_epoch.wait(180)
    control.request_checkpoint()
    control.request_stop("test")
    thread.join(180)
    assert result["status"] == "stopped"
    kinds = [type(e) for e in sink.events]
    assert kinds[0] is RunStarted and kinds[-1] is Finished
    assert sink.events[-1].status == "stopped"
    saved = load_checkpoint(tmp_path / "last.pt")["epoch"]
    assert 1 <= saved < 500
    assert (tmp_path / "metrics.jsonl").is_file() and (tmp_path / "train.log").is_file()
