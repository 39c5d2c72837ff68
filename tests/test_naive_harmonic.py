"""benchmarks/naive_harmonic.py: the harmonic yardstick for naive swap acceptance."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from naive_harmonic import naive_acceptance  # noqa: E402


def test_equal_temperatures_always_swap():
    mean, se = naive_acceptance(60, 300.0, 300.0, 1000, np.random.default_rng(0))
    assert mean == 1.0 and se == 0.0


def test_acceptance_falls_with_the_degrees_of_freedom_and_the_gap():
    rng = np.random.default_rng(1)
    by_dof = [naive_acceptance(n, 300.0, 450.0, 200_000, rng)[0] for n in (10, 20, 60, 100)]
    assert by_dof == sorted(by_dof, reverse=True)
    by_gap = [naive_acceptance(20, 300.0, t, 200_000, rng)[0] for t in (330.0, 450.0, 1000.0)]
    assert by_gap == sorted(by_gap, reverse=True)


def test_one_degree_of_freedom_matches_quadrature():
    # N = 1: U / k_B T = g^2 / 2 with g standard normal; integrate the acceptance on a grid
    t_c, t_h = 300.0, 450.0
    g = np.linspace(-12, 12, 4001)
    w = np.exp(-g**2 / 2) / np.sqrt(2 * np.pi) * (g[1] - g[0])
    u_c, u_h = t_c * g[:, None] ** 2 / 2, t_h * g[None, :] ** 2 / 2
    exact = float((np.minimum(1, np.exp((1 / t_c - 1 / t_h) * (u_c - u_h))) * w[:, None] * w[None, :]).sum())
    mean, se = naive_acceptance(1, t_c, t_h, 1_000_000, np.random.default_rng(2))
    assert mean == pytest.approx(exact, abs=4 * se + 1e-4)
