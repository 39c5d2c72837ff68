"""The pt monitor: `molpt-tui pt` on a terminal and `molpt-tui watch PT_DIR`.

Pilot tests feed a fixed event stream through a pt directory's metrics.jsonl (no MD) and read
the screen as a user would: acceptance with its 95 % interval, round trips, populations with
their errors, ns/day, energy evaluations; NaN as "—"; the ASCII fallback; every size from the
smallest supported to 200x60. One integration test runs `molpt-tui pt` on a pseudo-terminal.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tui_fakes import T0, Wait, jsonl, screen_text

from molpt_tui.training.events import Event, Finished, Message, PTProgress, PTStarted, RequestAcknowledged
from molpt_tui.training.metrics_log import read_events
from molpt_tui.training.pt_dir import PTDirectory
from molpt_tui.training.run_dir import RunDirectory
from molpt_tui.tui.base import MIN_HEIGHT, MIN_WIDTH
from molpt_tui.tui.pt_monitor import PTMonitorApp, PTNumbers, PTPopulations, PTProgressLine
from molpt_tui.tui.pt_source import WatchedPT
from molpt_tui.tui.pt_state import PTState, fmt, fmt_pm
from molpt_tui.tui.screens import HelpScreen

SIZE = (160, 48)
STATES = ["C7eq", "C5", "alphaR", "phi>0", "cis"]


def started(**kw: Any) -> PTStarted:
    base: dict[str, Any] = dict(
        run_dir="/runs/ala2/pt", source_run="/runs/ala2", model_path="/runs/ala2/best.pt", model_epoch=42,
        system="alanine dipeptide", t_cold=300.0, t_hot=450.0, swap_every=20, timestep_fs=2.0, planned_ns=0.01,
        platform="CPU", seed=7, ladder=[300.0, 367.0, 450.0], ladder_planned_ns=0.00667, states=STATES,
        rama_label="ALA2", train_acc_flow=0.4123, check_acc_flow=0.4121, check_acc_flow_se=0.011, t=T0)
    base.update(kw)
    return PTStarted(**base)


def flow_progress(i: int, n: int = 10, **kw: Any) -> PTProgress:
    ns = 0.01 * i / n
    base: dict[str, Any] = dict(
        sampler="flow", ns=ns, planned_ns=0.01, total_ns=2 * ns, ns_per_day=48.25, energy_evals=4400 * i,
        attempts=50 * i, accepted=20 * i, acc=0.40 + 0.001 * i, acc_se=0.02, acc_naive=0.0012, acc_naive_se=0.0004,
        round_trips=3 * i, round_trips_per_ns=300.0, samples=50 * i,
        populations=[0.6, 0.3, 0.05, 0.0456, 0.0], populations_se=[0.03, 0.02, 0.01, 0.0123, math.nan],
        elapsed_s=10.0 * i, eta_s=10.0 * (n - i), map_share=0.25, t=T0 + 10 * i)
    base.update(kw)
    return PTProgress(**base)


def ladder_progress(i: int, n: int = 10, **kw: Any) -> PTProgress:
    ns = 0.00667 * i / n
    base: dict[str, Any] = dict(
        sampler="ladder", ns=ns, planned_ns=0.00667, total_ns=3 * ns, ns_per_day=71.5, energy_evals=3300 * i,
        attempts=60 * i, accepted=18 * i, acc=0.31, acc_se=0.015, pair_acc=[0.32, 0.30], round_trips=i,
        round_trips_per_ns=150.0, samples=33 * i, populations=[0.58, 0.32, 0.06, 0.04, 0.0],
        populations_se=[0.05, 0.04, math.nan, 0.02, 0.0], elapsed_s=10.0 * i, eta_s=5.0 * (n - i), t=T0 + 10 * i + 1)
    base.update(kw)
    return PTProgress(**base)


def pt_stream(n: int = 10, *, finished: bool = True, ladder: bool = True) -> list[Event]:
    events: list[Event] = [started(**({} if ladder else {"ladder": [], "ladder_planned_ns": math.nan})),
                           Message(text="sampling with the flow swap", t=T0)]
    for i in range(1, n + 1):
        events.append(flow_progress(i, n))
        if ladder:
            events.append(ladder_progress(i, n))
    if finished:
        events.append(Finished(status="completed", epoch=500, message="0.01 ns per replica, flow-swap acceptance "
                               "0.410 ± 0.020, 30 round trips", files=["/runs/ala2/pt/summary.json"], t=T0 + 200))
    return events


def write_pt_dir(path: Path, events: list[Event]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text(jsonl(events))
    return path


def pt_app(path: Path, **kwargs: Any) -> PTMonitorApp:
    kwargs.setdefault("poll_interval", 0.02)
    kwargs.setdefault("refresh_hz", 10.0)
    kwargs.setdefault("clock", lambda: T0 + 100)
    return PTMonitorApp(WatchedPT(RunDirectory(path), lock_check_interval=0.05), **kwargs)


def flat(text: str) -> str:
    return " ".join(text.split())


# --- the state and its formatting, without a terminal ---------------------------------------------

def test_nan_and_missing_numbers_read_as_a_dash() -> None:
    assert fmt(math.nan) == "—" and fmt(math.inf) == "—" and fmt(None) == "—"
    assert fmt_pm(0.5, math.nan) == "0.500 ± —" and fmt_pm(math.nan, 0.1) == "—"
    state = PTState()
    state.apply([started(), flow_progress(3), ladder_progress(3)])
    assert state.latest("flow") is not None and state.fraction() == pytest.approx(0.3)
    # Each sampler's ETA counts its own wall time only: the run's is their sum.
    assert state.eta_s() == pytest.approx(70.0 + 35.0)


def test_a_stopped_run_names_how_to_continue_it(tmp_path: Path) -> None:
    from molpt_tui.tui.pt_monitor import resume_command

    state = PTState()
    state.apply([started(source_run=str(tmp_path))])
    assert resume_command(state, tmp_path / "pt") == f"molpt-tui pt {tmp_path} --resume"
    assert resume_command(state, tmp_path / "other") == f"molpt-tui pt {tmp_path} --resume --out {tmp_path / 'other'}"


def test_a_log_that_starts_over_keeps_only_its_own_points() -> None:
    state = PTState()
    state.apply([started(), flow_progress(5), flow_progress(6), started(), flow_progress(1)])
    assert state.samplers["flow"].ns == [pytest.approx(0.001)]


# --- the screen -------------------------------------------------------------------------------------

async def test_the_screen_shows_acceptance_trips_populations_speed_and_cost(tmp_path: Path, wait: Wait) -> None:
    run = write_pt_dir(tmp_path / "pt", pt_stream())
    app = pt_app(run)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.finished is not None, what="the stream")
        app.refresh_now()
        await pilot.pause()
        text = flat(screen_text(app))
        numbers = app.query_one(PTNumbers).text
        # Acceptance with its 95% interval (1.96 x SE), and the naive swap of the same pairs.
        assert "flow-swap acceptance 0.410 ± 0.039 (95% CI)" in numbers
        assert "naive swap of the same pairs 0.001 ± 7.8e-04 (95% CI)" in numbers
        assert "swap acceptance, all pairs 0.310 ± 0.029 (95% CI)" in numbers
        assert "300↔367 K 0.320" in numbers and "367↔450 K 0.300" in numbers
        assert "round trips 30 (300 per ns per replica)" in numbers
        assert "round trips 10 (150 per ns per replica)" in numbers
        assert "48.2 ns/day per replica" in numbers and "71.5 ns/day per replica" in numbers
        assert "energy evaluations 44,000" in numbers and "energy evaluations 33,000" in numbers
        assert "flow-swap acceptance 0.410 ± 0.039" in text and "energy evaluations 44,000" in text
        pops = app.query_one(PTPopulations).text
        assert "300 K (cold replica), ALA2 φ/ψ states, fraction ± SE" in pops
        assert re.search(r"phi>0\s+0\.046 ± 0\.012\s+0\.040 ± 0\.020", pops), pops
        # A cis state neither sampler visited is one note (as the headless lines leave it out).
        assert "not visited: cis" in pops
        assert re.search(r"C7eq\s+0\.600 ± 0\.030\s+0\.580 ± 0\.050", pops), pops
        assert re.search(r"alphaR\s+0\.050 ± 0\.010\s+0\.060 ± —", pops), pops  # a NaN error bar is a dash
        progress = app.query_one(PTProgressLine).text
        assert "FINISHED" in progress and "100% of planned MD" in progress
        assert "48.2 ns/day" in progress and "44,000 energy evals" in progress
        assert "map check: training acc 0.412, recomputed 0.412 ± 0.011" in text
        assert "swap every 20 steps of 2 fs" in text and "epoch 42" in text
        assert "pt completed: 0.01 ns per replica" in text
        assert "Flow PT acceptance ━━ flow ±95% ━━ naive" in text
        assert "Ladder acceptance ━━ all ±95%" in text
        assert "Round trips ━━ flow 30, 300/ns ━━ ladder 10, 150/ns" in text
        # A run of 0.01 ns is drawn in ps: the axis spreads its points over the pane.
        assert "MD time per replica [ps]" in text
        assert "sampling with the flow swap" in text  # the log pane


async def test_nan_values_show_as_dashes_and_a_run_without_peptide_or_ladder_says_so(tmp_path: Path,
                                                                                   wait: Wait) -> None:
    events: list[Event] = [started(states=[], rama_label="", ladder=[], ladder_planned_ns=math.nan,
                                   check_acc_flow=math.nan, check_acc_flow_se=math.nan),
                           flow_progress(1, acc_se=math.nan, ns_per_day=math.nan, round_trips_per_ns=math.nan,
                                         acc_naive=math.nan, populations=[], populations_se=[], eta_s=math.nan)]
    run = write_pt_dir(tmp_path / "pt", events)
    app = pt_app(run)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.latest("flow") is not None, what="the stream")
        app.refresh_now()
        await pilot.pause()
        numbers = app.query_one(PTNumbers).text
        assert "flow-swap acceptance 0.401 ± — (95% CI)" in numbers
        assert "naive swap of the same pairs — (95% CI)" in numbers
        assert "(— per ns per replica)" in numbers and "— ns/day per replica" in numbers
        assert "nan" not in numbers.lower()
        text = flat(screen_text(app))
        assert "recomputed —" in text and "ETA —" in text
        assert "No peptide backbone in this system" in text
        assert "no ladder in this run" in text
        assert "MD time per replica [ns]" in text  # one point: no span to scale


async def test_ascii_terminals_get_no_braille_or_box_drawing(tmp_path: Path, wait: Wait) -> None:
    run = write_pt_dir(tmp_path / "pt", pt_stream())
    app = pt_app(run, ascii_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.finished is not None, what="the stream")
        app.refresh_now()
        await pilot.pause()
        text = screen_text(app)
        assert text.isascii(), sorted({c for c in text if not c.isascii()})
        assert "flow-swap acceptance 0.410 +/- 0.039 (95% CI)" in flat(text)
        assert "300<->367 K 0.320" in flat(text)


@pytest.mark.parametrize("size", [(MIN_WIDTH, MIN_HEIGHT), (80, 24), (200, 60)])
async def test_compact_and_wide_layouts_and_the_too_small_notice(tmp_path: Path, wait: Wait,
                                                                 size: tuple[int, int]) -> None:
    run = write_pt_dir(tmp_path / "pt", pt_stream())
    app = pt_app(run)
    async with app.run_test(size=size) as pilot:
        await wait(pilot, lambda: app.state.finished is not None, what="the stream")
        app.refresh_now()
        await pilot.pause()
        assert app.ui_errors == 0
        assert app.compact == (size != (200, 60))
        if app.compact:
            await pilot.press("v")
            await pilot.pause()
            assert app.view_id == "pt-ladder"
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen) and "Pause the sampler" in flat(screen_text(app))
        await pilot.press("escape")
        await pilot.pause()
        assert app.ui_errors == 0
        await pilot.resize_terminal(MIN_WIDTH - 1, MIN_HEIGHT)
        await pilot.pause()
        assert "terminal too small" in flat(screen_text(app)) and "sampling goes on" in flat(screen_text(app))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(min_value=MIN_WIDTH - 5, max_value=200), height=st.integers(min_value=MIN_HEIGHT - 3,
                                                                                      max_value=60),
       n=st.integers(min_value=0, max_value=40), ascii_only=st.booleans())
def test_every_size_draws_without_an_exception(tmp_path_factory: pytest.TempPathFactory, width: int, height: int,
                                               n: int, ascii_only: bool) -> None:
    import asyncio

    run = write_pt_dir(tmp_path_factory.mktemp("pt"), pt_stream(n, finished=n % 2 == 0) if n else [started()])

    async def drive() -> None:
        app = pt_app(run, ascii_only=ascii_only)
        async with app.run_test(size=(width, height)) as pilot:
            deadline = time.monotonic() + 20
            while app.state.started is None and time.monotonic() < deadline:
                await pilot.pause(0.02)
            app.refresh_now()
            await pilot.pause()
            assert app.ui_errors == 0, [e.text for e in app.state.log if e.level == "error"]
            for _ in range(3):
                await pilot.press("v")
                await pilot.pause()
            assert app.ui_errors == 0
            screen_text(app)

    asyncio.run(drive())


# --- steering and quitting ------------------------------------------------------------------------

async def test_watch_steers_a_live_sampler_and_quitting_leaves_it(tmp_path: Path, wait: Wait) -> None:
    run = write_pt_dir(tmp_path / "pt", pt_stream(3, finished=False))
    rd = RunDirectory(run)
    rd.acquire_lock()  # a sampler "elsewhere": this process holds the lock
    try:
        app = pt_app(run)
        async with app.run_test(size=SIZE) as pilot:
            await wait(pilot, lambda: app.state.latest("flow") is not None, what="the stream")
            await wait(pilot, lambda: not app.source.steer_refusal(), what="the lock seen")
            await pilot.press("p")
            await wait(pilot, lambda: any(rd.control_dir.glob("req-*.json")), what="a pause request")
            request = json.loads(next(rd.control_dir.glob("req-*.json")).read_text())
            assert request["action"] == "pause"
            with open(run / "metrics.jsonl", "a") as fh:
                ack = RequestAcknowledged(request_id=request["id"], action="pause", epoch=3, detail="paused")
                fh.write(json.dumps(ack.to_dict()) + "\n")
            await wait(pilot, lambda: app.state.paused, what="the acknowledgement")
            app.refresh_now()
            await pilot.pause()
            assert "PAUSED" in app.query_one(PTProgressLine).text
            await pilot.press("q")
            await wait(pilot, lambda: app.return_code is not None, what="exit")
        assert app.return_code == 0
    finally:
        rd.release_lock()


async def test_watch_of_a_run_without_a_sampler_refuses_to_steer(tmp_path: Path, wait: Wait) -> None:
    run = write_pt_dir(tmp_path / "pt", pt_stream(2, finished=False))
    app = pt_app(run)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.state.started is not None, what="the stream")
        await pilot.press("p")
        await pilot.pause()
        assert not (run / "control").exists()
        assert any("no live sampler" in n.message for n in app._notifications)


class FakeSampler:
    """Writes a pt run's events as the sampler does (through MetricsLogSink), polls the control
    channel, pauses in wait_if_paused, acknowledges every request and stops with a Finished event."""

    def __init__(self, run: Path) -> None:
        from molpt_tui.training.control import TrainingControl

        self.run_dir = RunDirectory(run)
        self.control = TrainingControl(self.run_dir)
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, name="fake-sampler", daemon=True)
        self.description = "fake sampler thread"
        self.terminated = False

    def _run(self) -> None:
        from molpt_tui.training.metrics_log import MetricsLogSink

        sink = MetricsLogSink(self.run_dir.metrics)
        try:
            sink.emit(started())
            i = 0

            def service() -> None:  # as PTRun._service: read the channel, answer what it applied
                self.control.poll()
                for ack in self.control.take_acknowledgements():
                    sink.emit(ack)

            while not self.control.stop_requested and i < 10_000:
                service()
                self.control.wait_if_paused(service=service, poll=0.02)
                i += 1
                sink.emit(flow_progress(min(i, 9), t=time.time()))
                time.sleep(0.02)
            for ack in self.control.take_acknowledgements():
                sink.emit(ack)
            sink.emit(Finished(status="stopped", epoch=i, message=self.control.stop_reason,
                               files=[str(self.run_dir.path / "pt_checkpoint.npz")]))
            self.code = 130
        finally:
            sink.close()

    def start(self) -> None:
        self.thread.start()

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else self.code

    def terminate(self) -> None:
        self.terminated = True
        self.control.request_stop("terminated")

    def kill(self) -> None:
        self.control.request_stop("killed")


async def test_quitting_a_live_run_stops_its_sampler_and_waits_for_its_end(tmp_path: Path, wait: Wait) -> None:
    from molpt_tui.app.pt import print_pt_summary
    from molpt_tui.tui.pt_source import LivePT
    from molpt_tui.tui.screens import ConfirmScreen

    run = tmp_path / "pt"
    run.mkdir()
    fake = FakeSampler(run)
    source = LivePT(RunDirectory(run), fake)
    fake.start()
    app = PTMonitorApp(source, poll_interval=0.02, refresh_hz=10.0)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait(pilot, lambda: app.state.latest("flow") is not None, what="progress")
            app.refresh_now()
            assert "RUNNING" in app.query_one(PTProgressLine).text
            await pilot.press("p")
            await wait(pilot, lambda: app.state.paused, what="paused")
            app.refresh_now()
            await pilot.pause()
            assert "PAUSED" in app.query_one(PTProgressLine).text
            await pilot.press("p")  # already paused: refused, and it says why
            await pilot.pause()
            assert any("already paused" in n.message for n in app._notifications)
            await pilot.press("q")
            await wait(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
            await pilot.press("y")
            await wait(pilot, lambda: app.return_code is not None, timeout=30, what="exit")
        assert app.return_code == 130 and not fake.terminated  # the stop went through the channel
        assert app.state.finished is not None and app.state.finished.status == "stopped"
    finally:
        fake.kill()
        fake.thread.join(10)
    out = io.StringIO()
    assert print_pt_summary(PTDirectory(run), source.prior_finished, out)
    text = out.getvalue()
    assert text.startswith("pt: alanine dipeptide, 300 K <-> 450 K")
    assert "pt flow" in text and "flow-swap acc" in text
    assert "pt: stopped: stop requested through the control channel" in text
    assert f"pt: wrote {run / 'pt_checkpoint.npz'}" in text
    # A later segment that wrote nothing yet has no summary of its own.
    assert not print_pt_summary(PTDirectory(run), 1, io.StringIO())


async def test_a_sampler_that_fails_before_it_starts_shows_why(tmp_path: Path, wait: Wait) -> None:
    from molpt_tui.app.pt import _record_failure
    from molpt_tui.tui.pt_source import LivePT

    run = tmp_path / "pt"
    run.mkdir()

    class Failed:
        description = "pt sampler PID 1"

        def poll(self) -> int:
            return 2

        def terminate(self) -> None: ...

        def kill(self) -> None: ...

    source = LivePT(RunDirectory(run), Failed())
    _record_failure(PTDirectory(run), "best.pt: does not fit this model")
    app = PTMonitorApp(source, poll_interval=0.02, refresh_hz=10.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.sampler_done, what="the exit settled")
        app.refresh_now()
        await pilot.pause()
        text = flat(screen_text(app))
        assert "FAILED" in text and "best.pt: does not fit this model" in text
        await pilot.press("q")
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    assert app.return_code == 2


# --- `molpt-tui watch` dispatch ---------------------------------------------------------------------

def test_watch_tells_a_pt_directory_from_a_training_run(tmp_path: Path) -> None:
    from molpt_tui.app.watch import is_pt_directory

    pt = write_pt_dir(tmp_path / "pt", pt_stream(1, finished=False))
    assert is_pt_directory(pt)
    settings_only = tmp_path / "fresh"
    PTDirectory(settings_only).create()
    PTDirectory(settings_only).write_settings({"ns": 1.0})
    assert is_pt_directory(settings_only)
    from tui_fakes import train_stream

    train = tmp_path / "train"
    train.mkdir()
    (train / "metrics.jsonl").write_text(jsonl(train_stream(2)))
    assert not is_pt_directory(train)
    assert not is_pt_directory(tmp_path / "not" / "yet")  # a pending job: the training monitor waits


def test_watch_dispatches_a_pt_directory_to_the_pt_monitor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import molpt_tui.app.watch as watch_mod
    import molpt_tui.tui.app as tui_app
    import molpt_tui.tui.pt_monitor as pt_monitor

    calls: list[str] = []
    monkeypatch.setattr(pt_monitor, "run_pt_monitor", lambda source, **kw: calls.append(f"pt:{source.badge}") or 0)
    monkeypatch.setattr(tui_app, "run_monitor", lambda source, **kw: calls.append("train") or 0)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    pt = write_pt_dir(tmp_path / "pt", pt_stream(1, finished=False))
    assert watch_mod.watch(pt) == 0
    assert watch_mod.watch(tmp_path / "pending") == 0
    assert calls == ["pt:watch pt", "train"]


# --- `molpt-tui pt` on a terminal -------------------------------------------------------------------

def _strip_ansi(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]", "", text)


@pytest.fixture(scope="module")
def trained_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from molpt_testdata import TINY_DATA, TINY_TRAIN

    from molpt_tui.cli import main

    run = tmp_path_factory.mktemp("ptui") / "run"
    args = ["train", "--no-ui", "--preset", "quickstart", "--epochs", "2", "--out", str(run)]
    for item in [*TINY_DATA, *TINY_TRAIN, f"data.path={tiny_data}"]:
        args += ["--set", item]
    assert main(args) == 0
    return run


def _drive_pt(args: list[str], *, expect: list[str]) -> str:
    """Run `molpt-tui pt ARGS` on a pseudo-terminal until every text of `expect` was on screen,
    quit with q and confirm; returns everything the terminal received, ANSI codes stripped."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="160", LINES="40", TEXTUAL_ANIMATIONS="none")
    proc = subprocess.Popen([sys.executable, "-m", "molpt_tui", "pt", *args],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    seen = b""

    def pump(until: Any, timeout: float = 180.0) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until():
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    return

    def on_screen(needle: str) -> bool:
        return needle in " ".join(_strip_ansi(seen).split())

    try:
        for needle in [*expect, "flow-swap acceptance", "ns/day"]:
            pump(lambda needle=needle: on_screen(needle) or proc.poll() is not None)
            assert on_screen(needle), f"never saw {needle!r}; exit {proc.poll()}; {_strip_ansi(seen)[-3000:]}"
        assert proc.poll() is None
        os.write(master, b"q")
        pump(lambda: on_screen("Stop and quit"))
        os.write(master, b"y")
        pump(lambda: proc.poll() is not None)
        assert proc.wait(10) == 130  # stopped by the user, as headless pt on Ctrl+C
        pump(lambda: False, timeout=1.0)
        return _strip_ansi(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_pt_on_a_terminal_shows_the_monitor_and_quits_cleanly(trained_run: Path, tmp_path: Path) -> None:
    """`molpt-tui pt RUN` on a real terminal: the sampler runs in a child process, the monitor shows
    its numbers, q (and y to confirm) stops it with a checkpoint, and the terminal keeps the
    summary headless pt prints; `--resume` continues the chain under the monitor."""
    out = tmp_path / "pt"
    args = [str(trained_run), "--ns", "20", "--swap-every", "20", "--out", str(out)]
    tail = " ".join(_drive_pt(args, expect=["STARTING"]).split())
    assert "pt: stopped" in tail and f"pt: wrote {out / 'pt_checkpoint.npz'}" in tail
    assert (out / "pt_checkpoint.npz").is_file() and not (out / ".lock").exists()
    tail = " ".join(_drive_pt([*args, "--resume"], expect=["resumed at"]).split())
    assert "pt: stopped" in tail and not (out / ".lock").exists()
    started = [e for e in read_events(out / "metrics.jsonl") if isinstance(e, PTStarted)]
    assert [e.resumed for e in started] == [False, True] and started[1].start_ns > 0
