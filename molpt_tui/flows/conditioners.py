"""Conditioners: networks that read the untouched dims of a coupling layer and emit the
transform parameters for the transformed dims.

Both conditioners
* read *only* the conditioning dims (the transformed dims are never indexed), which is what
  makes the coupling Jacobian triangular and the inverse a single pass;
* feed periodic dims as (cos, sin) so the parameters are continuous across the +-pi cut;
* are deterministic: no dropout, no sampling, no fused "fast path" kernels whose numerics could
  differ between train() and eval() (attention is written out by hand for that reason);
* zero-initialise their last linear layer, so the emitted parameters are exactly 0 at init and
  every coupling layer starts as the exact identity.

Output shape: [B, n_transformed, n_params_per_dim], transformed dims in ascending dim order.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layout import Layout


def _zero_linear(n_in: int, n_out: int) -> nn.Linear:
    lin = nn.Linear(n_in, n_out)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def _masks(layout: Layout, trans_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    trans_mask = torch.as_tensor(trans_mask, dtype=torch.bool)
    if trans_mask.shape != (layout.dim,):
        raise ValueError(f"mask shape {tuple(trans_mask.shape)} != ({layout.dim},)")
    if not trans_mask.any() or trans_mask.all():
        raise ValueError("a coupling mask must transform some dims and condition on others")
    return trans_mask, ~trans_mask


class MLPConditioner(nn.Module):
    """Residual MLP on the flattened conditioning dims.

    hidden: width; n_blocks: residual blocks (Linear-SiLU-Linear) between input and head.
    """

    cond_lin_idx: torch.Tensor
    cond_per_idx: torch.Tensor

    def __init__(
        self,
        layout: Layout,
        trans_mask: torch.Tensor,
        n_params_per_dim: int,
        hidden: int = 128,
        n_blocks: int = 2,
    ) -> None:
        super().__init__()
        trans, cond = _masks(layout, trans_mask)
        periodic = layout.periodic
        self.register_buffer("cond_lin_idx", torch.nonzero(cond & ~periodic).flatten(), persistent=False)
        self.register_buffer("cond_per_idx", torch.nonzero(cond & periodic).flatten(), persistent=False)
        self.n_trans = int(trans.sum())
        self.n_params_per_dim = n_params_per_dim
        n_in = self.cond_lin_idx.numel() + 2 * self.cond_per_idx.numel()
        self.inp = nn.Linear(n_in, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(n_blocks)
        )
        self.head = _zero_linear(hidden, self.n_trans * n_params_per_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        ang = z.index_select(1, self.cond_per_idx)
        feats = torch.cat([z.index_select(1, self.cond_lin_idx), torch.cos(ang), torch.sin(ang)], dim=1)
        h = self.inp(feats)
        for block in self.blocks:
            h = h + block(h)
        out: torch.Tensor = self.head(F.silu(h))
        return out.view(z.shape[0], self.n_trans, self.n_params_per_dim)


class _Block(nn.Module):
    """Pre-LayerNorm transformer encoder block with hand-written attention (no dropout)."""

    def __init__(self, hidden: int, n_heads: int, ff_mult: int) -> None:
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden={hidden} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.ff1 = nn.Linear(hidden, ff_mult * hidden)
        self.ff2 = nn.Linear(ff_mult * hidden, hidden)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, c = h.shape
        hd = c // self.n_heads
        q, k, v = self.qkv(self.ln1(h)).view(b, t, 3, self.n_heads, hd).permute(2, 0, 3, 1, 4)
        att = torch.softmax((q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd)), dim=-1)
        h = h + self.proj((att @ v).transpose(1, 2).reshape(b, t, c))
        out: torch.Tensor = h + self.ff2(F.gelu(self.ff1(self.ln2(h))))
        return out


class TransformerConditioner(nn.Module):
    """Transformer over atom tokens ("transformer flow" conditioner).

    Token a = learned embedding of atom a + a linear map of its three coordinate slots. Each slot
    contributes 4 features: (value if non-periodic, cos, sin if periodic, visible flag); slots
    that are transformed in this layer, or that the atom does not have, are all-zero with
    visible = 0. A shared head maps every token to parameters for its three slots, from which
    the transformed dims pick theirs.
    """

    N_SLOT_FEATURES = 4
    lin_idx: torch.Tensor
    per_idx: torch.Tensor
    lin_cell: torch.Tensor
    per_cell: torch.Tensor
    trans_cell: torch.Tensor
    visible: torch.Tensor

    def __init__(
        self,
        layout: Layout,
        trans_mask: torch.Tensor,
        n_params_per_dim: int,
        hidden: int = 64,
        n_heads: int = 4,
        n_blocks: int = 2,
        ff_mult: int = 2,
    ) -> None:
        super().__init__()
        trans, cond = _masks(layout, trans_mask)
        if any(s < 0 or s > 2 for s in layout.slot_of_dim):
            raise ValueError("transformer conditioner needs slots in 0..2")
        periodic = layout.periodic
        atom, slot = layout.index_tensors()
        cell = atom * 3 + slot
        self.n_cells = 3 * layout.n_tokens
        self.n_tokens = layout.n_tokens
        self.n_params_per_dim = n_params_per_dim
        lin = cond & ~periodic
        per = cond & periodic
        self.register_buffer("lin_idx", torch.nonzero(lin).flatten(), persistent=False)
        self.register_buffer("per_idx", torch.nonzero(per).flatten(), persistent=False)
        self.register_buffer("lin_cell", cell[lin], persistent=False)
        self.register_buffer("per_cell", cell[per], persistent=False)
        self.register_buffer("trans_cell", cell[trans], persistent=False)
        visible = torch.zeros(self.n_cells)
        visible[cell[cond]] = 1.0
        self.register_buffer("visible", visible, persistent=False)

        self.embed = nn.Parameter(0.02 * torch.randn(layout.n_tokens, hidden))
        self.inp = nn.Linear(3 * self.N_SLOT_FEATURES, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, n_heads, ff_mult) for _ in range(n_blocks))
        self.ln_out = nn.LayerNorm(hidden)
        self.head = _zero_linear(hidden, 3 * n_params_per_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        zl = z.index_select(1, self.lin_idx)
        za = z.index_select(1, self.per_idx)
        grid = z.new_zeros(b, self.n_cells, self.N_SLOT_FEATURES)
        # out-of-place index_copy keeps the op differentiable; only conditioning dims are read
        grid = grid.index_copy(1, self.lin_cell, F.pad(zl.unsqueeze(-1), (0, 3)))
        grid = grid.index_copy(1, self.per_cell, F.pad(torch.stack([torch.cos(za), torch.sin(za)], -1), (1, 1)))
        flag = self.visible.to(z.dtype).view(1, -1, 1).expand(b, -1, -1)
        grid = torch.cat([grid[..., :3], flag], dim=-1)
        h = self.inp(grid.reshape(b, self.n_tokens, 3 * self.N_SLOT_FEATURES)) + self.embed
        for block in self.blocks:
            h = block(h)
        out: torch.Tensor = self.head(self.ln_out(h))
        return out.view(b, self.n_cells, self.n_params_per_dim).index_select(1, self.trans_cell)
