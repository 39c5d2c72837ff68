"""Replica-exchange data for a run: the data file, then its independent test run.

Generation takes minutes, so it stops like training does: a job signal ends it at the next MD
chunk with a line saying so, the 128+n exit code, and no partial data file. Under `train` it
also reports into the run's metrics log (`events`): the announcement as a Message and the MD's
progress as DataProgress events, so that `watch` from another terminal shows this phase.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..config import Config
from ..errors import UserError
from ..physics.data import SimulationInterrupted, SimulationProgress, TextProgress, preflight_simulate, simulate
from ..training.events import DataProgress, Message, Sink
from ..training.exit_codes import signal_exit_code
from .maker_lock import MakerLock
from .signals import JobSignals
from .slurm import slurm_job_id

LOCK_POLL_S = 0.5   # how often a run waiting for another's MD looks again


@dataclass(frozen=True)
class DataJob:
    """One file to make: the data file or its independent test run."""

    split: Literal["data", "test"]
    cfg: Config
    out_path: Path | None   # None: the config's own data path

    @property
    def path(self) -> Path:
        return self.out_path or self.cfg.data_path


def plan_data(cfg: Config, out_path: Path | None = None, force: bool = False, n_procs: int | None = None,
              missing: bool = False) -> list[DataJob]:
    """The files `generate_data` would make, each destination checked (`preflight_simulate`) and
    nothing written, so `train` can refuse a data path it cannot write before it creates its run
    directory."""
    path = out_path or cfg.data_path
    jobs: list[DataJob] = []
    if not missing or not path.exists():
        jobs.append(DataJob("data", cfg, out_path))
    if cfg.test_n_samples > 0:
        test_cfg = cfg.for_test_run(path)
        # an existing test run is kept unless --force: it may be shared by several data files
        if (force and not missing) or not test_cfg.data_path.exists():
            jobs.append(DataJob("test", test_cfg, None))
    kept: list[DataJob] = []
    for job in jobs:
        try:
            preflight_simulate(job.cfg, job.out_path, force, n_procs)
        except UserError:
            if missing and _made_meanwhile(job):
                continue
            raise
        kept.append(job)
    return kept


def _made_meanwhile(job: DataJob) -> bool:
    """The file a job would make exists now although it was missing when planned: another run
    started at the same time on the same data (a job array, the same test run shared by two
    data files) made it first. `train` uses it then, as it would have a minute later."""
    return job.path.is_file()


def generate_data(cfg: Config, announce: Callable[[str], None], out_path: Path | None = None,
                  force: bool = False, n_procs: int | None = None, missing: bool = False, *,
                  jobs: list[DataJob] | None = None, events: Sink | None = None,
                  stopped: Callable[[], str | None] | None = None) -> int:
    """Run `simulate` for the data file and then for its independent test run (another seed,
    beside it); 0 when the files were written, 128+n when a signal stopped it.

    `missing`: make only the files that do not exist yet (what `train` needs), and say so; a file
    that another run is making (`maker_lock`) is waited for and used, not made twice.
    `jobs`: what `plan_data` returned for the same arguments (it is planned here otherwise).
    `events`: also send each announcement and the MD's progress there (train's metrics log).
    `stopped`: the name of a job signal that the caller's own handler took (it stops the MD too).
    """
    if jobs is None:
        jobs = plan_data(cfg, out_path, force, n_procs, missing)
    for job in jobs:
        lock = MakerLock(job.path) if missing else None
        try:
            code = _make(cfg, job, announce, force, n_procs, missing, events, stopped, lock)
        finally:
            if lock is not None:
                lock.release()
        if code:
            return code
    return 0


def _say(text: str, announce: Callable[[str], None], events: Sink | None) -> None:
    announce(text)
    if events is not None:
        events.emit(Message(text=text))


def _stop_code(job: DataJob, announce: Callable[[str], None], stopped: Callable[[], str | None] | None) -> int:
    name = stopped() if stopped is not None else None
    if name:
        announce(f"molpt-tui: {name} received while generating data: stopped; {job.path} was not made")
        return signal_exit_code(name)
    return 0


def _wait_for_maker(job: DataJob, lock: MakerLock, announce: Callable[[str], None], events: Sink | None,
                    stopped: Callable[[], str | None] | None) -> int:
    """Hold `lock` before making the file; while another process holds it, say so once and wait
    (a job signal still stops the wait). 0 when held, 128+n when a signal came."""
    waited = False
    while not lock.acquire():
        if not waited:
            who = lock.holder()
            _say(f"{job.path}: another run{f' ({who})' if who else ''} is making it; waiting for that run "
                 "instead of repeating its MD", announce, events)
            waited = True
        code = _stop_code(job, announce, stopped)
        if code:
            return code
        time.sleep(LOCK_POLL_S)
    return 0


def _make(cfg: Config, job: DataJob, announce: Callable[[str], None], force: bool, n_procs: int | None,
          missing: bool, events: Sink | None, stopped: Callable[[], str | None] | None,
          lock: MakerLock | None) -> int:
    code = _stop_code(job, announce, stopped)
    if not code and lock is not None:
        code = _wait_for_maker(job, lock, announce, events, stopped)
    if code:
        return code
    if missing and _made_meanwhile(job):
        _say(f"{job.path}: made meanwhile by another process; using it", announce, events)
        return 0
    if job.split == "data" and missing:
        text = (f"Data file {job.path} is missing: generating it with replica-exchange MD "
                f"(`molpt-tui simulate --preset {cfg.preset_name}`)")
    elif job.split == "test":
        text = (f"Test set {job.path}{' is missing' if missing else ''}: an independent replica-exchange run "
                f"({job.cfg.data.n_samples} samples, seed {job.cfg.data.seed}; data.test_fraction, "
                "data.test_seed)")
    else:
        text = ""
    if text:
        _say(text, announce, events)
    try:
        return _simulate_one(job, announce, force, n_procs, events, stopped)
    except UserError:
        # simulate's own check of the destination: the file appeared since the check above
        if missing and _made_meanwhile(job):
            _say(f"{job.path}: made meanwhile by another process; using it", announce, events)
            return 0
        raise


class _Progress:
    """The text lines `simulate` prints by default, plus a DataProgress event for each report."""

    def __init__(self, job: DataJob, events: Sink) -> None:
        self.job, self.events = job, events
        self.text = TextProgress(print)
        self.last: SimulationProgress | None = None

    def __call__(self, p: SimulationProgress) -> None:
        self.text(p)
        self.last = p
        self.events.emit(self.event(p, p.phase))

    def event(self, p: SimulationProgress, phase: str) -> DataProgress:
        return DataProgress(split=self.job.split, path=str(self.job.path), phase=phase, simulated_ns=p.simulated_ns,
                            planned_ns=p.planned_ns, samples=p.samples, planned_samples=p.planned_samples,
                            ns_per_day=p.ns_per_day, elapsed_s=p.elapsed_s,
                            eta_s=math.nan if p.eta_s is None else p.eta_s, temperatures=list(p.temperatures),
                            swap_acceptance=list(p.swap_acceptance))

    def written(self) -> None:
        """The file is complete: a viewer stops showing an ETA for it."""
        if self.last is not None:
            self.events.emit(self.event(self.last, "written"))

    def close(self) -> None:
        self.text.close()


def _simulate_one(job: DataJob, announce: Callable[[str], None], force: bool, n_procs: int | None,
                  events: Sink | None, stopped: Callable[[], str | None] | None) -> int:
    stop = threading.Event()
    progress = _Progress(job, events) if events is not None else None

    def should_stop() -> bool:
        return stop.is_set() or (stopped is not None and bool(stopped()))

    # under SLURM its warning (SIGUSR1) stops the MD too, with the code that asks for a requeue
    with JobSignals(on_stop=lambda name: stop.set(), requeue_on_usr1=slurm_job_id() != "") as signals:
        try:
            simulate(job.cfg, out_path=job.out_path, force=force, n_procs=n_procs, should_stop=should_stop,
                     progress=progress)
        except SimulationInterrupted:
            name = signals.received or (stopped() if stopped is not None else None) or "SIGINT"
            announce(f"molpt-tui: {name} received while generating data: stopped; no data file was written "
                     f"({job.path})")
            return signal_exit_code(name)
        except KeyboardInterrupt:
            announce(f"molpt-tui: interrupted while generating data: stopped; no data file was written ({job.path})")
            return 130
        finally:
            if progress is not None:
                progress.close()
    if progress is not None:
        progress.written()
    return 0
