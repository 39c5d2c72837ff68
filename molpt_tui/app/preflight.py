"""Everything `train` would fail on, found before the first byte is written.

A refused start leaves the run directory exactly as it was: the corrected command is then not
refused for a half-made directory, and a good run's config is never rewritten by a failed resume.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..config import Config
from ..errors import UserError
from ..physics.data import load_data
from ..physics.openmm_platforms import check_platform
from ..physics.systems import MolecularSystem, system_from_config
from ..training.checkpoint import check_compatible, load_checkpoint
from ..training.events import Event
from ..training.metrics_log import read_events
from ..training.run_dir import RunDirectory
from ..training.setup import DataSplit, check_representation, resolve_device, split_data

ResumePoint = Literal["last", "best"]


@dataclass
class Checked:
    """What preflight built and the run goes on with."""

    cfg: Config
    run_dir: RunDirectory
    ms: MolecularSystem
    device: torch.device
    resume_from: dict[str, Any] | None = None
    resume_path: Path | None = None
    history_events: list[Event] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_inputs(cfg: Config, run_dir: RunDirectory, resume: ResumePoint | None) -> Checked:
    """The checks that need no data: device, platforms, system, representation, checkpoint."""
    device = resolve_device(cfg.training.device)
    check_platform(cfg.energy.platform, "energy.platform")
    check_platform(cfg.data.platform, "data.platform")
    ms = system_from_config(cfg)
    check_representation(cfg, ms)
    checked = Checked(cfg=cfg, run_dir=run_dir, ms=ms, device=device)
    if resume is not None:
        path = run_dir.last if resume == "last" else run_dir.best
        ckpt = load_checkpoint(path)
        check_compatible(ckpt, path, ms, cfg)
        epoch = int(ckpt["epoch"])
        if epoch >= cfg.training.epochs:
            raise UserError(f"{path}: the run is already at epoch {epoch} of {cfg.training.epochs}; "
                            f"raise --epochs above {epoch} to train on")
        checked.resume_from = ckpt
        checked.resume_path = path
        if run_dir.metrics.is_file():
            checked.history_events = list(read_events(run_dir.metrics, warn=checked.warnings.append))
    return checked


def check_data(checked: Checked) -> DataSplit:
    """The data file against the system, and the split of training and held-out pairs."""
    data = load_data(checked.cfg.data_path, checked.ms)
    return split_data(checked.cfg, data)


def data_missing(cfg: Config) -> bool:
    path: Path = cfg.data_path
    if path.exists() and not path.is_file():
        raise UserError(f"{path}: exists but is not a file (set data.path to a file path)")
    return not path.exists()


Log = Callable[[str], None]
