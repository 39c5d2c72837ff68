"""The header's system line (issue 15): the trainer's CPU, threads, memory, energy evaluations
and GPU from its SystemStats events, the SLURM allocation counting down, and the thread plan.
Figures the trainer could not read are left out (never "nan"), old readings say how old they
are, and what does not fit is left out whole."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tui_fakes import T0, Wait, jsonl, screen_text, slurm_run_started, system_stats, train_stream

from molpt_tui.training.events import Finished, SystemStats
from molpt_tui.training.run_dir import RunDirectory
from molpt_tui.tui.app import MIN_WIDTH, MonitorApp
from molpt_tui.tui.glyphs import to_ascii
from molpt_tui.tui.source import WatchedRun
from molpt_tui.tui.state import MonitorState
from molpt_tui.tui.widgets import LogPane, RunHeader, SystemLine
from molpt_tui.tui.widgets.system_line import fit_items, system_items

# The line has one column of padding each side.
SMALLEST = MIN_WIDTH - 2
FULL = ("CPU 183 % of 2 CPUs · 9 threads · RSS 812 MiB · 1.23 k energy evals/s · 3.4 M total · GPU 87 % · "
        "10.2 / 80.0 GiB")


def line(stats: SystemStats | None, now: float, width: int = 300, **kwargs: Any) -> str:
    ascii_only = kwargs.pop("ascii_only", False)
    items = system_items(stats, kwargs.pop("run", None), now, **kwargs)
    return "".join(text for text, _ in fit_items(items, width, ascii_only=ascii_only))


def test_every_figure_is_labelled() -> None:
    assert line(system_stats(T0), T0 + 1) == FULL


def test_figures_the_trainer_could_not_read_are_left_out() -> None:
    # No psutil and no GPU: only what the trainer counted itself.
    cpu_only = system_stats(T0, gpu_util_pct=math.nan, gpu_mem_used_mb=math.nan, gpu_mem_total_mb=math.nan)
    assert line(cpu_only, T0) == "CPU 183 % of 2 CPUs · 9 threads · RSS 812 MiB · 1.23 k energy evals/s · 3.4 M total"
    bare = system_stats(T0, cpu_pct=math.nan, threads=0, rss_mb=math.nan, energy_evals_per_s=math.nan, cpus=0,
                        gpu_util_pct=math.nan, gpu_mem_used_mb=math.nan, gpu_mem_total_mb=math.nan)
    # Without the rate next to it, the total says what it counts.
    assert line(bare, T0) == "3.4 M energy evals"
    # Memory without utilisation (NVML missing one figure) still says it is the GPU's.
    assert line(dataclasses.replace(cpu_only, gpu_mem_used_mb=2048.0), T0).endswith("· GPU 2.0 GiB used")
    assert line(system_stats(T0, gpu_torch_mem_mb=3 * 1024.0), T0).endswith("· torch 3.0 GiB reserved")
    nothing = SystemStats(t=T0)
    assert system_items(nothing, None, T0) == []


def test_readings_older_than_three_intervals_say_how_old_they_are() -> None:
    stats = system_stats(T0)
    assert "as of" not in line(stats, T0 + 14.0)  # within 3 × 5 s
    assert line(stats, T0 + 40.0) == FULL + " (as of 40 s ago)"
    assert line(stats, T0 + 7200.0).endswith("(as of 2.0 h ago)")
    # A run that finished samples no more: its last figures are marked at once.
    assert line(stats, T0 + 2.0, ended=True).endswith("(as of 2 s ago)")
    # The mark is the last thing left out: an old reading never passes for a fresh one.
    narrow = line(stats, T0 + 40.0, width=30)
    assert narrow.endswith("(as of 40 s ago)") and len(narrow) <= 30


def test_the_allocation_counts_down_and_the_requeues_show() -> None:
    run = slurm_run_started(T0, left_s=3723.0, restarts=2)
    stats = system_stats(T0 + 60)
    assert line(stats, T0 + 61, run=run).startswith(
        "SLURM job 4242 · allocation 1 h 01 min left · requeues 2 · no checkpoint yet · CPU")
    # what a requeue would resume from, and how old it is
    assert "requeues 2 · checkpoint 3 min ago · CPU" in line(stats, T0 + 241, run=run, checkpoint_t=T0 + 61)
    assert "allocation 11 min 03 s left" in line(stats, T0 + 3060, run=run)
    assert "allocation 40 s left" in line(stats, T0 + 3683, run=run)
    assert "allocation ended" in line(stats, T0 + 4000, run=run)
    # A finished run's allocation is not its concern any more; its job and requeues still are.
    finished = line(stats, T0 + 100, run=run, ended=True)
    assert "allocation" not in finished and finished.startswith("SLURM job 4242 · requeues 2")
    assert line(None, T0, run=slurm_run_started(T0, restarts=0)).startswith("SLURM job 4242 · allocation")
    assert system_items(None, slurm_run_started(T0), T0) and not system_items(None, None, T0)


def test_ascii_mode_draws_only_ascii() -> None:
    text = line(system_stats(T0), T0 + 40, run=slurm_run_started(T0), ascii_only=True)
    assert text.isascii() and " - CPU 183 % of 2 CPUs - " in text


finite_or_not = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, math.nan,
                                                                                         1e300, 1e-300]))
counts = st.one_of(st.integers(min_value=-10, max_value=2**63), st.sampled_from([0, 1, 10**18]))


@st.composite
def readings(draw: st.DrawFn) -> SystemStats:
    return SystemStats(cpu_pct=draw(finite_or_not), threads=draw(counts), rss_mb=draw(finite_or_not),
                       energy_evals=draw(counts), energy_evals_per_s=draw(finite_or_not), cpus=draw(counts),
                       interval_s=draw(finite_or_not), gpu_util_pct=draw(finite_or_not),
                       gpu_mem_used_mb=draw(finite_or_not), gpu_mem_total_mb=draw(finite_or_not),
                       gpu_torch_mem_mb=draw(finite_or_not), t=T0)


@settings(max_examples=300, deadline=None)
@given(stats=readings(), width=st.integers(min_value=SMALLEST, max_value=300),
       age=st.floats(min_value=0.0, max_value=1e7), slurm=st.booleans(), left=st.floats(-1e6, 1e7),
       restarts=st.integers(0, 10**6), ended=st.booleans(), ascii_only=st.booleans())
def test_the_line_fits_every_width_with_whole_items_and_never_says_nan(
        stats: SystemStats, width: int, age: float, slurm: bool, left: float, restarts: int, ended: bool,
        ascii_only: bool) -> None:
    run = slurm_run_started(T0, left_s=left, restarts=restarts) if slurm else None
    items = system_items(stats, run, T0 + age, ended=ended)
    pieces = fit_items(items, width, ascii_only=ascii_only)
    text = "".join(t for t, _ in pieces)
    assert len(text) <= width
    assert "nan" not in text.lower() and "inf" not in text.lower()
    assert not ascii_only or text.isascii()
    # Every piece is a whole item or a separator, in the items' order.
    shown = [t for t, _ in pieces[::2]]
    wanted = [to_ascii(i.text) if ascii_only else i.text for i in items]
    position = 0
    for piece in shown:
        matches = [n for n in range(position, len(wanted)) if piece == wanted[n]]
        assert matches, (piece, wanted)
        position = matches[0] + 1
    # The total is never shown without the rate that says what it totals.
    assert not any(p.endswith(" total") for p in shown) or any(p.endswith("energy evals/s") for p in shown)
    # The widest figures fit the smallest terminal: something is always shown when there is data.
    assert bool(shown) == bool(items)


# --- on screen ------------------------------------------------------------------------------------
class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def watch_app(run_dir: Path, clock: Clock, **kwargs: Any) -> MonitorApp:
    return MonitorApp(WatchedRun(RunDirectory(run_dir), read_only=True), clock=clock, poll_interval=0.02,
                      refresh_hz=10.0, **kwargs)


async def test_watch_shows_the_system_line_under_the_header_and_marks_it_stale(tmp_path: Path, wait: Wait) -> None:
    stream = [slurm_run_started(T0), *train_stream(20)[1:], system_stats(T0 + 50.0)]
    (tmp_path / "metrics.jsonl").write_text(jsonl(stream), encoding="utf-8")
    clock = Clock(T0 + 52.0)
    app = watch_app(tmp_path, clock)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait(pilot, lambda: app.state.system is not None, what="the system reading")
        app.refresh_now()
        await pilot.pause()
        lines = screen_text(app).splitlines()
        assert lines[2].strip() == ("SLURM job 4242 · allocation 1 h 01 min left · requeues 1 · CPU 183 % of 2 CPUs · "
                                    "9 threads · RSS 812 MiB · 1.23 k energy evals/s · GPU 87 % · 10.2 / 80.0 GiB")
        assert lines[3].lstrip().startswith("Epoch 20/200")
        # The header says how the trainer split its CPUs; the log says why.
        assert "openmm (Reference, 1 worker) · 2 CPUs (SLURM_CPUS_PER_TASK=2) · torch 1 thread · " \
            "1 energy worker · 442.4 k params" in lines[1]
        assert "threads: 2 CPUs from SLURM_CPUS_PER_TASK=2: torch 1 thread, 1 OpenMM energy worker" \
            in app.query_one(LogPane).text
        assert "SLURM job 4242, requeued 1×" in app.query_one(LogPane).text
        # The trainer went quiet (in watch it may be dead): the figures say how old they are,
        # and the allocation keeps counting down on the monitor's own clock.
        clock.now = T0 + 90.0
        app.refresh_now()
        await pilot.pause()
        shown = screen_text(app).splitlines()[2]
        assert "(as of 40 s ago)" in shown and "allocation 1 h 00 min left" in shown
        # At 80 columns whole figures are left out, the stale mark and the countdown stay.
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.1)
        app.refresh_now()
        await pilot.pause()
        shown = screen_text(app).splitlines()[2].strip()
        assert shown == "allocation 1 h 00 min left · CPU 183 % of 2 CPUs (as of 40 s ago)"
        assert app.ui_errors == 0


async def test_a_run_without_system_readings_has_no_system_line(tmp_path: Path, wait: Wait) -> None:
    (tmp_path / "metrics.jsonl").write_text(jsonl(train_stream(5)), encoding="utf-8")
    app = watch_app(tmp_path, Clock(T0 + 20.0))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait(pilot, lambda: app.state.history.last_epoch == 5, what="the run")
        app.refresh_now()
        await pilot.pause()
        assert not app.query_one(SystemLine).has_class("-shown")
        assert screen_text(app).splitlines()[2].lstrip().startswith("Epoch 5/200")
        # The first reading makes room for the line; a finished run keeps it, marked with its age.
        with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(jsonl([system_stats(T0 + 19.0), Finished(status="completed", epoch=5, t=T0 + 20.0)])
                     .split("\n", 1)[1])
        await wait(pilot, lambda: app.state.finished is not None, what="the end of the run")
        app.refresh_now()
        await pilot.pause()
        lines = screen_text(app).splitlines()
        assert lines[2].strip().startswith("CPU 183 % of 2 CPUs") and lines[2].strip().endswith("(as of 1 s ago)")
        assert app.query_one(RunHeader).text.splitlines()[0].startswith(" WATCH ")


async def test_the_ascii_fallback_covers_the_system_line(tmp_path: Path, wait: Wait) -> None:
    stream = [slurm_run_started(T0), *train_stream(3)[1:], system_stats(T0 + 10.0)]
    (tmp_path / "metrics.jsonl").write_text(jsonl(stream), encoding="utf-8")
    app = watch_app(tmp_path, Clock(T0 + 60.0), ascii_only=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait(pilot, lambda: app.state.system is not None, what="the system reading")
        app.refresh_now()
        await pilot.pause()
        shown = screen_text(app).splitlines()[2]
        assert shown.isascii() and "SLURM job 4242 - allocation" in shown and "(as of 50 s ago)" in shown


def test_the_state_keeps_the_latest_reading() -> None:
    state = MonitorState()
    state.apply([slurm_run_started(T0), system_stats(T0 + 5, cpu_pct=50.0), system_stats(T0 + 10)])
    assert state.system is not None and state.system.cpu_pct == 183.0 and state.versions["system"] == 2


def test_the_thread_plan_is_in_the_header_where_the_run_recorded_one() -> None:
    from tui_fakes import run_started

    from molpt_tui.tui.widgets.run_header import thread_plan

    assert thread_plan(slurm_run_started()) == ["2 CPUs (SLURM_CPUS_PER_TASK=2)", "torch 1 thread", "1 energy worker"]
    assert thread_plan(run_started()) == []  # a run from before the plan was recorded
    assert thread_plan(dataclasses.replace(run_started(), cpus=1, torch_threads=1)) == ["1 CPU", "torch 1 thread"]
