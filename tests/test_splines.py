"""Elementwise bijections: exact identity at zero parameters, log-det vs autograd, round trips,
monotonicity, circle topology, bounded affine scale, float32 robustness."""
from __future__ import annotations

import math

import pytest
import torch

from molpt_tui.flows import splines as S

K = 8
PI32 = torch.tensor(math.pi, dtype=torch.float32).item()


def _params(n, k, scale, dtype, seed, n_derivs):
    g = torch.Generator().manual_seed(seed)
    w = scale * torch.randn(n, k, generator=g, dtype=dtype)
    h = scale * torch.randn(n, k, generator=g, dtype=dtype)
    d = scale * torch.randn(n, n_derivs, generator=g, dtype=dtype)
    shift = 3.0 * torch.randn(n, generator=g, dtype=dtype)
    return w, h, d, shift


def _angles(n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    a = a.to(dtype)
    # include the cut itself and its neighbours
    edge = torch.tensor([-math.pi, -math.pi + 1e-6, math.pi - 1e-6, 0.0], dtype=dtype)
    return S.wrap_angle(torch.cat([edge, a[4:]]))


def _circ_diff(a, b):
    return S.wrap_angle(a - b)


# --------------------------------------------------------------------------- identity at init


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_parameters_give_the_exact_identity(dtype):
    n = 3000
    x = torch.linspace(-9.0, 9.0, n, dtype=dtype)
    z = torch.zeros(n, K, dtype=dtype)
    for inverse in (False, True):
        y, ld = S.interval_rq_spline(x, z, z, z[:, : K - 1], inverse=inverse, tail_bound=5.0)
        assert torch.equal(y, x)
        assert torch.count_nonzero(ld) == 0
        a = _angles(n, dtype)
        for shift in (None, torch.zeros(n, dtype=dtype)):
            y, ld = S.circular_rq_spline(a, z, z, z, shift, inverse=inverse)
            assert torch.equal(y, a)
            assert torch.count_nonzero(ld) == 0
        y, ld = S.affine_transform(x, z[:, 0], z[:, 0], inverse=inverse)
        assert torch.equal(y, x) and torch.count_nonzero(ld) == 0
        y, ld = S.circular_shift(a, z[:, 0], inverse=inverse)
        assert torch.equal(y, a) and torch.count_nonzero(ld) == 0


# --------------------------------------------------------------------------- log-det vs autograd


def _check_logdet_against_autograd(fn, x, ld):
    xr = x.clone().requires_grad_(True)
    y, _ = fn(xr)
    (g,) = torch.autograd.grad(y.sum(), xr)
    assert (g > 0).all()
    torch.testing.assert_close(torch.log(g), ld, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_interval_spline_logdet_matches_autograd_both_directions(scale):
    n = 4000
    dt = torch.float64
    w, h, d, _ = _params(n, K, scale, dt, seed=1, n_derivs=K - 1)
    x = torch.linspace(-6.5, 6.5, n, dtype=dt)  # covers both tails
    fwd = lambda v: S.interval_rq_spline(v, w, h, d, tail_bound=5.0)
    inv = lambda v: S.interval_rq_spline(v, w, h, d, tail_bound=5.0, inverse=True)
    y, ld = fwd(x)
    _check_logdet_against_autograd(fwd, x, ld)
    xb, ldb = inv(y)
    _check_logdet_against_autograd(inv, y, ldb)
    torch.testing.assert_close(ldb, -ld, atol=1e-9, rtol=0)
    torch.testing.assert_close(xb, x, atol=1e-9, rtol=0)


@pytest.mark.parametrize("with_shift", [False, True])
def test_circular_spline_logdet_matches_autograd_both_directions(with_shift):
    n = 4000
    dt = torch.float64
    w, h, d, shift = _params(n, K, 1.5, dt, seed=2, n_derivs=K)
    shift = shift if with_shift else None
    x = _angles(n, dt, seed=3)
    fwd = lambda v: S.circular_rq_spline(v, w, h, d, shift)
    inv = lambda v: S.circular_rq_spline(v, w, h, d, shift, inverse=True)
    y, ld = fwd(x)
    _check_logdet_against_autograd(fwd, x, ld)
    xb, ldb = inv(y)
    _check_logdet_against_autograd(inv, y, ldb)
    torch.testing.assert_close(ldb, -ld, atol=1e-9, rtol=0)
    assert _circ_diff(xb, x).abs().max() < 1e-9


def test_affine_logdet_matches_autograd_and_scale_is_bounded():
    n = 500
    dt = torch.float64
    g = torch.Generator().manual_seed(4)
    x = 3 * torch.randn(n, generator=g, dtype=dt)
    t = torch.randn(n, generator=g, dtype=dt)
    raw = 4 * torch.randn(n, generator=g, dtype=dt)
    fwd = lambda v: S.affine_transform(v, t, raw, max_log_scale=1.5)
    inv = lambda v: S.affine_transform(v, t, raw, max_log_scale=1.5, inverse=True)
    y, ld = fwd(x)
    _check_logdet_against_autograd(fwd, x, ld)
    xb, ldb = inv(y)
    _check_logdet_against_autograd(inv, y, ldb)
    torch.testing.assert_close(xb, x, atol=1e-12, rtol=0)
    huge = torch.tensor([-1e4, -50.0, 50.0, 1e4], dtype=dt)
    _, ld = S.affine_transform(torch.ones(4, dtype=dt), torch.zeros(4, dtype=dt), huge, max_log_scale=1.5)
    assert (ld.abs() <= 1.5).all() and torch.isfinite(ld).all()
    # slope 1 at the origin: small raw values act as the log-scale itself
    small = torch.tensor([1e-4], dtype=dt)
    torch.testing.assert_close(S.bounded_log_scale(small, 1.5), small, rtol=1e-7, atol=0)


def test_circular_shift_is_a_volume_preserving_bijection_of_the_circle():
    dt = torch.float32
    a = _angles(1000, dt, seed=5)
    shift = torch.linspace(-20, 20, 1000, dtype=dt)
    y, ld = S.circular_shift(a, shift)
    assert (y >= -PI32).all() and (y < PI32).all()
    assert torch.count_nonzero(ld) == 0
    xb, _ = S.circular_shift(y, shift, inverse=True)
    assert _circ_diff(xb, a).abs().max() < 1e-5


# --------------------------------------------------------------------------- round trips, float32


def test_float32_round_trip_with_moderate_parameters():
    n = 20000
    dt = torch.float32
    w, h, d, shift = _params(n, K, 0.3, dt, seed=6, n_derivs=K)
    x = torch.linspace(-7, 7, n, dtype=dt)
    y, ld = S.interval_rq_spline(x, w, h, d[:, : K - 1])
    xb, ldb = S.interval_rq_spline(y, w, h, d[:, : K - 1], inverse=True)
    assert (xb - x).abs().max() < 1e-5
    assert (ld + ldb).abs().max() < 1e-5
    a = _angles(n, dt, seed=7)
    y, ld = S.circular_rq_spline(a, w, h, d, shift)
    xb, ldb = S.circular_rq_spline(y, w, h, d, shift, inverse=True)
    assert _circ_diff(xb, a).abs().max() < 1e-5
    # looser than the point itself: the rotation rounds at |y + shift| ~ 2pi and the log-slope
    # varies along x, so this is conditioning, not a formula error
    assert (ld + ldb).abs().max() < 5e-5


def test_float32_stays_finite_and_monotone_with_extreme_parameters():
    n = 5000
    dt = torch.float32
    w, h, d, shift = _params(n, K, 30.0, dt, seed=8, n_derivs=K)
    w.requires_grad_(True)
    x = torch.linspace(-6, 6, n, dtype=dt, requires_grad=True)
    # the same parameters on every row so that monotonicity in x can be checked along the grid
    wr, hr, dr = w[:1].expand(n, K), h[:1].expand(n, K), d[:1, : K - 1].expand(n, K - 1)
    y, ld = S.interval_rq_spline(x, wr, hr, dr)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    assert (y[1:] >= y[:-1]).all()
    ga, gw = torch.autograd.grad((y + ld).sum(), [x, w])
    assert torch.isfinite(ga).all() and torch.isfinite(gw).all()
    xb, ldb = S.interval_rq_spline(y.detach(), wr, hr, dr, inverse=True)
    assert torch.isfinite(xb).all() and torch.isfinite(ldb).all()
    assert (xb[1:] >= xb[:-1]).all()
    a = _angles(n, dt, seed=9)
    y, ld = S.circular_rq_spline(a, w, h, d, shift)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    assert (y >= -PI32).all() and (y < PI32).all()
    xb, ldb = S.circular_rq_spline(y, w, h, d, shift, inverse=True)
    assert torch.isfinite(xb).all() and (xb >= -PI32).all() and (xb < PI32).all()


# --------------------------------------------------------------------------- shape of the maps


def test_interval_spline_is_monotone_onto_the_interval_and_c1_at_the_tails():
    dt = torch.float64
    w, h, d, _ = _params(1, K, 1.0, dt, seed=10, n_derivs=K - 1)
    B = 4.0
    x = torch.linspace(-6, 6, 20001, dtype=dt)
    n = x.numel()
    args = (w.expand(n, K), h.expand(n, K), d.expand(n, K - 1))
    y, ld = S.interval_rq_spline(x, *args, tail_bound=B)
    assert (y[1:] > y[:-1]).all()
    outside = x.abs() > B
    assert torch.equal(y[outside], x[outside]) and torch.count_nonzero(ld[outside]) == 0
    ends = torch.tensor([-B, B], dtype=dt)
    ye, lde = S.interval_rq_spline(ends, *(a[:2] for a in args), tail_bound=B)
    torch.testing.assert_close(ye, ends, atol=1e-12, rtol=0)
    # derivative 1 where the spline meets the identity tails
    torch.testing.assert_close(lde, torch.zeros(2, dtype=dt), atol=1e-9, rtol=0)
    assert (y - x).abs().max() > 0.1  # and it is not secretly the identity


def test_circular_spline_is_continuous_with_matching_derivative_across_the_cut():
    dt = torch.float64
    w, h, d, shift = _params(1, K, 1.5, dt, seed=11, n_derivs=K)
    eps = 1e-7
    x = torch.tensor([-math.pi, -math.pi + eps, math.pi - eps], dtype=dt)
    args = tuple(a.expand(3, -1) for a in (w, h, d)) + (shift.expand(3),)
    y, ld = S.circular_rq_spline(x, *args)
    assert (y >= -math.pi).all() and (y < math.pi).all()
    # f(pi - eps) and f(-pi + eps) are neighbours of f(-pi) on the circle
    assert _circ_diff(y[2], y[0]).abs() < 1e-5 and _circ_diff(y[1], y[0]).abs() < 1e-5
    assert abs(ld[1] - ld[2]) < 1e-5
    # the inverse too: a point just past the cut maps back near the cut
    yy = torch.stack([y[0] - eps, y[0], y[0] + eps])
    xb, ldb = S.circular_rq_spline(S.wrap_angle(yy), *args, inverse=True)
    assert _circ_diff(xb, torch.full_like(xb, -math.pi)).abs().max() < 1e-5
    assert (ldb - ldb[1]).abs().max() < 1e-5


def test_circular_spline_without_shift_fixes_the_cut():
    dt = torch.float64
    w, h, d, _ = _params(4, K, 1.5, dt, seed=12, n_derivs=K)
    x = torch.full((4,), -math.pi, dtype=dt)
    y, _ = S.circular_rq_spline(x, w, h, d, None)
    assert torch.equal(y, x)


def test_wrap_angle_keeps_in_range_values_and_maps_into_the_half_open_interval():
    for dt in (torch.float32, torch.float64):
        pi = torch.tensor(math.pi, dtype=dt)
        inside = torch.linspace(-math.pi, math.pi, 10001, dtype=dt)[:-1]
        assert torch.equal(S.wrap_angle(inside), inside)
        tiny = torch.finfo(dt).eps
        odd = torch.tensor([math.pi, -math.pi, 3 * math.pi, -3 * math.pi, 1e3, -1e3, 2 * math.pi - tiny], dtype=dt)
        odd = torch.cat([odd, torch.nextafter(-pi, torch.tensor(-10.0, dtype=dt)).reshape(1)])
        out = S.wrap_angle(odd)
        assert (out >= -pi).all() and (out < pi).all()
        torch.testing.assert_close(torch.cos(out), torch.cos(odd), atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.sin(out), torch.sin(odd), atol=1e-4, rtol=0)
        assert out[0] == -pi
