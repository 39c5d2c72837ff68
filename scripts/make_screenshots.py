"""Screenshots of the monitor on a real (short) training run.

    python scripts/make_screenshots.py [--out screenshots] [--epochs 30]

Trains the quickstart preset for a few epochs inside the Textual app (headless driver, fixed
terminal sizes), then saves SVG screenshots of the final screen at 160x48 and 80x24 and of
`watch` attached to the finished run. The data file is created first if it is missing.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from molpt_tui.config import load_config
from molpt_tui.training.metrics_log import MetricsLogSink
from molpt_tui.training.trainer import Trainer
from molpt_tui.tui.app import MonitorApp, save_screenshot


async def _train_and_shoot(cfg, run_dir: Path, size, path: Path) -> None:
    log = MetricsLogSink(run_dir / "metrics.jsonl")

    def train_fn(sink, control):
        return Trainer(cfg, run_dir, [sink, log], control).run()

    app = MonitorApp(mode="train", train_fn=train_fn, title="molpt-tui: quickstart")
    async with app.run_test(size=size) as pilot:
        while not app.trainer_done:
            await pilot.pause(0.5)
        await pilot.pause(1.0)  # one more redraw tick after the last events
        save_screenshot(app, path)
    log.close()


async def _watch_and_shoot(run_dir: Path, size, path: Path) -> None:
    app = MonitorApp(mode="watch", run_dir=run_dir, title=f"molpt-tui watch {run_dir.name}")
    async with app.run_test(size=size) as pilot:
        await pilot.pause(2.0)
        save_screenshot(app, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "screenshots")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = load_config("quickstart", [f"training.epochs={args.epochs}"])
    if not cfg.data_path.is_file():
        from molpt_tui.physics.data import simulate

        simulate(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "run_big", Path(tmp) / "run_small"
        big.mkdir()
        small.mkdir()
        asyncio.run(_train_and_shoot(cfg, big, (160, 48), args.out / "train_160x48.svg"))
        asyncio.run(_train_and_shoot(load_config("quickstart", ["training.epochs=12"]), small, (80, 24),
                                     args.out / "train_80x24.svg"))
        asyncio.run(_watch_and_shoot(big, (120, 36), args.out / "watch_120x36.svg"))
    for name in ("train_160x48.svg", "train_80x24.svg", "watch_120x36.svg"):
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
