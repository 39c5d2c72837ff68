"""Error bars that respect autocorrelation, checked on AR(1) series whose answers are known.

x_t = phi x_(t-1) + e_t has tau_int = (1 + phi) / (1 - phi) and Var(mean) -> var(x) tau / n, so
treating its samples as independent understates the standard error by sqrt(tau). The block
bootstrap must recover the true spread of the statistic across independent repetitions.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from molpt_tui.physics.autocorr import autocorrelation, independent_samples, integrated_time, integrated_time_angle
from molpt_tui.training import stats


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0] / math.sqrt(1 - phi ** 2)     # stationary from the first sample
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_integrated_time_of_ar1(phi):
    rng = np.random.default_rng(7)
    tau = integrated_time(ar1(50_000, phi, rng))
    assert tau == pytest.approx((1 + phi) / (1 - phi), rel=0.15)


def test_autocorrelation_edge_cases():
    assert autocorrelation(np.zeros(5)).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]   # constant: no correlation
    assert math.isnan(integrated_time(np.array([1.0, 2.0])))                  # too short to say
    assert integrated_time(np.ones(100)) == 1.0
    assert independent_samples(1000, 20.0) == 50.0 and math.isnan(independent_samples(10, math.nan))


def test_angles_are_circular():
    # a torsion hopping across +-pi is not a large excursion
    rng = np.random.default_rng(3)
    theta = np.pi - np.abs(rng.normal(0, 0.05, 5000)) * rng.choice([-1, 1], 5000)
    theta = np.where(theta > np.pi, theta - 2 * np.pi, theta)
    assert integrated_time_angle(theta) < 2.0


def test_block_bootstrap_se_of_a_mean_matches_the_true_se_of_ar1():
    rng = np.random.default_rng(11)
    n, phi = 20_000, 0.9
    true = math.sqrt(1 / (1 - phi ** 2) * (1 + phi) / (1 - phi) / n)
    x = ar1(n, phi, rng)
    se = stats.mean_se(x)
    naive = float(np.std(x) / math.sqrt(n))
    assert se == pytest.approx(true, rel=0.2)
    assert true / naive > 3.5          # the independent-sample error bar would be ~4x too small


def test_block_bootstrap_se_matches_the_spread_over_repetitions():
    """Acceptance and ESS of correlated log-weights: the bootstrap SE of one series against the
    standard deviation of the statistic over 100 independent series."""
    rng = np.random.default_rng(5)
    n, phi, reps = 4000, 0.9, 100
    series = [0.4 * ar1(n, phi, rng) - 0.5 for _ in range(reps)]
    acc = [float(np.minimum(1.0, np.exp(s)).mean()) for s in series]
    ess = [float(stats.ess_statistic(s)(np.arange(n)[None])[0]) for s in series]
    acc_se, ess_se = [], []
    for s in series:
        a = np.minimum(1.0, np.exp(s))
        idx = stats.bootstrap_indices(n, stats.block_length([a, s], n))
        acc_se.append(stats.bootstrap_se(stats.mean_statistic(a), idx))
        ess_se.append(stats.bootstrap_se(stats.ess_statistic(s), idx))
    assert np.mean(acc_se) == pytest.approx(np.std(acc), rel=0.2)
    # Kish ESS of heavy-tailed weights: the bootstrap is known to run low; within a third
    assert np.mean(ess_se) == pytest.approx(np.std(ess), rel=0.35)


def test_ess_statistic_is_the_evaluation_ess():
    import torch

    from molpt_tui.training.losses import ess_percent

    rng = np.random.default_rng(1)
    lw = rng.normal(size=500)
    lw[3] = -np.inf
    lw[7] = np.nan
    got = stats.ess_statistic(lw)(np.arange(500)[None])[0]
    assert got == pytest.approx(ess_percent(torch.from_numpy(lw)), rel=1e-12)


def test_block_length_is_bounded():
    x = np.cumsum(np.random.default_rng(0).normal(size=1000))   # a random walk: tau ~ n
    assert stats.block_length([x], 1000) == 100                   # at least MIN_BLOCKS blocks remain
    assert stats.block_length([np.random.default_rng(0).normal(size=1000)], 1000) <= 4
    idx = stats.bootstrap_indices(10, 3, n_boot=5)
    assert idx.shape == (5, 10) and idx.min() >= 0 and idx.max() < 10
    assert math.isnan(stats.bootstrap_se(stats.mean_statistic(np.ones(3)), np.empty((0, 0), dtype=int)))
