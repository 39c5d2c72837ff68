"""Coarse validation histograms: counts that add up, bins that follow the reference, overlaps."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from molpt_tui.training.events import ValidationHistograms, from_dict
from molpt_tui.training.validation_hist import energy_edges, overlap, rama_density, validation_histograms

finite_or_not = st.floats(-1e30, 1e30) | st.sampled_from([math.nan, math.inf, -math.inf])


def test_every_sample_is_counted_once_and_bins_follow_the_reference():
    rng = np.random.default_rng(0)
    hot = rng.normal(-40.0, 3.0, 500)
    mapped = np.concatenate([rng.normal(-40.0, 3.0, 480), [1e12, np.inf, np.nan, -1e9], rng.normal(-40, 3, 16)])
    ev = validation_histograms(7, hot=hot, cold_to_hot=mapped, cold=hot - 10, hot_to_cold=mapped - 10)
    assert ev.epoch == 7 and ev.n_pairs == 500 and ev.split == "validation"
    assert sum(ev.hot_data) == 500  # quantile edges plus a margin hold the whole normal sample
    assert sum(ev.hot_mapped) + ev.hot_mapped_below + ev.hot_mapped_above == mapped.size
    assert ev.hot_mapped_above >= 3 and ev.hot_mapped_below >= 1  # 1e12, inf and NaN above; -1e9 below
    assert -60 < ev.hot_edges[0] < -45 and -35 < ev.hot_edges[-1] < -20  # not stretched by the outliers
    assert not ev.rama_cold and ev.rama_bins == 0
    again = from_dict(ev.to_dict())
    assert isinstance(again, ValidationHistograms) and again == ev


def test_overlap_is_one_for_the_same_shape_zero_for_disjoint_and_outliers_count_against_it():
    assert overlap([1, 2, 3], [2, 4, 6]) == 1.0
    assert overlap([1, 0, 0], [0, 0, 5]) == 0.0
    assert overlap([1, 1], [1, 1], b_outside=2) == 0.5
    assert math.isnan(overlap([], [])) and math.isnan(overlap([0, 0], [1, 1]))


def test_ramachandran_density_wraps_the_periodic_edge():
    counts = rama_density(np.array([180.0, -180.0, -179.0, 179.9, np.nan]), np.array([0.0, 0.0, 0.0, 0.0, 0.0]), 18)
    grid = np.asarray(counts).reshape(18, 18)
    assert grid.sum() == 4  # NaN dropped
    assert grid[0, 9] == 3 and grid[17, 9] == 1  # +180 is -180; 179.9 is the last row


def test_rama_sets_are_carried_for_peptides():
    rng = np.random.default_rng(1)
    angles = {k: (rng.uniform(-180, 180, 50), rng.uniform(-180, 180, 50))
              for k in ("cold", "hot_to_cold", "hot", "cold_to_hot")}
    ev = validation_histograms(1, hot=rng.normal(size=50), cold_to_hot=rng.normal(size=50), cold=rng.normal(size=50),
                               hot_to_cold=rng.normal(size=50), rama=angles, rama_label="ALA2", rama_bins=6)
    assert ev.rama_label == "ALA2" and ev.rama_bins == 6
    assert all(len(getattr(ev, f"rama_{k}")) == 36 and sum(getattr(ev, f"rama_{k}")) == 50 for k in angles)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, st.integers(0, 40), elements=finite_or_not),
       arrays(np.float64, st.integers(0, 40), elements=finite_or_not))
def test_any_energies_give_counts_that_add_up(data, mapped):
    ev = validation_histograms(0, hot=data, cold_to_hot=mapped, cold=data, hot_to_cold=mapped)
    edges = energy_edges(data)
    if edges.size == 0:
        assert ev.hot_edges == [] and ev.hot_data == []
        return
    assert np.all(np.isfinite(ev.hot_edges)) and np.all(np.diff(ev.hot_edges) > 0)
    assert sum(ev.hot_mapped) + ev.hot_mapped_below + ev.hot_mapped_above == mapped.size
    assert sum(ev.hot_data) <= np.count_nonzero(np.isfinite(data))
    value = overlap(ev.hot_data, ev.hot_mapped, ev.hot_mapped_below + ev.hot_mapped_above)
    assert math.isnan(value) or 0.0 <= value <= 1.0 + 1e-12
