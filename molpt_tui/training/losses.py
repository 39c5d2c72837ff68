"""Loss pieces, acceptance and ESS: the formulas of README's "What the numbers mean", in one place.

All energies here are reduced energies beta*U (kT) unless a parameter says kJ/mol; log-dets are
natural logs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..physics.data import swap_log_acceptance


def linlogcut(e: torch.Tensor, threshold: float) -> torch.Tensor:
    """Identity below `threshold` (kT), logarithmic above: a few exploded configurations
    cannot dominate the gradient, while the loss stays monotone in the energy."""
    over = e - threshold
    return torch.where(over > 0, threshold + torch.log1p(torch.clamp(over, min=0.0)), e)


@dataclass(frozen=True)
class DirectionTerms:
    """One direction (forward or inverse) of a step's loss, over the batch's finite samples."""

    loss: torch.Tensor      # differentiable scalar: mean linlogcut(beta U) - log|det J|
    mean_energy: float      # mean beta U (kT), unregularised
    mean_logdet: float      # mean log|det J| (nats)
    n_regularised: int      # samples above the linlogcut threshold
    n_nonfinite: int        # samples left out: non-finite energy or log-det

    @property
    def free_energy(self) -> float:
        """Mean beta U - log|det J| without the regularisation: what the KL estimate needs."""
        return self.mean_energy - self.mean_logdet


def direction_term(reduced_energy: torch.Tensor, logdet: torch.Tensor, threshold: float) -> DirectionTerms:
    """Mean of linlogcut(beta U) - log|det J| over finite samples.

    Non-finite samples are left out of the mean and counted; if none is finite the loss is NaN
    (the trainer's NaN guard takes over) rather than a fake number.
    """
    finite = torch.isfinite(reduced_energy) & torch.isfinite(logdet)
    n_nonfinite = int((~finite).sum())
    if not bool(finite.any()):
        nan = torch.tensor(math.nan, dtype=reduced_energy.dtype, device=reduced_energy.device)
        return DirectionTerms(nan, math.nan, math.nan, 0, n_nonfinite)
    e = reduced_energy[finite]
    ld = logdet[finite]
    term = (linlogcut(e, threshold) - ld).mean()
    return DirectionTerms(term, float(e.detach().mean()), float(ld.detach().mean()),
                          int((e > threshold).sum()), n_nonfinite)


def paired_kl(fwd: DirectionTerms, inv: DirectionTerms, reference: float) -> float:
    """KL_fwd + KL_inv of a batch: the unregularised loss minus `reference`, the batch's own
    beta_c <U(x)> + beta_h <U(y)>. Paired per sample, its noise is far below the loss's."""
    return fwd.free_energy + inv.free_energy - reference


def flow_swap_log_acceptance(beta_c: float, beta_h: float, u_x: torch.Tensor, u_y: torch.Tensor,
                             u_tx: torch.Tensor, u_tiy: torch.Tensor, ld_f: torch.Tensor,
                             ld_i: torch.Tensor) -> torch.Tensor:
    """Delta of the flow swap (README, "What the numbers mean") for pairs (x cold, y hot)
    exchanged through T; energies in kJ/mol.

    With T the identity (log-dets 0, T x = x) it is exactly the naive swap's Delta_0.
    """
    return -beta_c * u_tiy - beta_h * u_tx + beta_c * u_x + beta_h * u_y + ld_f + ld_i


def naive_swap_log_acceptance(beta_c: float, beta_h: float, u_x: torch.Tensor, u_y: torch.Tensor) -> torch.Tensor:
    """Delta_0 = (beta_c - beta_h)(U(x) - U(y)): the replica-exchange Metropolis ratio, which the
    MD data generation uses too; kept in physics (training may use physics, not vice versa)."""
    delta: torch.Tensor = swap_log_acceptance(beta_c, beta_h, u_x, u_y)  # physics takes floats or tensors
    return delta


def pair_acceptance(log_acc: torch.Tensor) -> torch.Tensor:
    """min(1, exp Delta) per pair; a NaN Delta (failed energy) is a rejection."""
    log_acc = torch.nan_to_num(log_acc.double(), nan=-math.inf)
    return torch.exp(torch.clamp(log_acc, max=0.0))


def mean_acceptance(log_acc: torch.Tensor) -> float:
    """mean(min(1, exp Delta)); a NaN Delta (failed energy) counts as a rejection."""
    return float(pair_acceptance(log_acc).mean())


def ess_percent(log_w: torch.Tensor) -> float:
    """Kish effective sample size of importance weights, in % of the sample count."""
    log_w = torch.nan_to_num(log_w.double(), nan=-math.inf)
    if not bool(torch.isfinite(log_w).any()):
        return 0.0
    log_w = log_w - log_w[torch.isfinite(log_w)].max()
    w = torch.exp(log_w)
    return float(w.sum() ** 2 / (w.pow(2).sum() * log_w.numel()) * 100.0)
