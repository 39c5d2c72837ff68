"""`watch` for the cluster workflow (issue 12): before a run starts, `train` may simulate its
training data and its independent test run for minutes. The monitor shows that MD from the
DataProgress events it writes (ns per replica, ns/day, ETA, swap acceptance per neighbour pair),
keeps each phase in the log, and switches to the training screens when RunStarted comes. Fed
fixed event streams, never a live MD run."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tui_fakes import (
    DATA_NS,
    T0,
    FakeTrainer,
    Wait,
    data_progress,
    data_stream,
    jsonl,
    live_run,
    run_started,
    screen_text,
    train_stream,
)

from molpt_tui.training.events import Event, Message
from molpt_tui.training.run_dir import RunDirectory
from molpt_tui.tui.app import MIN_WIDTH, MonitorApp
from molpt_tui.tui.source import WatchedRun
from molpt_tui.tui.state import MonitorState
from molpt_tui.tui.widgets import LogPane, ProgressPane
from molpt_tui.tui.widgets.progress import data_detail

SAMPLING = "simulating training data: 1.23 / 4.00 ns per replica"


def log_text(state: MonitorState) -> str:
    return "\n".join(entry.text for entry in state.log)


# --- the state -----------------------------------------------------------------------------------
def test_the_state_follows_the_data_phase_until_the_run_starts() -> None:
    state = MonitorState()
    state.apply([Message(text="building the system", t=T0), *data_stream("data")[:3]])
    phase = state.data_phase()
    assert phase is not None and phase.phase == "sampling" and phase.simulated_ns == 1.23
    log = log_text(state)
    assert "minimising training data: data/ala2_data.npz (3 replicas at 300, 367, 450 K, 4.00 ns each)" in log
    assert "equilibrating training data: data/ala2_data.npz" in log
    assert log.count("simulating training data") == 1  # one line per phase, not per report
    state.apply(data_stream("data")[3:] + data_stream("test", T0 + 80.0)[:3])
    phase = state.data_phase()
    assert phase is not None and phase.split == "test" and phase.phase == "sampling"
    assert ("training data written: data/ala2_data.npz (5,000 samples per temperature, 4.00 ns per replica in "
            "01:11); swap acceptance 300↔367 K 0.41, 367↔450 K 0.37") in log_text(state)
    state.apply([run_started(t=T0 + 200.0)])
    assert state.data_phase() is None
    assert "simulating the test run: data/ala2_test.npz" in log_text(state)  # the log keeps the phases


# --- the progress widget, pure ---------------------------------------------------------------------
ladders = st.lists(st.floats(200.0, 2000.0, allow_nan=False), min_size=0, max_size=24).map(sorted)


@settings(max_examples=200, deadline=None)
@given(ladder=ladders, width=st.integers(1, 300), data=st.data())
def test_the_swap_line_fits_and_cuts_whole_pairs(ladder: list[float], width: int, data: st.DataObject) -> None:
    n = max(len(ladder) - 1, 0)
    acceptance = data.draw(st.lists(st.one_of(st.floats(0.0, 1.0), st.just(math.nan)), min_size=n, max_size=n))
    event = data_progress("data", "sampling", 1.0, T0, acceptance=acceptance, ladder=ladder)
    pieces = data_detail(event, width)
    text = "".join(t for t, _ in pieces)
    assert len(text) <= width and "nan" not in text.lower()
    if "swap acceptance " in text and "no swap attempted" not in text:
        pairs = text.split("swap acceptance ", 1)[1].split(" · ")
        shown = [p for p in pairs if "↔" in p]
        assert all(p.endswith(" K –") or p.rsplit(" ", 1)[1].replace(".", "").isdigit() for p in shown)
        if len(shown) < n:
            assert f"+{n - len(shown)} more pairs" in text


async def _screen(app: MonitorApp, pilot: Any) -> list[str]:
    app.refresh_now()
    await pilot.pause()
    return screen_text(app).splitlines()


# --- on screen -------------------------------------------------------------------------------------
def append(path: Path, events: list[Event]) -> None:
    """As the trainer writes: whole lines appended to metrics.jsonl (its header line first)."""
    text = jsonl(events)
    if path.exists():
        text = text.split("\n", 1)[1]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


async def test_watch_waits_for_the_directory_then_shows_the_data_phase_then_training(
        tmp_path: Path, wait: Wait) -> None:
    run_dir = tmp_path / "runs" / "pending"
    app = MonitorApp(WatchedRun(RunDirectory(run_dir), read_only=True), clock=lambda: T0 + 30.0,
                     poll_interval=0.02, refresh_hz=10.0)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait(pilot, lambda: app.feed.exists is False, what="the missing directory noticed")
        lines = await _screen(app, pilot)
        assert "WAITING (no run directory yet: checking every second" in lines[2]
        # The job starts: the directory appears, then its metrics.jsonl with the first phases.
        run_dir.mkdir(parents=True)
        lines = await _screen(app, pilot)
        assert "WAITING" in lines[2]
        metrics = run_dir / "metrics.jsonl"
        stream = data_stream("data")
        append(metrics, [Message(text="building the system (ALA2 in vacuum)", t=T0), *stream[:3]])
        await wait(pilot, lambda: app.state.n_events == 4, what="the data phase")
        lines = await _screen(app, pilot)
        assert lines[0].strip().startswith("WATCH  waiting for the run to start: simulating training data "
                                           "(data/ala2_data.npz)")
        assert lines[2].lstrip().startswith(SAMPLING + " ")
        assert lines[2].rstrip().endswith("31% · 4,900 ns/day · ETA 55 s  WAITING")
        assert lines[3].strip() == ("swap acceptance 300↔367 K 0.42 · 367↔450 K 0.38 · 1,153 / 5,000 samples "
                                    "per temperature · elapsed 00:22")
        assert app.query_one(ProgressPane).fraction() == 0.0  # no epochs yet: the bar is the MD's
        # The training data is written; the independent test run is simulated the same way.
        append(metrics, [*stream[3:], *data_stream("test", T0 + 80.0)[:3]])
        await wait(pilot, lambda: app.state.n_events == 9, what="the test run's phase")
        lines = await _screen(app, pilot)
        assert lines[2].lstrip().startswith("simulating the test run: 1.23 / 4.00 ns per replica")
        log = app.query_one(LogPane).text
        assert "training data written: data/ala2_data.npz" in log and "swap acceptance 300↔367 K 0.41" in log
        # RunStarted: the normal training screens; the data phases stay in the log.
        append(metrics, [data_progress("test", "written", DATA_NS, T0 + 150.0, acceptance=[0.4, 0.36]),
                         *train_stream(12)])
        await wait(pilot, lambda: app.state.history.last_epoch == 12, what="training")
        lines = await _screen(app, pilot)
        assert lines[0].strip().startswith("WATCH  300.0K → 450.0K")
        assert lines[2].lstrip().startswith("Epoch 12/200") and "ns per replica" not in "\n".join(lines[:4])
        log = app.query_one(LogPane).text
        assert "minimising training data" in log and "test run written: data/ala2_test.npz" in log
        assert app.ui_errors == 0


@pytest.mark.parametrize("size", [(MIN_WIDTH, 15), (80, 24), (300, 50)])
async def test_the_data_phase_fits_every_layout_whole(tmp_path: Path, wait: Wait, size: tuple[int, int]) -> None:
    ladder = [300.0 + 25.0 * i for i in range(12)]
    event = data_progress("data", "sampling", 1.23, T0 + 22.0, ns_per_day=4900.0, eta_s=55.0,
                          acceptance=[0.5 - 0.02 * i for i in range(11)], ladder=ladder)
    (tmp_path / "metrics.jsonl").write_text(jsonl([event]), encoding="utf-8")
    app = MonitorApp(WatchedRun(RunDirectory(tmp_path), read_only=True), clock=lambda: T0 + 30.0,
                     poll_interval=0.02, refresh_hz=10.0, ascii_only=size[0] == MIN_WIDTH)
    async with app.run_test(size=size) as pilot:
        await wait(pilot, lambda: app.state.data_phase() is not None, what="the data phase")
        lines = await _screen(app, pilot)
        bar, swaps = lines[2].strip(), lines[3].strip()
        assert bar.startswith("simulating training data: 1.23") and bar.endswith("WAITING")
        assert "ETA 55 s" in bar
        assert swaps.startswith("swap acceptance 300")
        if size[0] == MIN_WIDTH:
            assert swaps.isascii() and "<->" in swaps and "more pairs" in swaps
        elif size[0] < 300:
            assert swaps.endswith("more pairs")  # 11 pairs do not fit: says how many are left out
        else:
            assert "550↔575 K 0.30" in swaps and "more pairs" not in swaps
        assert app.ui_errors == 0


async def test_train_shows_the_data_phase_while_its_trainer_prepares(tmp_path: Path, wait: Wait,
                                                                     fakes: list[Any]) -> None:
    script: list[Event] = [Message(text="building the system", t=T0), *data_stream("data")[:3]]
    source, handle = live_run(FakeTrainer(tmp_path, script=script))
    fakes.append(handle)
    app = MonitorApp(source, clock=lambda: T0 + 30.0, poll_interval=0.02, refresh_hz=10.0)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait(pilot, lambda: app.state.n_events == len(script), what="the script")
        lines = await _screen(app, pilot)
        assert lines[2].lstrip().startswith(SAMPLING) and lines[2].rstrip().endswith("STARTING")
        assert "swap acceptance 300↔367 K 0.42" in lines[3]
