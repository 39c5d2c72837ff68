"""Paths and tiny-run settings shared by the tests (a module, not conftest, so that the
nested tests/tui/conftest.py cannot shadow it)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRUCTURES = ROOT / "presets" / "structures"

TINY_DATA = ["data.n_samples=600", "data.stride=20", "data.swap_every=20", "data.equilibration_ps=1.0"]
TINY_TRAIN = ["model.hidden=16", "model.n_layers=2", "training.batch_size=32", "training.steps_per_epoch=3",
              "logging.eval_samples=64", "training.warmup_epochs=1", "energy.engine=openmm"]
