"""The step's two loss directions and the held-out evaluation of the map.

Both use exactly the map and log-dets that a flow swap would use, and the formulas of
`losses`, so what the log shows is what `pt` would get.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import losses, stats

if TYPE_CHECKING:
    from ..flows.transport import Transport
    from .setup import Pairs, TrainingSetup


def direction_terms(transport: Transport, setup: TrainingSetup, xb: torch.Tensor, yb: torch.Tensor,
                    energy_reg_kt: float) -> tuple[losses.DirectionTerms, losses.DirectionTerms]:
    """Forward (cold batch `xb` through T, at beta_hot) and inverse (hot batch `yb` through T^-1,
    at beta_cold) terms of the loss; differentiable when grad is enabled."""
    y, ld_f = transport(xb)
    x2, ld_i = transport.inverse(yb)
    fwd = losses.direction_term(setup.beta_hot * setup.energy(y), ld_f, energy_reg_kt)
    inv = losses.direction_term(setup.beta_cold * setup.energy(x2), ld_i, energy_reg_kt)
    return fwd, inv


def batch_reference(setup: TrainingSetup, idx_cold: torch.Tensor, idx_hot: torch.Tensor) -> float:
    """beta_c <U(x)> + beta_h <U(y)> of a training batch: what `losses.paired_kl` subtracts."""
    return (setup.beta_cold * float(setup.u_cold_train[idx_cold].mean())
            + setup.beta_hot * float(setup.u_hot_train[idx_hot].mean()))


@dataclass(frozen=True)
class Evaluation:
    """The map on a split's pairs; field names are those of `LogBlock` (and `TestEvaluation`).

    Standard errors (`*_se`) are block-bootstrap errors over the pairs' time order: consecutive
    MD frames are correlated (see `stats`).
    """

    acc_flow: float        # flow-swap acceptance
    acc_naive: float       # naive swap acceptance of the same pairs
    ess_fwd: float         # % ESS of the importance weights, cold -> hot
    ess_inv: float         # % ESS, hot -> cold
    roundtrip_err: float   # max |T^-1(T(x)) - x| (nm); inf where the round trip is not finite
    kl_val: float          # paired KL_fwd + KL_inv (kT): on validation pairs it rises when the flow overfits
    acc_flow_se: float = math.nan
    acc_naive_se: float = math.nan
    ess_fwd_se: float = math.nan
    ess_inv_se: float = math.nan
    kl_val_se: float = math.nan
    n_pairs: int = 0
    block: int = 1         # bootstrap block length (pairs)

    def score(self, loss: float) -> float:
        """What best.pt is chosen on: the held-out KL, not the training loss, which keeps falling
        when the flow starts to overfit (the loss only where the KL is not finite)."""
        return self.kl_val if math.isfinite(self.kl_val) else loss

    def fields(self) -> dict[str, float]:
        """The fields a `LogBlock` holds."""
        out = asdict(self)
        del out["n_pairs"], out["block"]
        return out


@torch.no_grad()
def evaluate(transport: Transport, setup: TrainingSetup, batch_size: int, pairs: Pairs | None = None) -> Evaluation:
    """Acceptance, ESS, round-trip error and KL of `transport` on `pairs` (default: the
    validation pairs), each with a block-bootstrap standard error."""
    pairs = pairs if pairs is not None else setup.validation
    n = len(pairs)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("u_tx", "u_tiy", "ld_f", "ld_i", "rt")}
    for lo in range(0, n, batch_size):
        x = pairs.cold[lo:min(lo + batch_size, n)].to(setup.device)
        y = pairs.hot[lo:min(lo + batch_size, n)].to(setup.device)
        tx, ld_f = transport(x)
        tiy, ld_i = transport.inverse(y)
        back, _ = transport.inverse(tx)
        canon = transport.canonical(x)
        parts["u_tx"].append(setup.energy(tx).double().cpu())
        parts["u_tiy"].append(setup.energy(tiy).double().cpu())
        parts["ld_f"].append(ld_f.double().cpu())
        parts["ld_i"].append(ld_i.double().cpu())
        parts["rt"].append((back - canon).abs().amax(dim=(1, 2)).double().cpu())
    u_tx, u_tiy, ld_f, ld_i, rt = (torch.cat(parts[k]) for k in ("u_tx", "u_tiy", "ld_f", "ld_i", "rt"))
    bc, bh = setup.beta_cold, setup.beta_hot
    u_x, u_y = pairs.u_cold[:n], pairs.u_hot[:n]
    delta = losses.flow_swap_log_acceptance(bc, bh, u_x, u_y, u_tx, u_tiy, ld_f, ld_i)
    delta0 = losses.naive_swap_log_acceptance(bc, bh, u_x, u_y)
    log_w_fwd = -bh * u_tx + ld_f + bc * u_x
    log_w_inv = -bc * u_tiy + ld_i + bh * u_y
    kl_pairs = (bh * u_tx - ld_f - bc * u_x) + (bc * u_tiy - ld_i - bh * u_y)  # -log w in both directions
    a_flow, a_naive = losses.pair_acceptance(delta).numpy(), losses.pair_acceptance(delta0).numpy()
    lw_f, lw_i, kl = log_w_fwd.numpy(), log_w_inv.numpy(), kl_pairs.numpy()
    # One block for every statistic, from the slowest of their series.
    block = stats.block_length([a_flow, a_naive, np.nan_to_num(lw_f, nan=0.0, posinf=0.0, neginf=0.0),
                                np.nan_to_num(lw_i, nan=0.0, posinf=0.0, neginf=0.0)], n)
    idx = stats.bootstrap_indices(n, block)
    kl_finite = bool(np.isfinite(kl).all())
    return Evaluation(
        acc_flow=losses.mean_acceptance(delta),
        acc_naive=losses.mean_acceptance(delta0),
        ess_fwd=losses.ess_percent(log_w_fwd),
        ess_inv=losses.ess_percent(log_w_inv),
        roundtrip_err=float(torch.nan_to_num(rt, nan=math.inf).max()),
        kl_val=float(kl_pairs.mean()),
        acc_flow_se=stats.bootstrap_se(stats.mean_statistic(a_flow), idx),
        acc_naive_se=stats.bootstrap_se(stats.mean_statistic(a_naive), idx),
        ess_fwd_se=stats.bootstrap_se(stats.ess_statistic(lw_f), idx),
        ess_inv_se=stats.bootstrap_se(stats.ess_statistic(lw_i), idx),
        kl_val_se=stats.bootstrap_se(stats.mean_statistic(kl), idx) if kl_finite else math.nan,
        n_pairs=n, block=block,
    )
