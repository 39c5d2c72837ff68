"""`train` whose data are missing: the MD runs inside the locked run directory and reports into
its metrics.jsonl (for `watch`), and a start that fails or is stopped before training leaves the
directory as the command found it."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from molpt_testdata import TINY_DATA, TINY_TRAIN

from molpt_tui.errors import UserError
from molpt_tui.training.events import DataProgress, Finished, Message, RunStarted
from molpt_tui.training.metrics_log import read_events
from molpt_tui.training.run_dir import SET_ASIDE_DIR, RunDirectory

# real MD and training runs, and subprocesses stopped by signals
pytestmark = pytest.mark.integration

PHASES = ["minimising", "equilibrating", "sampling", "writing", "written"]


def _args(run: Path, data: Path, *extra: str) -> list[str]:
    args = ["train", "--no-ui", "--preset", "quickstart", "--out", str(run)]
    for item in [*TINY_DATA, *TINY_TRAIN, "training.epochs=1", f"data.path={data}", *extra]:
        args += ["--set", item]
    return args


def _cli(args: list[str]) -> int:
    from molpt_tui.cli import main

    return main(args)


def _phase_order(events: list[DataProgress]) -> list[str]:
    """The phases in the order they were reported, each once."""
    out: list[str] = []
    for ev in events:
        if not out or out[-1] != ev.phase:
            out.append(ev.phase)
    return out


def test_missing_data_are_made_inside_the_run_and_logged_before_it_starts(tmp_path, monkeypatch, capsys):
    import molpt_tui.app.data_generation as data_generation

    run, data = tmp_path / "run", tmp_path / "d.npz"
    seen_locks: list[int | None] = []
    real_simulate = data_generation.simulate

    def simulate(*args, **kwargs):
        # while the MD runs, this process holds the run's lock: a second trainer is refused
        owner = RunDirectory(run).live_trainer()
        seen_locks.append(owner.pid if owner is not None else None)
        with pytest.raises(UserError, match="another trainer"):
            RunDirectory(run).check_no_live_trainer()
        return real_simulate(*args, **kwargs)

    monkeypatch.setattr(data_generation, "simulate", simulate)
    assert _cli(_args(run, data)) == 0
    assert seen_locks == [os.getpid(), os.getpid()]  # the data file, then its test run
    assert data.is_file() and (tmp_path / "d.test.npz").is_file()

    events = list(read_events(run / "metrics.jsonl"))
    kinds = [type(ev) for ev in events]
    start = kinds.index(RunStarted)
    assert kinds.count(RunStarted) == 1 and isinstance(events[-1], Finished)
    progress = [ev for ev in events if isinstance(ev, DataProgress)]
    assert progress and all(events.index(ev) < start for ev in progress)
    # the announcement comes first, as a Message with the text printed on stderr
    assert isinstance(events[0], Message) and events[0].text.startswith(f"Data file {data} is missing")
    assert events[0].text in capsys.readouterr().err

    splits = [ev.split for ev in progress]
    assert splits == sorted(splits)  # "data" < "test": all of the data file before its test run
    for split, path in (("data", data), ("test", tmp_path / "d.test.npz")):
        mine = [ev for ev in progress if ev.split == split]
        assert {ev.path for ev in mine} == {str(path)}
        assert _phase_order(mine) == PHASES
        done = [ev.simulated_ns for ev in mine]
        assert done == sorted(done) and done[0] == 0.0
        assert mine[-1].simulated_ns == pytest.approx(mine[-1].planned_ns) and mine[-1].planned_ns > 0
        assert mine[-1].samples == mine[-1].planned_samples
        assert all(len(ev.swap_acceptance) == len(ev.temperatures) - 1 == 2 for ev in mine)
        assert all(0.0 <= a <= 1.0 for a in mine[-1].swap_acceptance)


def test_under_the_tui_the_trainer_child_takes_the_lock_the_data_phase_held(tmp_path, monkeypatch):
    """The live path: the parent makes the data holding the lock, then hands it to its child."""
    import molpt_tui.app.live as live
    from molpt_tui.app.trainer_process import TrainerSubprocess

    run, data = tmp_path / "run", tmp_path / "d.npz"
    seen: dict[str, object] = {}

    def run_live(checked, resume, **kwargs):
        owner = checked.run_dir.lock_owner()
        seen["parent_held"] = owner is not None and owner.pid == os.getpid()
        trainer = TrainerSubprocess(checked.run_dir, resume)
        seen["child"] = trainer.proc.pid
        return trainer.wait(300)

    monkeypatch.setattr(live, "run_live", run_live)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    args = [a for a in _args(run, data) if a != "--no-ui"]
    assert _cli(args) == 0, (run / "train.log").read_text()
    assert seen["parent_held"] is True
    events = list(read_events(run / "metrics.jsonl"))
    kinds = [type(ev) for ev in events]
    assert DataProgress in kinds and kinds.index(DataProgress) < kinds.index(RunStarted)
    assert isinstance(events[-1], Finished) and events[-1].status == "completed"
    assert not (run / ".lock").exists()


def test_headless_output_keeps_the_text_progress_lines(tmp_path, capsys):
    assert _cli(_args(tmp_path / "run", tmp_path / "d.npz")) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("simulate: ")]
    assert [line.split()[1] for line in lines][:2] == ["minimising", "equilibrating"]
    assert sum(line.startswith("simulate: writing 100%") for line in lines) == 2
    assert out.count(f"Wrote {tmp_path / 'd.npz'}: ") == 1


def test_a_failure_after_the_data_phase_leaves_no_run_directory(tmp_path, monkeypatch, capsys):
    import molpt_tui.app.train as train_app

    def check_data(checked):
        raise UserError("the data are no good")

    monkeypatch.setattr(train_app, "check_data", check_data)
    run, data = tmp_path / "runs" / "run", tmp_path / "d.npz"
    assert _cli(_args(run, data)) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "molpt-tui: error: the data are no good"
    assert not run.exists() and (tmp_path / "runs").is_dir()  # only what this command created goes
    assert data.is_file()  # the data are kept: a corrected command does not make them again


def _earlier_run(run: Path) -> dict[str, bytes]:
    run.mkdir(parents=True)
    files = {"config.toml": b"# earlier run\n", "metrics.jsonl": b'{"schema": "molpt-tui.metrics", "version": 1}\n',
             "last.pt": b"weights", "loss_curves_300_450.png": b"png", "notes.txt": b"the user's own"}
    for name, body in files.items():
        (run / name).write_bytes(body)
    (run / "control").mkdir()
    (run / "control" / "req-1.json").write_bytes(b"{}")
    return {**files, "control/req-1.json": b"{}"}


def _contents(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_force_on_an_earlier_run_that_fails_after_the_data_phase_leaves_it_intact(tmp_path, monkeypatch):
    import molpt_tui.app.train as train_app

    run, data = tmp_path / "run", tmp_path / "d.npz"
    before = _earlier_run(run)

    def check_data(checked):
        # the data phase has set the earlier run aside and logs into a new metrics.jsonl
        assert (run / SET_ASIDE_DIR / "last.pt").is_file() and not (run / "last.pt").exists()
        assert any(isinstance(ev, DataProgress) for ev in read_events(run / "metrics.jsonl"))
        raise UserError("the data are no good")

    monkeypatch.setattr(train_app, "check_data", check_data)
    assert _cli([*_args(run, data), "--force"]) == 2
    assert _contents(run) == before
    assert sorted(p.name for p in run.iterdir()) == sorted({name.split("/")[0] for name in before})


def test_force_on_an_earlier_run_replaces_its_files_and_keeps_the_users(tmp_path):
    run, data = tmp_path / "run", tmp_path / "d.npz"
    _earlier_run(run)
    assert _cli([*_args(run, data), "--force"]) == 0
    assert (run / "notes.txt").read_bytes() == b"the user's own"
    assert not (run / SET_ASIDE_DIR).exists() and not (run / "control" / "req-1.json").exists()
    assert (run / "config.toml").read_bytes() != b"# earlier run\n"
    events = list(read_events(run / "metrics.jsonl"))
    assert isinstance(events[0], Message) and isinstance(events[-1], Finished)  # this run's log alone


def test_resume_makes_no_data_phase_in_the_run(tmp_path):
    """A resumed run's log is its own history: missing data are made before it is touched."""
    run, data = tmp_path / "run", tmp_path / "d.npz"
    assert _cli(_args(run, data)) == 0
    n_before = len(list(read_events(run / "metrics.jsonl")))
    (tmp_path / "d.test.npz").unlink()
    from molpt_tui.cli import main

    assert main(["train", "--no-ui", "--resume", str(run), "--epochs", "2"]) == 0
    events = list(read_events(run / "metrics.jsonl"))
    assert not [ev for ev in events[n_before:] if isinstance(ev, DataProgress)]
    assert (tmp_path / "d.test.npz").is_file()


def _killed_data_phase(run: Path) -> None:
    """What `train` leaves when killed -9 during its MD: MD progress only and a dead lock."""
    from molpt_tui.training.metrics_log import MetricsLogSink

    run.mkdir()
    sink = MetricsLogSink(run / "metrics.jsonl")
    sink.emit(Message(text="Data file old.npz is missing: generating it"))
    sink.emit(DataProgress(split="data", path="old.npz", phase="sampling", simulated_ns=0.1, planned_ns=1.0,
                           samples=10, planned_samples=100, ns_per_day=50.0, elapsed_s=60.0,
                           temperatures=[300.0, 450.0], swap_acceptance=[0.3]))
    sink.close()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (run / ".lock").write_text(f"{gone.pid} {os.uname().nodename}\n")
    (run / "control").mkdir()


def test_a_directory_left_by_a_killed_data_phase_is_no_run_and_a_new_start_replaces_it(tmp_path):
    run = tmp_path / "run"
    _killed_data_phase(run)
    rd = RunDirectory(run)
    assert rd.holds_only_a_data_phase()
    rd.check_new(force=False)  # not refused as "not empty"
    with pytest.raises(UserError, match=r"no config\.toml"):
        rd.check_resumable()
    # anything else beside it, or a run in its log, is refused as before
    (run / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        rd.check_new(force=False)
    (run / "notes.txt").unlink()
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"kind": "message", "t": 0.0, "text": "x", "level": "info"}) + "\n")
    assert rd.holds_only_a_data_phase()
    from molpt_tui.training.metrics_log import MetricsLogSink

    sink = MetricsLogSink(run / "metrics.jsonl")
    sink.emit(Finished(status="failed", epoch=0, message="x"))
    sink.close()
    assert not rd.holds_only_a_data_phase()
    with pytest.raises(UserError, match="not empty"):
        rd.check_new(force=False)


@pytest.mark.parametrize("data_made", [False, True])
def test_the_same_command_after_a_killed_data_phase_starts_with_a_log_of_its_own(tmp_path, data_made):
    run, data = tmp_path / "run", tmp_path / "d.npz"
    if data_made:  # made meanwhile by `simulate`: the start has no data phase of its own
        from molpt_tui.app.data_generation import generate_data
        from molpt_tui.config import load_config

        cfg = load_config("quickstart", [*TINY_DATA, *TINY_TRAIN, f"data.path={data}"])
        assert generate_data(cfg, lambda _text: None, missing=True) == 0
    _killed_data_phase(run)
    assert _cli(_args(run, data)) == 0
    events = list(read_events(run / "metrics.jsonl"))
    assert not [ev for ev in events if isinstance(ev, DataProgress) and ev.path == "old.npz"]
    assert not [ev for ev in events if isinstance(ev, Message) and "old.npz" in ev.text]
    assert bool([ev for ev in events if isinstance(ev, DataProgress)]) is not data_made
    assert isinstance(events[-1], Finished) and events[-1].status == "completed"


def test_a_log_of_only_a_data_phase_is_read_by_every_reader(tmp_path):
    import io

    from molpt_tui.report.console import ConsoleReporter
    from molpt_tui.training.tailer import MetricsTailer

    run = tmp_path / "run"
    _killed_data_phase(run)
    events = list(read_events(run / "metrics.jsonl", warn=pytest.fail))
    assert [type(ev) for ev in events] == [Message, DataProgress]
    tailer = MetricsTailer(run / "metrics.jsonl")
    try:
        assert [type(ev) for ev in tailer.poll().events] == [Message, DataProgress]
    finally:
        tailer.close()
    written = dataclasses.replace(events[1], phase="written", split="test", samples=100)
    out = io.StringIO()
    reporter = ConsoleReporter(out, isatty=False)
    for ev in [*events, written]:
        reporter.emit(ev)
    reporter.close()
    # the MD's progress itself is the live run's to print; a replay says what was made
    assert out.getvalue().splitlines() == [
        "[info] Data file old.npz is missing: generating it",
        "[info] test set old.npz written: 100 samples per temperature, 0.100 ns per replica x 2 replicas, "
        "50.0 ns/day per replica, swap acceptance 0.30"]


def test_a_signal_the_caller_took_stops_the_data_phase_before_the_next_file(tmp_path):
    from molpt_tui.app.data_generation import generate_data
    from molpt_tui.config import load_config

    cfg = load_config("quickstart", [*TINY_DATA, f"data.path={tmp_path / 'd.npz'}"])
    said: list[str] = []
    assert generate_data(cfg, said.append, missing=True, stopped=lambda: "SIGTERM") == 143
    assert said == [f"molpt-tui: SIGTERM received while generating data: stopped; {tmp_path / 'd.npz'} was not made"]
    assert list(tmp_path.iterdir()) == []


def _start(run: Path, data: Path, cwd: Path) -> subprocess.Popen[str]:
    # tens of seconds of MD: the signal arrives while it runs
    args = _args(run, data, "data.n_samples=100000")
    return subprocess.Popen([sys.executable, "-m", "molpt_tui", *args, "--threads", "2"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def _wait_for_sampling(proc: subprocess.Popen[str], run: Path, timeout: float = 180.0) -> None:
    """Until the run's log says the MD samples: a state to wait for, not a time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                if json.loads(line).get("phase") == "sampling":
                    return
            except ValueError:
                pass  # a line being written
        time.sleep(0.1)
    raise AssertionError("the data phase did not reach its sampling")


def _stop(proc: subprocess.Popen[str], name: str) -> str:
    try:
        if name == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
        else:
            os.kill(proc.pid, getattr(signal, name))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return err


@pytest.mark.parametrize(("name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_during_the_data_phase_leaves_no_run_directory_and_a_rerun_starts(tmp_path, name, code):
    run, data = tmp_path / "run", tmp_path / "d.npz"
    proc = _start(run, data, tmp_path)
    _wait_for_sampling(proc, run)
    assert RunDirectory(run).live_trainer() is not None  # watch and control see a live run meanwhile
    err = _stop(proc, name)
    assert proc.returncode == code, err
    assert "Traceback" not in err and name in err and "no data file was written" in err, err
    assert not run.exists() and not data.exists()
    # the same command again is not refused ("not empty, use --resume"): it reaches its MD
    again = _start(run, data, tmp_path)
    _wait_for_sampling(again, run)
    err = _stop(again, "SIGINT")
    assert again.returncode == 130, err
    assert not run.exists()
