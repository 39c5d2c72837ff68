"""Watch mode: attach to a run directory, follow metrics.jsonl, read-only."""
from __future__ import annotations

import os
import shutil

from molpt_tui.tui.app import MonitorApp, run_watch_app, save_screenshot
from molpt_tui.tui.widgets import LogPane, MetricsTable
from tui_fakes import FIXTURE_DIR, T0, jsonl, screen_text, train_stream

SIZE = (160, 48)


def watch_app(run_dir, **kwargs) -> MonitorApp:
    kwargs.setdefault("watch_poll", 0.02)
    kwargs.setdefault("refresh_hz", 10.0)
    return MonitorApp(mode="watch", run_dir=run_dir, **kwargs)


async def test_watch_shows_a_finished_run_with_a_resume(wait, tmp_path):
    app = watch_app(FIXTURE_DIR, clock=lambda: T0 + 1e6)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.finished is not None
                   and app.state.finished.status == "completed", what="fixture loaded")
        app.refresh_now()
        await pilot.pause()
        assert app.state.history.epochs == list(range(1, 201))  # the resume left no duplicate
        assert app.query_one(MetricsTable).row_count == 9
        log = app.query_one(LogPane).text
        assert "resumed at epoch 60" in log and "finished (stopped) at epoch 62" in log
        text = screen_text(app)
        assert "FINISHED (completed)" in text and "Training completed at epoch 200/200" in text
        assert "training.png" in text
        # Read-only: trainer keys are gone from the footer and do nothing.
        for action in ("toggle_pause", "checkpoint", "write_png", "stop"):
            assert app.check_action(action, ()) is False
        assert app.control is None
        await pilot.press("p", "c", "g", "s")
        assert app.is_running
        svg = save_screenshot(app, tmp_path / "shots" / "watch.svg").read_text()
        assert svg.lstrip().startswith("<svg") and "FINISHED" in svg
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert "Pause / resume training" not in titles and "Toggle log y-axis" in titles
        # A backlog of alerts is summarised in one toast, not one per alert.
        assert len([n for n in app._notifications if "history" in n.message]) == 1
        await pilot.press("q")
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    assert app.exit_code == 0


async def test_watch_follows_appended_lines_and_tolerates_a_partial_one(tmp_path, wait):
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


async def test_watch_marks_a_quiet_run_stale(tmp_path, wait):
    path = tmp_path / "metrics.jsonl"
    path.write_text(jsonl(train_stream(10)))
    os.utime(path, (T0 + 100, T0 + 100))
    now = {"t": T0 + 110}
    app = watch_app(tmp_path, clock=lambda: now["t"], stale_after=60)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch == 10, what="events")
        await wait(pilot, lambda: app.watch_last_write == T0 + 100, what="file status")
        app.refresh_now()
        assert "FOLLOWING" in screen_text(app)
        now["t"] = T0 + 100 + 600
        app.refresh_now()
        text = screen_text(app)
        assert "STALE (no writes for 10 min)" in text


async def test_watch_waits_for_the_file_to_appear(tmp_path, wait):
    app = watch_app(tmp_path, clock=lambda: T0)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.watch_exists is False, what="missing file noticed")
        app.refresh_now()
        assert "WAITING (no metrics.jsonl yet)" in screen_text(app)
        (tmp_path / "metrics.jsonl").write_text(jsonl(train_stream(5)))
        await wait(pilot, lambda: app.state.history.last_epoch == 5, what="events after creation")


async def test_watch_reloads_when_the_file_is_replaced(tmp_path, wait):
    shutil.copy(FIXTURE_DIR / "metrics.jsonl", tmp_path / "metrics.jsonl")
    app = watch_app(tmp_path, clock=lambda: T0)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch == 200, what="fixture")
        (tmp_path / "metrics.jsonl").write_text(jsonl(train_stream(7)))
        await wait(pilot, lambda: app.state.history.last_epoch == 7, what="reload")
        assert app.state.history.epochs == list(range(1, 8))
        app.refresh_now()
        assert app.query_one(MetricsTable).row_count == 3  # blocks 1, 2, 5: rebuilt
        assert "reloading" in app.query_one(LogPane).text


def test_run_watch_app_rejects_a_missing_directory(tmp_path, capsys):
    assert run_watch_app(tmp_path / "nope") == 2
    assert "not a run directory" in capsys.readouterr().err
