"""Everything `train` would fail on, found before the first byte is written.

A refused start leaves the run directory exactly as it was: the corrected command is then not
refused for a half-made directory, and a good run's config is never rewritten by a failed resume.
`check_inputs` needs no data. When the data must first be made, `train` runs that MD in its
locked run directory (so it can be watched) and only then calls `check_data`; a refusal there
undoes the directory all the same (`app.train.DataPhase`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..config import Config
from ..errors import UserError
from ..physics.data import ReplicaData, load_data, slow_coordinates
from ..physics.openmm_platforms import check_platform
from ..physics.systems import MolecularSystem, system_from_config
from ..training.checkpoint import check_compatible, load_checkpoint
from ..training.events import DataReport, Event
from ..training.metrics_log import read_events
from ..training.run_dir import RunDirectory
from ..training.setup import DataSplit, check_flow_compile, check_representation, resolve_device, split_data

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
    # On a resume: best.pt's payload, which the final model holds unless a better epoch comes.
    best_state: dict[str, Any] | None = None


def check_inputs(cfg: Config, run_dir: RunDirectory, resume: ResumePoint | None) -> Checked:
    """The checks that need no data: device, platforms, system, representation, checkpoint."""
    device = resolve_device(cfg.training.device, cfg.named("training.device"))
    check_platform(cfg.energy.platform, "energy.platform")
    check_platform(cfg.data.platform, "data.platform")
    ms = system_from_config(cfg)
    check_representation(cfg, ms)
    check_flow_compile(cfg, device)
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
        checked.best_state = ckpt if resume == "best" else _best_or_none(run_dir.best, ms, cfg, checked.warnings)
        if run_dir.metrics.is_file():
            checked.history_events = list(read_events(run_dir.metrics, warn=checked.warnings.append))
    return checked


def _best_or_none(path: Path, ms: MolecularSystem, cfg: Config, warnings: list[str]) -> dict[str, Any] | None:
    """best.pt of a run resumed from last.pt; a missing or unusable one is a warning (the final
    model then holds the best epoch of the resumed segment), not a refusal."""
    if not path.is_file():
        return None
    try:
        ckpt = load_checkpoint(path)
        check_compatible(ckpt, path, ms, cfg)
    except UserError as exc:
        warnings.append(f"{exc}; the final model will be the best epoch from here on")
        return None
    return ckpt


def check_data(checked: Checked) -> DataSplit:
    """The data file and its test run against the system, the three splits, and how many
    independent samples each file holds of its slowest backbone torsion."""
    cfg = checked.cfg
    data = load_data(cfg.data_path, checked.ms)
    test = None
    if cfg.test_n_samples > 0:
        test = load_data(cfg.test_data_path, checked.ms)
    split = split_data(cfg, data, test)
    reports = [data_report(cfg, checked.ms, data, cfg.data_path, "training data")]
    if test is not None:
        reports.append(data_report(cfg, checked.ms, test, cfg.test_data_path, "test data"))
    return dataclasses.replace(split, reports=tuple(reports))


def data_report(cfg: Config, ms: MolecularSystem, data: ReplicaData, path: Path, split: str) -> DataReport:
    """The backbone torsions' autocorrelation at the cold and hot temperature of `data`."""
    t = cfg.temperatures
    coords = slow_coordinates(data, ms.topology, (t.cold, t.hot))
    n = min(len(data.at(t.cold)), len(data.at(t.hot)))
    if not coords:
        return DataReport(path=str(path), split=split, n_samples=n)
    slowest = min(coords, key=lambda c: c.n_independent)
    return DataReport(path=str(path), split=split, n_samples=n, coordinates=[c.label for c in coords],
                      tau=[c.tau for c in coords], transitions=[c.transitions for c in coords],
                      n_independent=slowest.n_independent, slowest=slowest.label)


def data_missing(cfg: Config) -> bool:
    """Whether the data file or (when the config asks for one) its test run is still to be made."""
    paths: list[tuple[Path, str]] = [(cfg.data_path, "data.path")]
    if cfg.test_n_samples > 0:
        paths.append((cfg.test_data_path, "data.test_path"))
    for path, key in paths:
        if path.exists() and not path.is_file():
            raise UserError(f"{path}: exists but is not a file (set {key} to a file path)")
    return any(not path.exists() for path, _ in paths)


Log = Callable[[str], None]
