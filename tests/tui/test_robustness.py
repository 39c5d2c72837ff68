"""The screen never dies and never stops the trainer: a pane that raises, a terminal too small
for any layout, resizes across every layout, Ctrl+C handled as headless handles SIGINT."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tui_fakes import FakeTrainer, ThreadHandle, Wait, live_run, screen_text, train_stream

from molpt_tui.tui.app import MIN_HEIGHT, MIN_WIDTH, MonitorApp
from molpt_tui.tui.screens import ConfirmQuitScreen
from molpt_tui.tui.widgets import MetricPlot, ProgressPane

SIZE = (160, 48)


def make_app(fakes: list[Any], fake: FakeTrainer, **kwargs: Any) -> tuple[MonitorApp, ThreadHandle]:
    kwargs.setdefault("refresh_hz", 10.0)
    kwargs.setdefault("poll_interval", 0.02)
    source, handle = live_run(fake)
    fakes.append(handle)
    return MonitorApp(source, **kwargs), handle


def toasts(app: MonitorApp) -> list[str]:
    return [n.message for n in app._notifications]


def log_text(app: MonitorApp) -> str:
    return "\n".join(entry.text for entry in app.state.log)


def stop_requests(run_dir: Path) -> list[Path]:
    return [p for p in (run_dir / "control").glob("req-*.json") if "stop" in p.read_text()]


async def test_a_pane_that_raises_is_reported_and_training_goes_on(tmp_path: Path, wait: Wait, fakes: list[Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    original = MetricPlot._draw

    def broken(self: MetricPlot) -> Any:
        if self.spec.id == "plot-kl":
            raise ZeroDivisionError("a bug in the KL pane")
        return original(self)

    monkeypatch.setattr(MetricPlot, "_draw", broken)
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app, handle = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.ui_errors > 0, what="the pane's failure")
        steps = fake.steps
        await wait(pilot, lambda: fake.steps > steps + 20, what="training goes on")
        await pilot.pause(0.3)  # many redraws of the broken pane: one log entry, one toast
        assert app.is_running and handle.poll() is None
        assert not fake.control.stop_requested and not stop_requests(tmp_path)
        assert sum("display error in the KL plot: ZeroDivisionError" in e.text for e in app.state.log) == 1
        assert len([t for t in toasts(app) if "ZeroDivisionError" in t]) == 1
        assert "Training goes on" in next(t for t in toasts(app) if "ZeroDivisionError" in t)
        app.refresh_now()
        await pilot.pause()
        assert "cannot draw (ZeroDivisionError: a bug in the KL pane)" in str(app.query_one("#plot-kl").render())
        assert "RUNNING" in screen_text(app)  # every other pane still follows the run
        assert all(p.points_plotted > 0 for p in app.query(MetricPlot) if p.spec.id != "plot-kl")
        await pilot.press("q", "y")
        await wait(pilot, lambda: app.return_code is not None, what="a normal exit")
    assert app.exited_by_user and app.exit_code == 130 and fake.saw_stop


async def test_a_handler_that_raises_is_reported_and_the_feed_goes_on(tmp_path: Path, wait: Wait,
                                                                     fakes: list[Any],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from molpt_tui.tui import state as state_module

    original = state_module.MonitorState.apply
    calls = {"n": 0}

    def flaky(self: Any, events: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyError("malformed batch")
        original(self, events, **kwargs)

    monkeypatch.setattr(state_module.MonitorState, "apply", flaky)
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.ui_errors > 0, what="the handler's failure")
        epoch = app.state.history.last_epoch
        await wait(pilot, lambda: app.state.history.last_epoch > epoch + 10, what="later batches still applied")
        assert "display error in reading new events: KeyError" in log_text(app)
        assert app.is_running and not fake.control.stop_requested


async def test_two_epochs_in_a_wide_pane_and_resizes_across_every_layout(tmp_path: Path, wait: Wait,
                                                                        fakes: list[Any]) -> None:
    # The reported crash: a full-width tmux split of a 1080p screen (190x25), a run of two
    # epochs, then resizing to 80x24 and back.
    script = train_stream(2, total=2)
    fake = FakeTrainer(tmp_path, script=script)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=(190, 25)) as pilot:
        await wait(pilot, lambda: app.state.n_events >= len(script), what="two epochs")
        for size in [(190, 25), (80, 24), (190, 25), (400, 60), (160, 48), (60, 15), (110, 34), (190, 25)]:
            await pilot.resize_terminal(*size)
            await pilot.pause(0.15)
            app.refresh_now()
            await pilot.pause()
            text = screen_text(app)
            assert "Epoch 2/2" in text
            shown = [p for p in app.query(MetricPlot) if p.display and p.size.width]
            assert shown and all(p.error == "" for p in shown), [p.error for p in shown]
            assert all(p.points_plotted > 0 for p in shown if p.spec.id in ("plot-loss", "plot-energy"))
        wide = app.query_one("#plot-loss", MetricPlot)
        assert wide.x_range == (1, 2) and wide.info.x_ticks.labels == ["1", "2"]
        assert app.ui_errors == 0 and app.is_running


@pytest.mark.parametrize("size", [(20, 5), (59, 30), (120, 14), (8, 3), (MIN_WIDTH - 1, MIN_HEIGHT - 1)])
async def test_a_terminal_too_small_says_so_until_resized_and_training_goes_on(
        size: tuple[int, int], tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app, handle = make_app(fakes, fake)
    async with app.run_test(size=size) as pilot:
        await wait(pilot, lambda: fake.steps >= 3, what="first steps")
        await pilot.pause(0.1)
        assert app.too_small
        text = " ".join(screen_text(app).split())
        w, h = size
        if w >= 40:
            assert f"terminal too small: need {MIN_WIDTH}×{MIN_HEIGHT}, have {w}×{h}" in text
        else:  # the sentence wraps over the few columns there are
            assert "termin" in text
        assert "Epoch" not in text and "Loss" not in text  # no clipped panes behind it
        steps = fake.steps
        await wait(pilot, lambda: fake.steps > steps + 10, what="training goes on")
        await wait(pilot, lambda: app.state.history.last_epoch > steps, what="the monitor keeps reading")
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.2)
        app.refresh_now()
        await pilot.pause()
        assert not app.too_small
        text = screen_text(app)
        assert "terminal too small" not in text and "Epoch" in text and "RUNNING" in text
        await pilot.resize_terminal(*size)
        await pilot.pause(0.2)
        assert "termin" in screen_text(app) and app.too_small
        assert app.ui_errors == 0 and handle.poll() is None


async def test_ctrl_c_stops_gracefully_without_asking(tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app, handle = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 3, what="first steps")
        await pilot.press("ctrl+c")
        await pilot.pause(0.05)
        assert not isinstance(app.screen, ConfirmQuitScreen)  # asks nothing, as headless
        await wait(pilot, lambda: app.return_code is not None, what="exit after the trainer saved")
    assert fake.saw_stop and (tmp_path / "last.pt").exists()
    assert app.exit_code == 130 and not app.forced_exit and handle.terminate_calls == 0
    assert app.state.finished is not None and app.state.finished.status == "stopped"


async def test_a_second_ctrl_c_quits_at_once_while_the_trainer_still_saves(tmp_path: Path, wait: Wait,
                                                                          fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.005, hang_on_stop=30.0)
    app, handle = make_app(fakes, fake, quit_timeout=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 2, what="first steps")
        await pilot.press("ctrl+c")
        await wait(pilot, lambda: app.quitting and fake.saw_stop, what="stop reached the trainer")
        assert app.return_code is None  # waiting for it to save
        await pilot.press("ctrl+c")
        await wait(pilot, lambda: app.return_code is not None, what="immediate exit")
    # Asked to stop now (SIGTERM for a process), which still saves; never killed.
    assert app.forced_exit and handle.terminate_calls == 1 and handle.kill_calls == 0


async def test_ctrl_c_in_watch_leaves_the_trainer_running(tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    import threading

    from molpt_tui.training.run_dir import RunDirectory
    from molpt_tui.tui.source import WatchedRun

    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    thread = threading.Thread(target=fake.run, daemon=True)
    thread.start()
    fakes.append(fake)
    assert fake.started.wait(10)
    app = MonitorApp(WatchedRun(RunDirectory(tmp_path), lock_check_interval=0.05), poll_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch >= 2, what="following")
        await pilot.press("ctrl+c")
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    assert app.exit_code == 0 and not fake.control.stop_requested
    steps = fake.steps
    deadline = __import__("time").monotonic() + 10
    while fake.steps <= steps + 5 and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.01)
    assert fake.steps > steps + 5  # the trainer never noticed


async def test_step_events_move_progress_within_an_epoch(tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    script = train_stream(12, total=200)  # ends with epoch 13 at step 4 of 10
    fake = FakeTrainer(tmp_path, script=script)
    app, _ = make_app(fakes, fake, clock=lambda: script[-1].t + 1.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.n_events >= len(script), what="stream applied")
        app.refresh_now()
        await pilot.pause()
        pane = app.query_one(ProgressPane)
        step = app.state.step_progress()
        assert step is not None and step.epoch == 13
        info = pane.info
        assert (info.epoch, info.step, info.steps_per_epoch) == (12, 4, 10)
        assert info.loss == step.loss and info.fwd_energy == step.fwd_energy and info.lr == step.lr
        assert info.eta == pytest.approx(step.eta_s - 1.0)  # counted down since the event
        assert pane.fraction() == pytest.approx(12.4 / 200)
        text = screen_text(app)
        assert "Epoch 12/200" in text and "step 4/10" in text
        assert "[3 regularised, 1 non-finite energies]" in text


async def test_a_slow_checklist_never_holds_up_the_screen(tmp_path: Path, wait: Wait, fakes: list[Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from molpt_tui.tui import app as app_module

    release = threading.Event()
    calls: list[int] = []

    def slow_checklist(history: Any) -> list[Any]:
        calls.append(len(history.epochs))
        release.wait(20.0)  # as the real one on a long history: seconds
        return []

    monkeypatch.setattr(app_module, "checklist", slow_checklist)
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    # A monotonic clock that jumps 60 s a reading: the throttle (five times the last duration)
    # never decides when the next run may start, whatever the load on the machine.
    ticks = iter(range(0, 10**9, 60))
    app, _ = make_app(fakes, fake, monotonic=lambda: float(next(ticks)))
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: calls, what="the checklist started")
        epoch = app.state.history.last_epoch
        await wait(pilot, lambda: app.state.history.last_epoch > epoch + 20, what="the screen follows the run")
        assert not app.checks_current and len(calls) == 1  # one at a time
        release.set()
        await wait(pilot, lambda: len(calls) >= 2, what="recomputed for the newer history")
        assert app.is_running and app.ui_errors == 0


def test_every_wait_says_what_it_is_waiting_for(tmp_path: Path) -> None:
    from tui_fakes import T0

    from molpt_tui.training.events import Message
    from molpt_tui.training.run_dir import RunDirectory
    from molpt_tui.tui.source import FeedStatus, LiveRun, WatchedRun
    from molpt_tui.tui.state import MonitorState

    class Starting:
        description = "trainer PID 4242"

        def poll(self) -> int | None:
            return None

        def terminate(self) -> None:
            return None

        def kill(self) -> None:
            return None

    state = MonitorState()
    live = LiveRun(RunDirectory(tmp_path), Starting())
    feed = FeedStatus(exists=True, attached_at=T0)
    assert live.status(state, feed, T0 + 1).note == "waiting for trainer PID 4242"  # a moment: no clock yet
    state.apply([Message(text="building the system: ala2 (amber99sbildn, vacuum)", t=T0 + 1)])
    line = live.status(state, feed, T0 + 12)
    assert line.label == "STARTING"
    assert line.note == "waiting for trainer PID 4242: building the system: ala2 (amber99sbildn, vacuum) (00:12)"
    state.apply([Message(text="compiling the torch energy kernels", t=T0 + 20)])
    assert "compiling the torch energy kernels (01:40)" in live.status(state, feed, T0 + 100).note
    watched = WatchedRun(RunDirectory(tmp_path / "pending"))
    note = watched.status(MonitorState(), FeedStatus(exists=False, attached_at=T0), T0 + 45).note
    assert note == "no run directory yet: checking every second (00:45)"


def test_every_key_is_a_binding_and_every_action_a_command_once() -> None:
    from textual.binding import Binding

    from molpt_tui.tui.app import COMMANDS
    from molpt_tui.tui.compare import CompareApp

    for actions, bindings in ((COMMANDS, MonitorApp.BINDINGS), (CompareApp.COMMANDS_LIST, CompareApp.BINDINGS)):
        bound = {b.action for b in bindings if isinstance(b, Binding)}
        listed = [action for action, _ in actions]
        assert len(listed) == len(set(listed)) and set(listed) == bound
        keys = [b.key for b in bindings if isinstance(b, Binding)]
        assert len(keys) == len(set(keys))


async def test_the_smallest_layout_cuts_nothing_mid_word_and_the_table_scrolls(tmp_path: Path, wait: Wait,
                                                                               fakes: list[Any]) -> None:
    from textual.binding import Binding

    from molpt_tui.tui.widgets import KeyBar, MetricsTable, RunHeader, ViewBar

    script = train_stream(120, total=200)
    fake = FakeTrainer(tmp_path, script=script)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=(MIN_WIDTH, MIN_HEIGHT)) as pilot:
        await wait(pilot, lambda: app.state.n_events >= len(script), what="stream applied")
        app.refresh_now()
        await pilot.pause(0.1)
        lines = screen_text(app).splitlines()
        assert not app.too_small and app.compact
        keys = app.query_one(KeyBar)
        assert lines[-1].strip() == keys.text  # the footer shows whole entries only
        whole = {f"{b.key_display or b.key} {b.description}" for b in app.BINDINGS if isinstance(b, Binding)}
        assert all(entry in whole | {"^p Commands", "? Help"} for entry in keys.text.split("  "))
        header = app.query_one(RunHeader)
        for full, shown in zip(header.text.splitlines(), lines[:2]):
            shown = shown.strip()
            if shown.endswith("…"):
                head = shown.removesuffix("…").rstrip()
                assert full.strip().startswith(head) and full.strip()[len(head)] in " ·"  # a word boundary
            else:
                assert shown == full.strip()
        bar = app.query_one(ViewBar)
        assert all(label in bar.labels.values() or label in "‹›" for label in lines[4].split())
        # The metrics table is wider than the pane: a key in the footer scrolls it.
        while app.view_id != "table":
            await pilot.press("v")
        await pilot.pause(0.2)
        table = app.query_one(MetricsTable)
        assert app.check_action("scroll_table", ()) is True and "] Scroll" in app.query_one(KeyBar).text
        before = table.scroll_x
        await pilot.press("right_square_bracket")
        await pilot.pause(0.1)
        assert table.scroll_x > before
        await pilot.press("left_square_bracket")
        await pilot.pause(0.1)
        assert table.scroll_x == before


def test_numbers_in_a_table_column_share_one_format() -> None:
    from dataclasses import replace

    from tui_fakes import log_block

    from molpt_tui.tui.widgets.metrics_table import block_row, table_formats

    blocks = [log_block(e, 0.0) for e in (1, 50, 100, 200)]
    rows = [block_row(b, table_formats(blocks)) for b in blocks]
    assert {len(r[1].split(".")[1]) for r in rows} == {2}  # 86403.24 ... 112.07: same decimals
    assert all(len(r[7].split("e")[0]) == 4 and "e-" in r[7] for r in rows)  # LR: 2.10e-4, 1.00e-5
    exploded = [replace(blocks[0], loss=2.5e5), *blocks[1:]]
    rows = [block_row(b, table_formats(exploded)) for b in exploded]
    # One value at or above 1e5 kT puts the whole column in scientific notation, same mantissa.
    assert [r[1] for r in rows] == ["2.500e5", "1.271e2", "1.135e2", "1.121e2"]
    assert block_row(replace(blocks[0], improvement_pct=-4.364e17))[8] == "diverged"
    assert block_row(replace(blocks[0], improvement_pct=float("nan")))[8] == "–"
