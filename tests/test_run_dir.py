"""The run directory's owner: names, --force clearing, the lock, odd entries."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from molpt_tui.errors import UserError
from molpt_tui.training.run_dir import STALE_AFTER_S, RunDirectory


def _earlier_run(path):
    """Every kind of file a run leaves, plus the user's own files that must survive --force."""
    path.mkdir(parents=True, exist_ok=True)
    ours = ["config.toml", "metrics.jsonl", "train.log", "last.pt", "best.pt", "molecular_pt_300_450.pt",
            "loss_curves_300_450.png", "validation_300_450.png", "molecular_pt_300_448.6.pt", ".last.pt.abc123.tmp",
            "metrics.csv", "metrics.parquet",
            ".molecular_pt_300_450.pt.x.tmp", ".config.toml.y.tmp"]
    for name in ours:
        (path / name).write_text(name)
    (path / "control").mkdir()
    (path / "control" / "req-0001-abc.json").write_text("{}")
    users = ["notes.txt", "my_model.pt", "loss_curves.svg", "validation.png", "validation_notes.png",
             "molecular_pt_best_guess.pt", "analysis"]
    for name in users[:-1]:
        (path / name).write_text(name)
    (path / users[-1]).mkdir()
    return ours + ["control"], users


def test_force_clear_removes_every_earlier_output_and_nothing_else(tmp_path):
    rd = RunDirectory(tmp_path / "run")
    ours, users = _earlier_run(rd.path)
    removed = {p.name for p in rd.clear()}
    assert removed == set(ours)
    assert sorted(p.name for p in rd.path.iterdir()) == sorted(users)


def test_names_come_from_one_place(tmp_path):
    rd = RunDirectory(tmp_path)
    assert rd.final_model(300, 448.6).name == "molecular_pt_300_448.6.pt"
    assert rd.png(300.0, 450.0).name == "loss_curves_300_450.png"
    assert rd.validation_png(300.0, 450.0).name == "validation_300_450.png"
    assert {rd.config.name, rd.metrics.name, rd.last.name, rd.best.name} == {
        "config.toml", "metrics.jsonl", "last.pt", "best.pt"}


def test_new_run_refuses_a_non_empty_directory_without_force(tmp_path):
    rd = RunDirectory(tmp_path / "run")
    _earlier_run(rd.path)
    with pytest.raises(UserError, match=r"not empty.*--resume.*--force"):
        rd.check_new(force=False)
    rd.check_new(force=True)


def test_a_file_where_the_directory_should_be(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        RunDirectory(tmp_path / "run").check_new(force=True)


@pytest.mark.parametrize("name", [".lock", "metrics.jsonl", "config.toml", "last.pt"])
def test_odd_entries_are_named_not_tracebacks(tmp_path, name):
    rd = RunDirectory(tmp_path)
    (tmp_path / name).mkdir()
    (tmp_path / "config.toml").exists() or (tmp_path / "config.toml").write_text("")
    with pytest.raises(UserError, match=f"{name}: exists but is not a regular file"):
        rd.check_entries()
    with pytest.raises(UserError, match="not a regular file"):
        rd.acquire_lock()


def test_control_that_is_a_file(tmp_path):
    (tmp_path / "control").write_text("")
    with pytest.raises(UserError, match="control: exists but is not a directory"):
        RunDirectory(tmp_path).check_entries()


def test_lock_is_exclusive_while_its_holder_lives(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from molpt_tui.training.run_dir import RunDirectory; "
        f"rd = RunDirectory({str(tmp_path)!r}); rd.acquire_lock(); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rd = RunDirectory(tmp_path)
        with pytest.raises(UserError, match=f"another trainer \\(PID {holder.pid}\\)"):
            rd.acquire_lock()
        assert rd.live_trainer() is not None and rd.live_trainer().pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    rd = RunDirectory(tmp_path)
    assert rd.live_trainer() is None  # its process is gone: stale
    rd.acquire_lock()
    assert rd.lock_owner().pid == os.getpid()
    rd.release_lock()
    assert not rd.lock_path.exists()


def test_lock_of_another_host_is_live_until_its_heartbeat_stops(tmp_path):
    rd = RunDirectory(tmp_path)
    rd.lock_path.write_text(f"1 {socket.gethostname()}-compute-node\n")
    assert rd.live_trainer() is not None and "on " in rd.live_trainer().describe()
    with pytest.raises(UserError, match="another trainer"):
        rd.acquire_lock()
    old = time.time() - STALE_AFTER_S - 5
    os.utime(rd.lock_path, (old, old))
    assert rd.live_trainer() is None
    rd.acquire_lock()
    assert rd.lock_owner().host == socket.gethostname()


def test_adopted_lock_names_the_child(tmp_path):
    rd = RunDirectory(tmp_path)
    rd.acquire_lock()
    child = subprocess.run([sys.executable, "-c", (
        "import os; from molpt_tui.training.run_dir import RunDirectory; "
        f"rd = RunDirectory({str(tmp_path)!r}); rd.adopt_lock(os.getppid()); print(rd.lock_owner().pid)")],
        capture_output=True, text=True, check=True)
    assert int(child.stdout) != os.getpid()
    with pytest.raises(UserError, match="not held by the process that started"):
        RunDirectory(tmp_path).adopt_lock(from_pid=1)


def test_create_reports_whether_it_made_the_directory(tmp_path):
    rd = RunDirectory(tmp_path / "a" / "b")
    assert rd.create() is True
    assert rd.create() is False
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write the run directory"):
        RunDirectory(blocker / "run").create()
