"""Watch: attach to a run directory, follow metrics.jsonl, steer its trainer through the control
channel when a live trainer holds the lock, and never stop it by quitting."""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from tui_fakes import FIXTURE_DIR, T0, FakeTrainer, Wait, jsonl, screen_text, train_stream

from molpt_tui.training.run_dir import RunDirectory
from molpt_tui.tui.app import MonitorApp, save_screenshot
from molpt_tui.tui.screens import ConfirmStopScreen
from molpt_tui.tui.source import WatchedRun
from molpt_tui.tui.widgets import LogPane, MetricsTable

SIZE = (160, 48)


def watch_app(run_dir: Path, *, read_only: bool = False, **kwargs: Any) -> MonitorApp:
    kwargs.setdefault("poll_interval", 0.02)
    kwargs.setdefault("refresh_hz", 10.0)
    source = WatchedRun(RunDirectory(run_dir), read_only=read_only, lock_check_interval=0.05)
    return MonitorApp(source, **kwargs)


def start_trainer(fakes: list[Any], fake: FakeTrainer) -> threading.Thread:
    """A trainer started elsewhere: the watch has no handle on it, only its run directory."""
    thread = threading.Thread(target=fake.run, name="fake-trainer", daemon=True)
    thread.start()
    fakes.append(fake)
    assert fake.started.wait(10), "fake trainer did not start"
    return thread


def toasts(app: MonitorApp) -> list[str]:
    return [n.message for n in app._notifications]


def log_text(app: MonitorApp) -> str:
    return "\n".join(entry.text for entry in app.state.log)


async def test_watch_shows_a_finished_run_with_a_resume(wait: Wait, tmp_path: Path) -> None:
    app = watch_app(FIXTURE_DIR, clock=lambda: T0 + 1e6)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.finished is not None
                   and app.state.finished.status == "completed", what="fixture loaded")
        app.refresh_now()
        await pilot.pause()
        assert app.state.history.epochs == list(range(1, 201))  # the resume left no duplicate
        assert app.query_one(MetricsTable).row_count == 10  # the untrained map (epoch 0) and 9 blocks
        log = app.query_one(LogPane).text
        assert "resumed at epoch 60" in log and "finished (stopped) at epoch 62" in log
        text = screen_text(app)
        assert "FINISHED (completed)" in text and "Training completed at epoch 200/200" in text
        assert "training.png" in text and " WATCH " in text
        # Nobody holds the lock: the keys are greyed and say why when pressed.
        for action in ("toggle_pause", "checkpoint", "write_png", "stop"):
            assert app.check_action(action, ()) is None
        await pilot.press("p", "c", "g", "s")
        await wait(pilot, lambda: sum("no live trainer holds this run's lock" in t for t in toasts(app)) == 4,
                   what="four refusals")
        assert not isinstance(app.screen, ConfirmStopScreen)
        assert not (FIXTURE_DIR / "control").exists()  # nothing was written into the fixture
        assert app.is_running
        svg = save_screenshot(app, tmp_path / "shots" / "watch.svg").read_text()
        assert svg.lstrip().startswith("<svg") and "FINISHED" in svg
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert len(titles) == len(set(titles)) and "Toggle log y-axis" in titles
        # A backlog of alerts is summarised in one toast, not one per alert.
        assert len([t for t in toasts(app) if "history" in t]) == 1
        await pilot.press("q")
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    assert app.exit_code == 0


async def test_keys_in_a_watch_reach_the_trainer_through_the_channel(tmp_path: Path, wait: Wait,
                                                                    fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    start_trainer(fakes, fake)
    app = watch_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.source.can_steer() and app.state.run is not None, what="lock holder seen")
        await wait(pilot, lambda: app.check_action("toggle_pause", ()) is True, what="keys enabled")
        await pilot.press("p")
        await wait(pilot, lambda: app.state.paused, what="pause acknowledged")
        assert fake.control.paused
        app.refresh_now()
        assert "PAUSED" in screen_text(app)
        await pilot.press("c")
        await wait(pilot, lambda: "checkpoint written: " in log_text(app), what="checkpoint ack while paused")
        await pilot.press("g")
        await wait(pilot, lambda: "PNG written: " in log_text(app), what="png ack")
        assert fake.checkpoint_requests == 1 and fake.png_requests == 1
        await pilot.press("p")
        await wait(pilot, lambda: not app.state.paused, what="resume acknowledged")
        await pilot.press("s")
        await wait(pilot, lambda: isinstance(app.screen, ConfirmStopScreen), what="confirm stop")
        await pilot.press("y")
        await wait(pilot, lambda: app.state.finished is not None, what="trainer finished")
        assert fake.saw_stop and app.state.finished is not None and app.state.finished.status == "stopped"
        # The acknowledgement's toast is raised on the next redraw after the events were read.
        await wait(pilot, lambda: any("stopping after epoch" in t for t in toasts(app)), what="stop ack toast")
        await wait(pilot, lambda: not app.source.can_steer(), what="lock released")
        app.refresh_now()
        assert "FINISHED (stopped)" in screen_text(app)
        await pilot.press("q")
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    assert app.exit_code == 0


async def test_quitting_a_watch_leaves_the_trainer_running(tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    start_trainer(fakes, fake)
    app = watch_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch >= 3, what="epochs")
        await pilot.press("q")  # no question: the trainer is not this monitor's to stop
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    assert app.exit_code == 0
    assert not fake.control.stop_requested and not fake.returned.is_set()
    assert not list((tmp_path / "control").glob("req-*"))
    steps = fake.steps
    deadline = time.monotonic() + 10
    while fake.steps < steps + 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.steps >= steps + 3  # still training


async def test_a_read_only_watch_refuses_with_the_reason(tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    start_trainer(fakes, fake)
    app = watch_app(tmp_path, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch >= 2, what="epochs")
        assert app.check_action("toggle_pause", ()) is None
        await pilot.press("p")
        await wait(pilot, lambda: any("Cannot pause: read-only (--read-only)" in t for t in toasts(app)),
                   what="refusal")
        await pilot.press("s")
        await wait(pilot, lambda: any("Cannot stop the trainer: read-only" in t for t in toasts(app)),
                   what="stop refusal")
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        commands["Save checkpoint now"].callback()
        await wait(pilot, lambda: any("Cannot save a checkpoint: read-only" in t for t in toasts(app)),
                   what="refusal from the palette")
        assert not fake.control.paused and not fake.control.stop_requested
        assert not (tmp_path / "control").exists() or not list((tmp_path / "control").iterdir())
        assert "read-only" in " ".join(app.source.help_notes())


async def test_a_watch_without_a_lock_holder_refuses_with_the_reason(tmp_path: Path, wait: Wait) -> None:
    (tmp_path / "metrics.jsonl").write_text(jsonl(train_stream(5)))
    app = watch_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch == 5, what="events")
        await pilot.press("c")
        await wait(pilot, lambda: any("Cannot save a checkpoint: no live trainer holds this run's lock" in t
                                      for t in toasts(app)), what="refusal")
        assert not (tmp_path / "control").exists()


async def test_watch_follows_appended_lines_and_tolerates_a_partial_one(tmp_path: Path, wait: Wait) -> None:
    lines = jsonl(train_stream(30)).splitlines(keepends=True)
    epoch_lines = [i for i, line in enumerate(lines) if '"kind": "epoch"' in line]
    split = epoch_lines[20]  # the line of epoch 21
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(lines[:split]) + lines[split][:25])  # epoch 21 half-written
    app = watch_app(tmp_path, clock=lambda: T0 + 50)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch == 20, what="first 20 epochs")
        await pilot.pause(0.2)
        assert app.state.history.last_epoch == 20  # the partial line was not parsed
        assert not any(e.level == "warning" for e in app.state.log)  # nor reported as corrupt
        with open(path, "a") as fh:
            fh.write(lines[split][25:])
            fh.flush()
        await wait(pilot, lambda: app.state.history.last_epoch == 21, what="completed line")
        with open(path, "a") as fh:
            fh.write("".join(lines[split + 1:]))
        await wait(pilot, lambda: app.state.history.last_epoch == 30, what="appended lines")
        app.refresh_now()
        assert "FOLLOWING" in screen_text(app)


async def test_watch_marks_a_quiet_run_stale(tmp_path: Path, wait: Wait) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(jsonl(train_stream(10)))
    os.utime(path, (T0 + 100, T0 + 100))
    now = {"t": T0 + 110}
    app = watch_app(tmp_path, clock=lambda: now["t"], stale_after=60)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch == 10, what="events")
        await wait(pilot, lambda: app.feed.last_write == T0 + 100, what="file status")
        app.refresh_now()
        assert "FOLLOWING" in screen_text(app)
        now["t"] = T0 + 100 + 600
        app.refresh_now()
        text = screen_text(app)
        assert "STALE (no writes for 10 min)" in text


async def test_watch_waits_for_the_file_to_appear(tmp_path: Path, wait: Wait) -> None:
    app = watch_app(tmp_path, clock=lambda: T0)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.feed.exists is False, what="missing file noticed")
        app.refresh_now()
        assert "WAITING (no metrics.jsonl yet: job pending or preparing)" in screen_text(app)
        (tmp_path / "metrics.jsonl").write_text(jsonl(train_stream(5)))
        await wait(pilot, lambda: app.state.history.last_epoch == 5, what="events after creation")


async def test_watch_waits_for_a_run_directory_that_does_not_exist_yet(tmp_path: Path, wait: Wait) -> None:
    run_dir = tmp_path / "pending-job"
    app = watch_app(run_dir, clock=lambda: T0)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.feed.exists is False, what="missing directory noticed")
        app.refresh_now()
        assert "WAITING (no run directory yet: checking every second)" in screen_text(app)
        await pilot.press("p")
        await wait(pilot, lambda: any("no live trainer" in t for t in toasts(app)), what="refusal")
        run_dir.mkdir()
        (run_dir / "metrics.jsonl").write_text(jsonl(train_stream(4)))
        await wait(pilot, lambda: app.state.history.last_epoch == 4, what="events after creation")
        assert not (run_dir / "control").exists()


async def test_watch_reloads_when_the_file_is_replaced(tmp_path: Path, wait: Wait) -> None:
    shutil.copy(FIXTURE_DIR / "metrics.jsonl", tmp_path / "metrics.jsonl")
    app = watch_app(tmp_path, clock=lambda: T0)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch == 200, what="fixture")
        (tmp_path / "metrics.jsonl").write_text(jsonl(train_stream(7)))
        await wait(pilot, lambda: app.state.history.last_epoch == 7, what="reload")
        assert app.state.history.epochs == list(range(1, 8))
        app.refresh_now()
        assert app.query_one(MetricsTable).row_count == 4  # blocks 0, 1, 2, 5: rebuilt
        assert "reloading" in app.query_one(LogPane).text


async def test_a_failing_reader_says_so_on_screen_and_recovers(tmp_path: Path, wait: Wait) -> None:
    (tmp_path / "metrics.jsonl").mkdir()  # opening it fails on every poll
    app = watch_app(tmp_path, clock=lambda: T0)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.feed.error, what="reader error")
        await pilot.pause(0.2)  # several failed polls: still one log line and one toast
        app.refresh_now()
        await pilot.pause()
        assert "IsADirectoryError" in app.query_one(LogPane).text
        assert len([t for t in toasts(app) if "IsADirectoryError" in t]) == 1
        assert sum("IsADirectoryError" in e.text and "reading" in e.text for e in app.state.log) == 1
        assert "READ ERROR" in screen_text(app)
        assert app.is_running
        (tmp_path / "metrics.jsonl").rmdir()
        (tmp_path / "metrics.jsonl").write_text(jsonl(train_stream(3)))
        await wait(pilot, lambda: app.state.history.last_epoch == 3 and not app.feed.error, what="recovery")
        app.refresh_now()
        assert "READ ERROR" not in screen_text(app)
