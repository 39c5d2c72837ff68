"""Whole-screen snapshots from fixed event streams (update with `pytest --snapshot-update`).

Determinism: every event has a fixed timestamp, the app's clock is injected, and toasts are
cleared before the picture is taken (their timers are wall-clock). The live screens come from a
fake trainer that writes a fixed stream into metrics.jsonl and then idles, as a trainer caught
mid-epoch does.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from tui_fakes import FIXTURE_DIR, T0, FakeTrainer, live_run, train_stream, wait_until, watch_stream

from molpt_tui.training.run_dir import RunDirectory
from molpt_tui.tui.app import MonitorApp
from molpt_tui.tui.source import WatchedRun

STREAM = train_stream()
SnapCompare = Callable[..., bool]


def train_app(tmp_path: Path, fakes: list[Any]) -> MonitorApp:
    source, handle = live_run(FakeTrainer(tmp_path, script=STREAM))
    fakes.append(handle)
    return MonitorApp(source, clock=lambda: T0 + 260.0, poll_interval=0.01)


def watch_app() -> MonitorApp:
    return MonitorApp(WatchedRun(RunDirectory(FIXTURE_DIR)), clock=lambda: T0 + 1e6, poll_interval=0.01)


def settle(n_events: int) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, MonitorApp)
        await wait_until(pilot, lambda: app.state.n_events >= n_events, what="all events applied")
        app.refresh_now()
        await pilot.pause()
        app.clear_notifications()
        await pilot.pause()

    return run_before


def test_train_main_screen_80x24(snap_compare: SnapCompare, tmp_path: Path, fakes: list[Any]) -> None:
    assert snap_compare(train_app(tmp_path, fakes), terminal_size=(80, 24), run_before=settle(len(STREAM)))


def test_train_main_screen_160x48(snap_compare: SnapCompare, tmp_path: Path, fakes: list[Any]) -> None:
    assert snap_compare(train_app(tmp_path, fakes), terminal_size=(160, 48), run_before=settle(len(STREAM)))


def test_train_log_scale_160x48(snap_compare: SnapCompare, tmp_path: Path, fakes: list[Any]) -> None:
    assert snap_compare(train_app(tmp_path, fakes), terminal_size=(160, 48), run_before=settle(len(STREAM)),
                        press=["l"])


def test_watch_fixture_160x48(snap_compare: SnapCompare) -> None:
    assert snap_compare(watch_app(), terminal_size=(160, 48), run_before=settle(len(watch_stream())))


def test_watch_fixture_80x24(snap_compare: SnapCompare) -> None:
    assert snap_compare(watch_app(), terminal_size=(80, 24), run_before=settle(len(watch_stream())))
