"""The two background feeds: the trainer-side sink and the metrics.jsonl watcher."""
from __future__ import annotations

import json
import os
import threading
import time

from molpt_tui.training.events import Message
from molpt_tui.tui.messages import EventBatch, WatchFileStatus, WatchReset
from molpt_tui.tui.sink import TuiSink
from molpt_tui.tui.watcher import MetricsWatcher
from tui_fakes import jsonl, train_stream


class Collector:
    def __init__(self) -> None:
        self.messages: list = []
        self.lock = threading.Lock()

    def __call__(self, message) -> None:
        with self.lock:
            self.messages.append(message)

    def events(self) -> list:
        return [e for m in self.messages if isinstance(m, EventBatch) for e in m.events]


def test_sink_batches_in_order_and_flushes_on_close():
    post = Collector()
    sink = TuiSink(post, interval=60.0, max_batch=50)  # the timer never fires in this test
    events = [Message(text=str(i)) for i in range(120)]
    for event in events:
        sink.emit(event)
    assert [len(m.events) for m in post.messages] == [50, 50]  # full batches go at once
    sink.close()
    assert [len(m.events) for m in post.messages] == [50, 50, 20]
    assert post.events() == events


def test_sink_flushes_a_lone_event_within_its_interval():
    post = Collector()
    sink = TuiSink(post, interval=0.02)
    sink.emit(Message(text="one"))
    deadline = time.monotonic() + 5
    while not post.messages and time.monotonic() < deadline:
        time.sleep(0.01)
    sink.close()
    assert len(post.messages) == 1 and post.messages[0].events[0].text == "one"


def test_watcher_parses_complete_lines_and_keeps_a_partial_one(tmp_path):
    text = jsonl(train_stream(10))
    lines = text.splitlines(keepends=True)
    path = tmp_path / "metrics.jsonl"
    cut = len(lines[-1]) // 2
    path.write_text("".join(lines[:-1]) + lines[-1][:cut])
    post = Collector()
    watcher = MetricsWatcher(tmp_path, post)
    watcher.poll_once()
    first = post.events()
    assert len(first) == len(lines) - 2  # header and partial line excluded
    assert watcher.pending_bytes == len(lines[-1][:cut].encode())
    assert post.messages[0].backlog is True
    with open(path, "a") as fh:
        fh.write(lines[-1][cut:])
    watcher.poll_once()
    assert len(post.events()) == len(lines) - 1
    assert post.events()[-1].to_dict() == json.loads(lines[-1])
    assert [m.backlog for m in post.messages if isinstance(m, EventBatch)][-1] is False
    assert isinstance(post.messages[-1], WatchFileStatus) and post.messages[-1].exists
    watcher.close()


def test_watcher_reports_corrupt_lines_missing_file_and_truncation(tmp_path):
    post = Collector()
    watcher = MetricsWatcher(tmp_path, post)
    watcher.poll_once()
    assert post.messages == [WatchFileStatus(exists=False)]
    path = tmp_path / "metrics.jsonl"
    good = jsonl(train_stream(2))
    path.write_text(good + "{not json\n")
    watcher.poll_once()
    warnings = [e for e in post.events() if isinstance(e, Message) and e.level == "warning"]
    assert len(warnings) == 1 and "corrupt line" in warnings[0].text
    path.write_text(good[:40])  # shorter than what was read: truncated / replaced
    watcher.poll_once()
    assert any(isinstance(m, WatchReset) for m in post.messages)
    watcher.close()


def test_watcher_thread_follows_and_stops(tmp_path):
    post = Collector()
    path = tmp_path / "metrics.jsonl"
    path.write_text(jsonl(train_stream(3)))
    watcher = MetricsWatcher(tmp_path, post, poll_interval=0.01)
    watcher.start()
    with open(path, "a") as fh:
        fh.write(json.dumps(Message(text="later").to_dict()) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with post.lock:
            if any(getattr(e, "text", "") == "later" for e in post.events()):
                break
        time.sleep(0.01)
    watcher.close()
    assert any(getattr(e, "text", "") == "later" for e in post.events())
    assert not watcher._thread.is_alive()
