"""Coarse histograms of what the map does to held-out samples, for the monitor's validation pane.

The validation figure (report/validation_plots.py) is the full picture; this is the part that
fits in a terminal and travels in metrics.jsonl, so `watch` on another machine sees a mode
collapse as it happens: beta*U of the samples of each temperature against the mapped samples of
the other, and (phi, psi) densities for peptides.

Bins follow the reference samples (the data of that temperature), not the mapped ones: a map
that puts samples at absurd energies must show them as outliers beside a readable reference,
not squash the reference into one bin.
"""
from __future__ import annotations

import math

import numpy as np

from .events import ValidationHistograms

ENERGY_BINS = 40
RAMA_BINS = 18           # 20 degrees a bin: basins (C7eq, C7ax, alpha_R, alpha_L) stay apart
# The reference's central range, widened by this fraction on each side, is what the bins cover.
_QUANTILES = (0.005, 0.995)
_MARGIN = 0.25


def energy_edges(reference: np.ndarray, bins: int = ENERGY_BINS) -> np.ndarray:
    """Bin edges (kT) covering the reference's central range with a margin; empty when the
    reference has no finite value."""
    ref = np.asarray(reference, dtype=float)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.zeros(0)
    lo, hi = (float(q) for q in np.quantile(ref, _QUANTILES))
    width = hi - lo
    if not width > 0:  # one value, or all equal: a unit-wide window around it
        width = max(1.0, abs(lo) * 1e-6)
        lo, hi = lo - width / 2, hi + width / 2
    return np.linspace(lo - _MARGIN * width, hi + _MARGIN * width, bins + 1)


def _counts(values: np.ndarray, edges: np.ndarray) -> tuple[list[int], int, int]:
    """Counts per bin, and how many fall below / above the edges (non-finite count as above)."""
    v = np.asarray(values, dtype=float)
    finite = v[np.isfinite(v)]
    counts, _ = np.histogram(finite, bins=edges)
    below = int(np.count_nonzero(finite < edges[0]))
    above = int(np.count_nonzero(finite > edges[-1])) + int(v.size - finite.size)
    return [int(c) for c in counts], below, above


def _wrap(degrees: np.ndarray) -> np.ndarray:
    """Into [-180, 180): +180 exactly is the bin of -180."""
    out: np.ndarray = (degrees + 180.0) % 360.0 - 180.0
    return out


def rama_density(phi_deg: np.ndarray, psi_deg: np.ndarray, bins: int = RAMA_BINS) -> list[int]:
    """Counts on a bins x bins grid over [-180, 180) degrees, row-major with phi along rows."""
    phi = np.asarray(phi_deg, dtype=float)
    psi = np.asarray(psi_deg, dtype=float)
    keep = np.isfinite(phi) & np.isfinite(psi)
    edges = np.linspace(-180.0, 180.0, bins + 1)
    counts, _, _ = np.histogram2d(_wrap(phi[keep]), _wrap(psi[keep]), bins=(edges, edges))
    return [int(c) for c in counts.ravel()]


def validation_histograms(epoch: int, *, hot: np.ndarray, cold_to_hot: np.ndarray, cold: np.ndarray,
                          hot_to_cold: np.ndarray, rama: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                          rama_label: str = "", split: str = "validation",
                          energy_bins: int = ENERGY_BINS, rama_bins: int = RAMA_BINS) -> ValidationHistograms:
    """The event for one evaluation.

    hot, cold_to_hot: beta_hot U (kT) of the hot data and of T(cold data); cold, hot_to_cold:
    beta_cold U of the cold data and of T^-1(hot data). `rama`: (phi, psi) in degrees of the
    sets "cold", "hot_to_cold", "hot", "cold_to_hot" (None: no peptide backbone).
    """
    n_pairs = int(min(np.size(hot), np.size(cold)))
    out = ValidationHistograms(epoch=epoch, split=split, n_pairs=n_pairs)
    for side, data, mapped in (("hot", hot, cold_to_hot), ("cold", cold, hot_to_cold)):
        edges = energy_edges(data, energy_bins)
        if edges.size == 0:
            continue
        ref_counts, _, _ = _counts(data, edges)
        counts, below, above = _counts(mapped, edges)
        setattr(out, f"{side}_edges", [float(e) for e in edges])
        setattr(out, f"{side}_data", ref_counts)
        setattr(out, f"{side}_mapped", counts)
        setattr(out, f"{side}_mapped_below", below)
        setattr(out, f"{side}_mapped_above", above)
    if rama is not None:
        out.rama_label, out.rama_bins = rama_label, rama_bins
        for name in ("cold", "hot_to_cold", "hot", "cold_to_hot"):
            phi, psi = rama[name]
            setattr(out, f"rama_{name}", rama_density(phi, psi, rama_bins))
    return out


def overlap(a: list[int], b: list[int], b_outside: int = 0) -> float:
    """Histogram overlap sum(min(p, q)) of two count vectors as distributions, in [0, 1]; NaN
    when either is empty. 1: the same shape; 0: disjoint (a collapsed or torn map).
    `b_outside`: samples of `b` outside the bins, which count against the overlap."""
    pa, pb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    total_b = pb.sum() + b_outside
    if pa.size == 0 or pa.size != pb.size or pa.sum() <= 0 or total_b <= 0:
        return math.nan
    return float(np.minimum(pa / pa.sum(), pb / total_b).sum())
