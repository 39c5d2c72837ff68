"""Umbrella sampling + MBAR (`physics.umbrella`), the reference the flow-PT benchmark is judged
against, on a known answer: the tilted double well of test_pt, whose P(x > 0) at 300 K is an
integral. The estimate must agree within its error bar, the error bar must be honest (a sweep
of seeds scatters as it says), and unbiasing with the wrong stiffness must fail the same check.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from test_pt import T_COLD, _grid, double_well_xml

from molpt_tui.physics.umbrella import (
    Umbrella,
    UmbrellaPlan,
    mbar_population,
    sample_windows,
    snake,
    torsion_coordinate,
    windows_around,
    x_coordinate,
)

ALONG_X = Umbrella((x_coordinate(0),))


def _x_positive(q):
    return q[:, 0] > 0


def _plan(seed: int) -> UmbrellaPlan:
    # Friction 20/ps: a 1-dalton particle at 1/ps is underdamped and keeps its energy for
    # picoseconds, so its windows would need far longer runs for the same error.
    return UmbrellaPlan(centres=tuple((float(c),) for c in np.linspace(-0.16, 0.16, 17)), stiffness=5000.0,
                        temperature=T_COLD, ps_per_window=20.0, equilibration_ps=2.0, sample_every=20, timestep_fs=0.5,
                        friction_per_ps=20.0, seed=seed)


def _exact() -> float:
    x, w = _grid(T_COLD)
    return float(w[x > 0].sum())


@pytest.fixture(scope="module")
def sweeps():
    """Windows of three seeds (each ~1 s of Reference MD)."""
    out = []
    for seed in (11, 12, 13):
        plan = _plan(seed)
        windows = sample_windows(double_well_xml(), ALONG_X, np.array([[-0.1, 0.0, 0.0]]), plan)
        assert len(windows.exchange_acceptance) == len(plan.centres) - 1   # a chain, not a ring, along x
        assert np.all(windows.exchange_acceptance > 0.05), windows.exchange_acceptance
        out.append((plan, windows.values))
    return out


def test_mbar_recovers_the_exact_population_within_its_error(sweeps):
    exact = _exact()
    zs = []
    for plan, values in sweeps:
        p, se = mbar_population(ALONG_X, plan, values, _x_positive)
        assert 0 < se < 0.05   # about 0.2 of p: a real measurement, not a vacuous bar
        zs.append((p - exact) / se)
    assert max(abs(z) for z in zs) < 4.0, zs
    # Three seeds are not a variance test, but an error bar 2x too small shows up as |z| ~ 3 often.
    assert math.sqrt(np.mean(np.square(zs))) < 2.5, zs


def test_a_wrong_stiffness_in_the_unbiasing_fails_the_check(sweeps):
    exact = _exact()
    zs = []
    for plan, values in sweeps:
        wrong = UmbrellaPlan(**{**plan.__dict__, "stiffness": plan.stiffness * 0.5})
        p, se = mbar_population(ALONG_X, wrong, values, _x_positive)
        zs.append((p - exact) / se)
    assert min(abs(z) for z in zs) > 4.0, zs


def test_torsion_windows_wrap_round_the_circle():
    centres = windows_around(36)
    assert len(centres) == 36 and -math.pi < centres[0] < centres[-1] < math.pi
    assert np.allclose(np.diff(centres), 2 * math.pi / 36)
    t = torsion_coordinate((0, 1, 2, 3))
    # 179 deg and -179 deg are 2 deg apart, not 358
    d = t.displacement(np.radians([179.0, -179.0]), math.radians(-179.0))
    assert np.allclose(np.degrees(d), [-2.0, 0.0])


def test_the_torsion_bias_force_is_the_harmonic_short_way_round():
    import openmm

    system = openmm.System()
    for _ in range(4):
        system.addParticle(12.0)
    coord = torsion_coordinate((0, 1, 2, 3))
    system.addForce(coord.force(0))
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setParameter("umbrella_k", 300.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.normal(size=(4, 3))
        centre = rng.uniform(-math.pi, math.pi)
        ctx.setParameter("umbrella_centre_0", centre)
        ctx.setPositions(x)
        u = ctx.getState(getEnergy=True).getPotentialEnergy()._value
        d = coord.displacement(coord.values(x), centre)[0]
        assert u == pytest.approx(0.5 * 300.0 * d * d, rel=1e-9, abs=1e-9)


def test_a_snake_walks_the_grid_between_neighbours():
    a, b = windows_around(4), windows_around(3)
    path = snake(a, b)
    assert len(path) == 12 and len(set(path)) == 12
    steps = [sum(x != y for x, y in zip(p, q, strict=True)) for p, q in zip(path, path[1:], strict=False)]
    assert steps == [1] * 11   # one coordinate changes at a time


def test_the_two_dimensional_bias_sums_its_coordinates():
    u = Umbrella((torsion_coordinate((0, 1, 2, 3)), x_coordinate(0)))
    q = np.array([[math.radians(170.0), 0.3]])
    got = u.bias(q, (math.radians(-170.0), 0.1), 200.0)[0]
    assert got == pytest.approx(0.5 * 200.0 * (math.radians(20.0) ** 2 + 0.2 ** 2))
