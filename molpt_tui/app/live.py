"""The live TUI of `train`: a trainer process plus the monitor that follows its run directory."""
from __future__ import annotations

import sys

from ..tui.app import EXIT_UI_CRASHED, run_monitor
from ..tui.source import LiveRun
from .preflight import Checked, ResumePoint
from .trainer_process import TrainerSubprocess

# How long to let a trainer that outlived the monitor finish its step and save.
GRACE_S = 120.0


def run_live(checked: Checked, resume: ResumePoint | None, *, no_mouse: bool, threads: int | None = None) -> int:
    trainer = TrainerSubprocess(checked.run_dir, resume, threads)
    run = checked.run_dir.path
    try:
        code = run_monitor(LiveRun(checked.run_dir, trainer), no_mouse=no_mouse,
                           title=f"molpt-tui: {checked.cfg.preset_name}")
    except BaseException:
        code = EXIT_UI_CRASHED
    if code == EXIT_UI_CRASHED and trainer.poll() is None:
        # The monitor died, the run did not: it goes on headless rather than being recorded as a
        # user stop, and can be watched or steered again.
        print(f"molpt-tui: the monitor crashed; the {trainer.description} keeps training (log: "
              f"{checked.run_dir.trainer_log}). Attach with `molpt-tui watch {run}`, stop it with "
              f"`molpt-tui control {run} stop`.", file=sys.stderr)
        return code
    if trainer.poll() is None:
        trainer.terminate()
        if trainer.wait(GRACE_S) is None:
            trainer.kill()
            trainer.wait(5.0)
    return code
