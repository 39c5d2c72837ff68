"""The directory of a `pt` run: the one owner of its names, and its checkpoint and trajectories.

A pt directory is a run directory in the sense of `run_dir`: the same metrics log, lock and
control channel (so `watch` and `control` work on it unchanged), plus its own files:

    pt_settings.json      resolved settings (what --resume continues)
    pt_checkpoint.npz     the chains: positions, velocities, OpenMM integrator states, RNG, counters
    trajectory_flow.npz   the flow sampler's cold samples (and its hot ones)
    trajectory_ladder.npz the ladder baseline's cold samples (with --baseline ladder)
    summary.json          final numbers of each sampler
    validation_<Tc>_<Th>.png, populations_<Tc>_<Th>.png   figures

Every file is written atomically (`fileio.atomic_write_bytes`); trajectories before the
checkpoint that counts their samples. Files are read without pickles (`allow_pickle=False`).
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import atomic_write_bytes, atomic_write_text
from .run_dir import LOCK_FILE, RunDirectory

SETTINGS_FILE = "pt_settings.json"
CHECKPOINT_FILE = "pt_checkpoint.npz"
SUMMARY_FILE = "summary.json"
SETTINGS_FORMAT = "molpt-tui.pt-settings"


def trajectory_name(sampler: str) -> str:
    return f"trajectory_{sampler}.npz"


def validation_png_name(t_cold: float, t_hot: float) -> str:
    return f"validation_{t_cold:g}_{t_hot:g}.png"


def populations_png_name(t_cold: float, t_hot: float) -> str:
    return f"populations_{t_cold:g}_{t_hot:g}.png"


def _is_pt_output(name: str) -> bool:
    if name in (SETTINGS_FILE, CHECKPOINT_FILE, SUMMARY_FILE):
        return True
    if name.startswith("trajectory_") and name.endswith(".npz"):
        return True
    return name.endswith(".png") and (name.startswith("validation_") or name.startswith("populations_"))


def _is_pt_temporary(name: str) -> bool:
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    return _is_pt_output(name[1:].rsplit(".", 2)[0])


class PTDirectory:
    """Names, checks and files of one pt directory; `run` gives its metrics log, lock and control."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.run = RunDirectory(self.path)

    @property
    def settings(self) -> Path:
        return self.path / SETTINGS_FILE

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def metrics(self) -> Path:
        return self.run.metrics

    def trajectory(self, sampler: str) -> Path:
        return self.path / trajectory_name(sampler)

    def validation_png(self, t_cold: float, t_hot: float) -> Path:
        return self.path / validation_png_name(t_cold, t_hot)

    def populations_png(self, t_cold: float, t_hot: float) -> Path:
        return self.path / populations_png_name(t_cold, t_hot)

    # --- checks that touch nothing ---------------------------------------------------------------
    def check_entries(self) -> None:
        self.run.check_entries()
        for p in (self.settings, self.checkpoint, self.summary):
            if p.exists() and not p.is_file():
                raise UserError(f"{p}: exists but is not a regular file; move it away or choose another --out")

    def check_new(self, force: bool) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path}: exists and is not a directory (choose another --out)")
        if not self.path.is_dir():
            return
        self.check_entries()
        if force:
            return
        if any(p.name != LOCK_FILE for p in self.path.iterdir()):
            raise UserError(f"{self.path}: pt directory is not empty; continue it with --resume, replace it with "
                            "--force, or pick another --out")

    def check_resumable(self) -> None:
        if not self.path.is_dir():
            raise UserError(f"{self.path}: no such pt directory to resume (start without --resume)")
        self.check_entries()
        for p in (self.settings, self.checkpoint):
            if not p.is_file():
                raise UserError(f"{self.path}: no {p.name} to resume from (start a new pt run without --resume, "
                                "or with --force)")

    # --- changes (only after every check passed) -------------------------------------------------
    def create(self) -> bool:
        return self.run.create()

    def clear(self) -> list[Path]:
        """--force: remove what an earlier pt run (or run) wrote here, nothing else. Lock held."""
        removed = self.run.clear()
        for entry in list(self.path.iterdir()):
            if entry.is_file() and (_is_pt_output(entry.name) or _is_pt_temporary(entry.name)):
                entry.unlink(missing_ok=True)
                removed.append(entry)
        return removed

    def remove_stale_temps(self) -> None:
        self.run.remove_stale_temps()
        for entry in list(self.path.iterdir()):
            if _is_pt_temporary(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)

    # --- files -------------------------------------------------------------------------------------
    def write_settings(self, settings: dict[str, Any]) -> Path:
        return atomic_write_text(self.settings, json.dumps({"format": SETTINGS_FORMAT, **settings}, indent=2) + "\n")

    def read_settings(self) -> dict[str, Any]:
        try:
            data = json.loads(self.settings.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.settings}: unreadable pt settings ({exc}); start a new pt run with "
                            "--force") from None
        if not isinstance(data, dict) or data.get("format") != SETTINGS_FORMAT:
            raise UserError(f"{self.settings}: not molpt-tui pt settings; start a new pt run with --force")
        data.pop("format")
        return data

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return atomic_write_text(self.summary, json.dumps(summary, indent=2, allow_nan=True) + "\n")

    def save(self, checkpoint: dict[str, np.ndarray], trajectories: dict[str, dict[str, np.ndarray]]) -> Path:
        for name, arrays in trajectories.items():
            write_npz(self.trajectory(name), arrays)
        return write_npz(self.checkpoint, checkpoint)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """`arrays` as an uncompressed .npz, written atomically."""
    def write(fh: Any) -> None:
        np.savez(fh, allow_pickle=False, **arrays)

    try:
        return atomic_write_bytes(path, write)
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror or exc}); free disk space or use --out") from None


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, without pickles; a UserError naming the file when it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except FileNotFoundError:
        raise UserError(f"{path}: not found; start a new pt run with --force") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, io.UnsupportedOperation) as exc:
        raise UserError(f"{path}: corrupt or unreadable ({type(exc).__name__}: {str(exc)[:120]}); "
                        "start a new pt run with --force") from None

