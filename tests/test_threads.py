"""CPUs: how many this process may use (affinity, cgroup quota, SLURM), and how they are split
between torch's threads and the OpenMM workers (`app.resources`), recorded in the run header."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from molpt_tui import processes
from molpt_tui.app.resources import CpuBudget, cpu_budget, plan_threads, worker_cpus
from molpt_tui.errors import UserError
from molpt_tui.processes import CpuCount, cgroup_cpu_quota, count_cpus
from molpt_tui.training.events import RunStarted

ROOT = Path(__file__).resolve().parent.parent


def budget(cpus: int, *, dedicated: bool = True, requested: bool = False) -> CpuBudget:
    return CpuBudget(cpus, "test", dedicated=dedicated, requested=requested)


# --- the plan --------------------------------------------------------------------------------

@pytest.mark.parametrize("cpus, dedicated, requested, engine, workers, monitor, torch_threads, energy_workers", [
    # CPUs given to us: torch takes them all when energies run between its passes
    (2, True, False, "torch", None, False, 2, 0),
    (2, True, False, "openmm", None, False, 2, 0),
    (16, True, False, "torch", None, False, 16, 0),
    # the whole machine, which others may use: one CPU left free
    (2, False, False, "torch", None, False, 1, 0),
    (8, False, False, "openmm", None, False, 7, 0),
    # a single CPU is never split further
    (1, False, False, "torch", None, False, 1, 0),
    (1, True, False, "openmm-workers", None, False, 1, 0),
    # the bridge with workers: half the CPUs for them, the rest for torch; never more in all
    (4, True, False, "openmm-workers", None, False, 2, 2),
    (3, True, False, "openmm-workers", None, False, 1, 2),
    (16, True, False, "openmm-workers", None, False, 8, 8),
    (2, True, False, "openmm-workers", None, False, 1, 1),
    # as built: the bridge's actual worker count
    (8, True, False, "openmm-workers", 3, False, 5, 3),
    # energy.n_workers beyond the budget: torch keeps one thread
    (2, True, False, "openmm-workers", 4, False, 1, 4),
    # asked for (--threads, OMP_NUM_THREADS): used whole, also on a shared machine
    (2, False, True, "torch", None, False, 2, 0),
    (2, True, True, "torch", None, True, 2, 0),
    # under the live TUI the monitor redraws on the same CPUs
    (2, True, False, "torch", None, True, 1, 0),
    (4, True, False, "openmm-workers", None, True, 1, 2),
])
def test_the_plan_splits_the_budget(cpus: int, dedicated: bool, requested: bool, engine: str, workers: int | None,
                                    monitor: bool, torch_threads: int, energy_workers: int) -> None:
    b = budget(cpus, dedicated=dedicated, requested=requested)
    plan = plan_threads(b, engine, workers, monitor=monitor)
    assert (plan.torch_threads, plan.energy_workers) == (torch_threads, energy_workers)
    assert plan.interop_threads == 1 and plan.cpus == cpus
    if workers is None or workers <= cpus - 1:
        assert plan.torch_threads + plan.energy_workers <= cpus  # never oversubscribed by our own choice


def test_the_reason_says_the_budget_its_source_and_the_split() -> None:
    plan = plan_threads(CpuBudget(2, "the affinity mask (the whole machine)", dedicated=False, requested=False),
                        "openmm")
    assert plan.reason == ("2 CPUs from the affinity mask (the whole machine); 1 left free for others, "
                           "torch 1 thread, OpenMM energies in-process")
    plan = plan_threads(CpuBudget(4, "SLURM_CPUS_PER_TASK=4", dedicated=True, requested=False), "openmm-workers")
    assert plan.reason == "4 CPUs from SLURM_CPUS_PER_TASK=4; torch 2 threads, 2 OpenMM worker processes"
    over = plan_threads(budget(2), "openmm-workers", 4)
    assert "more than the 2 CPUs" in over.reason and "energy.n_workers = 4" in over.reason
    fields = plan.fields()
    assert set(fields) <= {f for f in RunStarted.__dataclass_fields__}
    assert fields["threads_reason"] == plan.reason and fields["energy_workers"] == 2


def test_the_bridge_may_give_its_workers_what_torch_leaves() -> None:
    assert worker_cpus(budget(2)) == 1      # one worker would be the in-process bridge plus a pipe
    assert worker_cpus(budget(4)) == 2
    assert worker_cpus(budget(2, dedicated=False)) == 0
    assert worker_cpus(budget(4), monitor=True) == 2


# --- the budget ------------------------------------------------------------------------------

def test_threads_flag_and_omp_num_threads_are_requests() -> None:
    count = CpuCount(8, "the affinity mask", dedicated=True)
    assert cpu_budget(3, env={}, count=count) == CpuBudget(3, "--threads 3", dedicated=True, requested=True)
    assert cpu_budget(None, env={"OMP_NUM_THREADS": "2"}, count=count) == CpuBudget(
        2, "OMP_NUM_THREADS=2", dedicated=True, requested=True)
    assert cpu_budget(None, env={"OMP_NUM_THREADS": "x"}, count=count).cpus == 8
    assert cpu_budget(None, env={}, count=count) == CpuBudget(8, "the affinity mask", dedicated=True, requested=False)
    with pytest.raises(UserError, match=r"^--threads 0: must be at least 1"):
        cpu_budget(0, env={}, count=count)


def test_ranks_on_one_node_share_its_cpus() -> None:
    count = CpuCount(16, "SLURM_CPUS_PER_TASK=16", dedicated=True)
    env = {"TORCHELASTIC_RUN_ID": "abc", "OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "4"}
    b = cpu_budget(None, env=env, count=count, local_ranks=4)
    assert b.cpus == 4 and not b.requested
    assert b.source == "SLURM_CPUS_PER_TASK=16, 16 shared by 4 ranks on this node"
    # a value the user chose under torchrun is still theirs
    assert cpu_budget(None, env=dict(env, OMP_NUM_THREADS="2"), count=count, local_ranks=4).cpus == 2
    # one process under torchrun: its OMP_NUM_THREADS=1 is not torchrun's placeholder
    assert cpu_budget(None, env=env, count=count, local_ranks=1).cpus == 1
    assert cpu_budget(None, env={}, count=CpuCount(3, "x", True), local_ranks=4).cpus == 1


def test_slurm_cpus_per_task_and_the_affinity_mask() -> None:
    none = lambda: None  # noqa: E731
    assert count_cpus(env={}, affinity=2, machine=2, read_quota=none) == CpuCount(
        2, "the affinity mask (the whole machine)", dedicated=False)
    assert count_cpus(env={}, affinity=4, machine=64, read_quota=none) == CpuCount(4, "the affinity mask", True)
    assert count_cpus(env={"SLURM_CPUS_PER_TASK": "2"}, affinity=64, machine=64, read_quota=none) == CpuCount(
        2, "SLURM_CPUS_PER_TASK=2", True)
    # equal to the mask: the scheduler has still said these are ours
    assert count_cpus(env={"SLURM_CPUS_PER_TASK": "8"}, affinity=8, machine=8, read_quota=none).dedicated
    # more than the mask allows, or junk: the mask wins
    assert count_cpus(env={"SLURM_CPUS_PER_TASK": "32"}, affinity=8, machine=8, read_quota=none).cpus == 8
    assert count_cpus(env={"SLURM_CPUS_PER_TASK": "2(x3)"}, affinity=8, machine=8, read_quota=none).cpus == 8
    assert count_cpus(env={}, affinity=8, machine=8, read_quota=lambda: 3) == CpuCount(3, "the cgroup CPU quota", True)
    assert count_cpus(env={"SLURM_CPUS_PER_TASK": "2"}, affinity=8, machine=8, read_quota=lambda: 3).cpus == 2
    assert processes.usable_cpus() >= 1


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_read_on_the_process_cgroup_and_its_ancestors(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    me = tmp_path / "self_cgroup"
    _write(me, "0::/slurm/uid_1000/job_42/step_0\n")
    _write(root / "cpu.max", "max 100000\n")
    _write(root / "slurm/uid_1000/job_42/cpu.max", "250000 100000\n")     # 2.5 CPUs: 3
    _write(root / "slurm/uid_1000/job_42/step_0/cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(root, me) == 3
    _write(root / "slurm/cpu.max", "100000 100000\n")                     # a parent binds its children
    assert cgroup_cpu_quota(root, me) == 1
    _write(me, "0::/\n")
    assert cgroup_cpu_quota(root, me) is None
    assert cgroup_cpu_quota(root, tmp_path / "absent") is None
    _write(me, "0::/other\n")
    _write(root / "other/cpu.max", "garbage\n")
    assert cgroup_cpu_quota(root, me) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    me = tmp_path / "self_cgroup"
    _write(me, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    _write(root / "cpu/docker/abc/cpu.cfs_quota_us", "150000\n")
    _write(root / "cpu/docker/abc/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(root, me) == 2
    _write(root / "cpu/docker/abc/cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_quota(root, me) is None


# --- applied -----------------------------------------------------------------------------------

def test_apply_sets_both_pools_before_torch_works() -> None:
    code = ("from molpt_tui.app.resources import CpuBudget, apply_threads, plan_threads\n"
            "import json, torch\n"
            "plan = apply_threads(plan_threads(CpuBudget(2, 't', True, True), 'torch'))\n"
            "torch.ones(4).sum()\n"
            "again = apply_threads(plan_threads(CpuBudget(1, 't', True, True), 'torch'))\n"
            "print(json.dumps([plan.torch_threads, torch.get_num_interop_threads(), again.torch_threads,"
            " torch.get_num_threads()]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env=dict(os.environ, OMP_NUM_THREADS="3"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [2, 1, 1, 1]


def test_a_bad_threads_flag_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for argv in (["train", "--threads", "0", "--no-ui", "--out", str(tmp_path / "run")],
                 ["simulate", "--threads", "-1", "--out", str(tmp_path / "x.npz")]):
        out = subprocess.run([sys.executable, "-m", "molpt_tui", *argv], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith(f"molpt-tui: error: --threads {argv[2]}: must be at least 1")
        assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_bridge_takes_its_worker_share_from_the_plan(ala2_system: object) -> None:
    from molpt_tui.physics.engines import make_engine

    def costly(xml: str, sample: object, names: object) -> tuple[dict[str, float], dict[str, str]]:
        return {"Reference": 1000.0}, {}

    choice = make_engine(ala2_system, "openmm", platform="Reference", batch_size=64, measure=costly,
                         worker_cpus=1)
    try:
        assert choice.workers == 0 and choice.description == "openmm (Reference, in-process)"
    finally:
        choice.engine.close()
    choice = make_engine(ala2_system, "openmm", platform="Reference", batch_size=64, measure=costly,
                         worker_cpus=2)
    try:
        assert choice.workers == 2 and choice.description == "openmm (Reference, 2 worker processes)"
    finally:
        choice.engine.close()


@pytest.mark.integration
def test_the_run_header_and_the_log_say_what_was_chosen(tiny_data: Path, tmp_path: Path) -> None:
    from molpt_testdata import TINY_DATA, TINY_TRAIN

    run = tmp_path / "run"
    sets = [a for item in TINY_DATA + TINY_TRAIN + [f"data.path={tiny_data}", "training.epochs=1"]
            for a in ("--set", item)]
    out = subprocess.run([sys.executable, "-m", "molpt_tui", "train", "--preset", "quickstart", "--no-ui",
                          "--out", str(run), "--threads", "1", *sets], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "  CPUs:        1 CPU from --threads 1; torch 1 thread, OpenMM energies in-process" in out.stdout
    started = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
               if '"run_started"' in line]
    assert len(started) == 1
    assert {k: started[0][k] for k in ("cpus", "cpus_source", "torch_threads", "torch_interop_threads",
                                       "energy_workers")} == {
        "cpus": 1, "cpus_source": "--threads 1", "torch_threads": 1, "torch_interop_threads": 1, "energy_workers": 0}


# --- the system line ---------------------------------------------------------------------------

class _Collect:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass


class _FakeEngine:
    name, description, precision, compiled, compile_note, n_atoms, n_nonfinite = (
        "fake", "fake engine", "double", False, "", 3, 0)

    def __init__(self) -> None:
        import torch

        self.device = torch.device("cpu")
        self.closed = False

    def energy(self, x):
        return x.sum(dim=(1, 2))

    def warm_up(self, x, log, *, without_grad=True):
        pass

    def close(self) -> None:
        self.closed = True


def test_a_sample_counts_evaluations_and_reads_the_process() -> None:
    import math

    import torch

    from molpt_tui.physics.engine_protocol import EnergyEngine
    from molpt_tui.training.system_stats import CountingEngine, SystemSampler

    counter = CountingEngine(_FakeEngine())
    assert isinstance(counter, EnergyEngine)
    now = [100.0]
    sampler = SystemSampler([], counter, torch.device("cpu"), cpus=2, clock=lambda: now[0])
    counter.energy(torch.zeros(64, 3, 3))
    counter.energy(torch.zeros(36, 3, 3))
    sum(i * i for i in range(200_000))  # some CPU time to see
    now[0] += 4.0
    stats = sampler.sample()
    assert stats.energy_evals == 100 and stats.energy_evals_per_s == 25.0 and stats.interval_s == 4.0
    assert stats.cpus == 2 and stats.threads >= 1 and stats.rss_mb > 10
    assert math.isfinite(stats.cpu_pct) and stats.cpu_pct >= 0
    assert all(math.isnan(v) for v in (stats.gpu_util_pct, stats.gpu_mem_used_mb, stats.gpu_mem_total_mb))
    now[0] += 2.0
    again = sampler.sample()
    assert again.energy_evals == 100 and again.energy_evals_per_s == 0.0
    counter.close()
    assert counter.inner.closed


def test_no_gpu_library_means_no_gpu_figures_and_no_error() -> None:
    import math

    import torch

    from molpt_tui.training.system_stats import _Gpu

    gpu = _Gpu(torch.device("cuda:0"))  # no pynvml and no CUDA here, or a real one: never raises
    values = gpu.read()
    assert len(values) == 4
    if not torch.cuda.is_available():
        assert all(math.isnan(v) for v in values)


def test_the_sampler_thread_stops_before_the_run_s_last_event() -> None:
    import time

    from molpt_tui.training.events import Finished, SystemStats
    from molpt_tui.training.system_stats import SystemSampler

    out = _Collect()
    sampler = SystemSampler([out], None, None, every_s=0.02)
    sampler.emit(RunStarted(run_dir="r", preset="p", model="m", t_cold=300, t_hot=450, epochs=1, batch_size=1,
                            lr=1e-3, device="cpu", n_params=1, engine="e"))
    deadline = time.monotonic() + 30
    while len(out.events) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(out.events) >= 3 and all(isinstance(e, SystemStats) for e in out.events)
    sampler.emit(Finished(status="completed", epoch=1))
    seen = len(out.events)
    time.sleep(0.1)
    assert len(out.events) == seen and sampler._thread is not None and not sampler._thread.is_alive()


def test_the_metrics_log_takes_lines_from_two_threads_whole(tmp_path: Path) -> None:
    import threading

    from molpt_tui.training.events import Message, SystemStats
    from molpt_tui.training.metrics_log import MetricsLogSink, read_events

    log = MetricsLogSink(tmp_path / "metrics.jsonl")

    def write(make):
        for i in range(300):
            log.emit(make(i))

    threads = [threading.Thread(target=write, args=(lambda i: Message(text="x" * 5000 + str(i)),)),
               threading.Thread(target=write, args=(lambda i: SystemStats(threads=i),))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    log.emit(SystemStats())  # after close: dropped, not an error
    events = list(read_events(tmp_path / "metrics.jsonl", warn=lambda text: pytest.fail(text)))
    assert len(events) == 600
    assert sorted(e.threads for e in events if isinstance(e, SystemStats)) == list(range(300))


def test_system_stats_round_trip_through_the_log_format() -> None:
    import math

    from molpt_tui.training.events import SystemStats, from_dict

    ev = SystemStats(cpu_pct=97.5, threads=4, rss_mb=321.0, energy_evals=1000, energy_evals_per_s=250.0, cpus=2)
    back = from_dict(json.loads(json.dumps(ev.to_dict())))
    assert isinstance(back, SystemStats) and back.kind == "system" and back.energy_evals == 1000
    assert math.isnan(back.gpu_util_pct) and back.cpu_pct == 97.5


def test_a_headless_run_writes_system_lines(tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_trainer import DirArtifacts

    from molpt_tui.app import train as app_train
    from molpt_tui.physics.data import load_data
    from molpt_tui.physics.systems import system_from_config
    from molpt_tui.training.control import TrainingControl
    from molpt_tui.training.events import Finished, SystemStats
    from molpt_tui.training.metrics_log import MetricsLogSink, read_events
    from molpt_tui.training.setup import build_setup, resolve_device, split_data
    from molpt_tui.training.trainer import Trainer

    monkeypatch.setattr(app_train, "SYSTEM_STATS_EVERY_S", 0.2)
    cfg = tiny_config("training.epochs=3")
    ms = system_from_config(cfg)
    setup = build_setup(cfg, ms, split_data(cfg, load_data(cfg.data_path, ms)), resolve_device("cpu"),
                        log=lambda text: None)
    trainer = Trainer(cfg, setup, [], TrainingControl(), DirArtifacts(tmp_path, cfg), run_info={"cpus": 2})
    log = MetricsLogSink(tmp_path / "metrics.jsonl")
    try:
        assert app_train.run_trainer(trainer, setup, [log]) == 0
    finally:
        log.close()
    events = list(read_events(tmp_path / "metrics.jsonl"))
    stats = [e for e in events if isinstance(e, SystemStats)]
    assert stats, "no system line in a run of several seconds"
    assert isinstance(events[-1], Finished)
    assert stats[-1].energy_evals > 0 and stats[-1].cpus == 2
    assert [s.energy_evals for s in stats] == sorted(s.energy_evals for s in stats)
