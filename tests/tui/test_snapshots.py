"""Whole-screen snapshots from fixed event streams (update with `pytest --snapshot-update`).

Determinism: every event has a fixed timestamp, the app's clock is injected, and toasts are
cleared before the picture is taken (their timers are wall-clock).
"""
from __future__ import annotations

import time

from molpt_tui.tui.app import MonitorApp
from tui_fakes import FIXTURE_DIR, T0, train_stream, wait_until, watch_stream

STREAM = train_stream()


def stream_then_wait(sink, control) -> None:
    """A trainer caught mid-run: it has emitted STREAM and is working on the next epoch."""
    for event in STREAM:
        sink.emit(event)
    while not control.stop_requested:
        time.sleep(0.01)


def train_app() -> MonitorApp:
    return MonitorApp(mode="train", train_fn=stream_then_wait, clock=lambda: T0 + 260.0,
                      sink_interval=0.01)


def watch_app() -> MonitorApp:
    return MonitorApp(mode="watch", run_dir=FIXTURE_DIR, clock=lambda: T0 + 1e6, watch_poll=0.01)


def settle(n_events: int):
    async def run_before(pilot) -> None:
        app = pilot.app
        await wait_until(pilot, lambda: app.state.n_events >= n_events, what="all events applied")
        app.refresh_now()
        await pilot.pause()
        app.clear_notifications()
        await pilot.pause()

    return run_before


def test_train_main_screen_80x24(snap_compare):
    assert snap_compare(train_app(), terminal_size=(80, 24), run_before=settle(len(STREAM)))


def test_train_main_screen_160x48(snap_compare):
    assert snap_compare(train_app(), terminal_size=(160, 48), run_before=settle(len(STREAM)))


def test_train_log_scale_160x48(snap_compare):
    assert snap_compare(train_app(), terminal_size=(160, 48), run_before=settle(len(STREAM)), press=["l"])


def test_watch_fixture_160x48(snap_compare):
    assert snap_compare(watch_app(), terminal_size=(160, 48), run_before=settle(len(watch_stream())))


def test_watch_fixture_80x24(snap_compare):
    assert snap_compare(watch_app(), terminal_size=(80, 24), run_before=settle(len(watch_stream())))
