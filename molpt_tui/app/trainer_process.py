"""The trainer process behind the live TUI: a headless trainer for a prepared run directory.

`molpt-tui train` (TUI) checks everything, writes the run's config, then starts this module
with the run directory and hands it the lock. It writes metrics.jsonl (which the monitor
follows), reads the control channel (which the monitor's keys write) and handles job signals
itself, so scancel or a closed terminal reach it as they reach a headless run. Its stdout and
stderr go to the run's train.log, never over the monitor's screen.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import traceback

from ..config import load_saved_config
from ..errors import UserError
from ..training.events import Finished, Message
from ..training.metrics_log import MetricsLogSink
from ..training.run_dir import RunDirectory
from ..training.setup import build_setup
from .export import close_sinks, tensorboard_sinks
from .preflight import ResumePoint, check_data, check_inputs
from .resources import apply_threads, cpu_budget, plan_for, plan_threads, worker_cpus
from .signals import hold_signal
from .slurm import slurm_job
from .train import make_trainer, run_trainer


def _record_failure(run_dir: RunDirectory, text: str) -> None:
    """A trainer that cannot start says so where every viewer looks, not only in train.log."""
    sink = MetricsLogSink(run_dir.metrics)
    try:
        sink.emit(Message(text=text, level="error"))
        sink.emit(Finished(status="failed", epoch=0, message=text))
    finally:
        sink.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="molpt_tui.app.trainer_process")
    parser.add_argument("run_dir")
    parser.add_argument("--resume-from", choices=["none", "last", "best"], default="none")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tensorboard", action="store_true")
    args = parser.parse_args(argv)
    # before torch does any work; the monitor redraws on the same CPUs
    budget = cpu_budget(args.threads)
    apply_threads(plan_threads(budget, "torch", monitor=True))
    slurm = slurm_job()
    if slurm is not None:
        hold_signal("SIGUSR1")  # SLURM's warning during setup is acted on once training starts
    run_dir = RunDirectory(args.run_dir)
    resume: ResumePoint | None = None if args.resume_from == "none" else args.resume_from
    try:
        run_dir.adopt_lock(args.parent)
    except UserError as exc:
        print(f"molpt-tui: error: {exc}", file=sys.stderr)
        return 2
    try:
        cfg = load_saved_config(run_dir.config, ())
        checked = check_inputs(cfg, run_dir, resume)
        split = check_data(checked)
        setup = build_setup(cfg, checked.ms, split, checked.device, log=lambda text: print(text, flush=True),
                            worker_cpus=worker_cpus(budget, monitor=True))
        try:
            plan = apply_threads(plan_for(budget, setup.choice, monitor=True))
            trainer = make_trainer(checked, setup, [], run_info={**plan.fields(), **(slurm.fields() if slurm else {})})
        except BaseException:
            setup.close()
            raise
        tensorboard = tensorboard_sinks(run_dir, args.tensorboard)
        try:
            return run_trainer(trainer, setup, [MetricsLogSink(run_dir.metrics), *tensorboard])
        finally:
            close_sinks(tensorboard)
    except UserError as exc:
        print(f"molpt-tui: error: {exc}", file=sys.stderr, flush=True)
        _record_failure(run_dir, str(exc))
        return 2
    except Exception as exc:  # noqa: BLE001 - the traceback belongs in train.log, the verdict in the log
        traceback.print_exc()
        _record_failure(run_dir, f"the trainer crashed: {type(exc).__name__}: {exc} (see {run_dir.trainer_log})")
        return 1
    finally:
        run_dir.release_lock()


class TrainerSubprocess:
    """The monitor's handle on the trainer process (tui.source.TrainerHandle)."""

    def __init__(self, run_dir: RunDirectory, resume: ResumePoint | None, threads: int | None = None, *,
                 tensorboard: bool = False) -> None:
        self.run_dir = run_dir
        log = open(run_dir.trainer_log, "a", buffering=1, encoding="utf-8")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "molpt_tui.app.trainer_process", str(run_dir.path),
                 "--resume-from", resume or "none", "--parent", str(os.getpid()),
                 *(["--threads", str(threads)] if threads is not None else []),
                 *(["--tensorboard"] if tensorboard else [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        finally:
            log.close()
        self.description = f"trainer PID {self.proc.pid}"

    def poll(self) -> int | None:
        return self.proc.poll()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: it finishes the step and saves

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


if __name__ == "__main__":
    sys.exit(main())
