"""Coupling layers: transform one part of z conditioned on the rest.

A coupling layer with binary mask m (True = transformed) maps
    z'[~m] = z[~m],   z'[m] = tau(z[m]; theta(z[~m]))
with tau elementwise (spline or affine). The Jacobian is triangular, log|det| is the sum of the
elementwise log-slopes, and the inverse costs exactly one conditioner pass, like the forward,
because theta only reads z[~m], which both directions share.

Mask schedule (``mask_schedule``)
---------------------------------
Layers cycle through four masks, layer l using entry l mod 4:

    0: transform dims of even tokens (atoms),  condition on odd tokens
    1: transform dims of odd tokens,           condition on even tokens
    2: transform torsions (periodic dims),     condition on bonds/angles/Cartesians
    3: transform non-periodic dims,            condition on torsions

Layers 0 and 1 together transform every dim, so any n_layers >= 2 covers all dims; 2 and 3
let coordinates of the same atom condition one another. A partition that would leave one side
empty for this layout is replaced by the next fallback: atom parity -> dim parity for a
single-token layout; torsions/non-torsions -> slot 0 vs slots 1-2 (e.g. x vs y,z for Cartesians)
-> dim parity.
"""
from __future__ import annotations

import torch
from torch import nn

from . import splines
from .base import Transform
from .conditioners import MLPConditioner, TransformerConditioner
from .layout import Layout
from .spline_kernels import EAGER, SplineKernels

CONDITIONERS = ("transformer", "mlp")
TRANSFORMS = ("spline", "affine")


def _first_proper(*candidates: torch.Tensor) -> torch.Tensor:
    for mask in candidates:
        if mask.any() and not mask.all():
            return mask
    raise ValueError("layout has a single dim; a coupling flow needs at least two")


def mask_schedule(layout: Layout, n_layers: int) -> list[torch.Tensor]:
    """Bool masks [D] (True = transformed in that layer) for n_layers coupling layers."""
    if layout.dim < 2:
        raise ValueError("layout has a single dim; a coupling flow needs at least two")
    atom, slot = layout.index_tensors()
    dim_parity = torch.arange(layout.dim) % 2 == 0
    by_atom = _first_proper(atom % 2 == 0, dim_parity)
    by_kind = _first_proper(layout.periodic, slot == 0, dim_parity)
    cycle = [by_atom, ~by_atom, by_kind, ~by_kind]
    return [cycle[i % 4].clone() for i in range(n_layers)]


def params_per_dim(transform: str, n_bins: int) -> int:
    """Conditioner outputs per transformed dim.

    One width for all dims, so the transformer head can serve any slot of any token: the
    circular spline's 3K+1 (widths, heights, K derivatives, rotation); an interval spline uses
    the first 3K-1 of them, and a rotation uses the first of the affine pair. Unused outputs
    receive no gradient and stay at their zero init.
    """
    if transform == "spline":
        return splines.circular_spline_n_params(n_bins, shift=True)
    if transform == "affine":
        return 2
    raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")


class CouplingLayer(Transform):
    """One coupling layer over a Layout; builds its own conditioner.

    transform="spline": interval RQ spline on [-tail_bound, tail_bound] (identity tails) for
    non-periodic dims, circular RQ spline (+ rotation if circular_shift) for periodic dims.
    transform="affine": bounded-scale affine for non-periodic dims, rotation for periodic dims.
    """

    conditioner: nn.Module
    # Positions within the conditioner output of the non-periodic / periodic transformed dims,
    # and the dims of z they belong to.
    pos_lin: torch.Tensor
    pos_per: torch.Tensor
    idx_lin: torch.Tensor
    idx_per: torch.Tensor
    # What the splines run on while autograd records (training steps); everything under no_grad
    # runs the eager functions. Not state: a checkpoint is the same either way.
    training_kernels: SplineKernels = EAGER

    def __init__(
        self,
        layout: Layout,
        trans_mask: torch.Tensor,
        *,
        conditioner: str = "transformer",
        transform: str = "spline",
        hidden: int = 64,
        n_heads: int = 4,
        n_blocks: int = 2,
        ff_mult: int = 2,
        n_bins: int = 8,
        tail_bound: float = 5.0,
        max_log_scale: float = 2.0,
        circular_shift: bool = True,
        min_bin_width: float = splines.DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = splines.DEFAULT_MIN_BIN_HEIGHT,
        min_derivative: float = splines.DEFAULT_MIN_DERIVATIVE,
    ) -> None:
        super().__init__()
        if conditioner not in CONDITIONERS:
            raise ValueError(f"conditioner must be one of {CONDITIONERS}, got {conditioner!r}")
        self.transform = transform
        self.n_bins = n_bins
        self.tail_bound = float(tail_bound)
        self.max_log_scale = float(max_log_scale)
        self.circular_shift = circular_shift
        self.spline_kw = dict(min_bin_width=min_bin_width, min_bin_height=min_bin_height, min_derivative=min_derivative)
        n_par = params_per_dim(transform, n_bins)
        trans_mask = torch.as_tensor(trans_mask, dtype=torch.bool)
        if conditioner == "transformer":
            self.conditioner = TransformerConditioner(
                layout, trans_mask, n_par, hidden=hidden, n_heads=n_heads, n_blocks=n_blocks, ff_mult=ff_mult
            )
        else:
            self.conditioner = MLPConditioner(layout, trans_mask, n_par, hidden=hidden, n_blocks=n_blocks)
        periodic = layout.periodic[trans_mask]
        trans_idx = torch.nonzero(trans_mask).flatten()
        self.register_buffer("trans_mask", trans_mask, persistent=False)
        self.register_buffer("pos_lin", torch.nonzero(~periodic).flatten(), persistent=False)
        self.register_buffer("pos_per", torch.nonzero(periodic).flatten(), persistent=False)
        self.register_buffer("idx_lin", trans_idx[~periodic], persistent=False)
        self.register_buffer("idx_per", trans_idx[periodic], persistent=False)

    def _kernels(self) -> SplineKernels:
        return self.training_kernels if torch.is_grad_enabled() else EAGER

    def _lin(self, x: torch.Tensor, p: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform == "affine":
            return splines.affine_transform(x, p[..., 0], p[..., 1], inverse=inverse, max_log_scale=self.max_log_scale)
        k = self.n_bins
        return self._kernels().interval(
            x, p[..., :k], p[..., k : 2 * k], p[..., 2 * k : 3 * k - 1],
            inverse=inverse, tail_bound=self.tail_bound, **self.spline_kw,
        )

    def _per(self, x: torch.Tensor, p: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform == "affine":
            return splines.circular_shift(x, p[..., 0], inverse=inverse)
        k = self.n_bins
        shift = p[..., 3 * k] if self.circular_shift else None
        return self._kernels().circular(
            x, p[..., :k], p[..., k : 2 * k], p[..., 2 * k : 3 * k], shift, inverse=inverse, **self.spline_kw
        )

    def _transform(self, z: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.conditioner(z)
        out = z
        logdet = z.new_zeros(z.shape[0])
        for idx, pos, fn in ((self.idx_lin, self.pos_lin, self._lin), (self.idx_per, self.pos_per, self._per)):
            if idx.numel() == 0:
                continue
            y, ld = fn(z.index_select(1, idx), params.index_select(1, pos), inverse)
            out = out.index_copy(1, idx, y)
            logdet = logdet + ld.sum(dim=1)
        return out, logdet

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(z, inverse=False)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._transform(z, inverse=True)


def use_training_kernels(module: nn.Module, kernels: SplineKernels) -> int:
    """Set the spline functions of the training steps of every coupling layer in ``module``;
    returns how many layers have spline transforms (0: nothing to compile)."""
    n = 0
    for layer in module.modules():
        if isinstance(layer, CouplingLayer):
            layer.training_kernels = kernels
            n += layer.transform == "spline"
    return n
