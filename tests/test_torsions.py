"""Backbone torsions found from the topology of the shipped peptides, their angles against
OpenMM's own torsion angle, and the backbone states they define."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from molpt_tui.physics.torsions import (
    STATE_NAMES,
    AtomInfo,
    atoms_of_topology,
    backbone_of_topology,
    backbone_states,
    dihedrals,
    find_backbone,
)


def _names(ms, torsion):
    return [f"{ms.residue_names[i]}:{ms.atom_names[i]}" for i in torsion.atoms]


def test_alanine_dipeptide_has_phi_psi_and_two_omegas(ala2_system):
    bb = backbone_of_topology(ala2_system.topology)
    by_label = {t.label: t for t in bb.torsions}
    assert set(by_label) == {"phi ALA2", "psi ALA2", "omega ACE1-ALA2", "omega ALA2-NME3"}
    assert _names(ala2_system, by_label["phi ALA2"]) == ["ACE:C", "ALA:N", "ALA:CA", "ALA:C"]
    assert _names(ala2_system, by_label["psi ALA2"]) == ["ALA:N", "ALA:CA", "ALA:C", "NME:N"]
    # the caps' methyl carbons stand in for the missing alpha carbons
    assert _names(ala2_system, by_label["omega ACE1-ALA2"]) == ["ACE:CH3", "ACE:C", "ALA:N", "ALA:CA"]
    assert _names(ala2_system, by_label["omega ALA2-NME3"]) == ["ALA:CA", "ALA:C", "NME:N", "NME:C"]
    assert [p.label for p in bb.pairs] == ["ALA2"]
    assert bb.state_names() == ["beta", "alphaR", "phi>0", "cis ACE1-ALA2", "cis ALA2-NME3"]


def test_uncapped_ala_ala_pairs_the_torsions_across_its_peptide_bond(aa_obc1_system):
    ms = aa_obc1_system
    bb = backbone_of_topology(ms.topology)
    assert [t.label for t in bb.torsions] == ["psi ALA1", "phi ALA2", "omega ALA1-ALA2"]
    (pair,) = bb.pairs
    assert pair.label == "psi ALA1 / phi ALA2"
    assert _names(ms, pair.phi) == ["ALA:C", "ALA:N", "ALA:CA", "ALA:C"]
    assert pair.phi.atoms[0] == pair.psi.atoms[2]  # C of residue 1 closes phi of residue 2
    assert bb.is_peptide


def test_caps_are_found_by_bonds_whatever_their_atoms_are_called(ala2_system):
    atoms, bonds = atoms_of_topology(ala2_system.topology)
    renamed = [dataclasses.replace(a, name="CH3") if (a.residue_name, a.name) == ("NME", "C") else a for a in atoms]
    before = backbone_of_topology(ala2_system.topology)
    after = find_backbone(renamed, bonds)
    assert after.torsions == before.torsions


def test_a_molecule_without_a_peptide_bond_has_no_backbone():
    # ethanol: C-C-O with hydrogens, one residue
    names = ["C1", "C2", "O", "H1", "H2", "H3", "H4", "H5", "HO"]
    atoms = [AtomInfo(name=n, element=n[0], residue=0, residue_name="EOH", residue_id="1") for n in names]
    bonds = [(0, 1), (1, 2), (0, 3), (0, 4), (0, 5), (1, 6), (1, 7), (2, 8)]
    bb = find_backbone(atoms, bonds)
    assert not bb.is_peptide and bb.torsions == () and bb.state_names() == []
    assert bb.state_indicators(np.zeros((4, 9, 3))).shape == (4, 0)


@pytest.mark.parametrize("theta", [0.0, 0.3, -0.3, 1.9, -2.8, math.pi])
def test_dihedral_of_a_constructed_geometry(theta):
    # p0 on +x, the bond p1-p2 along +z, p3 turned by theta about z: the IUPAC torsion is theta
    x = np.array([[1.0, 0, 0], [0, 0, 0], [0, 0, 1.0], [math.cos(theta), math.sin(theta), 1.0]])
    assert dihedrals(x, (0, 1, 2, 3))[0] == pytest.approx(theta, abs=1e-12)


def test_dihedrals_agree_with_openmm_torsion_angles(ala2_system):
    """OpenMM's CustomTorsionForce with energy `theta` returns its torsion angle as the energy:
    the convention the force field's own torsion terms use."""
    import openmm

    bb = backbone_of_topology(ala2_system.topology)
    rng = np.random.default_rng(3)
    confs = ala2_system.positions[None] + rng.normal(0, 0.03, (8, ala2_system.n_atoms, 3))
    for t in bb.torsions:
        system = openmm.System()
        for _ in range(ala2_system.n_atoms):
            system.addParticle(1.0)
        force = openmm.CustomTorsionForce("theta")
        force.addTorsion(*t.atoms, [])
        system.addForce(force)
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        expected = []
        for conf in confs:
            ctx.setPositions(conf)
            expected.append(ctx.getState(getEnergy=True).getPotentialEnergy()._value)
        ours = dihedrals(confs, t.atoms)
        diff = np.angle(np.exp(1j * (ours - np.array(expected))))  # equal up to the +-pi seam
        assert np.abs(diff).max() < 1e-9, t.label


def test_the_shipped_structures_are_trans_and_in_the_beta_basin(ala2_system, aa_obc1_system):
    for ms in (ala2_system, aa_obc1_system):
        bb = backbone_of_topology(ms.topology)
        for t in bb.omegas:
            assert abs(math.degrees(dihedrals(ms.positions, t.atoms)[0])) > 170, t.label
        states = bb.state_indicators(ms.positions)[0]
        assert states[: len(STATE_NAMES)].tolist() == [True, False, False]  # beta / C7eq
        assert not states[len(STATE_NAMES):].any()  # no cis peptide bond


def test_backbone_states_partition_the_ramachandran_plane():
    phi, psi = np.meshgrid(np.linspace(-180, 180, 73), np.linspace(-180, 180, 73))
    beta, alpha_r, positive = backbone_states(phi.ravel(), psi.ravel())
    assert np.all(beta.astype(int) + alpha_r + positive == 1)
    assert backbone_states(np.array([-63.0]), np.array([-43.0]))[1][0]   # alpha helix
    assert backbone_states(np.array([-80.0]), np.array([75.0]))[0][0]    # C7eq
    assert backbone_states(np.array([60.0]), np.array([40.0]))[2][0]     # alpha_L


def test_state_indicators_follow_a_rotated_phi(ala2_system):
    """Turning the ACE cap and the amide H about the N-CA bond changes phi alone: the state
    must follow phi across 0."""
    ms = ala2_system
    bb = backbone_of_topology(ms.topology)
    pair = bb.pairs[0]
    a, b, c, _d = pair.phi.atoms  # C(ACE), N, CA, C
    axis_from, axis_to = ms.positions[b], ms.positions[c]
    # the atoms on N's side of the N-CA bond
    side = {i for i, (name, res) in enumerate(zip(ms.atom_names, ms.residue_names)) if res == "ACE"} | {7}  # + H(N)
    k = (axis_to - axis_from) / np.linalg.norm(axis_to - axis_from)
    phi0 = math.degrees(dihedrals(ms.positions, pair.phi.atoms)[0])
    for target in (-150.0, -60.0, 60.0, 150.0):
        ang = math.radians(phi0 - target)
        rot = (np.cos(ang) * np.eye(3) + np.sin(ang) * np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
               + (1 - np.cos(ang)) * np.outer(k, k))
        x = ms.positions.copy()
        idx = sorted(side)
        x[idx] = (x[idx] - axis_from) @ rot.T + axis_from
        phi = math.degrees(dihedrals(x, pair.phi.atoms)[0])
        assert phi == pytest.approx(target, abs=1e-6)
        assert bool(bb.state_indicators(x)[0, STATE_NAMES.index("phi>0")]) == (target > 0)
    assert a in side
