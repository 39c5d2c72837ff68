"""Harmonic temperature map: the physically motivated starting point between two temperatures.

In a harmonic well the Boltzmann distribution at temperature T is Gaussian with variance
proportional to T, so widening every fluctuation by s = sqrt(T_hot / T_cold) around the cold
mean carries the cold ensemble onto the hot one exactly. Bonds, angles (and Cartesian dims)
are scaled linearly. A torsion is only harmonic if it stays in one well: such *narrow*
torsions get a circle map that scales by s near their circular mean; *wide* torsions
(several wells, free rotors) are left alone, since there is no single mean to scale about.

Narrow torsion circle map, with d = wrap(phi - mu) in [-pi, pi):

    |d| <  w :  d' = s d
    |d| >= w :  d' = sign(d) (s w + k (|d| - w)),   k = (pi - s w) / (pi - w)

The outer arc of length 2(pi - w) is squeezed linearly onto the remaining 2(pi - s w), so the
map is a continuous, orientation-preserving bijection of the circle (d = +-pi maps to +-pi)
as long as s w < pi and w < pi. The log-det is log s inside the window and log k outside.

Choices (see the constructor): a torsion is narrow when its circular standard deviation
sqrt(-2 ln R) on the cold data is below 0.5 rad. For a single cosine well that is a
concentration kappa of about 4.5 or more, where the von Mises density is close to Gaussian,
and it stays near-Gaussian after widening by s (s = 1.83 for 300 -> 1000 K gives 0.9 rad).
Torsions that hop between wells (methyl rotors, backbone phi/psi sampling several basins)
have R near 0 and a circular std well above 1 rad, so they land on the wide side. The window
is three circular standard deviations (99.7 % of a Gaussian well is scaled exactly), capped
so that s w <= 0.9 pi and w <= 0.9 pi keep the outer slope k away from 0 and infinity.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Transform
from .internal import wrap_angle
from .layout import Layout

__all__ = ["HarmonicTemperatureMap", "circular_stats"]


def circular_stats(phi: Tensor) -> tuple[Tensor, Tensor]:
    """Circular mean in [-pi, pi) and circular std sqrt(-2 ln R) of angles phi [M, K] (over M)."""
    c, s = torch.cos(phi).mean(0), torch.sin(phi).mean(0)
    r = torch.sqrt(c * c + s * s).clamp(min=1e-300, max=1.0)
    return wrap_angle(torch.atan2(s, c)), torch.sqrt(-2.0 * torch.log(r))


class HarmonicTemperatureMap(Transform):
    """Cold -> hot map z' = T(z) on the flow vector described by ``layout``.

    ``z_cold`` [M, D] (cold samples in the representation) sets the centres and the torsion
    classification; it may be None to build an empty shell that ``load_state_dict`` fills.
    """

    scale: Tensor
    periodic: Tensor
    center: Tensor  # mean, or circular mean for torsions
    narrow: Tensor
    window: Tensor
    circ_std: Tensor

    def __init__(
        self,
        layout: Layout,
        z_cold: Tensor | None,
        t_cold: float,
        t_hot: float,
        narrow_torsion_std: float = 0.5,
        window_sigmas: float = 3.0,
        max_window_fraction: float = 0.9,
    ) -> None:
        super().__init__()
        if t_cold <= 0 or t_hot <= 0:
            raise ValueError(f"temperatures must be positive, got {t_cold} and {t_hot}")
        if not 0.0 < max_window_fraction < 1.0:
            raise ValueError("max_window_fraction must lie in (0, 1) so that the circle map stays bijective")
        self.layout = layout
        self.narrow_torsion_std = float(narrow_torsion_std)
        self.window_sigmas = float(window_sigmas)
        self.max_window_fraction = float(max_window_fraction)
        d = layout.dim
        periodic = layout.periodic
        f64 = torch.float64
        self.register_buffer("scale", torch.tensor(math.sqrt(t_hot / t_cold), dtype=f64))
        self.register_buffer("periodic", periodic.clone())
        self.register_buffer("center", torch.zeros(d, dtype=f64))
        self.register_buffer("narrow", torch.zeros(d, dtype=torch.bool))
        self.register_buffer("window", torch.zeros(d, dtype=f64))
        self.register_buffer("circ_std", torch.zeros(d, dtype=f64))
        if z_cold is not None:
            self._fit(torch.as_tensor(z_cold))

    @torch.no_grad()
    def _fit(self, z_cold: Tensor) -> None:
        if z_cold.ndim != 2 or z_cold.shape[1] != self.layout.dim:
            raise ValueError(f"z_cold must be [M, {self.layout.dim}], got {tuple(z_cold.shape)}")
        z = z_cold.detach().to(device=self.center.device, dtype=torch.float64)
        mu, cstd = circular_stats(z)
        per = self.periodic
        self.center.copy_(torch.where(per, mu, z.mean(0)))
        self.circ_std.copy_(torch.where(per, cstd, torch.zeros_like(cstd)))
        narrow = per & (cstd < self.narrow_torsion_std)
        cap = self.max_window_fraction * math.pi / max(float(self.scale), 1.0)
        # A zero-width window would make the map the identity; 1e-3 rad keeps degenerate
        # (constant) torsions well defined without affecting real ones.
        w = (self.window_sigmas * cstd).clamp(min=1e-3, max=cap)
        self.narrow.copy_(narrow)
        self.window.copy_(torch.where(narrow, w, torch.zeros_like(w)))

    @property
    def s(self) -> float:
        return float(self.scale)

    def _params(self, ref: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(s, centre, window, outer slope k, periodic, narrow) on ref's device, in ref's dtype."""
        dev, dt = ref.device, ref.dtype
        s = self.scale.to(device=dev, dtype=dt)
        w = self.window.to(device=dev, dtype=dt)
        # Only narrow dims use k; others get a harmless 1 to avoid 0/0 where w == 0.
        k = torch.where(self.narrow.to(dev), (math.pi - s * w) / (math.pi - w), torch.ones_like(w))
        return s, self.center.to(device=dev, dtype=dt), w, k, self.periodic.to(dev), self.narrow.to(dev)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Cold -> hot: (z' [B, D], log|det dz'/dz| [B])."""
        s, c, w, k, per, narrow = self._params(z)
        lin = c + s * (z - c)
        d = wrap_angle(z - c)
        ad = d.abs()
        inside = ad < w
        d_new = torch.where(inside, s * d, torch.sign(d) * (s * w + k * (ad - w)))
        circ = wrap_angle(c + d_new)
        out = torch.where(per, torch.where(narrow, circ, z), lin)
        log_s = torch.log(s)
        ld = torch.where(per, torch.where(narrow, torch.where(inside, log_s, torch.log(k)), 0.0), log_s)
        return out, ld.sum(-1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Hot -> cold: (z [B, D], log|det dz/dz'| [B])."""
        s, c, w, k, per, narrow = self._params(y)
        lin = c + (y - c) / s
        d = wrap_angle(y - c)
        ad = d.abs()
        sw = s * w
        inside = ad < sw
        d_old = torch.where(inside, d / s, torch.sign(d) * (w + (ad - sw) / k))
        circ = wrap_angle(c + d_old)
        out = torch.where(per, torch.where(narrow, circ, y), lin)
        log_s = torch.log(s)
        ld = torch.where(per, torch.where(narrow, torch.where(inside, log_s, torch.log(k)), 0.0), log_s)
        return out, -ld.sum(-1)

    def extra_repr(self) -> str:
        n_per = int(self.periodic.sum())
        return f"dim={self.layout.dim}, s={self.s:.4f}, torsions={n_per} (narrow {int(self.narrow.sum())})"
