"""ICRepresentation: Z-matrix construction, exact round trip, exact log-determinant."""
from __future__ import annotations

import math

import pytest
import torch
from molpt_testdata import STRUCTURES, load_pdb, rot_zyz

from molpt_tui.flows.cartesian import align_to_frame
from molpt_tui.flows.internal import ICRepresentation, TopologyError, bond_angle, build_zmatrix, dihedral, wrap_angle


def random_rigid(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    ang = torch.rand(3, generator=gen, dtype=x.dtype) * torch.tensor([6.0, 3.0, 6.0], dtype=x.dtype)
    rot = rot_zyz(*ang)
    return x @ rot.T + torch.randn(3, generator=gen, dtype=x.dtype)


def full_map_logabsdet(inverse_x, z: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """log|det| of (translation, ZYZ Euler angles, z) -> world Cartesian x, minus the Haar density.

    The Haar measure of SO(3) in ZYZ Euler angles is sin(beta) dalpha dbeta dgamma with the
    same normalisation (8 pi^2) as the solid angle x azimuth used by the representations, so
    the 3N x 3N determinant divided by sin(beta) is the reduced Jacobian.
    """
    euler0 = torch.tensor([0.7, 1.1, -2.3], dtype=z.dtype)
    t0 = torch.tensor([0.3, -0.2, 0.5], dtype=z.dtype)
    d = z.numel()

    def f(p):
        t, e, zz = p[:3], p[3:6], p[6:]
        x = inverse_x(zz[None])[0]
        return (x @ rot_zyz(*e).T + t).reshape(-1)

    p0 = torch.cat([t0, euler0, z])
    jac = torch.autograd.functional.jacobian(f, p0)
    assert jac.shape == (3 * n_atoms, 6 + d)
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign != 0
    return logabs - torch.log(torch.sin(euler0[1]))


def methanol():
    # C0 O1 H2(O) H3 H4 H5 (on C): one heavy-atom bond only, so the roots must include H.
    bonds = [(0, 1), (1, 2), (0, 3), (0, 4), (0, 5)]
    el = ["C", "O", "H", "H", "H", "H"]
    x = torch.tensor(
        [[0.0, 0.0, 0.0], [0.143, 0.0, 0.0], [0.175, 0.09, 0.0], [-0.036, -0.05, 0.09],
         [-0.036, -0.05, -0.09], [-0.036, 0.103, 0.0]],
        dtype=torch.float64,
    )
    return 6, bonds, el, x


def cyclopropanol_like():
    # 3-ring C0 C1 C2, O3 on C0, H4 on O3, H5 on C1, H6 on C2: a ring closure in a 7-atom molecule.
    bonds = [(0, 1), (1, 2), (2, 0), (0, 3), (3, 4), (1, 5), (2, 6)]
    el = ["C", "C", "C", "O", "H", "H", "H"]
    x = torch.tensor(
        [[0.0, 0.0, 0.0], [0.151, 0.0, 0.0], [0.0755, 0.131, 0.0], [-0.08, -0.06, 0.09],
         [-0.05, -0.09, 0.17], [0.25, -0.05, -0.03], [0.08, 0.22, -0.05]],
        dtype=torch.float64,
    )
    return 7, bonds, el, x


def perturbed(x: torch.Tensor, n: int, scale: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return x[None] + scale * torch.randn(n, *x.shape, generator=gen, dtype=x.dtype)


# ---------------------------------------------------------------------------- Z-matrix


@pytest.mark.parametrize("name", ["alanine_dipeptide", "ala_ala"])
def test_zmatrix_is_valid_and_prefers_heavy_references(name):
    n, bonds, el, _ = load_pdb(name)
    zm = build_zmatrix(n, bonds, el)
    bond_set = {frozenset(b) for b in bonds}
    heavy = [e != "H" for e in el]
    r0, r1, r2 = zm.roots
    assert all(heavy[r] for r in zm.roots)
    assert frozenset((r0, r1)) in bond_set and frozenset((r1, r2)) in bond_set
    assert sorted(zm.atom_order) == list(range(n))
    seen = {r0, r1, r2}
    for a, b, c, d in zm.rows:
        assert a not in seen and {b, c, d} <= seen and len({a, b, c, d}) == 4
        assert frozenset((a, b)) in bond_set and frozenset((b, c)) in bond_set
        assert frozenset((c, d)) in bond_set or frozenset((b, d)) in bond_set
        if heavy[a]:  # the heavy skeleton is built from heavy atoms only
            assert heavy[b] and heavy[c] and heavy[d]
        else:
            assert heavy[b] and heavy[c]
        seen.add(a)
    # depth levels: every reference of a row lies in an earlier level
    level = {r: 0 for r in zm.roots}
    for k, (lo, hi) in enumerate(zip(zm.level_bounds[:-1], zm.level_bounds[1:])):
        for _, b, c, d in zm.rows[lo:hi]:
            assert max(level[b], level[c], level[d]) <= k
        for a, *_ in zm.rows[lo:hi]:
            level[a] = k + 1


def test_roots_are_central_backbone_atoms_of_alanine_dipeptide():
    import openmm.app as app

    top = app.PDBFile(str(STRUCTURES / "alanine_dipeptide.pdb")).topology
    atoms = list(top.atoms())
    n, bonds, el, _ = load_pdb("alanine_dipeptide")
    r0, r1, r2 = build_zmatrix(n, bonds, el).roots
    assert (atoms[r1].residue.name, atoms[r1].name) == ("ALA", "CA")
    assert {atoms[r0].name, atoms[r2].name} == {"N", "C"}


def test_disconnected_graph_raises_clear_error():
    n, bonds, el, _ = load_pdb("alanine_dipeptide")
    water = [(n, n + 1), (n, n + 2)]
    with pytest.raises(TopologyError, match="disconnected: 2 fragments"):
        ICRepresentation.from_topology(n + 3, bonds + water, el + ["O", "H", "H"])
    with pytest.raises(TopologyError, match="at least 3 atoms"):
        ICRepresentation.from_topology(2, [(0, 1)], ["H", "H"])
    with pytest.raises(TopologyError, match="outside"):
        ICRepresentation.from_topology(3, [(0, 1), (1, 5)], ["O", "H", "H"])


def test_layout_and_dims():
    n, bonds, el, _ = load_pdb("alanine_dipeptide")
    rep = ICRepresentation.from_topology(n, bonds, el)
    lay = rep.layout
    assert rep.dim == lay.dim == 3 * n - 6
    assert lay.n_tokens == n - 1 and rep.token_atoms == rep.atom_order[1:]
    assert lay.kind_of_dim.count("bond") == n - 1
    assert lay.kind_of_dim.count("angle") == n - 2
    assert lay.kind_of_dim.count("torsion") == n - 3
    for kind, slot in zip(lay.kind_of_dim, lay.slot_of_dim):
        assert slot == ("bond", "angle", "torsion").index(kind)
    # tokens appear in order and each (token, slot) pair once
    pairs = list(zip(lay.atom_of_dim, lay.slot_of_dim))
    assert len(set(pairs)) == len(pairs) and list(lay.atom_of_dim) == sorted(lay.atom_of_dim)
    tors = rep.torsion_dims()
    assert torch.equal(tors, torch.nonzero(lay.periodic).flatten()) and tors.numel() == n - 3


# ---------------------------------------------------------------------------- geometry


def test_dihedral_and_angle_conventions():
    p0 = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    p1 = torch.zeros(1, 3, dtype=torch.float64)
    p2 = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    for phi in (-2.5, -0.3, 0.0, 1.2, 3.0):
        p3 = torch.tensor([[math.cos(phi), math.sin(phi), 1.0]], dtype=torch.float64)
        assert dihedral(p0, p1, p2, p3).item() == pytest.approx(phi, abs=1e-12)
    assert bond_angle(p0, p1, p2).item() == pytest.approx(math.pi / 2)
    w = wrap_angle(torch.tensor([-math.pi, math.pi, 3 * math.pi, -1e-30, 7.0], dtype=torch.float32))
    assert bool(((w >= -math.pi) & (w < math.pi)).all())


@pytest.mark.parametrize("name", ["alanine_dipeptide", "ala_ala"])
def test_round_trip_pdb_float64(name):
    n, bonds, el, x = load_pdb(name)
    rep = ICRepresentation.from_topology(n, bonds, el)
    xs = perturbed(x, 64, 0.01)
    rep.fit(xs)
    gen = torch.Generator().manual_seed(1)
    xw = torch.stack([random_rigid(xi, gen) for xi in xs])
    z, ld_fwd = rep(xw)
    x_back, ld_inv = rep.inverse(z)
    target = align_to_frame(xw, *rep.zmatrix.roots)
    assert (x_back - target).abs().max().item() < 1e-6
    assert (x_back - target).abs().max().item() < 1e-10  # float64 is far better than required
    assert (ld_fwd + ld_inv).abs().max().item() < 1e-12
    # xw is the fitted data moved rigidly, so its bonds and angles are exactly standardised;
    # torsions stay on the circle
    per = rep.layout.periodic
    assert z[:, ~per].mean(0).abs().max().item() < 1e-8
    assert z[:, ~per].std(0, unbiased=False).sub(1).abs().max().item() < 1e-6
    assert bool(((z[:, per] >= -math.pi) & (z[:, per] < math.pi)).all())


def test_internal_coordinates_are_invariant_to_rigid_motion():
    n, bonds, el, x = load_pdb("ala_ala")
    rep = ICRepresentation.from_topology(n, bonds, el).fit(perturbed(x, 8, 0.01))
    gen = torch.Generator().manual_seed(3)
    xs = perturbed(x, 4, 0.01, seed=5)
    z1, l1 = rep(xs)
    z2, l2 = rep(torch.stack([random_rigid(xi, gen) for xi in xs]))
    assert torch.allclose(wrap_angle(z1 - z2), torch.zeros_like(z1), atol=1e-10)
    assert torch.allclose(l1, l2, atol=1e-10)


@pytest.mark.parametrize("mol", ["methanol", "cyclopropanol_like", "alanine_dipeptide"])
def test_logdet_matches_autograd_jacobian(mol):
    if mol == "alanine_dipeptide":
        n, bonds, el, x = load_pdb(mol)
    else:
        n, bonds, el, x = globals()[mol]()
    rep = ICRepresentation.from_topology(n, bonds, el).fit(perturbed(x, 32, 0.01))
    for seed in range(2):
        xi = perturbed(x, 1, 0.01, seed=10 + seed)
        z, ld_fwd = rep(xi)
        _, ld_inv = rep.inverse(z)
        ref = full_map_logabsdet(lambda zz: rep.inverse(zz)[0], z[0], n)
        assert ld_inv.item() == pytest.approx(ref.item(), abs=1e-8)
        assert ld_fwd.item() == pytest.approx(-ref.item(), abs=1e-8)


def test_ring_round_trip_on_random_geometries():
    n, bonds, el, x = cyclopropanol_like()
    rep = ICRepresentation.from_topology(n, bonds, el)
    xs = perturbed(x, 50, 0.02, seed=4)
    rep.fit(xs)
    x_back, _ = rep.inverse(rep(xs)[0])
    assert (x_back - align_to_frame(xs, *rep.zmatrix.roots)).abs().max().item() < 1e-10


def test_fixed_hydrogen_bonds_are_held_and_not_dims():
    n, bonds, el, x = load_pdb("alanine_dipeptide")
    xh = [(i, j) for i, j in bonds if "H" in (el[i], el[j])]
    rep = ICRepresentation.from_topology(n, bonds, el, fixed_bonds=xh)
    assert rep.dim == 3 * n - 6 - len(xh) == rep.layout.dim
    xs = perturbed(x, 40, 0.005)
    rep.fit(xs)
    bond_len = {frozenset(b): (xs[:, b[0]] - xs[:, b[1]]).norm(dim=-1).mean() for b in xh}
    z, ld_fwd = rep(xs[:5])
    x_back, ld_inv = rep.inverse(z)
    assert (ld_fwd + ld_inv).abs().max().item() < 1e-12
    for i, j in xh:
        got = (x_back[:, i] - x_back[:, j]).norm(dim=-1)
        assert torch.allclose(got, bond_len[frozenset((i, j))].expand(5), atol=1e-12)
    # everything but the fixed lengths is reproduced
    q_in, q_out = rep.internal_coordinates(xs[:5]), rep.internal_coordinates(x_back)
    free = torch.ones_like(q_in, dtype=torch.bool)
    free[:, rep.fixed_row_idx, 0] = False
    assert (wrap_angle(q_in - q_out)[free]).abs().max().item() < 1e-10
    # Log-det against autograd: the fixed lengths become extra inputs, so the map is square and
    # its determinant (each length enters with unit weight) must equal the reduced one.
    fixed = rep.fixed_row_idx
    z0 = z[0]
    lengths0 = rep.q_template.view(-1, 3)[fixed, 0]

    def inverse_with_lengths(p):
        zz, lens = p[:, : rep.dim], p[:, rep.dim :]
        q = rep.z_to_q(zz)
        q = q.index_put((torch.arange(1)[:, None], fixed[None], torch.zeros_like(fixed)[None]), lens)
        return rep.place(q)

    ref = full_map_logabsdet(inverse_with_lengths, torch.cat([z0, lengths0]), n)
    assert ld_inv[0].item() == pytest.approx(ref.item(), abs=1e-8)


def test_fixed_bond_must_be_a_tree_bond():
    n, bonds, el, _ = cyclopropanol_like()
    rep = ICRepresentation.from_topology(n, bonds, el)
    zbonds = {frozenset(r[:2]) for r in rep.zmatrix.rows} | {
        frozenset(rep.zmatrix.roots[:2]), frozenset(rep.zmatrix.roots[1:])
    }
    closure = next(b for b in bonds if frozenset(b) not in zbonds)
    with pytest.raises(TopologyError, match="ring"):
        ICRepresentation.from_topology(n, bonds, el, fixed_bonds=[closure])
    with pytest.raises(TopologyError, match="not a bond"):
        ICRepresentation.from_topology(n, bonds, el, fixed_bonds=[(4, 6)])


def test_state_dict_round_trip_and_guards():
    n, bonds, el, x = load_pdb("alanine_dipeptide")
    xh = [(i, j) for i, j in bonds if "H" in (el[i], el[j])]
    rep = ICRepresentation.from_topology(n, bonds, el, fixed_bonds=xh)
    fresh = ICRepresentation.from_topology(n, bonds, el, fixed_bonds=xh)
    with pytest.raises(RuntimeError, match="not fitted"):
        fresh(x[None])
    rep.fit(perturbed(x, 30, 0.01))
    fresh.load_state_dict(rep.state_dict())
    xs = perturbed(x, 3, 0.01, seed=9)
    z1, l1 = rep(xs)
    z2, l2 = fresh(xs)
    assert torch.equal(z1, z2) and torch.equal(l1, l2)
    assert torch.equal(rep.inverse(z1)[0], fresh.inverse(z1)[0])
    # a checkpoint from another Z-matrix is refused rather than silently misread: a different
    # fixed-bond set changes the shapes, a relabelled molecule only the indices
    other = ICRepresentation.from_topology(n, bonds, el)
    with pytest.raises(RuntimeError, match="size mismatch"):
        other.load_state_dict(rep.state_dict())
    perm = list(reversed(range(n)))
    relabelled = ICRepresentation.from_topology(
        n, [(perm[i], perm[j]) for i, j in bonds], [el[perm[i]] for i in range(n)],
        fixed_bonds=[(perm[i], perm[j]) for i, j in xh],
    )
    with pytest.raises(TopologyError, match="different topology"):
        relabelled.load_state_dict(rep.state_dict())


def test_float32_and_gradients():
    n, bonds, el, x = load_pdb("ala_ala")
    rep = ICRepresentation.from_topology(n, bonds, el).fit(perturbed(x, 32, 0.01))
    xs = perturbed(x, 8, 0.01, seed=2).float()
    z, ld = rep(xs)
    assert z.dtype == torch.float32 and ld.dtype == torch.float32
    x_back, ld_inv = rep.inverse(z)
    assert x_back.dtype == torch.float32
    assert (x_back - align_to_frame(xs, *rep.zmatrix.roots)).abs().max().item() < 1e-4
    assert (ld + ld_inv).abs().max().item() < 1e-3

    n, bonds, el, x = methanol()
    rep = ICRepresentation.from_topology(n, bonds, el).fit(perturbed(x, 16, 0.01))
    z = rep(perturbed(x, 2, 0.01, seed=3))[0].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda zz: rep.inverse(zz), (z,))
    xg = perturbed(x, 2, 0.01, seed=4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda xx: rep(xx), (xg,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    n, bonds, el, x = load_pdb("alanine_dipeptide")
    rep = ICRepresentation.from_topology(n, bonds, el).fit(perturbed(x, 16, 0.01))
    xs = perturbed(x, 4, 0.01, seed=1)
    z_cpu, l_cpu = rep(xs)
    rep = rep.cuda()
    z, ld = rep(xs.cuda())
    x_back, _ = rep.inverse(z)
    assert torch.allclose(z.cpu(), z_cpu, atol=1e-10) and torch.allclose(ld.cpu(), l_cpu, atol=1e-10)
    assert (x_back.cpu() - align_to_frame(xs, *rep.zmatrix.roots)).abs().max().item() < 1e-10
