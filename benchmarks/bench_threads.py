"""Thread plan against the old defaults: the same short training, with and without a competing
CPU load, side by side and interleaved in one run.

    python benchmarks/bench_threads.py [--reps 2] [--epochs 4] [--steps 5] [--cases openmm torch]

"old": what a run did before `app.resources` (torch's own intra-op pool, one thread per core;
the OpenMM bridge sized its worker pool from every CPU). "new": the thread plan as `train`
applies it. Each training runs in a fresh process (a pool's size is per process) built exactly
as `train` builds it; the competing load is one busy-looping process per usable CPU, started
before the trainer and stopped after it. Conditions and settings alternate within each
repetition, so a change in the machine's other load hits all of them alike.

Prints JSON: per case and condition the median seconds per epoch (epoch 1, which includes
warm-up, is left out) and CPU seconds per epoch of the trainer and its workers, for each setting,
and the ratios old / new. The machine's load average at the start and end is included, since
on a shared machine the "quiet" condition is only as quiet as the others let it be.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES = {
    # the default preset: vacuum dipeptide, energies by the OpenMM bridge (auto workers)
    "openmm": ["energy.engine=openmm", "energy.platform=Reference"],
    # the torch engine, uncompiled so that no run waits for a compiler
    "torch": ["energy.engine=torch", "energy.compile=off"],
}
DATA = ["data.n_samples=400", "data.stride=20", "data.swap_every=20", "data.equilibration_ps=1.0"]


def _spin() -> None:
    while True:
        pass


def _child(args: argparse.Namespace) -> None:
    """One training in this process; prints one JSON line of epoch times and CPU times."""
    import psutil

    mode, case = args.child
    budget = None
    if mode == "new":
        from molpt_tui.app.resources import apply_threads, cpu_budget, plan_threads

        budget = cpu_budget(None)
        apply_threads(plan_threads(budget, "torch"))
    import torch

    from molpt_tui.app.artifacts import RunFiles
    from molpt_tui.app.preflight import check_data, check_inputs
    from molpt_tui.config import load_config
    from molpt_tui.training.control import TrainingControl
    from molpt_tui.training.events import EpochMetrics, Event, Sink
    from molpt_tui.training.run_dir import RunDirectory
    from molpt_tui.training.setup import build_setup
    from molpt_tui.training.trainer import Trainer

    cfg = load_config("quickstart", [*DATA, f"data.path={args.data}", *CASES[case], f"training.epochs={args.epochs}",
                                     f"training.steps_per_epoch={args.steps}", "logging.eval_samples=64"])
    run_dir = RunDirectory(Path(args.run_dir))
    run_dir.create()
    checked = check_inputs(cfg, run_dir, None)
    split = check_data(checked)
    me = psutil.Process()
    worker_budget = None
    if budget is not None:
        from molpt_tui.app.resources import apply_threads, plan_for, worker_cpus

        worker_budget = worker_cpus(budget)
    setup = build_setup(cfg, checked.ms, split, checked.device, log=lambda text: None, worker_cpus=worker_budget)
    if budget is not None:
        apply_threads(plan_for(budget, setup.choice))

    def cpu_s() -> float:
        total = sum(me.cpu_times()[:2])
        for child in me.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
        return total

    rows: list[tuple[float, float]] = []

    class Timer(Sink):
        def emit(self, event: Event) -> None:
            if isinstance(event, EpochMetrics) and event.epoch > 0:
                rows.append((event.seconds, cpu_s()))

    trainer = Trainer(cfg, setup, [Timer()], TrainingControl(None), RunFiles(run_dir, cfg))
    cpu0 = cpu_s()
    try:
        trainer.run()
    finally:
        setup.close()
    cpu = [b - a for a, b in zip([cpu0] + [r[1] for r in rows[:-1]], [r[1] for r in rows])]
    print(json.dumps({"epoch_s": [r[0] for r in rows], "cpu_s": cpu, "torch_threads": torch.get_num_threads(),
                      "engine": setup.engine.description}))


def _run_one(mode: str, case: str, data: Path, work: Path, args: argparse.Namespace, load: int) -> dict[str, Any]:
    spinners = [mp.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(load)]
    for proc in spinners:
        proc.start()
    try:
        run_dir = Path(tempfile.mkdtemp(dir=work))
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        out = subprocess.run([sys.executable, __file__, "--child", mode, case, "--data", str(data),
                              "--run-dir", str(run_dir), "--epochs", str(args.epochs), "--steps", str(args.steps)],
                             capture_output=True, text=True, env=env, timeout=3600)
    finally:
        for proc in spinners:
            proc.kill()
            proc.join()
    if out.returncode != 0:
        raise SystemExit(f"{mode}/{case} failed:\n{out.stderr[-3000:]}")
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--child", nargs=2, metavar=("MODE", "CASE"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    from molpt_tui.app.data_generation import generate_data
    from molpt_tui.config import load_config
    from molpt_tui.processes import count_cpus

    cpus = count_cpus()
    load = cpus.cpus
    result: dict[str, Any] = {"cpus": cpus.cpus, "cpus_source": cpus.source, "competing_processes": load,
                              "loadavg_start": list(os.getloadavg()), "epochs": args.epochs, "steps": args.steps,
                              "cases": {}}
    times: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data.npz"
        if generate_data(load_config("quickstart", [*DATA, f"data.path={data}"]), announce=lambda text: None,
                         missing=True):
            raise SystemExit("data generation was interrupted")
        for rep in range(args.reps):
            for case in args.cases:
                for condition, competing in (("quiet", 0), ("loaded", load)):
                    # alternate which setting goes first, so neither always follows the other
                    modes = ("old", "new") if (rep + len(times)) % 2 == 0 else ("new", "old")
                    for mode in modes:
                        t0 = time.perf_counter()
                        row = _run_one(mode, case, data, work, args, competing)
                        row["wall_s"] = time.perf_counter() - t0
                        times.setdefault((case, condition, mode), []).append(row)
                        print(f"rep {rep} {case} {condition} {mode}: "
                              f"{statistics.median(row['epoch_s'][1:] or row['epoch_s']):.2f} s/epoch, "
                              f"torch {row['torch_threads']} threads, {row['engine']}", file=sys.stderr, flush=True)
    for (case, condition, mode), rows in times.items():
        epochs = [s for row in rows for s in (row["epoch_s"][1:] or row["epoch_s"])]
        cpu = [s for row in rows for s in (row["cpu_s"][1:] or row["cpu_s"])]
        entry = result["cases"].setdefault(case, {}).setdefault(condition, {})
        entry[mode] = {"s_per_epoch": round(statistics.median(epochs), 3), "cpu_s_per_epoch":
                       round(statistics.median(cpu), 3), "torch_threads": rows[0]["torch_threads"],
                       "engine": rows[0]["engine"]}
    for case in result["cases"].values():
        for entry in case.values():
            if "old" in entry and "new" in entry:
                entry["wall_old_over_new"] = round(entry["old"]["s_per_epoch"] / entry["new"]["s_per_epoch"], 2)
                entry["cpu_old_over_new"] = round(entry["old"]["cpu_s_per_epoch"] / entry["new"]["cpu_s_per_epoch"],
                                                  2)
    result["loadavg_end"] = list(os.getloadavg())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
