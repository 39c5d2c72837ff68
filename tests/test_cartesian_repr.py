"""AlignedCartesian: rigid DOF removed exactly, exact round trip and log-determinant."""
from __future__ import annotations

import math

import pytest
import torch
from molpt_testdata import load_pdb, rot_zyz

from molpt_tui.flows.cartesian import AlignedCartesian, align_to_frame
from molpt_tui.flows.internal import TopologyError, build_zmatrix


def perturbed(x, n, scale, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return x[None] + scale * torch.randn(n, *x.shape, generator=gen, dtype=x.dtype)


@pytest.fixture(scope="module")
def ala2():
    n, bonds, el, x = load_pdb("alanine_dipeptide")
    rep = AlignedCartesian.from_topology(n, bonds, el).fit(perturbed(x, 64, 0.01))
    return rep, x


def test_layout_refs_and_order_follow_the_zmatrix(ala2):
    rep, x = ala2
    n = x.shape[0]
    _, bonds, el, _ = load_pdb("alanine_dipeptide")
    zm = build_zmatrix(n, bonds, el)
    assert rep.refs == zm.roots and rep.atom_order == zm.atom_order
    lay = rep.layout
    assert rep.dim == lay.dim == 3 * n - 6 and lay.n_tokens == n - 1
    assert set(lay.kind_of_dim) == {"cart"} and not bool(lay.periodic.any())
    counts = torch.bincount(torch.tensor(lay.atom_of_dim))
    assert counts[0] == 1 and counts[1] == 2 and bool((counts[2:] == 3).all())


def test_canonical_frame_and_round_trip(ala2):
    rep, x = ala2
    gen = torch.Generator().manual_seed(5)
    xs = perturbed(x, 32, 0.01, seed=1)
    ang = torch.rand(32, 3, generator=gen, dtype=torch.float64) * 3
    rots = torch.stack([rot_zyz(*a) for a in ang])
    xw = xs @ rots.transpose(1, 2) + torch.randn(32, 1, 3, generator=gen, dtype=torch.float64)
    z, ld = rep(xw)
    x_back, ld_inv = rep.inverse(z)
    i0, i1, i2 = rep.refs
    assert x_back[:, i0].abs().max() == 0
    assert x_back[:, i1, 1:].abs().max() == 0 and bool((x_back[:, i1, 0] > 0).all())
    assert x_back[:, i2, 2].abs().max() == 0 and bool((x_back[:, i2, 1] > 0).all())
    # the canonical structure is the input up to a proper rotation and translation
    aligned = align_to_frame(xw, *rep.refs)
    assert (x_back - aligned).abs().max().item() < 1e-10
    dists = lambda y: torch.cdist(y, y)
    assert (dists(x_back) - dists(xs)).abs().max().item() < 1e-10
    assert (ld + ld_inv).abs().max().item() < 1e-12
    # standardised per coordinate on the fitted data
    z_fit, _ = rep(perturbed(x, 64, 0.01))
    assert z_fit.mean(0).abs().max().item() < 1e-8
    assert (z_fit.std(0, unbiased=False) - 1).abs().max().item() < 1e-8


def test_logdet_matches_autograd_jacobian(ala2):
    rep, x = ala2
    n = x.shape[0]
    euler0 = torch.tensor([0.4, 0.9, 2.1], dtype=torch.float64)
    t0 = torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64)
    for seed in range(2):
        z, ld_fwd = rep(perturbed(x, 1, 0.01, seed=20 + seed))
        _, ld_inv = rep.inverse(z)

        def f(p):
            xc = rep.inverse(p[6:][None])[0][0]
            return (xc @ rot_zyz(*p[3:6]).T + p[:3]).reshape(-1)

        jac = torch.autograd.functional.jacobian(f, torch.cat([t0, euler0, z[0]]))
        assert jac.shape == (3 * n, 3 * n)
        sign, logabs = torch.linalg.slogdet(jac)
        # sin(beta) is the Haar density of SO(3) in ZYZ Euler angles
        ref = logabs - math.log(math.sin(0.9))
        assert sign != 0
        assert ld_inv.item() == pytest.approx(ref.item(), abs=1e-8)
        assert ld_fwd.item() == pytest.approx(-ref.item(), abs=1e-8)


def test_float32_state_dict_and_guards(ala2):
    rep, x = ala2
    n, bonds, el, _ = load_pdb("alanine_dipeptide")
    fresh = AlignedCartesian.from_topology(n, bonds, el)
    with pytest.raises(RuntimeError, match="not fitted"):
        fresh.inverse(torch.zeros(1, fresh.dim))
    fresh.load_state_dict(rep.state_dict())
    xs = perturbed(x, 4, 0.01, seed=3)
    assert torch.equal(fresh(xs)[0], rep(xs)[0])
    z32, _ = rep(xs.float())
    assert z32.dtype == torch.float32
    x_back = rep.inverse(z32)[0]
    assert x_back.dtype == torch.float32
    assert (x_back.double() - align_to_frame(xs, *rep.refs)).abs().max().item() < 1e-5
    # A state_dict of another atom order is refused, like the Z-matrix representation's.
    order = list(rep.atom_order)
    order[3], order[4] = order[4], order[3]
    other = AlignedCartesian(rep.n_atoms, rep.refs, order)
    with pytest.raises(TopologyError, match="different topology"):
        other.load_state_dict(rep.state_dict())
    with pytest.raises(NotImplementedError):
        AlignedCartesian.from_topology(n, bonds, el, fixed_bonds=[bonds[0]])
    with pytest.raises(TopologyError):
        AlignedCartesian.from_topology(n + 1, bonds, el + ["O"])


def test_gradients_flow():
    n, bonds, el, x = load_pdb("ala_ala")
    rep = AlignedCartesian.from_topology(n, bonds, el).fit(perturbed(x, 16, 0.01))
    xg = perturbed(x, 2, 0.01, seed=1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda xx: rep(xx), (xg,))
    z = rep(xg.detach())[0].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda zz: rep.inverse(zz), (z,))
