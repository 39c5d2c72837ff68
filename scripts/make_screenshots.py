"""Screenshots of the monitor on a real (short) training run.

    python scripts/make_screenshots.py [--out screenshots] [--epochs 30]

Starts `molpt-tui train --no-ui` on the quickstart preset as a separate process (the trainer
the live monitor follows is always another process writing the run directory), shows it in the
monitor (headless driver, fixed terminal sizes) until it ends, and saves SVG screenshots of the
final screen at 160x48 and 80x24, then of `watch` attached to the finished run (also in its
ASCII fallback), and of `watch RUN_A RUN_B` comparing the two runs. The trainer generates the
data file first if it is missing.
"""
from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

from molpt_tui.training.run_dir import RunDirectory
from molpt_tui.tui.app import MonitorApp, save_screenshot
from molpt_tui.tui.compare import CompareApp
from molpt_tui.tui.source import LiveRun, WatchedRun

SHOTS = ("train_160x48.svg", "train_80x24.svg", "watch_120x36.svg", "watch_ascii_120x36.svg", "compare_160x48.svg")
# Data generation plus training; only a bound for a broken run, not an expected duration.
TRAIN_TIMEOUT_S = 3600.0


class ProcessHandle:
    """TrainerHandle over a headless `molpt-tui train` process."""

    def __init__(self, run_dir: Path, epochs: int, log: Path) -> None:
        with open(log, "w", encoding="utf-8") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "molpt_tui", "train", "--preset", "quickstart", "--epochs", str(epochs),
                 "--out", str(run_dir), "--force", "--no-ui"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.description = f"trainer PID {self.proc.pid}"

    def poll(self) -> int | None:
        return self.proc.poll()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


async def _train_and_shoot(run_dir: Path, epochs: int, size: tuple[int, int], path: Path) -> None:
    handle = ProcessHandle(run_dir, epochs, run_dir.parent / f"{run_dir.name}.log")
    app = MonitorApp(LiveRun(RunDirectory(run_dir), handle), title="molpt-tui: quickstart")
    try:
        async with app.run_test(size=size) as pilot:
            waited = 0.0
            while not app.trainer_done:
                if waited > TRAIN_TIMEOUT_S:
                    raise SystemExit(f"the trainer did not finish within {TRAIN_TIMEOUT_S:g} s")
                await pilot.pause(0.5)
                waited += 0.5
            while not app.checks_current:  # the checklist is computed in a thread of its own
                await pilot.pause(0.2)
            await pilot.pause(1.0)  # one more redraw tick after the last events
            app.clear_notifications()
            await pilot.pause()
            save_screenshot(app, path)
    finally:
        handle.terminate()
    if handle.poll() != 0:
        raise SystemExit(f"the trainer exited with code {handle.poll()}; see {run_dir.parent / run_dir.name}.log")


async def _watch_and_shoot(run_dir: Path, size: tuple[int, int], path: Path, *, ascii_only: bool = False) -> None:
    app = MonitorApp(WatchedRun(RunDirectory(run_dir)), ascii_only=ascii_only)
    async with app.run_test(size=size) as pilot:
        while app.state.finished is None or not app.checks_current:
            await pilot.pause(0.2)
        await pilot.pause(1.0)
        app.clear_notifications()
        await pilot.pause()
        save_screenshot(app, path)


async def _compare_and_shoot(run_dirs: list[Path], size: tuple[int, int], path: Path) -> None:
    app = CompareApp([WatchedRun(RunDirectory(d), read_only=True) for d in run_dirs])
    async with app.run_test(size=size) as pilot:
        while any(r.state.finished is None for r in app.runs):
            await pilot.pause(0.2)
        await pilot.pause(1.0)
        app.clear_notifications()
        await pilot.pause()
        save_screenshot(app, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "screenshots")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "run_big", Path(tmp) / "run_small"
        asyncio.run(_train_and_shoot(big, args.epochs, (160, 48), args.out / "train_160x48.svg"))
        asyncio.run(_train_and_shoot(small, 12, (80, 24), args.out / "train_80x24.svg"))
        asyncio.run(_watch_and_shoot(big, (120, 36), args.out / "watch_120x36.svg"))
        asyncio.run(_watch_and_shoot(big, (120, 36), args.out / "watch_ascii_120x36.svg", ascii_only=True))
        asyncio.run(_compare_and_shoot([big, small], (160, 48), args.out / "compare_160x48.svg"))
    for name in SHOTS:
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
