"""The learned flow T (a stack of coupling layers) and a helper to compose invertible maps.

Every module here follows one protocol: ``forward(x) -> (y, logdet[B])`` and
``inverse(y) -> (x, logdet[B])``, where logdet is log|det| of the Jacobian of the map that
was applied (so forward and inverse logdets at corresponding points are negatives). The loss
and the flow-swap acceptance use both directions, so both are exact and cost the same.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .coupling import CONDITIONERS, TRANSFORMS, CouplingLayer, mask_schedule
from .layout import Layout


class FlowModel(nn.Module):
    """Coupling flow on z [B, D] described by ``layout``; the exact identity at init.

    conditioner: "transformer" (attention over atom tokens) or "mlp".
    transform: "spline" (RQ splines; circular for torsions) or "affine" (bounded log-scale;
    rotation for torsions).
    n_layers: coupling layers, masks from ``coupling.mask_schedule`` (>= 2 to touch every dim).
    hidden / n_heads / n_blocks / ff_mult: conditioner width, attention heads (transformer only),
    residual or transformer blocks per conditioner, feed-forward expansion (transformer only).
    n_bins / tail_bound: spline bins and the half-width of the non-periodic spline interval
    (identity outside). max_log_scale: bound on the affine log-scale per layer.
    circular_shift: learned rotation after each circular spline.
    """

    def __init__(
        self,
        layout: Layout,
        conditioner: str = "transformer",
        transform: str = "spline",
        n_layers: int = 8,
        hidden: int = 64,
        n_heads: int = 4,
        n_blocks: int = 2,
        n_bins: int = 8,
        tail_bound: float = 5.0,
        max_log_scale: float = 2.0,
        ff_mult: int = 2,
        circular_shift: bool = True,
    ) -> None:
        super().__init__()
        if conditioner not in CONDITIONERS:
            raise ValueError(f"conditioner must be one of {CONDITIONERS}, got {conditioner!r}")
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        if n_layers < 1:
            raise ValueError("n_layers must be >= 1")
        self.layout = layout
        self.config = dict(
            conditioner=conditioner, transform=transform, n_layers=n_layers, hidden=hidden,
            n_heads=n_heads, n_blocks=n_blocks, n_bins=n_bins, tail_bound=tail_bound,
            max_log_scale=max_log_scale, ff_mult=ff_mult, circular_shift=circular_shift,
        )
        self.layers = nn.ModuleList(
            CouplingLayer(
                layout, mask, conditioner=conditioner, transform=transform, hidden=hidden,
                n_heads=n_heads, n_blocks=n_blocks, ff_mult=ff_mult, n_bins=n_bins,
                tail_bound=tail_bound, max_log_scale=max_log_scale, circular_shift=circular_shift,
            )
            for mask in mask_schedule(layout, n_layers)
        )

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check(self, z: torch.Tensor) -> None:
        if z.dim() != 2 or z.shape[1] != self.layout.dim:
            raise ValueError(f"expected z of shape [B, {self.layout.dim}], got {tuple(z.shape)}")

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z)
        logdet = z.new_zeros(z.shape[0])
        for layer in self.layers:
            z, ld = layer(z)
            logdet = logdet + ld
        return z, logdet

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z)
        logdet = z.new_zeros(z.shape[0])
        for layer in reversed(self.layers):
            z, ld = layer.inverse(z)
            logdet = logdet + ld
        return z, logdet


class SequentialFlow(nn.Module):
    """Composition T = f_n o ... o f_1 of modules with forward/inverse -> (out, logdet[B]).

    forward applies f_1 first; inverse undoes them in reverse order. log-dets add (chain rule).
    """

    def __init__(self, *flows: nn.Module | Iterable[nn.Module]) -> None:
        super().__init__()
        if len(flows) == 1 and not isinstance(flows[0], nn.Module):
            flows = tuple(flows[0])
        for f in flows:
            if not (callable(getattr(f, "forward", None)) and callable(getattr(f, "inverse", None))):
                raise TypeError(f"{type(f).__name__} lacks forward/inverse")
        self.flows = nn.ModuleList(flows)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for f in self.flows:
            x, ld = f(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = y.new_zeros(y.shape[0])
        for f in reversed(self.flows):
            y, ld = f.inverse(y)
            logdet = logdet + ld
        return y, logdet
