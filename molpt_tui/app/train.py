"""`molpt-tui train`: config, preflight, data, run directory, then headless or the live TUI.

Order matters: every check that needs no data runs before the run directory is touched. When
the data must first be made (minutes of MD), the directory is then created and locked and the
MD reports into its metrics.jsonl (`DataPhase`), so `watch` shows it from another terminal;
until the data-dependent checks have passed too, that is undone on any failure or stop. Only
then is the directory cleared (`--force`) and given its config. Headless, the trainer runs in
this process; under the TUI it runs in a child process that writes metrics.jsonl, which the
monitor follows like `watch` does.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, dump_toml, load_config, load_saved_config, validate
from ..fileio import atomic_write_text
from ..physics.data import load_data
from ..training.artifacts import RunArtifacts
from ..training.control import TrainingControl
from ..training.distributed import Distributed, check_world_size, rank_info
from ..training.events import Sink
from ..training.exit_codes import exit_code, signal_exit_code
from ..training.metrics_log import MetricsLogSink
from ..training.run_dir import HEARTBEAT_S, RunDirectory
from ..training.setup import TrainingSetup, build_setup
from ..training.system_stats import CountingEngine, SystemSampler
from ..training.trainer import Trainer
from .artifacts import RunFiles
from .data_generation import DataJob, generate_data, plan_data
from .disk import disk_errors_as_user_errors
from .export import close_sinks, tensorboard_sinks
from .preflight import Checked, ResumePoint, check_data, check_inputs, data_missing
from .resources import apply_threads, cpu_budget, plan_for, plan_threads, worker_cpus
from .signals import JobSignals, hold_signal
from .slurm import slurm_job, slurm_job_id

# How often the trainer's CPU, memory and energy-evaluation rate are sampled for the system line.
SYSTEM_STATS_EVERY_S = 5.0


@dataclass(frozen=True)
class TrainOptions:
    preset: str | None = None
    overrides: tuple[str, ...] = ()
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    device: str | None = None
    out: Path | None = None
    resume: Path | None = None
    resume_from: ResumePoint = "last"
    force: bool = False
    ui: bool = True
    no_mouse: bool = False
    ascii: bool = False          # --ascii: a TUI without braille or box drawing
    threads: int | None = None   # --threads: the CPUs this run may use (None: those it is given)
    tensorboard: bool = False    # --tensorboard: the scalars live in RUN/tensorboard/ (app.export.tensorboard_sinks)


# Typed flags that set a config key; an error about the value names the flag.
FLAG_KEYS = {"epochs": ("training.epochs", "--epochs"), "lr": ("training.lr", "--lr"),
             "batch_size": ("training.batch_size", "--batch-size"), "device": ("training.device", "--device")}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def resolve_config(opts: TrainOptions) -> tuple[Config, RunDirectory]:
    if opts.resume is not None:
        run_dir = RunDirectory(opts.resume)
        run_dir.check_resumable(run_dir.last if opts.resume_from == "last" else run_dir.best)
        cfg = load_saved_config(run_dir.config, opts.overrides)
    else:
        cfg = load_config(opts.preset, opts.overrides)
        run_dir = RunDirectory(opts.out if opts.out is not None else cfg.run_dir)
    # Typed flags go straight onto the config, named by their flag in any error message.
    for name, (key, flag) in FLAG_KEYS.items():
        value = getattr(opts, name)
        if value is not None:
            setattr(cfg.training, key.split(".")[1], value)
            cfg.origins[key] = flag
    return validate(cfg), run_dir


def train(opts: TrainOptions) -> int:
    ranks = rank_info()
    if ranks.world_size > 1:  # started by torchrun or srun as one of several ranks
        from .ddp import train_distributed

        return train_distributed(opts, Distributed(ranks))
    cfg, run_dir = resolve_config(opts)
    use_tui = opts.ui
    if use_tui and not sys.stdout.isatty():
        _say("molpt-tui: stdout is not a terminal: running headless (as with --no-ui)")
        use_tui = False
    budget = cpu_budget(opts.threads)
    # before torch does any work; the engine's share is known once it is built
    apply_threads(plan_threads(budget, "torch", monitor=use_tui))
    slurm = slurm_job()
    if slurm is not None:
        hold_signal("SIGUSR1")  # SLURM's warning during setup is acted on once training starts
    resume: ResumePoint | None = opts.resume_from if opts.resume is not None else None
    if resume is None:
        run_dir.check_new(opts.force)
    run_dir.check_no_live_trainer()
    # a missing `tensorboard` package is refused here, before anything is written
    tensorboard = tensorboard_sinks(run_dir, opts.tensorboard)
    with disk_errors_as_user_errors(run_dir.path):
        checked = check_inputs(cfg, run_dir, resume)
        if checked.resume_from is not None:
            check_world_size(checked.resume_from, checked.resume_path or run_dir.last, 1)
        for warning in checked.warnings:
            _say(f"molpt-tui: warning: {warning}")
        phase: DataPhase | None = None
        if data_missing(cfg):
            if cfg.data_path.is_file():
                load_data(cfg.data_path, checked.ms)  # a bad data file is refused before MD for its test run
            n_procs = budget.cpus if budget.requested else None
            jobs = plan_data(cfg, missing=True, n_procs=n_procs)
            if resume is None:
                phase = DataPhase(run_dir, force=opts.force)
                code = phase.run(cfg, jobs, n_procs)
            else:
                # A resumed run's directory holds a run: its files, and nothing of a data phase.
                code = generate_data(cfg, announce=_say, missing=True, n_procs=n_procs, jobs=jobs)
            if code:
                return code
        try:
            split = check_data(checked)
            setup = build_setup(cfg, checked.ms, split, checked.device, log=_say,
                                worker_cpus=worker_cpus(budget, monitor=use_tui))
            try:
                plan = apply_threads(plan_for(budget, setup.choice, monitor=use_tui))
                # Built now because its constructor is the last check (a checkpoint of the wrong
                # shape is refused here) and writes nothing; sinks that write come later.
                run_info = {**plan.fields(), **(slurm.fields() if slurm else {})}
                trainer = make_trainer(checked, setup, [], run_info=run_info)
                if use_tui:
                    setup.close()  # the child trainer builds its own; this one proved it can be built
                if phase is not None:
                    stopped = phase.stop_signal()
                    if stopped is not None:
                        setup.close()
                        phase.undo()
                        _say(f"molpt-tui: {stopped} received before training started: stopped; the data files "
                             f"are kept, {run_dir.path} is as it was")
                        return signal_exit_code(stopped)
                    phase.commit(lambda: configure_run_dir(checked))
                else:
                    prepare_run_dir(checked, fresh=resume is None, force=opts.force)
            except BaseException:
                setup.close()
                raise
        except BaseException:
            if phase is not None:
                phase.undo()
            raise
        try:
            if use_tui:
                from .live import run_live

                return run_live(checked, resume, no_mouse=opts.no_mouse, threads=opts.threads, ascii_only=opts.ascii,
                                tensorboard=opts.tensorboard)  # the child writes it
            return _run_headless(trainer, checked, setup, tensorboard)
        finally:
            run_dir.release_lock()


class DataPhase:
    """The run directory while `train` makes its missing data (minutes of MD): created, locked,
    an earlier run set aside under --force, metrics.jsonl open for the phase's events, so that
    `watch` shows it and a second trainer or `control` find a live run. Until `commit`, `undo`
    leaves the directory as the command found it: a start refused after the MD, or stopped
    during it, costs the user nothing, and the same command run again is not refused as 'not
    empty'. Job signals are noted from `run` to `commit` (during the MD they stop it)."""

    def __init__(self, run_dir: RunDirectory, *, force: bool) -> None:
        self.run_dir = run_dir
        self.force = force
        self.created = False
        self.moved = False     # an earlier run is in run_dir.set_aside_dir
        self.open = False      # the directory holds this phase's files
        self._log: MetricsLogSink | None = None
        self._signals: JobSignals | None = None
        self._done = threading.Event()
        self._beat: threading.Thread | None = None

    def run(self, cfg: Config, jobs: list[DataJob], n_procs: int | None) -> int:
        """Prepare the directory and make the data; 0, or the 128+n of a stop (directory undone)."""
        try:
            # under SLURM its warning (SIGUSR1) stops the phase too, as it stops the MD
            self._signals = JobSignals(on_stop=lambda name: None, requeue_on_usr1=slurm_job_id() != "")
            self._signals.__enter__()
            self._prepare()
            assert self._log is not None
            code = generate_data(cfg, announce=_say, missing=True, n_procs=n_procs, jobs=jobs, events=self._log,
                                 stopped=self.stop_signal)
            stopped = self.stop_signal()
            if not code and stopped is not None:  # as the last file was written
                _say(f"molpt-tui: {stopped} received while generating data: stopped; the data files written are "
                     "kept")
                code = signal_exit_code(stopped)
        except BaseException:
            self.undo()
            raise
        if code:
            self.undo()
        return code

    def _prepare(self) -> None:
        run_dir = self.run_dir
        self.created = run_dir.create()
        run_dir.acquire_lock()
        self.open = True
        if run_dir.holds_only_a_data_phase():
            run_dir.clear()  # a killed start's MD progress: not this run's
        elif self.force:
            self.moved = run_dir.set_aside()
        run_dir.remove_stale_temps()
        self._log = MetricsLogSink(run_dir.metrics)
        self._beat = threading.Thread(target=self._heartbeat, name="molpt-run-dir-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        # Minimisation or a long MD chunk reports nothing for a while; a viewer on another host
        # must not take the lock for a stale one meanwhile (`heartbeat` itself keeps its pace).
        while not self._done.wait(HEARTBEAT_S / 4):
            self.run_dir.heartbeat()

    def stop_signal(self) -> str | None:
        return self._signals.received if self._signals is not None else None

    def _end(self) -> None:
        self._done.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._signals is not None:
            self._signals.__exit__(None, None, None)
            self._signals = None

    def commit(self, configure: Callable[[], None]) -> None:
        """Every check has passed: `configure` the directory (a failure still undoes), then the
        earlier run's files go. The lock stays held, for the trainer (or the child it hands it to)."""
        configure()
        self._end()
        if self.moved:
            self.run_dir.drop_set_aside()
            self.moved = False
        self.open = False

    def undo(self) -> None:
        self._end()
        run_dir = self.run_dir
        if self.open and run_dir.lock_held:  # never another trainer's files
            if self.moved:
                run_dir.restore_set_aside()
            else:
                run_dir.clear()
        self.open = self.moved = False
        run_dir.release_lock()
        if self.created:
            self.created = False
            try:
                run_dir.path.rmdir()
            except OSError:
                pass  # something not ours appeared in it meanwhile: leave it


def prepare_run_dir(checked: Checked, *, fresh: bool, force: bool) -> None:
    """Create, lock, clear (--force) and configure the run directory; a failure undoes what this
    did, so a refused start leaves the directory as it was."""
    run_dir = checked.run_dir
    created = False
    try:
        created = run_dir.create()
        run_dir.acquire_lock()
        # a killed start's data-phase log would otherwise open this run's
        if fresh and (force or run_dir.holds_only_a_data_phase()):
            run_dir.clear()
        configure_run_dir(checked)
    except BaseException:
        run_dir.release_lock()
        if created:
            _remove_if_ours(run_dir)
        raise


def configure_run_dir(checked: Checked) -> None:
    checked.run_dir.remove_stale_temps()
    write_config(checked.cfg, checked.run_dir)


def write_config(cfg: Config, run_dir: RunDirectory) -> None:
    cfg.data.path = str(cfg.data_path.resolve())
    cfg.output.dir = str(run_dir.path.resolve())
    atomic_write_text(run_dir.config, dump_toml(cfg))


def _remove_if_ours(run_dir: RunDirectory) -> None:
    """Undo a directory this command created, when it holds nothing but what we wrote."""
    run_dir.clear()
    try:
        run_dir.path.rmdir()
    except OSError:
        pass


def make_trainer(checked: Checked, setup: TrainingSetup, sinks: list[Sink],
                 run_info: dict[str, Any] | None = None, *, control: TrainingControl | None = None,
                 artifacts: RunArtifacts | None = None, dist: Distributed | None = None) -> Trainer:
    """`control`, `artifacts`: the run directory's unless given (a rank that does not write)."""
    return Trainer(checked.cfg, setup, sinks, control or TrainingControl(checked.run_dir),
                   artifacts or RunFiles(checked.run_dir, checked.cfg),
                   resume_from=checked.resume_from, resume_path=checked.resume_path,
                   history_events=checked.history_events, run_info=run_info, best_state=checked.best_state,
                   dist=dist)


def run_trainer(trainer: Trainer, setup: TrainingSetup, sinks: list[Sink]) -> int:
    """The trainer in this process, with job signals, the run's control channel and the system
    line (a `SystemStats` event every few seconds into the same sinks). With several ranks a
    signal is told to the others at the next step (`Distributed.between_steps`)."""
    control, dist = trainer.control, trainer.dist
    counter = CountingEngine(setup.choice.engine)
    setup.choice.engine = counter
    sampler = SystemSampler(sinks, counter, setup.device, cpus=int(trainer.run_info.get("cpus", 0)),
                            every_s=SYSTEM_STATS_EVERY_S)
    # the sampler first: Finished stops it before that event reaches the others
    trainer.sinks.extend([sampler, *sinks] if sinks else [])

    def stop(name: str) -> None:
        dist.note_signal(name)
        control.request_stop(f"received {name}")

    with JobSignals(on_stop=stop, on_checkpoint=control.request_checkpoint if dist.is_main else dist.note_checkpoint,
                    requeue_on_usr1=slurm_job_id() != "") as signals:
        try:
            finished = trainer.run()
        finally:
            sampler.close()
            setup.close()
    return exit_code(finished.status, signals.received or dist.stop_signal)


def _run_headless(trainer: Trainer, checked: Checked, setup: TrainingSetup, extra: Sequence[Sink] = ()) -> int:
    """`extra`: more sinks, e.g. `train --tensorboard`'s."""
    from ..report.console import ConsoleReporter

    console = ConsoleReporter(progress_every_s=checked.cfg.logging.progress_every_s)
    log = MetricsLogSink(checked.run_dir.metrics)
    try:
        return run_trainer(trainer, setup, [console, log, *extra])
    finally:
        console.close()
        log.close()
        close_sinks(extra)
