"""The step's two loss directions and the held-out evaluation of the map.

Both use exactly the map and log-dets that a flow swap would use, and the formulas of
`losses`, so what the log shows is what `pt` would get.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import losses, stats

if TYPE_CHECKING:
    from ..flows.transport import Transport
    from ..physics.torsions import Backbone
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
class MappedSamples:
    """Held-out pairs and their images under the map, as the validation figure shows them.

    Positions [M, N, 3] in nm (the map's output frame; torsions and energies do not depend on
    it), reduced energies [M] in kT. M pairs evenly spaced in MD time over the split's n_split.
    """

    cold: np.ndarray                 # x ~ p_cold
    hot: np.ndarray                  # y ~ p_hot
    cold_to_hot: np.ndarray          # T(x)
    hot_to_cold: np.ndarray          # T^-1(y)
    reduced_cold: np.ndarray         # beta_cold U(x)
    reduced_hot: np.ndarray          # beta_hot U(y)
    reduced_cold_to_hot: np.ndarray  # beta_hot U(T x)
    reduced_hot_to_cold: np.ndarray  # beta_cold U(T^-1 y)
    n_split: int
    split: str = "validation"
    epoch: int = 0
    model: str = ""                  # which weights mapped them, e.g. "untrained map"
    backbone: Backbone | None = None  # the peptide backbone of the topology, for Ramachandran maps

    def __len__(self) -> int:
        return len(self.cold)


def _spread(n: int, keep: int) -> np.ndarray:
    """A mask of `keep` of `n` indices evenly spaced in MD time (all of them when keep >= n)."""
    mask = np.zeros(n, dtype=bool)
    if keep > 0 and n > 0:
        mask[np.unique(np.linspace(0, n - 1, min(n, keep)).round().astype(np.int64))] = True
    return mask


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
    # with `evaluate(..., keep=M)`: M of the pairs and their images, for the validation figure
    samples: MappedSamples | None = field(default=None, repr=False, compare=False)

    def score(self, loss: float) -> float:
        """What best.pt is chosen on: the held-out KL, not the training loss, which keeps falling
        when the flow starts to overfit (the loss only where the KL is not finite)."""
        return self.kl_val if math.isfinite(self.kl_val) else loss

    def fields(self) -> dict[str, float]:
        """The fields a `LogBlock` holds."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("n_pairs", "block", "samples")}


@torch.no_grad()
def evaluate(transport: Transport, setup: TrainingSetup, batch_size: int, pairs: Pairs | None = None,
             keep: int = 0) -> Evaluation:
    """Acceptance, ESS, round-trip error and KL of `transport` on `pairs` (default: the
    validation pairs), each with a block-bootstrap standard error. `keep` > 0: also up to that
    many of the pairs with their images (`Evaluation.samples`), copied from this very pass."""
    pairs = pairs if pairs is not None else setup.validation
    n = len(pairs)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("u_tx", "u_tiy", "ld_f", "ld_i", "rt")}
    kept = _spread(n, keep)
    images: dict[str, list[np.ndarray]] = {"tx": [], "tiy": []}
    for lo in range(0, n, batch_size):
        x = pairs.cold[lo:min(lo + batch_size, n)].to(setup.device)
        y = pairs.hot[lo:min(lo + batch_size, n)].to(setup.device)
        tx, ld_f = transport(x)
        tiy, ld_i = transport.inverse(y)
        sel = torch.from_numpy(kept[lo:lo + len(x)]).to(tx.device)
        if keep > 0 and bool(sel.any()):
            images["tx"].append(tx[sel].double().cpu().numpy())
            images["tiy"].append(tiy[sel].double().cpu().numpy())
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
    samples = None
    if kept.any():
        idx_kept = torch.from_numpy(np.flatnonzero(kept))
        samples = MappedSamples(
            cold=pairs.cold[:n][idx_kept].double().cpu().numpy(), hot=pairs.hot[:n][idx_kept].double().cpu().numpy(),
            cold_to_hot=np.concatenate(images["tx"]), hot_to_cold=np.concatenate(images["tiy"]),
            reduced_cold=(bc * u_x[idx_kept]).numpy(), reduced_hot=(bh * u_y[idx_kept]).numpy(),
            reduced_cold_to_hot=(bh * u_tx[idx_kept]).numpy(), reduced_hot_to_cold=(bc * u_tiy[idx_kept]).numpy(),
            n_split=n)
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
        n_pairs=n, block=block, samples=samples,
    )
