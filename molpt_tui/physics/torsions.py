"""Backbone torsions of peptides (phi, psi, omega) found from the topology, and the backbone
states they define.

Atoms are found through bonds, not through residue templates, so caps are handled whatever
their atoms are called (the NME methyl carbon is "C" in one PDB and "CH3" in another): an amino
acid is a residue with atoms named N, CA and C bonded N-CA-C; a peptide bond is a bond from a
carbonyl carbon (a carbon bonded to an oxygen) to a nitrogen of another residue. Then

    phi_i   = C_(i-1) - N_i - CA_i - C_i        (C_(i-1): the carbonyl carbon bonded to N_i)
    psi_i   = N_i - CA_i - C_i - N_(i+1)        (N_(i+1): the nitrogen bonded to C_i)
    omega   = X - C - N - Y across each peptide bond, X and Y the alpha carbons (for a cap, the
              carbon bonded to its C or N)

An uncapped dipeptide (Ala-Ala) has no residue with both phi and psi; its map is then the pair
across the peptide bond, (phi_2, psi_1), and the labels say so. Angles are in radians in
(-pi, pi], IUPAC sign convention (the one OpenMM's torsion forces use).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

TorsionKind = Literal["phi", "psi", "omega"]

# Backbone states of one (phi, psi) pair, in degrees: phi > 0 holds alpha_L and C7ax, the slow
# states of alanine dipeptide at 300 K; the phi < 0 half splits at the usual psi boundaries.
STATE_NAMES: tuple[str, ...] = ("beta", "alphaR", "phi>0")
ALPHA_R_PSI_DEG = (-120.0, 50.0)
# |omega| below this is a cis peptide bond.
CIS_LIMIT_DEG = 90.0


@dataclass(frozen=True)
class AtomInfo:
    """What the finder needs of one atom (a Topology reduced to plain data, so tests can build one)."""

    name: str
    element: str          # symbol, "" when unknown
    residue: int          # residue index in the topology
    residue_name: str
    residue_id: str       # the residue number as written in the structure file


@dataclass(frozen=True)
class Torsion:
    kind: TorsionKind
    atoms: tuple[int, int, int, int]
    label: str            # "phi ALA2", "omega ACE1-ALA2"


@dataclass(frozen=True)
class RamachandranPair:
    phi: Torsion
    psi: Torsion
    label: str            # "ALA2", or "psi ALA1 / phi ALA2" across a peptide bond


@dataclass(frozen=True)
class Backbone:
    """The torsions of a molecule's peptide backbone; empty for a molecule without one."""

    torsions: tuple[Torsion, ...]
    pairs: tuple[RamachandranPair, ...]

    @property
    def is_peptide(self) -> bool:
        return bool(self.pairs)

    @property
    def omegas(self) -> tuple[Torsion, ...]:
        return tuple(t for t in self.torsions if t.kind == "omega")

    def state_names(self) -> list[str]:
        """Names of the populations `state_indicators` returns, in its column order."""
        names = []
        for pair in self.pairs:
            prefix = "" if len(self.pairs) == 1 else f"{pair.label} "
            names += [f"{prefix}{s}" for s in STATE_NAMES]
        names += [f"cis {t.label.removeprefix('omega ')}" for t in self.omegas]
        return names

    def state_indicators(self, positions: np.ndarray) -> np.ndarray:
        """[M, n_states] bool of configurations [M, N, 3]: which backbone state each is in."""
        x = np.asarray(positions, dtype=np.float64)
        cols: list[np.ndarray] = []
        for pair in self.pairs:
            phi = np.degrees(dihedrals(x, pair.phi.atoms))
            psi = np.degrees(dihedrals(x, pair.psi.atoms))
            cols += list(backbone_states(phi, psi))
        for t in self.omegas:
            cols.append(np.abs(np.degrees(dihedrals(x, t.atoms))) < CIS_LIMIT_DEG)
        if not cols:
            return np.zeros((len(x), 0), dtype=bool)
        return np.stack(cols, axis=1)


def backbone_states(phi_deg: np.ndarray, psi_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(beta, alphaR, phi>0) indicators of angles in degrees; exactly one is true per sample."""
    positive = phi_deg > 0.0
    lo, hi = ALPHA_R_PSI_DEG
    alpha_r = ~positive & (psi_deg >= lo) & (psi_deg < hi)
    return ~positive & ~alpha_r, alpha_r, positive


def dihedrals(positions: np.ndarray, atoms: tuple[int, int, int, int]) -> np.ndarray:
    """Torsion angles [M] (radians, (-pi, pi]) of atoms (a, b, c, d) in positions [M, N, 3] (or [N, 3])."""
    x = np.asarray(positions, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    a, b, c, d = atoms
    b1 = x[:, b] - x[:, a]
    b2 = x[:, c] - x[:, b]
    b3 = x[:, d] - x[:, c]
    n1 = np.cross(b1, b2)
    n2 = np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.einsum("ij,ij->i", b1, n2)
    angle: np.ndarray = np.arctan2(y, np.einsum("ij,ij->i", n1, n2))
    # atan2 gives [-pi, pi]; -pi and pi are the same torsion, reported as pi
    return np.where(angle <= -math.pi, math.pi, angle)


def atoms_of_topology(topology: Any) -> tuple[list[AtomInfo], list[tuple[int, int]]]:
    """AtomInfo and bonds of an openmm.app.Topology."""
    atoms = [AtomInfo(name=a.name, element=a.element.symbol if a.element is not None else "",
                      residue=a.residue.index, residue_name=a.residue.name, residue_id=str(a.residue.id))
             for a in topology.atoms()]
    bonds = [(int(b[0].index), int(b[1].index)) for b in topology.bonds()]
    return atoms, bonds


def backbone_of_topology(topology: Any) -> Backbone:
    atoms, bonds = atoms_of_topology(topology)
    return find_backbone(atoms, bonds)


def find_backbone(atoms: Sequence[AtomInfo], bonds: Iterable[tuple[int, int]]) -> Backbone:
    """The phi/psi/omega torsions of `atoms` (see the module doc); empty when there is no peptide bond."""
    neighbours: list[set[int]] = [set() for _ in atoms]
    for i, j in bonds:
        neighbours[i].add(j)
        neighbours[j].add(i)

    def element(i: int) -> str:
        return atoms[i].element.upper() or atoms[i].name[:1].upper()

    def res_label(r: int) -> str:
        first = next(a for a in atoms if a.residue == r)
        return f"{first.residue_name}{first.residue_id}"

    by_residue: dict[int, dict[str, int]] = {}
    for i, a in enumerate(atoms):
        by_residue.setdefault(a.residue, {}).setdefault(a.name, i)
    # amino acids: residue -> (N, CA, C), bonded N-CA-C
    amino: dict[int, tuple[int, int, int]] = {}
    for r, names in by_residue.items():
        n, ca, c = names.get("N"), names.get("CA"), names.get("C")
        if n is not None and ca is not None and c is not None and ca in neighbours[n] and c in neighbours[ca]:
            amino[r] = (n, ca, c)
    carbonyl = {i for i in range(len(atoms)) if element(i) == "C" and any(element(j) == "O" for j in neighbours[i])}
    # peptide bonds (carbonyl C, N) across residues, in topology order
    peptide = sorted((c, n) for c in carbonyl for n in neighbours[c]
                     if element(n) == "N" and atoms[n].residue != atoms[c].residue)
    c_before_n = {n: c for c, n in peptide}
    n_after_c = {c: n for c, n in peptide}

    torsions: list[Torsion] = []
    phis: dict[int, Torsion] = {}
    psis: dict[int, Torsion] = {}
    for r in sorted(amino):
        n, ca, c = amino[r]
        if n in c_before_n:
            phis[r] = Torsion("phi", (c_before_n[n], n, ca, c), f"phi {res_label(r)}")
        if c in n_after_c:
            psis[r] = Torsion("psi", (n, ca, c, n_after_c[c]), f"psi {res_label(r)}")
    omegas: list[Torsion] = []
    for c, n in peptide:
        rc, rn = atoms[c].residue, atoms[n].residue
        x = amino[rc][1] if rc in amino else _cap_carbon(c, n, neighbours, element)
        y = amino[rn][1] if rn in amino else _cap_carbon(n, c, neighbours, element)
        if x is not None and y is not None:
            omegas.append(Torsion("omega", (x, c, n, y), f"omega {res_label(rc)}-{res_label(rn)}"))
    for r in sorted(amino):
        torsions += [t for t in (phis.get(r), psis.get(r)) if t is not None]
    torsions += omegas

    pairs = [RamachandranPair(phis[r], psis[r], res_label(r)) for r in sorted(amino) if r in phis and r in psis]
    if not pairs:
        # across each peptide bond between two amino acids: psi of the first, phi of the second
        for c, n in peptide:
            rc, rn = atoms[c].residue, atoms[n].residue
            if rc in psis and rn in phis:
                pairs.append(RamachandranPair(phis[rn], psis[rc], f"psi {res_label(rc)} / phi {res_label(rn)}"))
    return Backbone(torsions=tuple(torsions), pairs=tuple(pairs))


def _cap_carbon(atom: int, partner: int, neighbours: list[set[int]], element: Callable[[int], str]) -> int | None:
    """The carbon bonded to `atom` that carries a cap's methyl (ACE's CH3 on its C, NME's on its N)."""
    for j in sorted(neighbours[atom]):
        if j != partner and element(j) == "C":
            return j
    return None
