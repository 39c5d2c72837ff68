"""A live run driven by a fake trainer thread that writes metrics.jsonl and polls the control
channel: keys must change what the trainer does, and the screen must follow its answers."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.binding import Binding
from tui_fakes import FakeTrainer, ThreadHandle, Wait, jsonl, live_run, screen_text, train_stream

from molpt_tui.training.events import Finished
from molpt_tui.tui.app import EXIT_UI_CRASHED, VIEWS, MonitorApp, run_monitor
from molpt_tui.tui.screens import ConfirmQuitScreen, ConfirmStopScreen, HelpScreen
from molpt_tui.tui.source import LiveRun
from molpt_tui.tui.widgets import AlertsPane, LogPane, MetricPlot, ViewBar

SIZE = (160, 48)


def make_app(fakes: list[Any], fake: FakeTrainer, **kwargs: Any) -> tuple[MonitorApp, ThreadHandle]:
    kwargs.setdefault("refresh_hz", 10.0)
    kwargs.setdefault("poll_interval", 0.02)
    source, handle = live_run(fake)
    fakes.append(handle)
    return MonitorApp(source, **kwargs), handle


def log_text(app: MonitorApp) -> str:
    return "\n".join(entry.text for entry in app.state.log)


def toasts(app: MonitorApp) -> list[str]:
    return [n.message for n in app._notifications]


async def test_events_arrive_through_the_file_and_fill_the_panes(tmp_path: Path, wait: Wait,
                                                                fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.002, alert_at=3)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch >= 50, what="50 epochs")
        assert (tmp_path / "metrics.jsonl").is_file()
        app.refresh_now()
        await pilot.pause()
        text = screen_text(app)
        assert "300.0K → 450.0K" in text and "442.4 k params" in text
        assert "RUNNING" in text and "Epoch " in text and " TRAIN " in text
        assert all(p.points_plotted > 0 for p in app.query(MetricPlot))


async def test_pause_is_shown_from_the_acknowledgement_and_resume_restarts(tmp_path: Path, wait: Wait,
                                                                         fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 5, what="first steps")
        await pilot.press("p")
        # The key only sent a request; the screen waits for the trainer's answer.
        assert list((tmp_path / "control").glob("req-*.json")) or fake.control.paused
        await wait(pilot, lambda: app.state.paused, what="pause acknowledged")
        assert fake.control.paused
        frozen = fake.steps
        await pilot.pause(0.3)
        assert fake.steps == frozen
        app.refresh_now()
        assert "PAUSED" in screen_text(app)
        assert "paused after epoch" in log_text(app)
        await wait(pilot, lambda: any("paused after epoch" in t for t in toasts(app)), what="ack toast")
        await pilot.press("p")
        await wait(pilot, lambda: not app.state.paused, what="resume acknowledged")
        await wait(pilot, lambda: fake.steps > frozen + 3, what="steps after resume")
        assert "running again after epoch" in log_text(app)


async def test_checkpoint_and_png_requests_reach_the_trainer_and_are_acknowledged(
        tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 2, what="first steps")
        await pilot.press("c")
        await wait(pilot, lambda: "checkpoint written: " in log_text(app), what="checkpoint ack")
        assert fake.checkpoint_requests == 1
        (manual,) = tmp_path.glob("manual-*.pt")
        assert f"checkpoint written: {manual}" in log_text(app)
        await pilot.press("g")
        await wait(pilot, lambda: "PNG written: " in log_text(app), what="png ack")
        assert fake.png_requests == 1 and (tmp_path / "training.png").exists()
        await wait(pilot, lambda: any("PNG written" in t for t in toasts(app)), what="png toast")
        assert not app.source.pending(app.state)  # every request sent was answered


async def test_log_toggle_and_zoom_cycle(tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.0005)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch >= 1200, what="1200 epochs", timeout=60)
        await pilot.press("p")  # freeze the data so the windows can be checked exactly
        await wait(pilot, lambda: app.state.paused, what="paused")
        await wait(pilot, lambda: app.state.history.last_epoch == fake.epoch, what="all epochs read")
        loss = app.query_one("#plot-loss", MetricPlot)
        logdet = app.query_one("#plot-logdet", MetricPlot)

        await pilot.press("l")
        await pilot.pause(0.1)
        assert app.log_y and loss.axis_mode == "log"  # the loss of the fake is positive
        assert logdet.axis_mode == "symlog"  # log-dets cross zero
        await pilot.press("l")
        await pilot.pause(0.1)
        assert not app.log_y and loss.axis_mode == "linear"

        last = app.state.history.last_epoch
        assert loss.x_range == (1, last)
        widths = []
        for _ in range(3):
            await pilot.press("z")
            await pilot.pause(0.1)
            assert loss.x_range is not None
            widths.append(loss.x_range[1] - loss.x_range[0] + 1)
        assert widths == [100, 1000, last]
        assert "zoom all" in screen_text(app)


async def test_stop_asks_then_finishes_the_step_and_keeps_the_final_state(tmp_path: Path, wait: Wait,
                                                                        fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app, handle = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 5, what="first steps")
        await pilot.press("s")
        await wait(pilot, lambda: isinstance(app.screen, ConfirmStopScreen), what="confirm stop")
        await pilot.press("n")
        await wait(pilot, lambda: not isinstance(app.screen, ConfirmStopScreen), what="modal closed")
        steps = fake.steps
        await wait(pilot, lambda: fake.steps > steps + 2, what="training goes on")
        assert not fake.control.stop_requested
        await pilot.press("s")
        await wait(pilot, lambda: isinstance(app.screen, ConfirmStopScreen), what="confirm stop")
        await pilot.press("y")
        await wait(pilot, lambda: app.trainer_done, what="trainer to stop")
        app.refresh_now()
        await pilot.pause()
        assert fake.saw_stop and (tmp_path / "last.pt").exists() and handle.poll() == 130
        text = screen_text(app)
        assert "Training stopped" in text and "last.pt" in text and "STOPPED" in text
        assert "stopping after epoch" in log_text(app)
        assert app.is_running  # still on screen
        assert app.check_action("toggle_pause", ()) is None  # greyed out now
        await pilot.press("p")
        await wait(pilot, lambda: any("Cannot pause: the trainer has exited" in t for t in toasts(app)),
                   what="refusal toast")
        await pilot.press("q")  # no confirmation once the trainer is gone
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    assert app.exit_code == 130 and app.return_code == 130


async def test_quit_asks_then_stops_the_trainer_and_exits(tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app, handle = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 3, what="first steps")
        await pilot.press("q")
        await wait(pilot, lambda: isinstance(app.screen, ConfirmQuitScreen), what="confirm modal")
        await pilot.press("n")
        await wait(pilot, lambda: not isinstance(app.screen, ConfirmQuitScreen), what="modal closed")
        assert not fake.control.stop_requested
        steps = fake.steps
        await wait(pilot, lambda: fake.steps > steps, what="training continues")
        await pilot.press("q")
        await wait(pilot, lambda: isinstance(app.screen, ConfirmQuitScreen), what="confirm modal")
        await pilot.press("y")
        await wait(pilot, lambda: app.return_code is not None, what="exit after stop")
    assert fake.saw_stop and fake.returned.is_set()
    assert (tmp_path / "last.pt").exists()
    assert app.exit_code == 130 and not app.forced_exit and handle.terminate_calls == 0
    # The Finished event was read before the app decided: the log ends with it.
    assert app.state.finished is not None and app.state.finished.status == "stopped"


async def test_quit_never_hangs_on_a_stuck_trainer(tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.005, hang_on_stop=30.0)
    app, handle = make_app(fakes, fake, quit_timeout=0.3)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 2, what="first steps")
        await pilot.press("q", "y")
        await wait(pilot, lambda: app.return_code is not None, what="forced exit")
    assert app.forced_exit and app.exit_code == 130
    assert handle.terminate_calls == 1 and handle.kill_calls == 0  # asked to stop now, still saving


async def test_a_second_q_forces_the_exit(tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.005, hang_on_stop=30.0)
    app, handle = make_app(fakes, fake, quit_timeout=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 2, what="first steps")
        await pilot.press("q", "y")
        await wait(pilot, lambda: app.quitting and fake.saw_stop, what="stop reached the trainer")
        assert app.return_code is None  # still waiting for the trainer
        await pilot.press("q")
        await wait(pilot, lambda: app.return_code is not None, what="forced exit")
    assert app.forced_exit and handle.terminate_calls == 1


async def test_completion_shows_summary_and_files(tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, epochs=30, step_sleep=0.001)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.trainer_done, what="completion")
        app.refresh_now()
        await pilot.pause()
        text = screen_text(app)
        assert "Training completed at epoch 30/30" in text
        assert "last.pt" in text and "COMPLETED" in text
        assert app.check_action("stop", ()) is None
        await pilot.press("q")
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    assert app.exit_code == 0


async def test_a_failed_trainer_stays_on_screen_and_exits_with_its_code(tmp_path: Path, wait: Wait,
                                                                      fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.001, fail_at=4)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.trainer_done, what="failure")
        app.refresh_now()
        await pilot.pause()
        text = screen_text(app)
        assert "Training failed at epoch 4" in text and "FAILED" in text
        assert "RuntimeError: CUDA error" in text
        await wait(pilot, lambda: any("illegal memory access" in t for t in toasts(app)), what="toast")
        await pilot.pause(0.3)
        assert app.is_running
        await pilot.press("q")
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    assert app.exit_code == 1


async def test_a_trainer_dying_without_a_finished_event_is_a_crash(tmp_path: Path, wait: Wait,
                                                                 fakes: list[Any]) -> None:
    (tmp_path / "train.log").write_text("Fatal Python error: Segmentation fault (fake)\n")
    fake = FakeTrainer(tmp_path, step_sleep=0.001, die_at=6)
    app, handle = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.trainer_done, what="death noticed")
        app.refresh_now()
        await pilot.pause()
        assert handle.poll() == 139
        text = screen_text(app)
        assert "CRASHED" in text and "exited with code 139 without reporting how the run ended" in text
        assert "train.log: Fatal Python error: Segmentation fault (fake)" in app.query_one(LogPane).text
        assert any("exited with code 139" in t for t in toasts(app))
        await pilot.press("q")
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    assert app.exit_code == 1  # whatever the code, no Finished event means failure


async def test_alert_appears_in_pane_and_as_notification(tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.003, alert_at=5)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.alerts, what="alert")
        await wait(pilot, lambda: list(app._notifications), what="toast")
        toast = next(n for n in app._notifications if "diverging" in n.message)
        assert "Inverse energy is diverging" in toast.message and toast.severity == "error"
        app.refresh_now()
        text = app.query_one(AlertsPane).text  # the toast may cover the pane on screen
        assert "ERROR epoch 5 Inverse energy is diverging" in text
        assert "→ Lower the learning rate" in text
        assert app.query_one(ViewBar).label("health") == "Checks (1)"


async def test_help_screen_and_command_palette_list_each_action_once(tmp_path: Path, wait: Wait,
                                                                    fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.01)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.run is not None, what="run started")
        await pilot.press("question_mark")
        await wait(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = screen_text(app)
        for phrase in ("Pause or resume", "Save a checkpoint", "Write the training-curve PNG",
                       "logarithmic y-axis", "last 100", "Stop gracefully", "Quit", "control"):
            assert phrase in text
        await pilot.press("escape")
        await wait(pilot, lambda: not isinstance(app.screen, HelpScreen), what="help closed")
        await pilot.press("f1")
        await wait(pilot, lambda: isinstance(app.screen, HelpScreen), what="help via F1")
        await pilot.press("escape")
        await wait(pilot, lambda: not isinstance(app.screen, HelpScreen), what="help closed")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert len(titles) == len(set(titles))
        assert {"Pause / resume training", "Save checkpoint now", "Write PNG now", "Toggle log y-axis",
                "Cycle plot zoom", "Stop training gracefully", "Help: keys", "Quit"} <= set(titles)
        assert "Keys" not in titles  # Textual's own help would duplicate ours
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        commands["Toggle log y-axis"].callback()
        assert app.log_y
        commands["Pause / resume training"].callback()
        await wait(pilot, lambda: app.state.paused, what="paused from the palette")
        footer_keys = {b.key for b in app.BINDINGS if isinstance(b, Binding) and b.show}
        assert {"p", "c", "g", "l", "z", "s", "q", "question_mark"} <= footer_keys


async def test_compact_layout_at_80x24_shows_one_pane_behind_tabs(tmp_path: Path, wait: Wait,
                                                                 fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait(pilot, lambda: fake.steps >= 3, what="first steps")
        await pilot.pause(0.1)
        assert app.compact
        assert app.query_one("#views").display
        shown = [p.id for p in app.query(MetricPlot) if p.display]
        assert shown == ["plot-loss"]
        assert not app.query_one("#table").display
        await pilot.press("v")
        await pilot.pause(0.1)
        assert [p.id for p in app.query(MetricPlot) if p.display] == [VIEWS[1][0]]
        order = [view for view, _ in VIEWS]
        await pilot.press(*["v"] * (order.index("table") - 1))
        await pilot.pause(0.1)
        assert app.query_one("#table").display and not app.query_one("#plots").display
        assert "Next pane" in {c.title for c in app.get_system_commands(app.screen)}


async def test_wide_layout_shows_everything(tmp_path: Path, wait: Wait, fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, step_sleep=0.01)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.1)
        assert not app.compact and not app.query_one("#views").display
        assert all(p.display for p in app.query(MetricPlot))
        assert app.query_one("#table").display and app.query_one("#alerts").display
        assert app.check_action("next_view", ()) is False


async def test_a_resumed_run_is_not_mistaken_for_its_finished_past(tmp_path: Path, wait: Wait,
                                                                  fakes: list[Any]) -> None:
    earlier = train_stream(10) + [Finished(status="stopped", epoch=10)]
    (tmp_path / "metrics.jsonl").write_text(jsonl(earlier))
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    source, handle = live_run(fake)
    fakes.append(handle)
    assert (source.prior_segments, source.prior_finished) == (1, 1)
    app = MonitorApp(source, refresh_hz=10.0, poll_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.segments == 2 and fake.steps >= 3, what="the new segment")
        app.refresh_now()
        assert app.status().label == "RUNNING"
        assert app.check_action("stop", ()) is True


def test_run_monitor_passes_no_mouse_and_returns_the_exit_code(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    class Done:
        description = "done"

        def poll(self) -> int | None:
            return 0

        def terminate(self) -> None:
            raise AssertionError("not running")

        def kill(self) -> None:
            raise AssertionError("not running")

    def fake_run(self: MonitorApp, **kwargs: Any) -> None:
        seen.update(kwargs, title=self.title)
        self.state.apply(train_stream(2) + [Finished(status="completed", epoch=2)])
        self.exited_by_user = True

    monkeypatch.setattr(MonitorApp, "run", fake_run)
    from molpt_tui.training.run_dir import RunDirectory

    source = LiveRun(RunDirectory(tmp_path), Done())
    source.check()
    assert run_monitor(source, no_mouse=True, title="t") == 0
    assert seen == {"mouse": False, "title": "t"}

    def crashing_run(self: MonitorApp, **kwargs: Any) -> None:
        self.state.apply(train_stream(2) + [Finished(status="completed", epoch=2)])

    monkeypatch.setattr(MonitorApp, "run", crashing_run)
    assert run_monitor(source) == EXIT_UI_CRASHED


async def test_no_color_keeps_series_distinguishable(tmp_path: Path, wait: Wait, fakes: list[Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app, _ = make_app(fakes, fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 5, what="first steps")
        await wait(pilot, lambda: app.state.history.last_epoch >= 5, what="epochs read")
        app.refresh_now()
        await pilot.pause(0.1)
        assert app.no_color
        plot = app.query_one("#plot-terms", MetricPlot)
        assert plot.monochrome
        assert "•" in str(plot.render())  # the second series is drawn with dots, not braille
