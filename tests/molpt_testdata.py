"""Paths and tiny-run settings shared by the tests (a module, not conftest, so that the
nested tests/tui/conftest.py cannot shadow it)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRUCTURES = ROOT / "molpt_tui" / "presets" / "structures"

TINY_DATA = ["data.n_samples=600", "data.stride=20", "data.swap_every=20", "data.equilibration_ps=1.0"]
TINY_TRAIN = ["model.hidden=16", "model.n_layers=2", "training.batch_size=32", "training.steps_per_epoch=3",
              "logging.eval_samples=64", "training.warmup_epochs=1", "energy.engine=openmm"]


def load_pdb(name: str):
    """(n_atoms, bonds, element symbols, positions [N, 3] float64 tensor in nm) of a shipped structure."""
    import openmm.app as app
    import openmm.unit as unit
    import torch

    pdb = app.PDBFile(str(STRUCTURES / f"{name}.pdb"))
    top = pdb.topology
    bonds = [(b[0].index, b[1].index) for b in top.bonds()]
    elements = [a.element.symbol for a in top.atoms()]
    x = torch.tensor(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=torch.float64)
    return top.getNumAtoms(), bonds, elements, x


def rot_zyz(alpha, beta, gamma):
    """Rotation matrix Rz(alpha) Ry(beta) Rz(gamma) of scalar tensors (rigid-motion invariance tests)."""
    import torch

    def rz(a):
        c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
        return torch.stack([torch.stack([c, -s, o]), torch.stack([s, c, o]), torch.stack([o, o, i])])

    def ry(a):
        c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
        return torch.stack([torch.stack([c, o, s]), torch.stack([o, i, o]), torch.stack([-s, o, c])])

    return rz(alpha) @ ry(beta) @ rz(gamma)
