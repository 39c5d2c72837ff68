"""The live TUI of `train`: a trainer process plus the monitor that follows its run directory."""
from __future__ import annotations

from ..tui.app import run_monitor
from ..tui.source import LiveRun
from .preflight import Checked, ResumePoint
from .trainer_process import TrainerSubprocess

# How long to let a trainer that outlived the monitor finish its step and save.
GRACE_S = 120.0


def run_live(checked: Checked, resume: ResumePoint | None, *, no_mouse: bool) -> int:
    trainer = TrainerSubprocess(checked.run_dir, resume)
    try:
        code = run_monitor(LiveRun(checked.run_dir, trainer), no_mouse=no_mouse,
                           title=f"molpt-tui: {checked.cfg.preset_name}")
    finally:
        if trainer.poll() is None:
            trainer.terminate()
            if trainer.wait(GRACE_S) is None:
                trainer.kill()
                trainer.wait(5.0)
    return code
