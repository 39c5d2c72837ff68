"""Standard errors that respect autocorrelation: a moving-block bootstrap over a time series.

Validation and test pairs are consecutive MD frames (pair i = cold frame i, hot frame i), so
treating them as independent would understate every error bar by the square root of the
autocorrelation time. The bootstrap resamples whole blocks of consecutive pairs (circularly,
so every pair is equally likely to be drawn) and recomputes the statistic on each replicate;
its standard deviation over replicates is the standard error. The block is a few integrated
autocorrelation times long, so correlations within a block are kept and those between blocks
are small; at least `MIN_BLOCKS` blocks are kept so the replicates still vary.

Statistics are functions of an index array [n_boot, n] into the series, vectorised over the
replicates (a mean, an ESS).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..physics.autocorr import integrated_time

N_BOOT = 200
# A block of BLOCK_TAUS x tau keeps the bias of the variance estimate to about 1/BLOCK_TAUS of
# the correlated part (Bartlett-window bias) while leaving enough blocks for a stable estimate.
BLOCK_TAUS = 3.0
MIN_BLOCKS = 10
_SEED = 20240611

Statistic = Callable[[np.ndarray], np.ndarray]  # index array [n_boot, n] -> values [n_boot]


def block_length(series: Sequence[np.ndarray], n: int) -> int:
    """Block length (samples) for series of length n: BLOCK_TAUS x their largest tau_int,
    between 1 and n // MIN_BLOCKS."""
    taus = [integrated_time(np.asarray(s, dtype=float)) for s in series]
    finite = [t for t in taus if math.isfinite(t)]
    tau = max(finite) if finite else 1.0
    return int(max(1, min(math.ceil(BLOCK_TAUS * tau), max(1, n // MIN_BLOCKS))))


def bootstrap_indices(n: int, block: int, n_boot: int = N_BOOT, seed: int = _SEED) -> np.ndarray:
    """[n_boot, n] indices of circular moving-block bootstrap replicates."""
    rng = np.random.default_rng(seed)
    block = max(1, min(block, n))
    n_blocks = -(-n // block)
    starts = rng.integers(0, n, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]) % n
    out: np.ndarray = idx.reshape(n_boot, n_blocks * block)[:, :n]
    return out


def bootstrap_se(statistic: Statistic, idx: np.ndarray) -> float:
    """Standard deviation of `statistic` over the replicates `idx`; NaN if not finite."""
    if idx.size == 0:
        return math.nan
    values = np.asarray(statistic(idx), dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan
    return float(np.std(values, ddof=1))


def mean_statistic(x: np.ndarray) -> Statistic:
    x = np.asarray(x, dtype=float)
    return lambda idx: x[idx].mean(axis=1)


def ess_statistic(log_w: np.ndarray) -> Statistic:
    """Kish ESS in % of the importance weights exp(log_w), as `losses.ess_percent` computes it
    (non-finite log-weights are zero weights)."""
    lw = np.nan_to_num(np.asarray(log_w, dtype=float), nan=-np.inf)
    finite = np.isfinite(lw)
    w = np.exp(lw - lw[finite].max()) if finite.any() else np.zeros_like(lw)
    w = np.where(np.isfinite(w), w, 0.0)

    def ess(idx: np.ndarray) -> np.ndarray:
        wi = w[idx]
        s1 = wi.sum(axis=1)
        s2 = (wi * wi).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out: np.ndarray = np.where(s2 > 0, s1 * s1 / (s2 * idx.shape[1]) * 100.0, 0.0)
        return out

    return ess


def mean_se(x: np.ndarray, block: int | None = None, n_boot: int = N_BOOT) -> float:
    """Block-bootstrap standard error of the mean of one series (block from its own tau)."""
    x = np.asarray(x, dtype=float)
    b = block_length([x], len(x)) if block is None else block
    return bootstrap_se(mean_statistic(x), bootstrap_indices(len(x), b, n_boot))
