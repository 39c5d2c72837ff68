"""SLURM: the job's id, end time and requeues in the run header; SIGUSR1 (`--signal=USR1@90`)
checkpoints, exits 75 and the job script requeues; the requeued run resumes by itself.
Fake `squeue`, `srun` and `scontrol` on PATH stand in for a cluster."""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from molpt_tui.app import signals as app_signals
from molpt_tui.app import slurm as app_slurm
from molpt_tui.app.signals import JobSignals, hold_signal
from molpt_tui.app.slurm import SlurmJob, parse_end_time, slurm_job
from molpt_tui.training.exit_codes import REQUEUE_EXIT_CODE, exit_code

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "slurm_job.sh"


def fake_tool(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def env_with(bin_dir: Path, **extra: str) -> dict[str, str]:
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


# --- the job's facts ---------------------------------------------------------------------------

def test_outside_slurm_there_is_no_job() -> None:
    assert slurm_job({"PATH": os.environ.get("PATH", "")}) is None


def test_end_time_comes_from_squeue(tmp_path: Path) -> None:
    fake_tool(tmp_path, "squeue", 'if [ "$*" = "-h -j 4242 -o %e" ]; then echo 2030-01-02T03:04:05; else exit 1; fi')
    job = slurm_job(env_with(tmp_path, SLURM_JOB_ID="4242", SLURM_RESTART_COUNT="2", SLURM_JOB_END_TIME="1"))
    assert job == SlurmJob("4242", dt.datetime(2030, 1, 2, 3, 4, 5).timestamp(), 2)
    assert job.fields() == {"slurm_job_id": "4242", "slurm_end_time": job.end_time, "slurm_restart_count": 2}


@pytest.mark.parametrize("squeue", [
    "echo Unknown",          # a pending limit
    "exit 1",                # the job is not squeue's to show (another cluster, a purged record)
    None,                    # no squeue on this node
])
def test_without_an_answer_from_squeue_the_environment_is_used(tmp_path: Path, squeue: str | None) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if squeue is not None:
        fake_tool(bin_dir, "squeue", squeue)
    job = slurm_job({"PATH": str(bin_dir), "SLURM_JOB_ID": "7", "SLURM_JOB_END_TIME": "1900000000"})
    assert job == SlurmJob("7", 1900000000.0, 0)
    job = slurm_job({"PATH": str(bin_dir), "SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "x"})
    assert job is not None and math.isnan(job.end_time) and job.restart_count == 0


def test_a_squeue_that_hangs_costs_its_timeout_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tool(tmp_path, "squeue", "sleep 30")
    monkeypatch.setattr(app_slurm, "SQUEUE_TIMEOUT_S", 0.3)
    start = time.monotonic()
    job = slurm_job(env_with(tmp_path, SLURM_JOB_ID="9"))
    assert job is not None and math.isnan(job.end_time)
    assert time.monotonic() - start < 20


@pytest.mark.parametrize("text, finite", [("2024-05-01T16:34:56", True), ("Unknown", False), ("N/A", False),
                                          ("NONE", False), ("", False)])
def test_parse_end_time(text: str, finite: bool) -> None:
    assert math.isfinite(parse_end_time(text)) == finite


# --- SIGUSR1 under SLURM -----------------------------------------------------------------------

def test_exit_codes() -> None:
    assert REQUEUE_EXIT_CODE == 75
    assert exit_code("stopped", "SIGUSR1") == 75
    assert (exit_code("stopped", "SIGTERM"), exit_code("stopped", "SIGHUP"), exit_code("stopped", "SIGINT")) == (
        143, 129, 130)
    assert exit_code("stopped") == 130 and exit_code("completed") == 0 and exit_code("failed", "SIGTERM") == 1


def test_usr1_stops_under_slurm_and_checkpoints_elsewhere() -> None:
    stops: list[str] = []
    checkpoints: list[int] = []
    with JobSignals(on_stop=stops.append, on_checkpoint=lambda: checkpoints.append(1), requeue_on_usr1=True) as s:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
    assert stops == ["SIGUSR1"] and s.received == "SIGUSR1" and checkpoints == []
    with JobSignals(on_stop=stops.append, on_checkpoint=lambda: checkpoints.append(1)) as s:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
    assert stops == ["SIGUSR1"] and s.received is None and checkpoints == [1]


def test_a_warning_during_setup_is_held_until_training_starts() -> None:
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        hold_signal("SIGUSR1")
        os.kill(os.getpid(), signal.SIGUSR1)  # would end the process by default
        time.sleep(0.05)
        assert app_signals._HELD == ["SIGUSR1"]
        stops: list[str] = []
        with JobSignals(on_stop=stops.append, requeue_on_usr1=True) as s:
            assert stops == ["SIGUSR1"] and s.received == "SIGUSR1"
        assert app_signals._HELD == []
    finally:
        signal.signal(signal.SIGUSR1, previous)


# --- a job end to end ----------------------------------------------------------------------------

TINY = ["data.n_samples=200", "data.stride=10", "data.swap_every=10", "data.equilibration_ps=0.5",
        "training.steps_per_epoch=2", "training.batch_size=16", "logging.eval_samples=16", "model.hidden=16",
        "model.n_layers=2", "energy.engine=openmm", "energy.platform=Reference", "training.epochs=8"]


def _events(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines(keepends=True)
            if line.endswith("\n") and line.strip()]
    return [row for row in rows if "kind" in row]  # not the schema header


def _trainer_of(script: subprocess.Popen[str]) -> psutil.Process | None:
    try:
        for child in psutil.Process(script.pid).children(recursive=True):
            if "molpt-tui" in " ".join(child.cmdline()) or "molpt_tui" in " ".join(child.cmdline()):
                return child
    except psutil.Error:
        pass
    return None


@pytest.mark.integration
def test_the_job_script_requeues_on_the_warning_and_the_next_run_resumes(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "srun", 'exec "$@"')
    fake_tool(bin_dir, "scontrol", f'echo "$@" >> {tmp_path / "scontrol.log"}')
    fake_tool(bin_dir, "squeue", "echo 2031-06-07T08:09:10")
    venv_bin = Path(sys.executable).parent
    data = tmp_path / "data.npz"
    run = tmp_path / "run"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{venv_bin}{os.pathsep}{os.environ['PATH']}",
               SLURM_JOB_ID="4242", SLURM_RESTART_COUNT="0", RUN=str(run), PRESET="quickstart", NO_COLOR="1")
    sets = [a for item in TINY + [f"data.path={data}"] for a in ("--set", item)]
    log = (tmp_path / "job1.out").open("w")
    job = subprocess.Popen(["bash", str(SCRIPT), *sets], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not any(e.get("kind") == "epoch" and e["epoch"] >= 1 for e in _events(run)):
            assert job.poll() is None, (tmp_path / "job1.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "no epoch 1 in time"
            time.sleep(0.1)
        trainer = _trainer_of(job)
        assert trainer is not None
        trainer.send_signal(signal.SIGUSR1)   # SLURM's warning, 90 s before the limit
        assert job.wait(timeout=120) == 75, (tmp_path / "job1.out").read_text()[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        log.close()
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert (run / "last.pt").is_file()
    first = _events(run)
    started = [e for e in first if e["kind"] == "run_started"]
    assert started[0]["slurm_job_id"] == "4242" and started[0]["slurm_restart_count"] == 0
    assert started[0]["slurm_end_time"] == dt.datetime(2031, 6, 7, 8, 9, 10).timestamp()
    assert first[-1]["kind"] == "finished" and first[-1]["status"] == "stopped"
    stopped_at = first[-1]["epoch"]
    out = (tmp_path / "job1.out").read_text()
    assert "SLURM job:   4242, ends 2031-06-07 08:09" in out and "requeued 0x" in out

    # the requeued job: same script, SLURM counts the restart; it resumes and finishes
    (tmp_path / "scontrol.log").unlink()
    again = subprocess.run(["bash", str(SCRIPT), *sets], cwd=tmp_path, env=dict(env, SLURM_RESTART_COUNT="1"),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert not (tmp_path / "scontrol.log").exists()
    events = _events(run)
    started = [e for e in events if e["kind"] == "run_started"]
    assert len(started) == 2 and started[1]["resumed"] and started[1]["start_epoch"] == stopped_at
    assert started[1]["slurm_restart_count"] == 1
    assert events[-1]["kind"] == "finished" and events[-1]["status"] == "completed" and events[-1]["epoch"] == 8


def test_the_readme_shows_the_job_script_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "```bash\n" + SCRIPT.read_text(encoding="utf-8") + "```" in readme
