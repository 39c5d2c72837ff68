"""`watch` for the cluster workflow (a directory that does not exist yet, several runs compared)
and what the terminal keeps after the live TUI exits (the headless summary)."""
from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from textual.binding import Binding
from tui_fakes import FIXTURE_DIR, T0, FakeTrainer, Wait, jsonl, live_run, screen_text, train_stream, watch_stream

from molpt_tui.app.live import print_summary
from molpt_tui.cli import build_parser
from molpt_tui.report.console import ConsoleReporter
from molpt_tui.training.events import Finished
from molpt_tui.training.metrics_log import read_events
from molpt_tui.training.run_dir import RunDirectory
from molpt_tui.tui.app import MonitorApp
from molpt_tui.tui.compare import CompareApp, ComparePlot, CompareTable, run_names
from molpt_tui.tui.source import WatchedRun

SIZE = (160, 48)


def compare_app(dirs: list[Path], **kwargs: Any) -> CompareApp:
    kwargs.setdefault("poll_interval", 0.02)
    kwargs.setdefault("refresh_hz", 10.0)
    return CompareApp([WatchedRun(RunDirectory(d), read_only=True) for d in dirs], **kwargs)


async def test_two_runs_are_overlaid_with_a_legend_by_run_name(tmp_path: Path, wait: Wait) -> None:
    other = tmp_path / "lr-3e-4"
    other.mkdir()
    (other / "metrics.jsonl").write_text(jsonl(train_stream(80)))
    app = compare_app([FIXTURE_DIR, other], clock=lambda: T0 + 1e6)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: [r.state.history.last_epoch for r in app.runs] == [200, 80], what="both runs")
        app.refresh_now()
        await pilot.pause(0.2)
        for plot in app.query(ComparePlot):
            assert [label for label, _ in plot.info.legend] == ["watch_run", "lr-3e-4"]
            assert len({colour for _, colour in plot.info.legend}) == 2
            assert plot.points_plotted > 0 and plot.error == ""
            assert "watch_run" in plot.title_line or "watch_run" in str(plot.render()).splitlines()[0]
        table = app.query_one(CompareTable)
        assert table.row_count == 2
        text = screen_text(app)
        assert "COMPARE" in text and "■ watch_run FINISHED (completed), epoch 200/200" in text
        assert "lr-3e-4 FOLLOWING, epoch 80/200" in text
        row = [str(cell) for cell in table.get_row("lr-3e-4")]
        assert row[0] == "lr-3e-4" and row[2] == "80" and "±" in row[5]
        # Steering belongs to a single run: the keys do nothing here and nothing is written.
        await pilot.press("p", "s", "c", "g")
        await pilot.pause(0.1)
        assert not (other / "control").exists() and not (FIXTURE_DIR / "control").exists()
        assert {b.key for b in app.BINDINGS if isinstance(b, Binding)}.isdisjoint({"p", "s", "c", "g"})
        await pilot.press("e")
        await pilot.pause(0.1)
        assert all("EMA" in p.title_line for p in app.query(ComparePlot) if not p.spec.evaluation)
        await pilot.press("q")
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    assert app.return_code == 0


async def test_a_compared_run_that_does_not_exist_yet_is_waited_for(tmp_path: Path, wait: Wait) -> None:
    later = tmp_path / "pending"
    app = compare_app([FIXTURE_DIR, later], clock=lambda: T0 + 1e6)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait(pilot, lambda: app.runs[1].feed.exists is False, what="missing run noticed")
        app.refresh_now()
        assert "pending WAITING (no run directory yet: checking every second)" in screen_text(app)
        later.mkdir()
        (later / "metrics.jsonl").write_text(jsonl(train_stream(5)))
        await wait(pilot, lambda: app.runs[1].state.history.last_epoch == 5, what="the run appeared")
        assert app.compact and app.ui_errors == 0


def test_run_names_are_distinct() -> None:
    sources = [WatchedRun(RunDirectory(Path(p))) for p in ("a/run", "b/run", "c/other")]
    assert run_names(sources) == ["a/run", "b/run", "c/other"]  # parents only where names repeat
    assert run_names(sources[2:]) == ["other"]


def test_the_cli_takes_several_run_dirs_and_an_ascii_flag() -> None:
    args = build_parser().parse_args(["watch", "a", "b", "--ascii"])
    assert args.run_dirs == ["a", "b"] and args.ascii
    assert build_parser().parse_args(["train", "--ascii"]).ascii


def _strip_ansi(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]", "", text)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_watch_waits_for_a_directory_that_does_not_exist_end_to_end(tmp_path: Path) -> None:
    """`molpt-tui watch /not/yet/there` on a real terminal: no exit 2, it says it is waiting,
    picks the run up once it appears, and q quits with 0."""
    import fcntl
    import struct
    import termios

    run_dir = tmp_path / "not" / "yet" / "there"
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 110, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="110", LINES="30", TEXTUAL_ANIMATIONS="none")
    proc = subprocess.Popen([sys.executable, "-m", "molpt_tui", "watch", str(run_dir), "--no-mouse"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    seen = b""

    def read_until(needle: str, timeout: float = 90.0) -> str:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in " ".join(_strip_ansi(seen).split()):
                return _strip_ansi(seen)
            if proc.poll() is not None:
                break
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        raise AssertionError(f"never saw {needle!r}; exit {proc.poll()}; screen: {_strip_ansi(seen)[-2000:]}")

    try:
        read_until("no run directory yet")
        assert proc.poll() is None  # waiting, not refused
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_text(jsonl(train_stream(4)))
        read_until("Epoch 4/200")
        os.write(master, b"q")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)


# --- the summary left in the terminal --------------------------------------------------------------
def headless_final(run_dir: Path) -> str:
    events = list(read_events(run_dir / "metrics.jsonl"))
    reporter = ConsoleReporter(io.StringIO(), isatty=False)
    last = max(i for i, e in enumerate(events) if isinstance(e, Finished))
    for event in events[:last]:
        reporter.emit(event)
    fin = events[last]
    assert isinstance(fin, Finished)
    return reporter.format_final(fin)


async def test_after_the_tui_exits_the_terminal_holds_the_headless_summary(tmp_path: Path, wait: Wait,
                                                                          fakes: list[Any]) -> None:
    fake = FakeTrainer(tmp_path, epochs=25, step_sleep=0.001)
    source, handle = live_run(fake)
    fakes.append(handle)
    app = MonitorApp(source, refresh_hz=10.0, poll_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait(pilot, lambda: app.trainer_done, what="completion")
        await pilot.press("q")
        await wait(pilot, lambda: app.return_code is not None, what="exit")
    out = io.StringIO()
    assert print_summary(source.run_dir, source.prior_finished, out)
    text = out.getvalue()
    assert "Training completed at epoch 25/25" in text and "Results saved to:" in text
    assert str(tmp_path / "last.pt") in text
    assert text.strip() == headless_final(tmp_path).strip()  # the same lines headless prints


def test_a_stopped_run_leaves_its_resume_command_and_an_earlier_segment_is_not_reported(tmp_path: Path) -> None:
    stopped = train_stream(10) + [Finished(status="stopped", epoch=10, files=[str(tmp_path / "last.pt")])]
    (tmp_path / "metrics.jsonl").write_text(jsonl(stopped))
    out = io.StringIO()
    assert print_summary(RunDirectory(tmp_path), 0, out)
    assert "Training stopped at epoch 10/200" in out.getvalue()
    assert "molpt-tui train --resume" in out.getvalue()
    # A trainer that wrote nothing after the segments already there: no summary to give.
    assert not print_summary(RunDirectory(tmp_path), 1, io.StringIO())
    assert not print_summary(RunDirectory(tmp_path / "missing"), 0, io.StringIO())


def test_the_summary_of_a_resumed_run_is_its_last_segment(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(jsonl(watch_stream()))
    out = io.StringIO()
    assert print_summary(RunDirectory(tmp_path), 1, out)
    assert "Training completed at epoch 200/200" in out.getvalue()
