"""Live mode driven by a fake trainer: keys must change what the trainer does, not just labels."""
from __future__ import annotations

from molpt_tui.tui.app import MonitorApp, run_train_app
from molpt_tui.tui.screens import ConfirmQuitScreen, HelpScreen
from molpt_tui.tui.widgets import AlertsPane, MetricPlot
from tui_fakes import FakeTrainer, screen_text

SIZE = (160, 48)


def make_app(fake, **kwargs) -> MonitorApp:
    kwargs.setdefault("refresh_hz", 10.0)
    kwargs.setdefault("sink_interval", 0.02)
    return MonitorApp(mode="train", train_fn=fake, **kwargs)


async def test_events_arrive_batched_and_fill_the_panes(tmp_path, wait):
    fake = FakeTrainer(tmp_path, step_sleep=0.002, alert_at=3)
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch >= 50, what="50 epochs")
        assert app.sink.batches_posted < app.state.n_events  # batched, not one message per event
        app.refresh_now()
        await pilot.pause()
        text = screen_text(app)
        assert "300.0K → 450.0K" in text and "442.4 k params" in text
        assert "RUNNING" in text and "Epoch " in text
        assert all(p.points_plotted > 0 for p in app.query(MetricPlot))
        app.control.request_stop()


async def test_pause_stops_the_trainer_and_resume_restarts_it(tmp_path, wait):
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 5, what="first steps")
        await pilot.press("p")
        assert app.control.paused
        await pilot.pause(0.1)  # let the step in flight finish
        frozen = fake.steps
        await pilot.pause(0.3)
        assert fake.steps == frozen
        assert "PAUSED" in screen_text(app)
        await pilot.press("p")
        assert not app.control.paused
        await wait(pilot, lambda: fake.steps > frozen + 3, what="steps after resume")
        app.control.request_stop()


async def test_checkpoint_and_png_requests_reach_the_trainer(tmp_path, wait):
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 2, what="first steps")
        await pilot.press("c")
        await wait(pilot, lambda: fake.checkpoint_requests == 1, what="checkpoint taken")
        assert list(tmp_path.glob("manual-*.pt"))
        await wait(pilot, lambda: any("checkpoint (manual)" in e.text for e in app.state.log),
                   what="checkpoint in the log")
        await pilot.press("g")
        await wait(pilot, lambda: fake.png_requests == 1, what="png written")
        assert (tmp_path / "training.png").exists()
        app.control.request_stop()


async def test_log_toggle_and_zoom_cycle(tmp_path, wait):
    fake = FakeTrainer(tmp_path, step_sleep=0.0005)
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch >= 1200, what="1200 epochs")
        await pilot.press("p")  # freeze the data so the windows can be checked exactly
        await pilot.pause(0.1)
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
            widths.append(loss.x_range[1] - loss.x_range[0] + 1)
        assert widths == [100, 1000, last]
        assert "zoom all" in screen_text(app)
        app.control.request_stop()


async def test_stop_finishes_the_step_and_keeps_the_final_state(tmp_path, wait):
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 5, what="first steps")
        await pilot.press("s")
        await wait(pilot, lambda: app.trainer_done, what="trainer to stop")
        app.refresh_now()
        await pilot.pause()
        assert fake.saw_stop and (tmp_path / "last.pt").exists()
        text = screen_text(app)
        assert "Training stopped" in text and "last.pt" in text and "STOPPED" in text
        assert app.is_running  # still on screen
        assert app.check_action("toggle_pause", ()) is None  # greyed out now
        await pilot.press("q")  # no confirmation once the trainer is gone
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    assert app.exit_code == 130


async def test_quit_asks_then_stops_the_trainer_and_exits(tmp_path, wait):
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 3, what="first steps")
        await pilot.press("q")
        await wait(pilot, lambda: isinstance(app.screen, ConfirmQuitScreen), what="confirm modal")
        await pilot.press("n")
        await wait(pilot, lambda: not isinstance(app.screen, ConfirmQuitScreen), what="modal closed")
        assert not app.control.stop_requested
        steps = fake.steps
        await wait(pilot, lambda: fake.steps > steps, what="training continues")
        await pilot.press("q")
        await wait(pilot, lambda: isinstance(app.screen, ConfirmQuitScreen), what="confirm modal")
        await pilot.press("y")
        await wait(pilot, lambda: app.return_code is not None, what="exit after stop")
    assert fake.saw_stop and fake.returned.is_set()
    assert (tmp_path / "last.pt").exists()
    assert app.exit_code == 130 and not app.forced_exit


async def test_quit_never_hangs_on_a_stuck_trainer(tmp_path, wait):
    fake = FakeTrainer(tmp_path, step_sleep=0.005, hang_on_stop=30.0)
    app = make_app(fake, quit_timeout=0.3)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait(pilot, lambda: fake.steps >= 2, what="first steps")
            await pilot.press("q", "y")
            await wait(pilot, lambda: app.return_code is not None, what="forced exit")
        assert app.forced_exit and app.exit_code == 130
    finally:
        fake.release.set()


async def test_completion_shows_summary_and_files(tmp_path, wait):
    fake = FakeTrainer(tmp_path, epochs=30, step_sleep=0.001)
    app = make_app(fake)
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


async def test_trainer_exception_stays_on_screen_and_exits_1(tmp_path, wait):
    fake = FakeTrainer(tmp_path, step_sleep=0.001, fail_at=4)
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.trainer_done, what="crash")
        app.refresh_now()
        await pilot.pause()
        text = screen_text(app)
        assert "Training crashed: RuntimeError: CUDA error" in text and "CRASHED" in text
        assert any("Traceback" in e.text for e in app.state.log)
        assert any("illegal memory access" in n.message for n in app._notifications)
        await pilot.pause(0.3)
        assert app.is_running
        await pilot.press("q")
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    assert app.exit_code == 1


async def test_alert_appears_in_pane_and_as_notification(tmp_path, wait):
    fake = FakeTrainer(tmp_path, step_sleep=0.003, alert_at=5)
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.history.alerts, what="alert")
        await wait(pilot, lambda: list(app._notifications), what="toast")
        toast = list(app._notifications)[0]
        assert "Inverse energy is diverging" in toast.message and toast.severity == "error"
        app.refresh_now()
        text = app.query_one(AlertsPane).text  # the toast may cover the pane on screen
        assert "ERROR epoch 5 Inverse energy is diverging" in text
        assert "→ Lower the learning rate" in text
        assert app.query_one("#tab-alerts").label.plain == "Alerts (1)"
        app.control.request_stop()


async def test_help_screen_and_command_palette_list_the_actions(tmp_path, wait):
    fake = FakeTrainer(tmp_path, step_sleep=0.01)
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await wait(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = screen_text(app)
        for phrase in ("Pause or resume", "Save a checkpoint", "Write the training-curve PNG",
                       "logarithmic y-axis", "last 100", "Stop gracefully", "Quit"):
            assert phrase in text
        await pilot.press("escape")
        await wait(pilot, lambda: not isinstance(app.screen, HelpScreen), what="help closed")
        await pilot.press("f1")
        await wait(pilot, lambda: isinstance(app.screen, HelpScreen), what="help via F1")
        await pilot.press("escape")
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        assert {"Pause / resume training", "Save checkpoint now", "Write PNG now", "Toggle log y-axis",
                "Cycle plot zoom", "Stop training gracefully"} <= set(commands)
        commands["Toggle log y-axis"].callback()
        assert app.log_y
        commands["Pause / resume training"].callback()
        assert app.control.paused
        footer_keys = {b.key for b in app.BINDINGS if b.show}
        assert {"p", "c", "g", "l", "z", "s", "q", "question_mark"} <= footer_keys
        app.control.request_stop()


async def test_compact_layout_at_80x24_shows_one_pane_behind_tabs(tmp_path, wait):
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app = make_app(fake)
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
        assert [p.id for p in app.query(MetricPlot) if p.display] == ["plot-terms"]
        await pilot.press("v", "v", "v")
        await pilot.pause(0.1)
        assert app.query_one("#table").display and not app.query_one("#plots").display
        app.control.request_stop()


async def test_wide_layout_shows_everything(tmp_path, wait):
    fake = FakeTrainer(tmp_path, step_sleep=0.01)
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.1)
        assert not app.compact and not app.query_one("#views").display
        assert all(p.display for p in app.query(MetricPlot))
        assert app.query_one("#table").display and app.query_one("#alerts").display
        assert app.check_action("next_view", ()) is False
        app.control.request_stop()


def test_run_train_app_passes_no_mouse_and_returns_the_exit_code(monkeypatch, tmp_path):
    seen = {}

    def fake_run(self, **kwargs):
        seen.update(kwargs)
        self.trainer_done = True  # as if the trainer completed
        from molpt_tui.training.events import Finished

        self.state.apply([Finished(status="completed", epoch=1)])

    monkeypatch.setattr(MonitorApp, "run", fake_run)
    assert run_train_app(FakeTrainer(tmp_path), no_mouse=True, title="t") == 0
    assert seen == {"mouse": False}


async def test_no_color_keeps_series_distinguishable(tmp_path, wait, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    fake = FakeTrainer(tmp_path, step_sleep=0.005)
    app = make_app(fake)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: fake.steps >= 5, what="first steps")
        app.refresh_now()
        await pilot.pause(0.1)
        assert app.no_color
        plot = app.query_one("#plot-terms", MetricPlot)
        assert plot.monochrome
        assert "•" in str(plot.render())  # the second series is drawn with dots, not braille
        app.control.request_stop()
