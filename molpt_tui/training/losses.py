"""Loss pieces, acceptance and ESS: the formulas of DESIGN.md, in one place.

All energies here are reduced energies beta*U (kT); log-dets are natural logs.
"""
from __future__ import annotations

import math

import torch


def linlogcut(e: torch.Tensor, threshold: float) -> torch.Tensor:
    """Identity below `threshold` (kT), logarithmic above: a few exploded configurations
    cannot dominate the gradient, while the loss stays monotone in the energy."""
    over = e - threshold
    return torch.where(over > 0, threshold + torch.log1p(torch.clamp(over, min=0.0)), e)


def direction_term(reduced_energy: torch.Tensor, logdet: torch.Tensor, threshold: float):
    """Mean of linlogcut(beta U) - log|det J| over finite samples.

    Returns (term, mean_energy, mean_logdet, n_regularised, n_nonfinite). Non-finite samples
    are left out of the mean and counted; if none is finite the term is NaN (the trainer's
    NaN guard takes over) rather than a fake number.
    """
    finite = torch.isfinite(reduced_energy) & torch.isfinite(logdet)
    n_nonfinite = int((~finite).sum())
    if not bool(finite.any()):
        nan = torch.tensor(math.nan, dtype=reduced_energy.dtype, device=reduced_energy.device)
        return nan, math.nan, math.nan, 0, n_nonfinite
    e = reduced_energy[finite]
    ld = logdet[finite]
    term = (linlogcut(e, threshold) - ld).mean()
    n_reg = int((e > threshold).sum())
    return term, float(e.detach().mean()), float(ld.detach().mean()), n_reg, n_nonfinite


def flow_swap_log_acceptance(beta_c, beta_h, u_x, u_y, u_tx, u_tiy, ld_f, ld_i):
    """Delta of DESIGN.md for pairs (x cold, y hot) exchanged through T."""
    return -beta_c * u_tiy - beta_h * u_tx + beta_c * u_x + beta_h * u_y + ld_f + ld_i


def naive_swap_log_acceptance(beta_c, beta_h, u_x, u_y):
    return (beta_c - beta_h) * (u_x - u_y)


def mean_acceptance(log_acc: torch.Tensor) -> float:
    """mean(min(1, exp Delta)); a NaN Delta (failed energy) counts as a rejection."""
    log_acc = torch.nan_to_num(log_acc.double(), nan=-math.inf)
    return float(torch.exp(torch.clamp(log_acc, max=0.0)).mean())


def ess_percent(log_w: torch.Tensor) -> float:
    """Kish effective sample size of importance weights, in % of the sample count."""
    log_w = torch.nan_to_num(log_w.double(), nan=-math.inf)
    if not bool(torch.isfinite(log_w).any()):
        return 0.0
    log_w = log_w - log_w[torch.isfinite(log_w)].max()
    w = torch.exp(log_w)
    return float(w.sum() ** 2 / (w.pow(2).sum() * log_w.numel()) * 100.0)
