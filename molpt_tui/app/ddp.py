"""`molpt-tui train` as one rank of a data-parallel run (`torchrun`, or `srun` with several tasks).

Every rank runs the same checks on the same files and builds its own engine and trainer; rank 0
alone writes the run directory (lock, config, metrics.jsonl, checkpoints, PNG) and prints, so
`watch` and `control` work as for one process. A check that fails on any rank fails on all of
them, with the failing rank's message on rank 0, rather than leaving the others waiting. The
trainer's side of it is `training.distributed`. Headless only.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..errors import UserError
from ..training.artifacts import ArtifactLabel
from ..training.control import TrainingControl
from ..training.distributed import Distributed, check_world_size, record_ranks
from ..training.evaluation import MappedSamples
from ..training.history import History
from ..training.run_dir import RunDirectory
from ..training.setup import build_setup, resolve_device
from .artifacts import RunFiles
from .disk import disk_errors_as_user_errors
from .export import tensorboard_sinks
from .preflight import ResumePoint, check_data, check_inputs, data_missing
from .resources import apply_threads, cpu_budget, plan_for, plan_threads, worker_cpus
from .signals import hold_signal
from .slurm import slurm_job
from .train import TrainOptions, _run_headless, make_trainer, prepare_run_dir, resolve_config, run_trainer

T = TypeVar("T")


class RankedFiles(RunFiles):
    """Rank 0's run directory; its checkpoints record the world size they were trained with."""

    def __init__(self, run_dir: RunDirectory, cfg: Any, world_size: int) -> None:
        super().__init__(run_dir, cfg)
        self.world_size = world_size

    def save_checkpoint(self, label: ArtifactLabel, payload: dict[str, Any]) -> Path:
        return super().save_checkpoint(label, record_ranks(payload, self.world_size, self.cfg.training.batch_size))


class NoFiles:
    """The artifacts of a rank that writes nothing: the same names, no files."""

    def __init__(self, files: RunFiles) -> None:
        self.files = files

    @property
    def location(self) -> str:
        return self.files.location

    def save_checkpoint(self, label: ArtifactLabel, payload: dict[str, Any]) -> Path:
        return self.files.path_for(label)

    def write_png(self, history: History, status: str) -> Path | None:
        return None

    def write_validation(self, samples: MappedSamples) -> Path | None:
        return None


def _together(dist: Distributed, step: Callable[[], T]) -> T:
    """Run `step` on every rank; if it fails on any, raise on all (rank 0 says which failed)."""
    error: UserError | None = None
    result: T | None = None
    try:
        result = step()
    except UserError as exc:
        error = exc
    failed = dist.reduce_max([dist.rank + 1 if error is not None else 0])[0]
    if error is not None:
        raise error
    if failed:
        raise UserError(f"rank {int(failed) - 1} refused to start (its message is in its output); no rank trains")
    return result  # type: ignore[return-value]  # set whenever no rank failed


def train_distributed(opts: TrainOptions, dist: Distributed) -> int:
    say: Callable[[str], None] = ((lambda text: print(text, file=sys.stderr, flush=True)) if dist.is_main
                                  else (lambda text: None))
    cfg, run_dir = resolve_config(opts)
    if opts.ui:
        say(f"molpt-tui: rank 0 of {dist.world_size}: distributed training runs headless (as with --no-ui)")
    budget = cpu_budget(opts.threads, local_ranks=dist.local_world_size)
    apply_threads(plan_threads(budget, "torch"))
    slurm = slurm_job()
    if slurm is not None:
        hold_signal("SIGUSR1")
    device = resolve_device(cfg.training.device, cfg.named("training.device"))
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)  # one GPU per rank of this node
    dist.start(device)
    try:
        return _train_ranks(opts, dist, cfg, run_dir, budget, slurm, device, say)
    finally:
        dist.close()


def _train_ranks(opts: TrainOptions, dist: Distributed, cfg: Any, run_dir: RunDirectory, budget: Any, slurm: Any,
                 device: torch.device, say: Callable[[str], None]) -> int:
    resume: ResumePoint | None = opts.resume_from if opts.resume is not None else None

    def check() -> Any:
        if resume is None:
            run_dir.check_new(opts.force)
        run_dir.check_no_live_trainer()
        with disk_errors_as_user_errors(run_dir.path):
            checked = check_inputs(cfg, run_dir, resume)
            checked.device = device
            if checked.resume_from is not None:
                check_world_size(checked.resume_from, checked.resume_path or run_dir.last, dist.world_size)
            tensorboard_sinks(run_dir, opts.tensorboard)  # only checks here: a missing package, before any write
            if data_missing(cfg):
                # every rank would generate it at once; one process makes it in minutes
                raise UserError(f"{cfg.data_path}: no data file yet; make it first with one process "
                                f"(`molpt-tui simulate --preset {cfg.preset_name}`), then start the ranks")
            return checked, check_data(checked)

    checked, split = _together(dist, check)
    for warning in checked.warnings:
        say(f"molpt-tui: warning: {warning}")
    setup = build_setup(cfg, checked.ms, split, device, log=say, worker_cpus=worker_cpus(budget))
    try:
        plan = apply_threads(plan_for(budget, setup.choice))
        info = {**plan.fields(), **(slurm.fields() if slurm else {}), **dist.fields()}
        files = RunFiles(run_dir, cfg)

        def build() -> Any:
            if dist.is_main:
                return make_trainer(checked, setup, [], info, artifacts=RankedFiles(run_dir, cfg, dist.world_size),
                                    dist=dist)
            # no control channel (rank 0 reads it), no files
            return make_trainer(checked, setup, [], info, control=TrainingControl(None), artifacts=NoFiles(files),
                                dist=dist)

        trainer = _together(dist, build)
        # every rank has checked the directory before rank 0 writes to it
        _together(dist, lambda: prepare_run_dir(checked, fresh=resume is None, force=opts.force)
                  if dist.is_main else None)
    except BaseException:
        setup.close()
        raise
    try:
        if dist.is_main:  # the only rank that writes the run directory
            return _run_headless(trainer, checked, setup, tensorboard_sinks(run_dir, opts.tensorboard))
        return run_trainer(trainer, setup, [])
    finally:
        if dist.is_main:
            run_dir.release_lock()
