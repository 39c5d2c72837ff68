"""The step's two loss directions and the held-out evaluation of the map.

Both use exactly the map and log-dets that a flow swap would use, and the formulas of
`losses` (DESIGN.md), so what the log shows is what `pt` would get.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from . import losses

if TYPE_CHECKING:
    from ..flows.transport import Transport
    from .setup import TrainingSetup


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
    """The map on the held-out pairs; field names are those of `LogBlock`."""

    acc_flow: float        # flow-swap acceptance
    acc_naive: float       # naive swap acceptance of the same pairs
    ess_fwd: float         # % ESS of the importance weights, cold -> hot
    ess_inv: float         # % ESS, hot -> cold
    roundtrip_err: float   # max |T^-1(T(x)) - x| (nm); inf where the round trip is not finite
    kl_val: float          # paired held-out KL_fwd + KL_inv (kT): rises when the flow overfits

    def score(self, loss: float) -> float:
        """What best.pt is chosen on: the held-out KL, not the training loss, which keeps falling
        when the flow starts to overfit (the loss only where the KL is not finite)."""
        return self.kl_val if math.isfinite(self.kl_val) else loss

    def fields(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def evaluate(transport: Transport, setup: TrainingSetup, batch_size: int) -> Evaluation:
    """Acceptance, ESS, round-trip error and KL of `transport` on the validation pairs."""
    split = setup.split
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("u_tx", "u_tiy", "ld_f", "ld_i", "rt")}
    for lo in range(0, len(split.cold_val), batch_size):
        x = split.cold_val[lo:lo + batch_size].to(setup.device)
        y = split.hot_val[lo:lo + batch_size].to(setup.device)
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
    u_x, u_y = setup.u_cold_val, setup.u_hot_val
    delta = losses.flow_swap_log_acceptance(bc, bh, u_x, u_y, u_tx, u_tiy, ld_f, ld_i)
    delta0 = losses.naive_swap_log_acceptance(bc, bh, u_x, u_y)
    return Evaluation(
        acc_flow=losses.mean_acceptance(delta),
        acc_naive=losses.mean_acceptance(delta0),
        ess_fwd=losses.ess_percent(-bh * u_tx + ld_f + bc * u_x),
        ess_inv=losses.ess_percent(-bc * u_tiy + ld_i + bh * u_y),
        roundtrip_err=float(torch.nan_to_num(rt, nan=math.inf).max()),
        # -mean log w in both directions
        kl_val=float((bh * u_tx - ld_f - bc * u_x).mean() + (bc * u_tiy - ld_i - bh * u_y).mean()),
    )
