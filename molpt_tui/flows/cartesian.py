"""Aligned Cartesian coordinates: the 6 rigid-body DOF removed exactly, everything else Cartesian.

Kept as the comparison representation (the old prototype worked in Cartesian space). Three
bonded reference atoms ref0-ref1-ref2 near the graph centre define the frame: ref0 at the
origin, ref1 on +x, ref2 in the xy-plane with y > 0. The flow dims are x of ref1, (x, y) of
ref2 and (x, y, z) of every other atom: 3N - 6 dims of kind 'cart', standardised per coordinate.

Volume element: with x = R c + t (t = position of ref0, R a rotation, c canonical coordinates),
ref1 = t + R (x1, 0, 0) is in spherical coordinates about ref0 (x1^2 dx1 dOmega), ref2 is in
cylindrical coordinates about the ref0->ref1 axis (|y2| dx2 dy2 dpsi, psi the last rotation),
and every other atom is only rigidly rotated and translated (Jacobian 1). dOmega dpsi is the
Haar measure of SO(3), so

    log|det dx_reduced/dz| = sum log std + 2 log|x1| + log|y2|.

Tokens: one per atom except ref0 (which owns no dim), in the Z-matrix ``atom_order`` of the
same molecule, so that Cartesian and internal flows see atoms in the same order.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ..errors import UserError
from .internal import _MIN_STD, FittedRepresentation, build_zmatrix
from .layout import Layout

__all__ = ["AlignedCartesian", "FixedBondsUnsupported", "align_to_frame"]


class FixedBondsUnsupported(UserError, NotImplementedError):
    """Aligned Cartesian coordinates have no bond-length coordinate to hold fixed."""


def align_to_frame(x: Tensor, i0: int, i1: int, i2: int) -> Tensor:
    """x [B, N, 3] in the frame with atom i0 at the origin, i1 on +x and i2 in the xy-plane (y > 0)."""
    y = x - x[:, i0 : i0 + 1]
    e1 = y[:, i1]
    e1 = e1 / torch.linalg.vector_norm(e1, dim=-1, keepdim=True)
    v = y[:, i2]
    u = v - (v * e1).sum(-1, keepdim=True) * e1
    e2 = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)
    e3 = torch.linalg.cross(e1, e2)
    rot = torch.stack([e1, e2, e3], dim=-2)  # rows are the new axes
    return y @ rot.transpose(-1, -2)


class AlignedCartesian(FittedRepresentation):
    """Cartesian x [B, N, 3] (nm) <-> standardised aligned Cartesian coordinates z [B, 3N-6]."""

    ref_idx: Tensor
    order_idx: Tensor
    dim_src: Tensor

    def __init__(self, n_atoms: int, refs: tuple[int, int, int], atom_order: Sequence[int]) -> None:
        super().__init__()
        self.n_atoms = int(n_atoms)
        ref0, ref1, ref2 = (int(r) for r in refs)
        self.refs = (ref0, ref1, ref2)
        self.atom_order = tuple(int(a) for a in atom_order)
        if self.atom_order[:3] != self.refs or sorted(self.atom_order) != list(range(self.n_atoms)):
            raise ValueError("atom_order must be a permutation of all atoms starting with the three refs")

        atom_of_dim, slot_of_dim, src = [], [], []
        for tok, atom in enumerate(self.atom_order[1:]):
            n_slots = 1 if atom == ref1 else 2 if atom == ref2 else 3
            for s in range(n_slots):
                atom_of_dim.append(tok)
                slot_of_dim.append(s)
                src.append(3 * atom + s)
        self.layout = Layout(tuple(atom_of_dim), tuple(slot_of_dim), ("cart",) * len(src), self.n_atoms - 1)
        self.token_atoms = self.atom_order[1:]
        self.dim = len(src)
        # Positions in z of x1 (ref1) and y2 (ref2), the two dims that enter the volume element.
        self._ix1 = src.index(3 * ref1)
        self._iy2 = src.index(3 * ref2 + 1)

        self.register_buffer("ref_idx", torch.tensor(self.refs, dtype=torch.long))
        self.register_buffer("order_idx", torch.tensor(self.atom_order, dtype=torch.long))
        self.register_buffer("dim_src", torch.tensor(src, dtype=torch.long))
        self.register_buffer("z_mean", torch.zeros(self.dim, dtype=torch.float64))
        self.register_buffer("z_std", torch.ones(self.dim, dtype=torch.float64))
        self._freeze_topology()

    @classmethod
    def from_topology(
        cls,
        n_atoms: int,
        bonds: Sequence[tuple[int, int]],
        elements: Sequence[str],
        fixed_bonds: Iterable[tuple[int, int]] = (),
    ) -> AlignedCartesian:
        """Reference atoms and atom order from the same bond-graph analysis as ``ICRepresentation``.

        ``fixed_bonds`` must be empty: a bond length is not a coordinate here, so holding it
        fixed would need a mixed representation; use ``ICRepresentation`` for constrained data.
        """
        if list(fixed_bonds):
            raise FixedBondsUnsupported(
                "the aligned Cartesian representation cannot hold constrained (X-H) bonds at a "
                "fixed length; use the internal-coordinate representation, or data simulated "
                "without constraints"
            )
        zm = build_zmatrix(n_atoms, [(int(i), int(j)) for i, j in bonds], elements)
        return cls(n_atoms, zm.roots, zm.atom_order)

    # ------------------------------------------------------------------ helpers

    def canonical(self, x: Tensor) -> Tensor:
        return align_to_frame(x, *self.refs)

    def _stats(self, ref: Tensor) -> tuple[Tensor, Tensor]:
        return (
            self.z_mean.to(device=ref.device, dtype=ref.dtype),
            self.z_std.to(device=ref.device, dtype=ref.dtype),
        )

    def _frame_logdet(self, c_flat: Tensor, ref: Tensor) -> Tensor:
        """log|det dx_reduced/dz| from the reduced canonical coordinates [B, D]."""
        _, std = self._stats(ref)
        x1, y2 = c_flat[:, self._ix1], c_flat[:, self._iy2]
        return 2.0 * torch.log(torch.abs(x1)) + torch.log(torch.abs(y2)) + torch.log(std).sum()

    # ------------------------------------------------------------------ public maps

    @torch.no_grad()
    def fit(self, x: Tensor) -> AlignedCartesian:
        """Per-coordinate mean/std of the aligned coordinates of x [M, N, 3]."""
        c = self.canonical(self._fit_input(x))
        vals = c.reshape(c.shape[0], -1)[:, self.dim_src]
        self.z_mean.copy_(vals.mean(0))
        if vals.shape[0] > 1:
            self.z_std.copy_(vals.std(0, unbiased=False).clamp_min(_MIN_STD))
        self._mark_fitted()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, N, 3] nm -> (z [B, 3N-6], log|det dz/dx_reduced| [B])."""
        self._check_fitted()
        c = self.canonical(x).reshape(x.shape[0], -1)[:, self.dim_src]
        mean, std = self._stats(c)
        return (c - mean) / std, -self._frame_logdet(c, c)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z [B, 3N-6] -> (x [B, N, 3] nm in the canonical frame, log|det dx_reduced/dz| [B])."""
        self._check_fitted()
        mean, std = self._stats(z)
        c = z * std + mean
        x = z.new_zeros(z.shape[0], 3 * self.n_atoms).index_copy(1, self.dim_src, c)
        return x.reshape(z.shape[0], self.n_atoms, 3), self._frame_logdet(c, z)

    def extra_repr(self) -> str:
        return f"n_atoms={self.n_atoms}, dim={self.dim}, refs={self.refs}"
