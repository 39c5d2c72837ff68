"""The live TUI of `train`: a trainer process plus the monitor that follows its run directory."""
from __future__ import annotations

import io
import sys
from typing import TextIO

from ..report.console import ConsoleReporter
from ..training.events import Finished
from ..training.metrics_log import read_events
from ..training.run_dir import RunDirectory
from ..tui.app import EXIT_UI_CRASHED, run_monitor
from ..tui.source import LiveRun
from .preflight import Checked, ResumePoint
from .trainer_process import TrainerSubprocess

# How long to let a trainer that outlived the monitor finish its step and save.
GRACE_S = 120.0


def run_live(checked: Checked, resume: ResumePoint | None, *, no_mouse: bool, threads: int | None = None,
             ascii_only: bool = False, tensorboard: bool = False) -> int:
    trainer = TrainerSubprocess(checked.run_dir, resume, threads, tensorboard=tensorboard)
    run = checked.run_dir.path
    source = LiveRun(checked.run_dir, trainer)
    try:
        code = run_monitor(source, no_mouse=no_mouse, title=f"molpt-tui: {checked.cfg.preset_name}",
                           ascii_only=ascii_only)
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
        print(f"molpt-tui: waiting for the {trainer.description} to finish its step and save "
              f"(up to {GRACE_S:.0f} s)...", file=sys.stderr, flush=True)
        if trainer.wait(GRACE_S) is None:
            trainer.kill()
            trainer.wait(5.0)
    # The TUI's screen is gone with it: leave in the terminal (often all a tmux scrollback on a
    # cluster keeps) what a headless run prints at its end.
    if not print_summary(checked.run_dir, source.prior_finished):
        print(f"molpt-tui: the trainer ended without a summary; its log is {checked.run_dir.trainer_log}",
              file=sys.stderr)
    return code


def print_summary(run_dir: RunDirectory, prior_finished: int, stream: TextIO | None = None) -> bool:
    """Print the end-of-run summary headless prints (status, best model, test set, files, how to
    resume) for the segment this command's trainer wrote, formatted by the headless reporter from
    the run's events; False when that trainer wrote no Finished event."""
    out = stream if stream is not None else sys.stdout
    try:
        events = list(read_events(run_dir.metrics, warn=lambda _message: None))
    except OSError:
        return False
    ends = [i for i, event in enumerate(events) if isinstance(event, Finished)]
    if len(ends) <= prior_finished:
        return False
    last = events[ends[-1]]
    assert isinstance(last, Finished)
    # The reporter prints as it is fed; only its final summary goes out, in the encoding (and so
    # with the symbols) of the real stream.
    encoding = getattr(out, "encoding", None) or "utf-8"
    reporter = ConsoleReporter(io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="replace"), isatty=False)
    for event in events[: ends[-1]]:
        reporter.emit(event)
    print(reporter.format_final(last), file=out, flush=True)
    return True
