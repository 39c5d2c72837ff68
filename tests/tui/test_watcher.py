"""The follower: the training layer's tailer thread, seen as the messages the app receives."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from textual.message import Message
from tui_fakes import jsonl, train_stream

from molpt_tui.training.events import Event
from molpt_tui.tui.messages import EventBatch, FeedSynced, TailerFailed, WatchFileStatus, WatchReset
from molpt_tui.tui.watcher import MetricsFollower


class Collector:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        with self.lock:
            self.messages.append(message)

    def snapshot(self) -> list[Message]:
        with self.lock:
            return list(self.messages)

    def events(self) -> list[Event]:
        return [e for m in self.snapshot() if isinstance(m, EventBatch) for e in m.events]

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {self.snapshot()!r:.2000}")
            time.sleep(0.01)


def follow(path: Path, post: Collector) -> MetricsFollower:
    follower = MetricsFollower(path, post, poll_interval=0.01)
    follower.start()
    return follower


def test_the_backlog_arrives_marked_and_a_partial_line_waits_for_its_end(tmp_path: Path) -> None:
    lines = jsonl(train_stream(10)).splitlines(keepends=True)
    path = tmp_path / "metrics.jsonl"
    cut = len(lines[-1]) // 2
    path.write_text("".join(lines[:-1]) + lines[-1][:cut])
    post = Collector()
    follower = follow(path, post)
    try:
        post.wait_for(lambda: len(post.events()) == len(lines) - 2, "the complete lines")  # not header, partial
        post.wait_for(lambda: any(isinstance(m, WatchFileStatus) for m in post.snapshot()), "file status")
        batches = [m for m in post.snapshot() if isinstance(m, EventBatch)]
        assert all(b.backlog for b in batches)
        assert follower.pending_bytes == len(lines[-1][:cut].encode())
        with open(path, "a") as fh:
            fh.write(lines[-1][cut:])
        post.wait_for(lambda: len(post.events()) == len(lines) - 1, "the completed line")
        assert post.events()[-1].to_dict() == json.loads(lines[-1])
        last_batch = [m for m in post.snapshot() if isinstance(m, EventBatch)][-1]
        assert last_batch.backlog is False
        status = [m for m in post.snapshot() if isinstance(m, WatchFileStatus)][-1]
        assert status.exists and status.last_write == path.stat().st_mtime
    finally:
        follower.close()


def test_missing_file_corrupt_lines_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "not-yet" / "metrics.jsonl"  # not even the directory exists
    post = Collector()
    follower = follow(path, post)
    try:
        post.wait_for(lambda: WatchFileStatus(exists=False) in post.snapshot(), "missing file")
        path.parent.mkdir()
        good = jsonl(train_stream(2))
        path.write_text(good + "{not json\n")
        post.wait_for(lambda: any(isinstance(m, EventBatch) and m.warnings for m in post.snapshot()), "warning")
        (warning,) = [w for m in post.snapshot() if isinstance(m, EventBatch) for w in m.warnings]
        assert "corrupt line" in warning and "metrics.jsonl:" in warning
        n_before = len(post.events())
        path.write_text(good[:40])  # shorter than what was read: truncated / replaced
        post.wait_for(lambda: any(isinstance(m, WatchReset) for m in post.snapshot()), "reset")
        path.write_text(good)
        post.wait_for(lambda: len(post.events()) >= 2 * n_before, "the file read again")
        messages = post.snapshot()
        reset_at = next(i for i, m in enumerate(messages) if isinstance(m, WatchReset))
        # Every event of the new file comes after the reset, so the app never mixes the two.
        assert len([e for m in messages[reset_at:] if isinstance(m, EventBatch) for e in m.events]) == n_before
    finally:
        follower.close()


def test_a_sync_comes_back_after_everything_written_before_it(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(jsonl(train_stream(3)))
    post = Collector()
    follower = follow(path, post)
    try:
        post.wait_for(lambda: post.events(), "backlog")
        with open(path, "a") as fh:
            fh.write(jsonl(train_stream(2)).split("\n", 1)[1])  # more events, no header
        token = follower.request_sync()
        post.wait_for(lambda: FeedSynced(token) in post.snapshot(), "sync")
        messages = post.snapshot()
        synced_at = messages.index(FeedSynced(token))
        events_before = [e for m in messages[:synced_at] if isinstance(m, EventBatch) for e in m.events]
        assert len(events_before) == len(train_stream(3)) + len(train_stream(2))
        # A quiet file still answers: the sync does not wait for a change.
        again = follower.request_sync()
        post.wait_for(lambda: FeedSynced(again) in post.snapshot(), "second sync")
    finally:
        follower.close()


def test_a_failing_read_is_reported_and_its_recovery_too(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.mkdir()  # open() fails on every poll
    post = Collector()
    follower = follow(path, post)
    try:
        post.wait_for(lambda: any(isinstance(m, TailerFailed) for m in post.snapshot()), "failure")
        failure = next(m for m in post.snapshot() if isinstance(m, TailerFailed))
        assert "IsADirectoryError" in failure.error and str(path) in failure.error
        assert "Traceback" in failure.traceback
        token = follower.request_sync()  # kept across failed polls, answered once reading works
        path.rmdir()
        # A poll may fall between these two lines and find no file at all (a successful read,
        # which answers the sync): wait for the file's own status, not for the first answer.
        path.write_text(jsonl(train_stream(1)))

        def recovered() -> bool:
            messages = post.snapshot()
            last_failure = max(i for i, m in enumerate(messages) if isinstance(m, TailerFailed))
            return any(isinstance(m, WatchFileStatus) and m.exists for m in messages[last_failure:])

        post.wait_for(recovered, "the file's status after recovery")
        post.wait_for(lambda: FeedSynced(token) in post.snapshot(), "sync after recovery")
        post.wait_for(lambda: bool(post.events()), "events after recovery")
    finally:
        follower.close()


def test_close_stops_the_thread(tmp_path: Path) -> None:
    post = Collector()
    follower = follow(tmp_path / "metrics.jsonl", post)
    follower.close()
    count = len(post.snapshot())
    (tmp_path / "metrics.jsonl").write_text(jsonl(train_stream(1)))
    time.sleep(0.1)
    assert len(post.snapshot()) == count
    thread = follower._thread._thread
    assert thread is not None and not thread.is_alive()
