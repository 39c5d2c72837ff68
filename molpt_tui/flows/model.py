"""The learned flow L: a stack of coupling layers, composed by ``base.Composite``.

Each layer follows the ``base.Transform`` contract, so the stack's log-det is the sum of the
layers' and its inverse undoes them in reverse order, at the cost of one conditioner pass per
layer in either direction.
"""
from __future__ import annotations

import torch

from .base import Composite
from .coupling import CONDITIONERS, TRANSFORMS, CouplingLayer, mask_schedule
from .layout import Layout


class FlowModel(Composite):
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
        if conditioner not in CONDITIONERS:
            raise ValueError(f"conditioner must be one of {CONDITIONERS}, got {conditioner!r}")
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        if n_layers < 1:
            raise ValueError("n_layers must be >= 1")
        super().__init__(
            *(
                CouplingLayer(
                    layout, mask, conditioner=conditioner, transform=transform, hidden=hidden,
                    n_heads=n_heads, n_blocks=n_blocks, ff_mult=ff_mult, n_bins=n_bins, tail_bound=tail_bound,
                    max_log_scale=max_log_scale, circular_shift=circular_shift,
                )
                for mask in mask_schedule(layout, n_layers)
            )
        )
        self.layout = layout

    def _check(self, z: torch.Tensor) -> None:
        if z.dim() != 2 or z.shape[1] != self.layout.dim:
            raise ValueError(f"expected z of shape [B, {self.layout.dim}], got {tuple(z.shape)}")

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z)
        return super().forward(z)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z)
        return super().inverse(z)
