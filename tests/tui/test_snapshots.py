"""Whole-screen snapshots from fixed event streams (update with `pytest --snapshot-update`, and
read the new SVGs' text before committing them).

Determinism: every event has a fixed timestamp, the app's clocks are injected (the monotonic one
jumps so the throttled checklist is always due), the picture waits for the checklist thread, and
toasts are cleared before it is taken (their timers are wall-clock). The live screens come from a
fake trainer that writes a fixed stream into metrics.jsonl and then idles, as a trainer caught
mid-epoch does.
"""
from __future__ import annotations

import itertools
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot
from tui_fakes import (
    FIXTURE_DIR,
    T0,
    FakeTrainer,
    data_stream,
    jsonl,
    live_run,
    slurm_run_started,
    system_stats,
    train_stream,
    wait_until,
    watch_stream,
)

from molpt_tui.training.run_dir import RunDirectory
from molpt_tui.tui.app import MonitorApp
from molpt_tui.tui.compare import CompareApp
from molpt_tui.tui.source import WatchedRun

STREAM = train_stream()
SnapCompare = Callable[..., bool]


def ticking() -> Callable[[], float]:
    """A monotonic clock that moves 10 s per reading: every throttled redraw is due."""
    counter = itertools.count(0.0, 10.0)
    return lambda: next(counter)


# A run under SLURM on a GPU node: the header's system line with every figure, the countdown.
SLURM_STREAM = [slurm_run_started(T0), *STREAM[1:], system_stats(T0 + 258.0)]


def train_app(tmp_path: Path, fakes: list[Any], *, ascii_only: bool = False,
              stream: list[Any] | None = None) -> MonitorApp:
    source, handle = live_run(FakeTrainer(tmp_path, script=STREAM if stream is None else stream))
    fakes.append(handle)
    return MonitorApp(source, clock=lambda: T0 + 260.0, poll_interval=0.01, ascii_only=ascii_only,
                      monotonic=ticking())


def watch_app(*, ascii_only: bool = False) -> MonitorApp:
    return MonitorApp(WatchedRun(RunDirectory(FIXTURE_DIR)), clock=lambda: T0 + 1e6, poll_interval=0.01,
                      ascii_only=ascii_only, monotonic=ticking())


def settle(n_events: int) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, MonitorApp)
        await wait_until(pilot, lambda: app.state.n_events >= n_events, what="all events applied")
        app.refresh_now()
        # The checklist is computed in a thread: wait until it reflects every event.
        await wait_until(pilot, lambda: app.checks_current, what="the checklist")
        app.refresh_now()
        await pilot.pause()
        app.clear_notifications()
        await pilot.pause()

    return run_before


def settle_compare(epochs: list[int]) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, CompareApp)
        await wait_until(pilot, lambda: [r.state.history.last_epoch for r in app.runs] == epochs, what="all runs")
        app.refresh_now()
        await pilot.pause()
        app.clear_notifications()
        await pilot.pause()

    return run_before


def test_train_main_screen_80x24(snap_compare: SnapCompare, tmp_path: Path, fakes: list[Any]) -> None:
    assert snap_compare(train_app(tmp_path, fakes), terminal_size=(80, 24), run_before=settle(len(STREAM)))


def test_train_main_screen_160x48(snap_compare: SnapCompare, tmp_path: Path, fakes: list[Any]) -> None:
    assert snap_compare(train_app(tmp_path, fakes), terminal_size=(160, 48), run_before=settle(len(STREAM)))


def test_train_system_line_160x48(snap_compare: SnapCompare, tmp_path: Path, fakes: list[Any]) -> None:
    assert snap_compare(train_app(tmp_path, fakes, stream=SLURM_STREAM), terminal_size=(160, 48),
                        run_before=settle(len(SLURM_STREAM)))


def test_train_system_line_ascii_80x24(snap_compare: SnapCompare, tmp_path: Path, fakes: list[Any]) -> None:
    assert snap_compare(train_app(tmp_path, fakes, stream=SLURM_STREAM, ascii_only=True), terminal_size=(80, 24),
                        run_before=settle(len(SLURM_STREAM)))


def test_watch_data_phase_80x24(snap_compare: SnapCompare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A relative run directory, as a user types it: the header shows it while no run has started.
    monkeypatch.chdir(tmp_path)
    stream = data_stream()[:3]
    Path("runs/pending").mkdir(parents=True)
    Path("runs/pending/metrics.jsonl").write_text(jsonl(stream), encoding="utf-8")
    app = MonitorApp(WatchedRun(RunDirectory(Path("runs/pending"))), clock=lambda: T0 + 30.0, poll_interval=0.01,
                     monotonic=ticking())
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle(len(stream)))


def test_train_log_scale_and_smoothing_160x48(snap_compare: SnapCompare, tmp_path: Path, fakes: list[Any]) -> None:
    assert snap_compare(train_app(tmp_path, fakes), terminal_size=(160, 48), run_before=settle(len(STREAM)),
                        press=["l", "e"])


def test_train_checks_pane_80x24(snap_compare: SnapCompare, tmp_path: Path, fakes: list[Any]) -> None:
    # The good signs and alerts behind the pane bar of the compact layout.
    presses = ["v"] * 9
    assert snap_compare(train_app(tmp_path, fakes), terminal_size=(80, 24), run_before=settle(len(STREAM)),
                        press=presses)


def test_train_ascii_80x24(snap_compare: SnapCompare, tmp_path: Path, fakes: list[Any]) -> None:
    assert snap_compare(train_app(tmp_path, fakes, ascii_only=True), terminal_size=(80, 24),
                        run_before=settle(len(STREAM)))


def test_watch_ascii_160x48(snap_compare: SnapCompare) -> None:
    assert snap_compare(watch_app(ascii_only=True), terminal_size=(160, 48), run_before=settle(len(watch_stream())))


def test_watch_fixture_160x48(snap_compare: SnapCompare) -> None:
    assert snap_compare(watch_app(), terminal_size=(160, 48), run_before=settle(len(watch_stream())))


def test_watch_fixture_80x24(snap_compare: SnapCompare) -> None:
    assert snap_compare(watch_app(), terminal_size=(80, 24), run_before=settle(len(watch_stream())))


def test_terminal_too_small_40x10(snap_compare: SnapCompare) -> None:
    assert snap_compare(watch_app(), terminal_size=(40, 10), run_before=settle(len(watch_stream())))


def test_compare_two_runs_160x48(snap_compare: SnapCompare, tmp_path: Path) -> None:
    shutil.copytree(FIXTURE_DIR, tmp_path / "lr-1e-3")
    (tmp_path / "lr-3e-4").mkdir()
    (tmp_path / "lr-3e-4" / "metrics.jsonl").write_text(jsonl(train_stream(80)), encoding="utf-8")
    app: App[Any] = CompareApp([WatchedRun(RunDirectory(tmp_path / name), read_only=True)
                                for name in ("lr-1e-3", "lr-3e-4")],
                               clock=lambda: T0 + 1e6, poll_interval=0.01, monotonic=ticking())
    assert snap_compare(app, terminal_size=(160, 48), run_before=settle_compare([200, 80]))
