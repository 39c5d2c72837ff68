"""Replica-exchange data: physics sanity, swap statistics, file format, progress events, stopping."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from molpt_tui.config import load_config
from molpt_tui.errors import UserError
from molpt_tui.physics.data import (
    SimulationInterrupted,
    SimulationProgress,
    TextProgress,
    format_progress,
    load_data,
    simulate,
    swap_log_acceptance,
)
from molpt_tui.physics.units import beta

SMALL = ["data.n_samples=1500", "data.stride=20", "data.swap_every=20", "data.equilibration_ps=2.0",
         "temperatures.ladder=[300.0, 360.0, 450.0]"]
# Tens of samples: seconds per run, for the tests of behaviour rather than physics.
TINY = ["data.n_samples=20", "data.equilibration_ps=0.1", "data.stride=10", "data.swap_every=10"]
PHASES = ["minimising", "equilibrating", "sampling", "writing"]


def quiet(*_: object) -> None:
    pass


def is_worker(proc: psutil.Process) -> bool:
    """A spawned multiprocessing worker (not multiprocessing's own resource tracker, which
    lives as long as its parent by design)."""
    try:
        return "spawn_main" in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def still_a_worker(pid: int) -> bool:
    try:
        return is_worker(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def worker_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if is_worker(p)}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "qs.npz"
    cfg = load_config("quickstart", SMALL + [f"data.path={path}"])
    simulate(cfg, progress=False, log=quiet)
    return cfg, path


def test_mean_energy_rises_with_temperature(small_data):
    _, path = small_data
    data = load_data(path)
    assert data.positions.shape == (3, 1500, 22, 3)
    means = data.potential_energy.mean(axis=1)
    assert np.all(np.diff(means) > 0), means
    # equipartition-scale check: 3N-6 = 60 harmonic-ish DOF -> ~ (60/2) k_B dT per temperature step
    assert 0.3 * 30 * 0.0083145 * 60 < means[1] - means[0] < 3 * 30 * 0.0083145 * 60


def test_recorded_swap_acceptance_matches_saved_energies(small_data):
    _, path = small_data
    data = load_data(path)
    temps = data.temperatures
    for i in range(len(temps) - 1):
        u_i, u_j = data.potential_energy[i], data.potential_energy[i + 1]
        log_acc = swap_log_acceptance(beta(temps[i]), beta(temps[i + 1]), u_i, u_j)
        terms = np.minimum(1.0, np.exp(np.minimum(log_acc, 0.0)))
        recomputed = terms.mean()
        recorded = data.meta["swap_acceptance"][i]
        attempts = data.meta["swap_attempts"][i]
        # binomial error of the recorded rate plus the error of the recomputed mean (samples are
        # correlated, so allow a factor of several over the iid estimate)
        sigma = np.sqrt(recorded * (1 - recorded) / attempts) + terms.std() / np.sqrt(len(terms))
        assert abs(recorded - recomputed) < 6 * sigma + 0.02, (recorded, recomputed, sigma)
        assert 0.05 < recorded < 0.95


def test_file_round_trips_and_is_not_overwritten(small_data):
    cfg, path = small_data
    data = load_data(path)
    assert list(data.temperatures) == [300.0, 360.0, 450.0]
    assert data.meta["constraints"] == "none"
    assert data.meta["stride"] == 20 and data.meta["timestep_fs"] == 1.0
    assert np.isfinite(data.positions).all() and np.isfinite(data.potential_energy).all()
    from molpt_tui.physics.systems import system_from_config

    ms = system_from_config(cfg)
    load_data(path, ms)  # matches its own system
    before = path.read_bytes()
    with pytest.raises(UserError, match="never overwritten"):
        simulate(cfg, progress=False)
    assert path.read_bytes() == before


def test_data_file_is_readable_by_the_group(small_data):
    _, path = small_data
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_data_of_another_system_is_refused(small_data):
    _, path = small_data
    from molpt_tui.physics.systems import system_from_config

    other = system_from_config(load_config("aa_300_450"))
    with pytest.raises(UserError, match="another system"):
        load_data(path, other)


def test_corrupt_data_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="unreadable data file"):
        load_data(bad)


# --- progress events ------------------------------------------------------------------------------

def test_progress_events_cover_every_phase_in_order(tmp_path):
    events: list[SimulationProgress] = []
    path = simulate(load_config("quickstart", TINY + [f"data.path={tmp_path / 'd.npz'}"]), progress=events.append,
                    log=quiet, progress_interval_s=0.0)
    phases = [e.phase for e in events]
    assert [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p] == PHASES
    done = [e.simulated_ns for e in events]
    assert done == sorted(done) and done[0] == 0.0
    last = events[-1]
    assert last.phase == "writing" and last.simulated_ns == pytest.approx(last.planned_ns)
    assert last.samples == last.planned_samples == 20
    assert last.temperatures == (300.0, 367.4, 450.0) and last.n_replicas == 3
    assert last.total_planned_ns == pytest.approx(3 * last.planned_ns) and last.fraction == 1.0
    assert last.eta_s == 0.0 and last.ns_per_day > 0 and last.elapsed_s > 0
    data = load_data(path)
    np.testing.assert_array_equal(np.array(last.swap_acceptance), data.meta["swap_acceptance"])
    # The sampling phase reports acceptance as it accrues: nan until a pair's first attempt.
    assert all(len(e.swap_acceptance) == 2 for e in events)
    assert all(np.isnan(e.swap_acceptance).all() for e in events if e.phase in ("minimising", "equilibrating"))
    text = format_progress(last)
    assert text.startswith("simulate: writing 100% (") and "3 replicas" in text and "swap acceptance" in text


def test_default_progress_is_plain_lines_through_log_when_not_a_terminal(tmp_path):
    lines: list[str] = []
    out = tmp_path / "d.npz"
    simulate(load_config("quickstart", TINY), out_path=out, progress=TextProgress(lines.append, tty=False), log=quiet)
    assert [line.split()[1] for line in lines] == PHASES  # one line per phase change (the run is short)
    lines.clear()
    cfg = load_config("quickstart", TINY)
    simulate(cfg, out_path=tmp_path / "e.npz", log=lines.append)  # the default display, stderr not a TTY here
    assert lines[0].startswith("simulate: minimising") and lines[-2].startswith(f"Wrote {tmp_path / 'e.npz'}: 20 ")
    lines.clear()
    simulate(cfg, out_path=tmp_path / "f.npz", progress=False, log=lines.append)
    assert len(lines) == 2 and lines[0].startswith("Wrote ")
    # every data file says how much it holds of its slowest motion
    assert lines[1].startswith("  about ") and "independent samples for the slowest backbone torsion" in lines[1]


# --- stopping -----------------------------------------------------------------------------------

def _stop_when_sampling(answer: object):
    """A progress callback and a should_stop that asks to stop once sampling has begun."""
    seen: list[str] = []

    def progress(p: SimulationProgress) -> None:
        seen.append(p.phase)

    def should_stop() -> object:
        return answer if "sampling" in seen else None

    return progress, should_stop, seen


@pytest.mark.parametrize(("answer", "code", "reason"), [("SIGTERM", 143, "SIGTERM"), ("SIGHUP", 129, "SIGHUP"),
                                                        (True, 130, "stop requested")])
def test_should_stop_ends_md_cleanly(tmp_path, answer, code, reason):
    out = tmp_path / "new" / "d.npz"
    before = worker_children()
    progress, should_stop, seen = _stop_when_sampling(answer)
    with pytest.raises(SimulationInterrupted) as info:
        simulate(load_config("quickstart", TINY + ["data.n_samples=100000"]), out_path=out, progress=progress,
                 should_stop=should_stop, log=quiet, progress_interval_s=0.0)
    exc = info.value
    assert isinstance(exc, UserError) and exc.exit_code == code and exc.reason == reason
    assert reason in str(exc) and "no data file was written" in str(exc)
    assert 0 < exc.simulated_ns < exc.planned_ns
    assert "writing" not in seen
    assert list(tmp_path.iterdir()) == []  # no data file, no temp file, not even the missing directory
    assert worker_children() <= before  # the MD workers are gone


def test_ctrl_c_in_process_is_an_interruption_with_exit_code_130(tmp_path):
    before = worker_children()

    def progress(p: SimulationProgress) -> None:
        if p.phase == "sampling":
            raise KeyboardInterrupt

    with pytest.raises(SimulationInterrupted) as info:
        simulate(load_config("quickstart", TINY + ["data.n_samples=100000"]), out_path=tmp_path / "d.npz",
                 progress=progress, log=quiet, progress_interval_s=0.0)
    assert info.value.exit_code == 130 and "SIGINT" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    assert worker_children() <= before


def test_a_stop_before_md_starts_no_worker(tmp_path):
    phases: list[str] = []
    with pytest.raises(SimulationInterrupted, match="0 ps of"):
        simulate(load_config("quickstart", TINY), out_path=tmp_path / "d.npz",
                 progress=lambda p: phases.append(p.phase), should_stop=lambda: "SIGTERM", log=quiet)
    assert phases == ["minimising"] and list(tmp_path.iterdir()) == []


def _wait_for_md_workers(proc: subprocess.Popen, timeout: float = 120.0) -> set[int]:
    """The MD worker processes of `proc`, once started: a state to wait for, not a time."""
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        kids = [c for c in parent.children(recursive=True) if is_worker(c)]
        if len(kids) >= 2:  # --processes 2
            return {c.pid for c in kids}
        time.sleep(0.05)
    raise AssertionError("the MD workers did not start")


@pytest.mark.integration
@pytest.mark.parametrize(("name", "code"), [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_signal_during_md_exits_128_plus_n_with_no_file_and_no_orphans(tmp_path, name, code):
    out = tmp_path / "d.npz"
    proc = subprocess.Popen([sys.executable, "-m", "molpt_tui", "simulate", "--out", str(out), "--processes", "2",
                             *[a for s in TINY + ["data.n_samples=100000"] for a in ("--set", s)]],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        workers = _wait_for_md_workers(proc)
        if name == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
        else:
            os.kill(proc.pid, getattr(signal, name))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert name in err and "no data file was written" in err, err
    assert list(tmp_path.iterdir()) == []
    assert not [pid for pid in workers if still_a_worker(pid)]


def test_existing_callers_keep_working(tmp_path):
    """The signature callers used before the progress events: positional and keyword forms."""
    cfg = load_config("quickstart", TINY + [f"data.path={tmp_path / 'a.npz'}"])
    assert simulate(cfg, tmp_path / "b.npz", False, False, 1, quiet) == tmp_path / "b.npz"
    assert simulate(cfg, out_path=tmp_path / "b.npz", force=True, n_procs=3, progress=False, log=quiet).is_file()
    assert load_data(tmp_path / "b.npz").positions.shape == (3, 20, 22, 3)


# --- independent samples of the slowest motions -------------------------------------------------

def test_slow_coordinates_are_the_backbone_torsions_at_each_temperature(small_data):
    from molpt_tui.physics.autocorr import integrated_time
    from molpt_tui.physics.data import slow_coordinates
    from molpt_tui.physics.systems import system_from_config
    from molpt_tui.physics.torsions import backbone_of_topology, dihedrals

    cfg, path = small_data
    ms = system_from_config(cfg)
    data = load_data(path, ms)
    coords = slow_coordinates(data, ms.topology, (300.0, 450.0))
    assert [c.label for c in coords] == [f"{name} @ {t:g} K" for t in (300.0, 450.0) for name in
                                         ("phi ALA2", "psi ALA2", "omega ACE1-ALA2", "omega ALA2-NME3")]
    assert all(c.n_samples == 1500 and c.tau >= 1.0 and c.n_independent <= 1500 for c in coords)
    assert [c.transitions >= 0 for c in coords] == [True, False, True, True] * 2   # psi has no two states
    # the same tau from the torsion's cos and sin directly
    phi = next(t for t in backbone_of_topology(ms.topology).torsions if t.kind == "phi")
    theta = dihedrals(data.at(450.0), phi.atoms)
    assert coords[4].tau == max(integrated_time(np.cos(theta)), integrated_time(np.sin(theta)))


def test_transitions_count_core_to_core_changes_only():
    from molpt_tui.physics.data import _transitions

    assert _transitions(np.array([0, 0, -1, 0, -1, 1, 1, -1, 1, 0])) == 2   # 0 -> 1 -> 0; recrossings ignored
    assert _transitions(np.array([-1, -1])) == 0 and _transitions(np.array([1])) == 0


def test_a_data_report_names_the_n_samples_a_flow_of_its_size_wants():
    from molpt_tui.training.events import DataReport
    from molpt_tui.training.setup import PARAMS_PER_INDEPENDENT_SAMPLE, sized_report

    report = DataReport(path="d.npz", split="training data", n_samples=40000, n_independent=800.0,
                        slowest="psi ALA2 @ 450 K")
    big = sized_report(report, 270_000)
    assert big.needed == round(270_000 / PARAMS_PER_INDEPENDENT_SAMPLE)
    # 800 of 40,000 independent: 1 in 50; 2,700 wanted -> 135,000 samples
    assert big.suggested_n_samples == 135_000
    assert sized_report(report, 50_000).suggested_n_samples == 0      # 500 wanted, 800 held


def test_train_makes_a_missing_test_run_beside_the_data_with_another_seed(tmp_path):
    from molpt_tui.app.data_generation import generate_data

    cfg = load_config("quickstart", TINY + [f"data.path={tmp_path / 'd.npz'}"])
    said: list[str] = []
    assert generate_data(cfg, said.append, missing=True) == 0
    test_path = tmp_path / "d.test.npz"
    assert (tmp_path / "d.npz").is_file() and test_path.is_file()
    assert any(line.startswith(f"Test set {test_path} is missing: an independent replica-exchange run")
               for line in said)
    from molpt_tui.physics.systems import system_from_config

    ms = system_from_config(cfg)
    data, test = load_data(tmp_path / "d.npz", ms), load_data(test_path, ms)
    assert test.positions.shape[1] == cfg.test_n_samples == 10 and test.meta["seed"] == cfg.data.seed + 1
    assert not np.array_equal(data.positions[:, :10], test.positions)
    said.clear()
    assert generate_data(cfg, said.append, missing=True) == 0 and said == []   # nothing missing: nothing made
    # `simulate` of another data file sharing this test run keeps the test run (no --force)
    other = load_config("quickstart", TINY + [f"data.path={tmp_path / 'e.npz'}", f"data.test_path={test_path}"])
    before = test_path.stat().st_mtime_ns
    assert generate_data(other, said.append) == 0
    assert (tmp_path / "e.npz").is_file() and test_path.stat().st_mtime_ns == before


def test_a_file_another_run_made_meanwhile_is_used_not_refused(tmp_path, monkeypatch):
    """Two runs started together on the same data (a job array; CI's signal tests) both plan the
    missing test run; the one that gets there second must use the file the first one wrote
    instead of stopping with "data file exists" — both between planning and MD, and inside
    simulate's own check of the destination."""
    import shutil

    import molpt_tui.app.data_generation as gen

    made = tmp_path / "made"
    made.mkdir()
    cfg_made = load_config("quickstart", TINY + [f"data.path={made / 'd.npz'}"])
    assert gen.generate_data(cfg_made, lambda _t: None, missing=True) == 0

    cfg = load_config("quickstart", TINY + [f"data.path={tmp_path / 'd.npz'}"])
    shutil.copy(made / "d.npz", tmp_path / "d.npz")
    jobs = gen.plan_data(cfg, missing=True)
    assert [j.split for j in jobs] == ["test"]
    shutil.copy(made / "d.test.npz", tmp_path / "d.test.npz")   # the other run finished it just now
    before = (tmp_path / "d.test.npz").stat().st_mtime_ns
    said: list[str] = []
    assert gen.generate_data(cfg, said.append, missing=True, jobs=jobs) == 0
    assert said == [f"{tmp_path / 'd.test.npz'}: made meanwhile by another process; using it"]
    assert (tmp_path / "d.test.npz").stat().st_mtime_ns == before

    # the other run's file lands after the re-check, inside simulate's own destination check
    (tmp_path / "d.test.npz").unlink()
    jobs = gen.plan_data(cfg, missing=True)
    real = gen._simulate_one

    def racing(job, *args):
        shutil.copy(made / "d.test.npz", job.path)
        return real(job, *args)

    monkeypatch.setattr(gen, "_simulate_one", racing)
    said.clear()
    assert gen.generate_data(cfg, said.append, missing=True, jobs=jobs) == 0
    assert said[-1] == f"{tmp_path / 'd.test.npz'}: made meanwhile by another process; using it"

    # without `missing` (simulate itself), an existing file is still refused
    monkeypatch.setattr(gen, "_simulate_one", real)
    from molpt_tui.errors import UserError

    with pytest.raises(UserError, match="data file exists"):
        gen.plan_data(cfg)


def test_a_run_waits_for_the_run_making_its_file_and_uses_it(tmp_path, monkeypatch):
    """Runs started together on missing data (a job array) make it once: while another process
    holds the maker lock of the test run, train says so once, waits, and then uses the file that
    run wrote; a job signal still ends the wait, with 128+n and nothing made."""
    import shutil
    import threading

    import molpt_tui.app.data_generation as gen
    from molpt_tui.app.maker_lock import MakerLock

    made = tmp_path / "made"
    made.mkdir()
    assert gen.generate_data(load_config("quickstart", TINY + [f"data.path={made / 'd.npz'}"]),
                             lambda _t: None, missing=True) == 0
    cfg = load_config("quickstart", TINY + [f"data.path={tmp_path / 'd.npz'}"])
    shutil.copy(made / "d.npz", tmp_path / "d.npz")
    test_file = tmp_path / "d.test.npz"

    other = MakerLock(test_file)   # the other run, mid-MD
    assert other.acquire() and other.path.is_file()
    monkeypatch.setattr(gen, "LOCK_POLL_S", 0.01)
    monkeypatch.setattr(gen, "_simulate_one", lambda *a: pytest.fail("made the file a second time"))
    said: list[str] = []
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(gen.generate_data(cfg, said.append, missing=True)))
    waiter.start()
    deadline = time.monotonic() + 30
    while not said and time.monotonic() < deadline:
        time.sleep(0.01)
    assert said == [f"{test_file}: another run (pid {os.getpid()} on {os.uname().nodename}) is making it; "
                    "waiting for that run instead of repeating its MD"]
    time.sleep(0.1)
    assert waiter.is_alive() and not result      # still waiting
    shutil.copy(made / "d.test.npz", test_file)  # the other run writes its file and lets go
    other.release()
    waiter.join(30)
    assert result == [0]
    assert said[1:] == [f"{test_file}: made meanwhile by another process; using it"]
    assert not other.path.exists()               # the lock leaves nothing behind

    test_file.unlink()
    assert other.acquire()
    said.clear()
    assert gen.generate_data(cfg, said.append, missing=True, stopped=lambda: "SIGTERM") == 128 + signal.SIGTERM
    assert said[-1] == f"molpt-tui: SIGTERM received while generating data: stopped; {test_file} was not made"
    asked: list[int] = []

    def stop_later() -> str | None:   # the signal comes while it waits
        asked.append(1)
        return "SIGINT" if len(asked) > 3 else None

    said.clear()
    assert gen.generate_data(cfg, said.append, missing=True, stopped=stop_later) == 128 + signal.SIGINT
    assert said[0].endswith("waiting for that run instead of repeating its MD") and not test_file.exists()
    other.release()


def test_maker_locks_exclude_each_other_and_sit_beside_their_file(tmp_path):
    from molpt_tui.app.maker_lock import MakerLock, lock_path

    assert lock_path(tmp_path / "d.npz") == tmp_path / ".d.npz.making"
    # a directory still to be made: the nearest one that exists, named after the rest of the path
    assert lock_path(tmp_path / "new" / "sub" / "d.npz") == tmp_path / ".new_sub_d.npz.making"
    first, second = MakerLock(tmp_path / "d.npz"), MakerLock(tmp_path / "d.npz")
    assert first.acquire() and not second.acquire()
    assert MakerLock(tmp_path / "e.npz").acquire()          # another file: another lock
    first.release()
    assert second.acquire() and not first.acquire()
    second.release()
    assert not (tmp_path / ".d.npz.making").exists()


def test_where_no_lock_can_be_made_the_run_goes_on_without_one(tmp_path):
    from molpt_tui.app.maker_lock import MakerLock

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        lock = MakerLock(ro / "d.npz")
        if os.access(ro, os.W_OK):   # root ignores the mode
            pytest.skip("this user can write to a read-only directory")
        assert lock.acquire() and "cannot create" in lock.unavailable
    finally:
        ro.chmod(0o700)
