"""Where a training run's results go: checkpoints and PNGs in its run directory.

The trainer is handed this object (training.artifacts.RunArtifacts) and never names a file or
draws a figure itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ..config import Config
from ..report.plotting import save_loss_curves
from ..training.checkpoint import save_checkpoint
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
