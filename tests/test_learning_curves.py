"""The fit behind benchmarks/learning_curves.py: acceptance per doubling of the data, and where it meets a goal."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from learning_curves import fit_doubling  # noqa: E402


def test_two_sizes_give_the_difference_per_doubling_and_the_goal_crossing() -> None:
    fit = fit_doubling([40_000, 80_000], [0.70, 0.75], goal=0.80, se=[0.003, 0.004])
    assert fit is not None
    assert fit.slope_per_doubling == pytest.approx(0.05)
    assert fit.slope_se == pytest.approx(0.005)          # sqrt(0.003² + 0.004²) over one doubling
    assert fit.samples_at_goal == pytest.approx(160_000)  # one more doubling
    assert fit.data_sizes == [40_000, 80_000]


def test_least_squares_through_three_sizes() -> None:
    # acc = 0.60 + 0.02 log2(n / 1000) with the middle point raised by 0.03: the slope is unchanged
    # (the middle x is the mean), the line moves up by 0.01, so 0.80 is 0.5 doublings earlier than 2^10 * 1000.
    fit = fit_doubling([1000, 4000, 16000], [0.60, 0.64 + 0.03, 0.68], goal=0.80)
    assert fit is not None
    assert fit.slope_per_doubling == pytest.approx(0.02)
    assert fit.samples_at_goal == pytest.approx(1000 * 2 ** 9.5)
    assert math.isnan(fit.slope_se)


def test_no_gain_never_reaches_the_goal() -> None:
    fit = fit_doubling([40_000, 80_000], [0.72, 0.71], goal=0.80)
    assert fit is not None and fit.slope_per_doubling < 0
    assert fit.samples_at_goal is None


@pytest.mark.parametrize("samples, acc", [([], []), ([40_000], [0.72]), ([40_000, 40_000], [0.72, 0.71])])
def test_refuses_fewer_than_two_data_sizes(samples: list[float], acc: list[float]) -> None:
    assert fit_doubling(samples, acc, goal=0.80) is None


@pytest.mark.parametrize("n, text", [(1250, "1.25k"), (80_000, "80k"), (186_000, "186k"), (4_599_025, "4.6M")])
def test_sample_counts_read_as_thousands_or_millions(n: float, text: str) -> None:
    from learning_curves import _kilo

    assert _kilo(n) == text
