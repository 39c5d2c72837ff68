"""Integrated autocorrelation times of MD time series: how many samples one independent one is worth.

Consecutive MD frames are correlated; a series of n frames with integrated autocorrelation time
tau (in frames, convention tau = 1 + 2 sum_t rho(t), so 1 for independent samples) holds about
n / tau independent samples and its mean has variance var * tau / n. tau is estimated with
Sokal's automatic window: the sum of the autocorrelation function is cut at the smallest lag M
with M >= c * tau(M), which keeps the estimate's noise bounded while taking in the real decay.
"""
from __future__ import annotations

import math

import numpy as np

# Sokal's window constant: 5 is the usual choice for exponential-like decay.
SOKAL_C = 5.0


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation rho(t), t = 0..n-1, of a 1-D series (FFT, zero-padded, so not
    circular). A constant series has rho = [1, 0, 0, ...]."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n == 0:
        return np.zeros(0)
    d = x - x.mean()
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(d, size)
    acf = np.fft.irfft(f * np.conjugate(f), size)[:n]
    if acf[0] <= 0:
        out = np.zeros(n)
        out[0] = 1.0
        return out
    rho: np.ndarray = acf / acf[0]
    return rho


def integrated_time(x: np.ndarray, c: float = SOKAL_C) -> float:
    """tau_int of a 1-D series in samples (>= 1); NaN for fewer than 4 finite values.

    Non-finite values are dropped first (they carry no time information a caller could use).
    """
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 4:
        return math.nan
    rho = autocorrelation(x)
    taus = 2.0 * np.cumsum(rho) - 1.0          # tau(M) = 1 + 2 sum_{t=1..M} rho(t)
    lags = np.arange(len(rho))
    ok = lags >= c * taus
    m = int(np.argmax(ok)) if ok.any() else len(rho) - 1
    return float(max(1.0, taus[m]))


def integrated_time_angle(theta: np.ndarray, c: float = SOKAL_C) -> float:
    """tau_int of a torsion (radians): the larger of those of cos and sin, so a jump across
    +-pi is not read as a large excursion."""
    theta = np.asarray(theta, dtype=float)
    return max(integrated_time(np.cos(theta), c), integrated_time(np.sin(theta), c))


def independent_samples(n: int, tau: float) -> float:
    """n / tau, the usual count of effectively independent samples."""
    return n / tau if math.isfinite(tau) and tau > 0 else math.nan
