"""Training throughput with the live monitor vs headless, side by side. Prints JSON.

    python benchmarks/bench_tui_throughput.py [--epochs 8] [--rounds 2]

Both arms are what users run: headless is `molpt-tui train --no-ui` in a subprocess; the TUI
arm is the trainer child process that `train` starts under the TUI (app.trainer_process), with
MonitorApp following its run directory in this process (Textual's headless driver at 160x48,
redrawing at its normal rate). Arms alternate so a shared machine's load hits both alike. The
ratio of training epochs per second (setup and evaluation excluded, from metrics.jsonl) is the
cost of watching. Uses the quickstart data file (created if missing).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from molpt_tui.app.preflight import check_data, check_inputs
from molpt_tui.app.train import TrainOptions, prepare_run_dir, resolve_config
from molpt_tui.app.trainer_process import TrainerSubprocess
from molpt_tui.config import load_config
from molpt_tui.training.events import EpochMetrics
from molpt_tui.training.metrics_log import read_events
from molpt_tui.training.run_dir import RunDirectory
from molpt_tui.tui.app import MonitorApp
from molpt_tui.tui.source import LiveRun

OVERRIDES = ("energy.engine=openmm",)


def epoch_seconds(run_dir: Path) -> float:
    """Time spent in training epochs (setup, process start-up and evaluation excluded)."""
    return sum(e.seconds for e in read_events(run_dir / "metrics.jsonl")
               if isinstance(e, EpochMetrics) and e.epoch > 0)


def headless(run_dir: Path, epochs: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "molpt_tui", "train", "--no-ui", "--epochs", str(epochs), "--out",
                    str(run_dir), *[a for o in OVERRIDES for a in ("--set", o)]],
                   check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0


async def tui(run_dir: Path, epochs: int) -> float:
    t0 = time.perf_counter()
    cfg, rd = resolve_config(TrainOptions(preset="quickstart", overrides=OVERRIDES, epochs=epochs, out=run_dir))
    checked = check_inputs(cfg, rd, None)
    check_data(checked)
    prepare_run_dir(checked, fresh=True, force=False)
    trainer = TrainerSubprocess(RunDirectory(run_dir), None)
    app = MonitorApp(LiveRun(rd, trainer))
    async with app.run_test(size=(160, 48)) as pilot:
        while trainer.poll() is None:
            await pilot.pause(0.05)
    if trainer.poll() != 0:
        raise RuntimeError(f"trainer exited {trainer.poll()}; see {rd.trainer_log}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cfg = load_config("quickstart", list(OVERRIDES))
    if not cfg.data_path.is_file():
        from molpt_tui.physics.data import simulate

        simulate(cfg)
    times: dict[str, list[float]] = {"headless_s": [], "tui_s": [], "headless_epoch_s": [], "tui_epoch_s": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for kind in ("headless", "tui") if r % 2 == 0 else ("tui", "headless"):
                run_dir = Path(tmp) / f"{kind}{r}"
                t = headless(run_dir, args.epochs) if kind == "headless" else asyncio.run(tui(run_dir, args.epochs))
                times[f"{kind}_s"].append(round(t, 3))
                times[f"{kind}_epoch_s"].append(round(epoch_seconds(run_dir), 3))
    print(json.dumps({
        "preset": "quickstart", "epochs": args.epochs, "cpus": os.cpu_count(), **times,
        # training throughput: epochs per second of training time, TUI relative to headless
        "throughput_ratio_tui_over_headless": round(sum(times["headless_epoch_s"]) / sum(times["tui_epoch_s"]), 3),
        # whole command including the child's start-up (imports) and setup
        "wall_ratio_tui_over_headless": round(sum(times["headless_s"]) / sum(times["tui_s"]), 3),
    }, indent=2))


if __name__ == "__main__":
    main()
