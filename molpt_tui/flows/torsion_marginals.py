"""Population-matching circle maps for torsions whose states the two temperatures fill differently.

The harmonic start scales fluctuations inside one well and leaves wide torsions alone, so a
two-state torsion keeps its populations: a peptide bond omega that is cis in ~15 % of the hot
ensemble (300 <-> 1000 K) and ~0.2 % of the cold one is mapped cis onto cis, where the cold
ensemble has almost nothing, and those pairs are accepted ~2 % of the time whatever the learned
flow does, because a flow that starts at the identity has to move probability between states
across a barrier to fix it. This map moves it from the start: on each selected torsion it is the
monotone circle map that carries the cold marginal (as the harmonic map leaves it) onto the hot
one,

    y = F_hot^-1( F_cold(x) )

with both CDFs piecewise linear (histograms with a density floor), cut at a common anchor where
both densities are low. States are mapped onto states in proportion to their populations: the
cold trans edge that the hot ensemble fills with cis goes there. The map is continuous on the
circle (the anchor is a fixed point), exact to invert, and its log-det is the log slope of the
segment, bounded by the floor.

Which torsions: the two-state ones, recognised from the data: those where the hot ensemble puts
more than `min_mass` of its probability in states the cold one (after the harmonic start) hardly
visits, i.e. in 30-degree bins where the cold density is below a tenth of the hot one (pairs from
such a state are accepted about that ratio of the time, whatever the learned flow does at first). Torsions
whose wells merely widen (methyl rotors, bonds' neighbours) are left alone: a marginal map of
those would reshape wells the learned flow and the harmonic start already handle, and move
atoms without need.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Transform
from .internal import wrap_angle
from .layout import Layout

__all__ = ["MarginalTorsionMap", "total_variation", "unvisited_mass"]

TWO_PI = 2.0 * math.pi
# Histogram of the marginals: 2-degree bins (a well of 0.15 rad spans several); a share FLOOR of
# the mass is spread evenly over the circle, so no density is below FLOOR / 2pi and the slopes
# (and log-dets) stay bounded.
N_BINS = 180
FLOOR = 0.002
# Knots of the map: equal-probability levels, so every segment carries the same mass.
N_KNOTS = 257


def _density(theta: Tensor, anchor: Tensor) -> Tensor:
    """Histogram density [K, N_BINS] of angles theta [M, K] on [anchor, anchor + 2pi), floored."""
    u = torch.remainder(theta - anchor, TWO_PI)
    idx = (u / TWO_PI * N_BINS).long().clamp(0, N_BINS - 1)
    counts = torch.zeros(theta.shape[1], N_BINS, dtype=torch.float64)
    counts.scatter_add_(1, idx.T, torch.ones_like(idx.T, dtype=torch.float64))
    mass = counts / counts.sum(1, keepdim=True).clamp(min=1.0)
    return (1.0 - FLOOR) * mass + FLOOR / N_BINS


def total_variation(a: Tensor, b: Tensor) -> Tensor:
    """Total variation distance [K] between the torsion marginals of samples a, b [M, K]."""
    zero = torch.zeros(a.shape[1], dtype=torch.float64)
    return 0.5 * (_density(a, zero) - _density(b, zero)).abs().sum(1)


# State detection: coarse bins (a state is tens of degrees wide) and what counts as not visited.
STATE_BINS = 12
UNVISITED = 0.1


def unvisited_mass(cold: Tensor, hot: Tensor) -> Tensor:
    """[K]: the hot probability in 30-degree bins where the cold density is below a tenth of the hot."""
    def hist(a: Tensor) -> Tensor:
        idx = (torch.remainder(a + math.pi, TWO_PI) / TWO_PI * STATE_BINS).long().clamp(0, STATE_BINS - 1)
        counts = torch.zeros(a.shape[1], STATE_BINS, dtype=torch.float64)
        counts.scatter_add_(1, idx.T, torch.ones_like(idx.T, dtype=torch.float64))
        return counts / max(1, a.shape[0])

    pc, ph = hist(cold), hist(hot)
    return torch.where(pc < UNVISITED * ph, ph, torch.zeros_like(ph)).sum(1)


def _quantiles(mass: Tensor, levels: Tensor) -> Tensor:
    """Angles (offset from the anchor, [0, 2pi]) of CDF levels [L] for bin masses [K, N_BINS]."""
    cdf = torch.cat([torch.zeros(mass.shape[0], 1, dtype=mass.dtype), mass.cumsum(1)], dim=1)
    cdf = cdf / cdf[:, -1:]
    edges = torch.linspace(0.0, TWO_PI, N_BINS + 1, dtype=mass.dtype)
    lv = levels.expand(mass.shape[0], -1).contiguous()
    j = torch.searchsorted(cdf, lv, right=True).clamp(1, N_BINS)
    lo, hi = cdf.gather(1, j - 1), cdf.gather(1, j)
    frac = ((lv - lo) / (hi - lo).clamp(min=1e-300)).clamp(0.0, 1.0)
    out: Tensor = edges[j - 1] + frac * (TWO_PI / N_BINS)
    out[:, 0], out[:, -1] = 0.0, TWO_PI
    return out


class MarginalTorsionMap(Transform):
    """Cold -> hot on the torsion dims `dims` of a flow vector; identity on every other dim.

    ``source`` and ``target`` [M, D]: cold samples after the harmonic start and hot samples, in
    the representation; None builds an empty shell that ``load_state_dict`` fills (``n_dims``
    then gives its size).
    """

    dims: Tensor
    anchor: Tensor
    knots_x: Tensor
    knots_y: Tensor

    def __init__(self, layout: Layout, source: Tensor | None, target: Tensor | None, min_mass: float,
                 n_dims: int = 0) -> None:
        super().__init__()
        self.layout = layout
        periodic = layout.periodic
        if source is not None and target is not None:
            per = torch.nonzero(periodic).flatten()
            s = source.detach().to(torch.float64)[:, per]
            t = target.detach().to(torch.float64)[:, per]
            chosen = per[unvisited_mass(s, t) > min_mass]
            s, t = source.detach().to(torch.float64)[:, chosen], target.detach().to(torch.float64)[:, chosen]
            both = _density(torch.cat([s, t]), torch.zeros(len(chosen), dtype=torch.float64))
            # the cut where both ensembles are thinnest, at the centre of that bin
            anchor = (both.argmin(1).double() + 0.5) * (TWO_PI / N_BINS)
            levels = torch.linspace(0.0, 1.0, N_KNOTS, dtype=torch.float64)
            kx = _quantiles(_density(s, anchor), levels)
            ky = _quantiles(_density(t, anchor), levels)
        else:
            chosen = torch.zeros(n_dims, dtype=torch.long)
            anchor = torch.zeros(n_dims, dtype=torch.float64)
            kx, ky = (torch.zeros(n_dims, N_KNOTS, dtype=torch.float64) for _ in range(2))
        self.register_buffer("dims", chosen.clone())
        self.register_buffer("anchor", wrap_angle(anchor))
        self.register_buffer("knots_x", kx.contiguous())
        self.register_buffer("knots_y", ky.contiguous())

    @property
    def n_dims(self) -> int:
        return int(self.dims.numel())

    def _map(self, z: Tensor, frm: Tensor, to: Tensor) -> tuple[Tensor, Tensor]:
        if self.n_dims == 0:
            return z, z.new_zeros(z.shape[0])
        dt, dev = z.dtype, z.device
        dims = self.dims.to(dev)
        a = self.anchor.to(device=dev, dtype=dt)
        kf, kt = frm.to(device=dev, dtype=dt), to.to(device=dev, dtype=dt)
        u = torch.remainder(z[:, dims] - a, TWO_PI).T.contiguous()          # [K, B] in [0, 2pi)
        i = (torch.searchsorted(kf, u, right=True) - 1).clamp(0, N_KNOTS - 2)
        x0, x1 = kf.gather(1, i), kf.gather(1, i + 1)
        y0, y1 = kt.gather(1, i), kt.gather(1, i + 1)
        slope = (y1 - y0) / (x1 - x0)
        v = y0 + slope * (u - x0)
        out = z.clone()
        out[:, dims] = wrap_angle(v.T + a)
        return out, torch.log(slope).sum(0)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Cold -> hot: (z' [B, D], log|det dz'/dz| [B])."""
        return self._map(z, self.knots_x, self.knots_y)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Hot -> cold."""
        return self._map(y, self.knots_y, self.knots_x)

    def extra_repr(self) -> str:
        return f"torsions={self.n_dims} of {int(self.layout.periodic.sum())}"
