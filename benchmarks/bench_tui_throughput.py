"""Training throughput inside the Textual monitor vs headless, side by side. Prints JSON.

    python benchmarks/bench_tui_throughput.py [--epochs 8] [--rounds 2]

The same preset and seed run alternately headless (JSONL sink only, like --no-ui minus the
console) and under MonitorApp (Textual's headless driver at 160x48, redrawing at its normal
rate); the ratio of epochs per second is the cost of watching. Uses the quickstart data file
(created if missing).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from molpt_tui.config import load_config
from molpt_tui.training.child import prepare, run_in_child
from molpt_tui.training.runner import _write_config
from molpt_tui.training.metrics_log import MetricsLogSink
from molpt_tui.training.trainer import Trainer
from molpt_tui.tui.app import MonitorApp


def epoch_seconds(run_dir: Path) -> float:
    """Time spent in training epochs (setup, process start-up and evaluation excluded)."""
    from molpt_tui.training.events import EpochMetrics
    from molpt_tui.training.metrics_log import read_events

    return sum(e.seconds for e in read_events(run_dir / "metrics.jsonl")
               if isinstance(e, EpochMetrics) and e.epoch > 0)


def headless(cfg, run_dir: Path) -> float:
    log = MetricsLogSink(run_dir / "metrics.jsonl")
    t0 = time.perf_counter()
    Trainer(cfg, run_dir, [log]).run()
    log.close()
    return time.perf_counter() - t0


async def _tui(cfg, run_dir: Path) -> float:
    """What `molpt-tui train` does on a terminal: the trainer in a child process (run_in_child)
    feeding the app; config.toml in the run directory is how the child gets the config."""
    _write_config(cfg, run_dir)
    app = MonitorApp(mode="train", train_fn=lambda sink, control: run_in_child(run_dir, False, sink, control))
    t0 = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        while not app.trainer_done:
            await pilot.pause(0.05)
        elapsed = time.perf_counter() - t0
        if app.trainer_error:
            raise RuntimeError(app.trainer_error)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cfg = load_config("quickstart", [f"training.epochs={args.epochs}", "energy.engine=openmm"])
    if not cfg.data_path.is_file():
        from molpt_tui.physics.data import simulate

        simulate(cfg)
    prepare()
    times = {"headless_s": [], "tui_s": [], "headless_epoch_s": [], "tui_epoch_s": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for kind in ("headless", "tui") if r % 2 == 0 else ("tui", "headless"):
                run_dir = Path(tmp) / f"{kind}{r}"
                run_dir.mkdir()
                t = headless(cfg, run_dir) if kind == "headless" else asyncio.run(_tui(cfg, run_dir))
                times[f"{kind}_s"].append(round(t, 3))
                times[f"{kind}_epoch_s"].append(round(epoch_seconds(run_dir), 3))
    print(json.dumps({
        "preset": "quickstart", "epochs": args.epochs, **times,
        # training throughput: epochs per second of training time, TUI relative to headless
        "throughput_ratio_tui_over_headless": round(min(times["headless_epoch_s"]) / min(times["tui_epoch_s"]), 3),
        # whole command including the child's start-up (imports) and setup
        "wall_ratio_tui_over_headless": round(min(times["headless_s"]) / min(times["tui_s"]), 3),
    }, indent=2))


if __name__ == "__main__":
    main()
