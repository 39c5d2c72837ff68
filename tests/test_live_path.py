"""The real path, end to end: a trainer process, its run directory, the control channel.

A headless `molpt-tui train` runs in a subprocess; `molpt-tui control` steers it from other
processes, as a script on a login node would. The monitor app is driven the same way against
the same kind of run in `tests/tui`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from molpt_testdata import TINY_DATA, TINY_TRAIN

from molpt_tui.training.events import RequestAcknowledged
from molpt_tui.training.metrics_log import read_events
from molpt_tui.training.run_dir import RunDirectory

pytestmark = pytest.mark.integration


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "molpt_tui", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _epochs(run: Path) -> list[int]:
    if not (run / "metrics.jsonl").is_file():
        return []
    return [e.epoch for e in read_events(run / "metrics.jsonl", warn=lambda m: None) if e.kind == "epoch"]


@pytest.fixture
def headless_run(tiny_data, tmp_path):  # type: ignore[no-untyped-def]
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "molpt_tui", "train", "--no-ui", "--epochs", "100000", "--out", str(run),
         *_sets(TINY_DATA + TINY_TRAIN + [f"data.path={tiny_data}", "energy.platform=Reference",
                                          "logging.eval_interval=100000", "training.checkpoint_every=100000"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        _wait(lambda: len(_epochs(run)) > 2, 120, "the trainer's first epochs")
        yield run, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_control_steers_a_headless_run_and_every_request_is_acknowledged(headless_run):
    run, proc = headless_run
    paused = _cli("control", str(run), "pause")
    assert paused.returncode == 0, paused.stderr
    assert "pause acknowledged" in paused.stdout
    time.sleep(1.0)
    frozen = len(_epochs(run))
    time.sleep(2.0)
    assert len(_epochs(run)) <= frozen + 1  # at most the epoch in flight finished

    ckpt = _cli("control", str(run), "checkpoint")  # a paused trainer still answers
    assert ckpt.returncode == 0, ckpt.stderr
    assert "last.pt" in ckpt.stdout and (run / "last.pt").is_file()

    png = _cli("control", str(run), "png")
    assert png.returncode == 0 and list(run.glob("loss_curves_*.png"))

    resumed = _cli("control", str(run), "resume")
    assert resumed.returncode == 0
    _wait(lambda: len(_epochs(run)) > frozen + 2, 60, "training to go on after resume")

    stopped = _cli("control", str(run), "stop")
    assert stopped.returncode == 0
    assert proc.wait(timeout=120) == 130  # stopped by the user
    acks = [e for e in read_events(run / "metrics.jsonl") if isinstance(e, RequestAcknowledged)]
    assert [a.action for a in acks] == ["pause", "checkpoint", "png", "resume", "stop"]
    assert len({a.request_id for a in acks}) == 5 and all(a.request_id for a in acks)
    assert not RunDirectory(run).lock_path.exists()
    assert list((run / "control").iterdir()) == []


def test_control_refuses_without_a_live_trainer(tmp_path):
    run = tmp_path / "ended"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"schema": "molpt-tui.metrics", "version": 1}) + "\n")
    done = _cli("control", str(run), "stop")
    assert done.returncode == 2 and "no live trainer holds this run's lock" in done.stderr
    assert not (run / "control").exists()
    missing = _cli("control", str(tmp_path / "nope"), "pause")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    bad = _cli("control", str(run), "explode")
    assert bad.returncode == 2


def test_control_times_out_with_exit_1_when_nobody_answers(tmp_path):
    """A lock held by a live process that is not a trainer: the request is never acknowledged."""
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from molpt_tui.training.run_dir import RunDirectory; "
        f"RunDirectory({str(run)!r}).acquire_lock(); print('ok', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        done = _cli("control", str(run), "checkpoint", "--timeout", "1.5")
        assert done.returncode == 1 and "no acknowledgement" in done.stderr
    finally:
        holder.kill()
        holder.wait()


def _monitor_log(app) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(entry.text for entry in app.state.log)


async def _until(pilot, predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_live_app_its_trainer_process_and_the_control_channel(tiny_data, tmp_path):
    """What `molpt-tui train` does on a terminal: preflight and run directory by the app layer,
    the trainer in a child process, the monitor steering it with keys through the channel."""
    from molpt_tui.app.preflight import check_data, check_inputs
    from molpt_tui.app.train import TrainOptions, prepare_run_dir, resolve_config
    from molpt_tui.app.trainer_process import TrainerSubprocess
    from molpt_tui.tui.app import MonitorApp
    from molpt_tui.tui.screens import ConfirmStopScreen
    from molpt_tui.tui.source import LiveRun

    run = tmp_path / "run"
    opts = TrainOptions(preset="quickstart", overrides=tuple(TINY_DATA + TINY_TRAIN + [
        f"data.path={tiny_data}", "energy.platform=Reference", "logging.eval_interval=100000",
        "training.checkpoint_every=100000"]), epochs=100000, out=run, ui=True)
    cfg, rd = resolve_config(opts)
    checked = check_inputs(cfg, rd, None)
    check_data(checked)
    prepare_run_dir(checked, fresh=True, force=False)
    trainer = TrainerSubprocess(rd, None)
    app = MonitorApp(LiveRun(rd, trainer), refresh_hz=10.0)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await _until(pilot, lambda: app.state.history.last_epoch >= 2, 120, "epochs from the child trainer")
            assert rd.lock_owner() is not None and rd.lock_owner().pid == trainer.proc.pid  # handed over
            await pilot.press("p")
            await _until(pilot, lambda: app.state.paused, 60, "pause acknowledged by the child")
            await pilot.press("c")
            await _until(pilot, lambda: "checkpoint written: " in _monitor_log(app), 60, "checkpoint ack")
            assert rd.last.is_file()
            await pilot.press("p")
            await _until(pilot, lambda: not app.state.paused, 60, "resume acknowledged")
            await pilot.press("s")
            await _until(pilot, lambda: isinstance(app.screen, ConfirmStopScreen), 10, "confirm stop")
            await pilot.press("y")
            await _until(pilot, lambda: trainer.poll() is not None and app.state.finished is not None, 120,
                         "the trainer to stop")
            assert trainer.poll() == 130 and app.state.finished.status == "stopped"
            assert app.exit_code == 130
            await pilot.press("q")
    finally:
        if trainer.poll() is None:
            trainer.kill()
    acks = [e.action for e in read_events(rd.metrics) if isinstance(e, RequestAcknowledged)]
    assert acks == ["pause", "checkpoint", "resume", "stop"]
    assert not rd.lock_path.exists()


async def test_watch_steers_a_headless_run_in_another_process(headless_run):
    from molpt_tui.tui.app import MonitorApp
    from molpt_tui.tui.source import WatchedRun

    run, proc = headless_run
    app = MonitorApp(WatchedRun(RunDirectory(run)), refresh_hz=10.0)
    async with app.run_test(size=(120, 36)) as pilot:
        await _until(pilot, lambda: app.source.can_steer() and app.state.run is not None, 60, "the live trainer")
        await pilot.press("g")
        await _until(pilot, lambda: "PNG written: " in _monitor_log(app), 60, "PNG ack")
        # A script steering the same run at the same time is seen by the watcher too.
        done = _cli("control", str(run), "pause")
        assert done.returncode == 0
        await _until(pilot, lambda: app.state.paused, 30, "the script's pause, seen in watch")
        await pilot.press("q")  # leaving watch never stops the trainer
    assert proc.poll() is None
    assert _cli("control", str(run), "stop").returncode == 0
    assert proc.wait(timeout=120) == 130
