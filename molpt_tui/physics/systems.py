"""PDB + force field -> OpenMM System for energies.

Systems for energies are always built with NoCutoff and *no constraints*: OpenMM leaves the
bond energy of a constrained bond out of the potential, so a flow trained against a
constrained System would see a flat energy along X-H bonds and learn nonsense there.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UserError

if TYPE_CHECKING:
    from ..config import Config

# What build_system accepts for `constraints`.
CONSTRAINTS = ("none", "hbonds")


@dataclass
class MolecularSystem:
    """A structure with its force field: what every energy engine and the MD are built from."""

    pdb_path: Path
    forcefield: list[str]
    topology: Any             # openmm.app.Topology
    system: Any               # openmm.System (flexible, NoCutoff)
    positions: np.ndarray     # [N, 3] nm, the PDB structure
    atom_names: list[str]
    residue_names: list[str]
    elements: list[str]
    masses: np.ndarray        # [N] amu
    bonds: list[tuple[int, int]]

    @property
    def n_atoms(self) -> int:
        return len(self.atom_names)

    def hydrogen_bonds(self) -> list[tuple[int, int]]:
        """Bonds with a hydrogen at either end: what `constraints=HBonds` would freeze."""
        return [(i, j) for i, j in self.bonds if self.elements[i] == "H" or self.elements[j] == "H"]

    def system_xml(self) -> str:
        import openmm

        xml: str = openmm.XmlSerializer.serialize(self.system)
        return xml


def load_pdb(path: str | Path) -> Any:
    """The openmm.app.PDBFile at ``path``; UserError naming the file when it is missing or unreadable."""
    import openmm.app as app

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: structure file not found (give an existing PDB file)")
    try:
        pdb = app.PDBFile(str(path))
    except Exception as exc:  # OpenMM raises assorted exception types for malformed files
        raise UserError(f"{path}: not a readable PDB file ({_first_line(exc)})") from None
    if pdb.topology.getNumAtoms() == 0:
        raise UserError(f"{path}: the PDB file holds no atoms")
    return pdb


def build_system(pdb_path: str | Path, forcefield: Sequence[str], constraints: str = "none") -> MolecularSystem:
    """`constraints` ("none" or "hbonds") is only for MD (`simulate`); energies for training use
    the default 'none'."""
    if constraints not in CONSTRAINTS:
        raise ValueError(f"constraints must be one of {CONSTRAINTS}, not {constraints!r}")
    import openmm.app as app
    import openmm.unit as unit

    pdb = load_pdb(pdb_path)
    try:
        ff = app.ForceField(*forcefield)
    except Exception as exc:
        raise UserError(f"force field {forcefield}: cannot be loaded ({_first_line(exc)}); "
                        "use OpenMM's bundled XML names (e.g. amber96.xml, implicit/obc1.xml) or paths") from None
    constraint = {"none": None, "hbonds": app.HBonds}[constraints]
    try:
        system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=constraint,
                                 rigidWater=False, removeCMMotion=False)
    except Exception as exc:
        raise UserError(f"{pdb_path}: force field {forcefield} cannot parametrise this structure "
                        f"({_first_line(exc)}); check residue names and hydrogens") from None
    atoms = list(pdb.topology.atoms())
    positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    bonds = sorted((min(a.index, b.index), max(a.index, b.index)) for a, b in pdb.topology.bonds())
    return MolecularSystem(
        pdb_path=Path(pdb_path),
        forcefield=list(forcefield),
        topology=pdb.topology,
        system=system,
        positions=positions,
        atom_names=[a.name for a in atoms],
        residue_names=[a.residue.name for a in atoms],
        elements=[a.element.symbol if a.element is not None else "X" for a in atoms],
        masses=masses,
        bonds=bonds,
    )


def system_from_config(cfg: Config, constraints: str = "none") -> MolecularSystem:
    from ..config import forcefield_path

    return build_system(cfg.pdb_path, [forcefield_path(ff, cfg) for ff in cfg.system.forcefield], constraints)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
