"""The full cross-temperature map T in Cartesian coordinates.

    T = R^-1 o L o H o R

R: representation (internal or aligned Cartesian coordinates, float64 for accuracy),
H: harmonic temperature map (fixed, from cold-data statistics), L: learned flow (float32,
identity at start). Every piece returns its exact log|det|, so log|det J_T(x)| on the
3N-6 internal degrees of freedom is the plain sum. Outputs sit in the representation's
canonical frame; energies are invariant to rigid motions, so that is all the loss needs.
"""
from __future__ import annotations

import torch
from torch import nn


class Identity(nn.Module):
    def forward(self, z):
        return z, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)

    def inverse(self, z):
        return z, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)


class Transport(nn.Module):
    def __init__(self, representation: nn.Module, harmonic: nn.Module | None, flow: nn.Module):
        super().__init__()
        self.representation = representation
        self.harmonic = harmonic if harmonic is not None else Identity()
        self.flow = flow

    @property
    def flow_dtype(self) -> torch.dtype:
        for p in self.flow.parameters():
            return p.dtype
        return torch.float32

    def _latent_forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = z.dtype
        h, ld_h = self.harmonic(z.to(self.flow_dtype))
        out, ld_l = self.flow(h)
        return out.to(dtype), (ld_h + ld_l).to(dtype)

    def _latent_inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = z.dtype
        h, ld_l = self.flow.inverse(z.to(self.flow_dtype))
        out, ld_h = self.harmonic.inverse(h)
        return out.to(dtype), (ld_h + ld_l).to(dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cold -> hot: x [B, N, 3] nm -> (T(x), log|det J_T(x)|)."""
        z, ld_r = self.representation(x)
        z2, ld_m = self._latent_forward(z)
        y, ld_ri = self.representation.inverse(z2)
        return y, ld_r + ld_m + ld_ri

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hot -> cold: y -> (T^-1(y), log|det J_T^-1(y)|)."""
        z, ld_r = self.representation(y)
        z2, ld_m = self._latent_inverse(z)
        x, ld_ri = self.representation.inverse(z2)
        return x, ld_r + ld_m + ld_ri

    def canonical(self, x: torch.Tensor) -> torch.Tensor:
        """x moved to the representation's frame (what T^-1(T(x)) should return)."""
        z, _ = self.representation(x)
        return self.representation.inverse(z)[0]
