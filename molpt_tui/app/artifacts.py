"""Where a training run's results go: checkpoints and PNGs in its run directory.

The trainer is handed this object (training.artifacts.RunArtifacts) and never names a file or
draws a figure itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ..config import Config
from ..report.plotting import save_loss_curves
from ..report.validation_plots import ReducedEnergies, write_validation_figure
from ..training.checkpoint import save_checkpoint
from ..training.evaluation import MappedSamples
from ..training.history import History
from ..training.run_dir import RunDirectory


class RunFiles:
    def __init__(self, run_dir: RunDirectory, cfg: Config) -> None:
        self.run_dir = run_dir
        self.cfg = cfg

    @property
    def location(self) -> str:
        return str(self.run_dir.path)

    def path_for(self, label: Literal["last", "best", "final"]) -> Path:
        t = self.cfg.temperatures
        return {"last": self.run_dir.last, "best": self.run_dir.best,
                "final": self.run_dir.final_model(t.cold, t.hot)}[label]

    def save_checkpoint(self, label: Literal["last", "best", "final"], payload: dict[str, Any]) -> Path:
        return save_checkpoint(self.path_for(label), payload)

    def write_png(self, history: History, status: str) -> Path | None:
        t = self.cfg.temperatures
        title = f"{self.cfg.system_name}: {t.cold:.1f}K → {t.hot:.1f}K"
        if status not in ("completed", "running", ""):
            title += f" ({status})"
        return save_loss_curves(history, self.run_dir.png(t.cold, t.hot), title=title, status=status)

    def write_validation(self, samples: MappedSamples) -> Path | None:
        t = self.cfg.temperatures
        energies = ReducedEnergies(hot=samples.reduced_hot, cold_to_hot=samples.reduced_cold_to_hot,
                                   cold=samples.reduced_cold, hot_to_cold=samples.reduced_hot_to_cold)
        shown = f"all {samples.n_split}" if len(samples) == samples.n_split else f"{len(samples)} of {samples.n_split}"
        title = (f"{self.cfg.system_name}: {t.cold:g} K ↔ {t.hot:g} K, {samples.model or f'epoch {samples.epoch}'}\n"
                 f"{samples.split} split (held out, never trained on): {shown} pairs")
        return write_validation_figure(self.run_dir.validation_png(t.cold, t.hot), cold=samples.cold, hot=samples.hot,
                                       cold_to_hot=samples.cold_to_hot, hot_to_cold=samples.hot_to_cold,
                                       energies=energies, backbone=samples.backbone, t_cold=t.cold, t_hot=t.hot,
                                       title=title)
