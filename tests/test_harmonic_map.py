"""HarmonicTemperatureMap: exact inverse, exact log-det, bijective circle map, variance scaling."""
from __future__ import annotations

import math

import pytest
import torch

from molpt_tui.flows.harmonic import HarmonicTemperatureMap, circular_stats
from molpt_tui.flows.internal import wrap_angle
from molpt_tui.flows.layout import Layout

T_COLD, T_HOT = 300.0, 450.0
S = math.sqrt(T_HOT / T_COLD)

# dims: bond, angle, cart, narrow torsion near the +-pi seam, narrow torsion, wide torsion
KINDS = ("bond", "angle", "cart", "torsion", "torsion", "torsion")
MEANS = (0.4, -1.0, 2.0, 3.0, -1.0, 0.0)
STDS = (0.7, 0.3, 1.3, 0.15, 0.25, None)


def make_layout() -> Layout:
    d = len(KINDS)
    return Layout(tuple(range(d)), (0,) * d, KINDS, d)


def cold_samples(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    cols = []
    for kind, m, s in zip(KINDS, MEANS, STDS):
        if s is None:  # a free rotor: uniform on the circle
            cols.append(torch.rand(n, generator=gen, dtype=dtype) * 2 * math.pi - math.pi)
            continue
        v = m + s * torch.randn(n, generator=gen, dtype=dtype)
        cols.append(wrap_angle(v) if kind == "torsion" else v)
    return torch.stack(cols, 1)


@pytest.fixture(scope="module")
def hmap():
    return HarmonicTemperatureMap(make_layout(), cold_samples(20000), T_COLD, T_HOT)


def test_classification_and_window(hmap):
    assert hmap.narrow.tolist() == [False, False, False, True, True, False]
    assert hmap.s == pytest.approx(S)
    w = hmap.window
    for j, s in ((3, 0.15), (4, 0.25)):
        assert hmap.center[j].item() == pytest.approx(MEANS[j], abs=0.01)
        assert w[j].item() == pytest.approx(3 * s, rel=0.03)
    assert bool((hmap.window * hmap.s < math.pi).all())


def test_inverse_undoes_forward_and_logdets_cancel(hmap):
    gen = torch.Generator().manual_seed(1)
    z = cold_samples(500, seed=7)
    # also points spread over the whole circle, to exercise the compressed outer arc
    z[:250, 3:] = torch.rand(250, 3, generator=gen, dtype=torch.float64) * 2 * math.pi - math.pi
    y, ld = hmap(z)
    z_back, ld_inv = hmap.inverse(y)
    assert torch.allclose(wrap_angle(z_back - z), torch.zeros_like(z), atol=1e-12)
    assert torch.allclose(ld, -ld_inv, atol=1e-12)
    y_back, _ = hmap(hmap.inverse(y)[0])
    assert torch.allclose(wrap_angle(y_back - y), torch.zeros_like(y), atol=1e-12)
    per = make_layout().periodic
    assert bool(((y[:, per] >= -math.pi) & (y[:, per] < math.pi)).all())
    assert torch.equal(y[:, 5], z[:, 5])  # wide torsion: identity
    assert bool((ld[250:] > ld[:250].min()).any())  # outer arc has a smaller (log k) log-det


def test_logdet_matches_autograd(hmap):
    z = cold_samples(40, seed=3)
    z[20:, 3:5] = torch.tensor([[-2.0, 2.5], [0.5, -3.0]], dtype=torch.float64).repeat(10, 1)  # outer arc
    d = wrap_angle(z[:, 3:5] - hmap.center[3:5])
    away_from_kinks = ((d.abs() - hmap.window[3:5]).abs() > 1e-4).all(1) & (d.abs() < math.pi - 1e-4).all(1)
    assert int(away_from_kinks.sum()) >= 30
    for zi in z[away_from_kinks]:
        jac_f = torch.autograd.functional.jacobian(lambda v: hmap(v[None])[0][0], zi)
        ld_f = hmap(zi[None])[1].item()
        assert torch.linalg.slogdet(jac_f)[1].item() == pytest.approx(ld_f, abs=1e-10)
        y = hmap(zi[None])[0][0]
        jac_i = torch.autograd.functional.jacobian(lambda v: hmap.inverse(v[None])[0][0], y)
        assert torch.linalg.slogdet(jac_i)[1].item() == pytest.approx(hmap.inverse(y[None])[1].item(), abs=1e-10)


@pytest.mark.parametrize("t_hot", [450.0, 1500.0, 200.0])
def test_circle_map_is_a_monotone_bijection(t_hot):
    hm = HarmonicTemperatureMap(make_layout(), cold_samples(5000), T_COLD, t_hot)
    n = 200_001
    grid = torch.linspace(-math.pi, math.pi, n, dtype=torch.float64)[1:-1]  # offsets from mu
    for j in (3, 4):
        mu = hm.center[j]
        z = torch.zeros(grid.numel(), 6, dtype=torch.float64)
        z[:, j] = wrap_angle(mu + grid)  # once round the circle, starting opposite mu
        y = hm(z)[0][:, j]
        d_out = wrap_angle(y - mu)
        steps = torch.diff(d_out)
        assert bool((steps > 0).all()), "not monotone"
        # the image runs from just above -pi to just below +pi: the whole circle, once
        assert d_out[0].item() == pytest.approx(-math.pi, abs=1e-3)
        assert d_out[-1].item() == pytest.approx(math.pi, abs=1e-3)
        assert wrap_angle(hm.inverse(hm(z)[0])[0][:, j] - z[:, j]).abs().max().item() < 1e-12
        slope_max = max(hm.s, (math.pi - hm.s * hm.window[j].item()) / (math.pi - hm.window[j].item()))
        assert steps.max().item() <= slope_max * (2 * math.pi / (n - 1)) * (1 + 1e-6)  # continuous
        assert hm.s * hm.window[j].item() < math.pi


def test_gaussian_variance_scales_by_s_squared(hmap):
    z = cold_samples(200_000, seed=11)
    y, _ = hmap(z)
    for j, s in enumerate(STDS[:3]):
        assert y[:, j].var().item() == pytest.approx(S**2 * s**2, rel=0.02)
        assert y[:, j].mean().item() == pytest.approx(MEANS[j], abs=0.01)
    for j in (3, 4):
        mu_y, _ = circular_stats(y[:, j : j + 1])
        d = wrap_angle(y[:, j] - hmap.center[j])
        assert d.var().item() == pytest.approx(S**2 * STDS[j] ** 2, rel=0.03)
        assert mu_y.item() == pytest.approx(MEANS[j], abs=0.01)
    # inverse takes hot Gaussians back to the cold width
    hot = cold_samples(200_000, seed=12)
    hot[:, :5] = torch.tensor(MEANS[:5]) + (hot[:, :5] - torch.tensor(MEANS[:5])) * S
    back, _ = hmap.inverse(wrap_hot(hot))
    assert wrap_angle(back[:, 4] - MEANS[4]).std().item() == pytest.approx(STDS[4], rel=0.03)
    assert back[:, 1].std().item() == pytest.approx(STDS[1], rel=0.02)


def wrap_hot(z: torch.Tensor) -> torch.Tensor:
    out = z.clone()
    out[:, 3:] = wrap_angle(out[:, 3:])
    return out


def test_state_dict_round_trip_and_dtypes(hmap):
    shell = HarmonicTemperatureMap(make_layout(), None, 1.0, 1.0)
    shell.load_state_dict(hmap.state_dict())
    z = cold_samples(64, seed=5)
    y1, l1 = hmap(z)
    y2, l2 = shell(z)
    assert torch.equal(y1, y2) and torch.equal(l1, l2)
    y32, l32 = shell(z.float())
    assert y32.dtype == torch.float32 and l32.dtype == torch.float32
    assert torch.allclose(wrap_angle(y32.double() - y1), torch.zeros_like(y1), atol=1e-5)
    with pytest.raises(ValueError):
        HarmonicTemperatureMap(make_layout(), torch.zeros(10, 4), T_COLD, T_HOT)


def test_works_on_internal_coordinates_of_alanine_dipeptide():
    from molpt_testdata import load_pdb

    from molpt_tui.flows.internal import ICRepresentation

    n, bonds, elements, x = load_pdb("alanine_dipeptide")
    rep = ICRepresentation.from_topology(n, bonds, elements)
    xs = x + 0.01 * torch.randn(256, *x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z, _ = rep.fit(xs)(xs)
    hm = HarmonicTemperatureMap(rep.layout, z, T_COLD, T_HOT)
    assert bool(hm.narrow.any())
    y, ld = hm(z)
    x_hot, _ = rep.inverse(y)
    z_back, ld_inv = hm.inverse(rep(x_hot)[0])
    assert torch.allclose(wrap_angle(z_back - z), torch.zeros_like(z), atol=1e-9)
    assert torch.allclose(ld, -ld_inv, atol=1e-9)
