"""Build the two shipped structures from ideal peptide geometry.

    python scripts/make_structures.py [--out molpt_tui/presets/structures]

Heavy atoms are placed from textbook internal coordinates (Engh & Huber bond lengths and
angles, trans peptide bonds, a C7eq-like backbone), hydrogens are added by OpenMM's
``Modeller.addHydrogens`` for pH 7 (so the uncapped Ala-Ala is a zwitterion: NH3+ / COO-),
and the result is minimised with the preset's own flexible force field. Re-running the
script reproduces the shipped files, so the provenance of every coordinate is in the repo.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

# Angstrom / degrees: standard peptide geometry.
N_CA, CA_C, C_N, C_O, CA_CB = 1.458, 1.525, 1.329, 1.231, 1.530
ANG_N_CA_C, ANG_CA_C_N, ANG_C_N_CA, ANG_CA_C_O, ANG_N_CA_CB = 111.0, 116.2, 121.7, 120.8, 110.5


def place(a, b, c, bond, angle, torsion):
    """Position of d such that |cd| = bond, angle(b, c, d) = angle, dihedral(a, b, c, d) = torsion."""
    angle, torsion = np.radians(angle), np.radians(torsion)
    bc = c - b
    bc /= np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d2 = np.array([-bond * np.cos(angle), bond * np.sin(angle) * np.cos(torsion),
                   bond * np.sin(angle) * np.sin(torsion)])
    return c + d2[0] * bc + d2[1] * m + d2[2] * n


def backbone(n_res: int, phi: float, psi: float):
    """N, CA, C positions of n_res residues (plus the O/CB of each), returned per residue."""
    residues = []
    n = np.array([0.0, 0.0, 0.0])
    ca = np.array([N_CA, 0.0, 0.0])
    c = place(np.array([0.0, 1.0, 0.0]), n, ca, CA_C, ANG_N_CA_C, 0.0)
    for i in range(n_res):
        if i > 0:
            prev = residues[-1]
            n = place(prev["N"], prev["CA"], prev["C"], C_N, ANG_CA_C_N, psi)
            ca = place(prev["CA"], prev["C"], n, N_CA, ANG_C_N_CA, 180.0)
            c = place(prev["C"], n, ca, CA_C, ANG_N_CA_C, phi)
        residues.append({"N": n, "CA": ca, "C": c})
    for res in residues:
        res["CB"] = place(res["C"], res["N"], res["CA"], CA_CB, ANG_N_CA_CB, -122.5)
        res["O"] = place(res["N"], res["CA"], res["C"], C_O, ANG_CA_C_O, psi + 180.0)
    return residues


def _topology(residue_specs):
    top = app.Topology()
    chain = top.addChain("A")
    positions = []
    atoms = []
    element = {"N": app.element.nitrogen, "C": app.element.carbon, "O": app.element.oxygen}
    for name, coords in residue_specs:
        res = top.addResidue(name, chain)
        for atom_name, xyz in coords:
            atoms.append(top.addAtom(atom_name, element[atom_name[0]], res))
            positions.append(xyz / 10.0)  # Angstrom -> nm
    top.createStandardBonds()
    return top, np.array(positions)


def ala_ala():
    """Uncapped zwitterionic Ala-Ala: 23 atoms after protonation."""
    r1, r2 = backbone(2, phi=-80.0, psi=150.0)
    oxt = place(r2["N"], r2["CA"], r2["C"], 1.25, 117.0, 150.0)
    r2["O"] = place(r2["N"], r2["CA"], r2["C"], 1.25, 117.0, -30.0)
    specs = [
        ("ALA", [(k, r1[k]) for k in ("N", "CA", "CB", "C", "O")]),
        ("ALA", [(k, r2[k]) for k in ("N", "CA", "CB", "C", "O")] + [("OXT", oxt)]),
    ]
    return _topology(specs)


def alanine_dipeptide():
    """ACE-ALA-NME (capped alanine dipeptide): 22 atoms after protonation, C7eq backbone."""
    ace, ala, nme = backbone(3, phi=-80.0, psi=75.0)
    # Cap atoms sit where the neighbouring residues' CA and carbonyl C would be.
    ace_ch3 = ace["CA"]
    specs = [
        ("ACE", [("CH3", ace_ch3), ("C", ace["C"]), ("O", ace["O"])]),
        ("ALA", [(k, ala[k]) for k in ("N", "CA", "CB", "C", "O")]),
        ("NME", [("N", nme["N"]), ("C", nme["CA"])]),
    ]
    return _topology(specs)


def helix(n_res: int, forcefields):
    """A protonated alpha helix of n_res residues, Ala with every third a Gly (30 residues: 273
    atoms); not shipped, built for the energy tests and benchmarks of larger systems.
    Returns (topology, positions [N, 3] in nm), unminimised."""
    psi = -47.0
    specs = []
    for k, res in enumerate(backbone(n_res, phi=-57.0, psi=psi)):
        name = "GLY" if k % 3 == 2 else "ALA"
        atoms = ("N", "CA", "C", "O") if name == "GLY" else ("N", "CA", "CB", "C", "O")
        coords = [(a, res[a]) for a in atoms]
        if k == n_res - 1:
            coords.append(("OXT", place(res["N"], res["CA"], res["C"], 1.25, 117.0, psi)))
        specs.append((name, coords))
    top, pos = _topology(specs)
    modeller = app.Modeller(top, pos * unit.nanometer)
    modeller.addHydrogens(app.ForceField(*forcefields), pH=7.0)
    return modeller.topology, np.array(modeller.positions.value_in_unit(unit.nanometer))


def finish(top, positions, forcefields, out: Path):
    ff = app.ForceField(*forcefields)
    modeller = app.Modeller(top, positions * unit.nanometer)
    modeller.addHydrogens(ff, pH=7.0)
    # Flexible system: the shipped geometry must be a minimum of the energy used for training.
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
    state = context.getState(getPositions=True, getEnergy=True)
    with open(out, "w") as fh:
        app.PDBFile.writeFile(modeller.topology, state.getPositions(), fh, keepIds=False)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    print(f"{out}: {modeller.topology.getNumAtoms()} atoms, minimised U = {energy:.2f} kJ/mol")


def _check_l_chirality(top, positions):
    for res in top.residues():
        if res.name != "ALA":
            continue
        idx = {a.name: a.index for a in res.atoms()}
        n, ca, c, cb = (positions[idx[k]] for k in ("N", "CA", "C", "CB"))
        assert np.dot(np.cross(n - ca, c - ca), cb - ca) > 0, "built a D-alanine"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "molpt_tui" / "presets" / "structures")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    top, pos = ala_ala()
    _check_l_chirality(top, pos)
    finish(top, pos, ["amber99sbildn.xml", "implicit/obc1.xml"], args.out / "ala_ala.pdb")
    top, pos = alanine_dipeptide()
    _check_l_chirality(top, pos)
    finish(top, pos, ["amber96.xml"], args.out / "alanine_dipeptide.pdb")


if __name__ == "__main__":
    main()
