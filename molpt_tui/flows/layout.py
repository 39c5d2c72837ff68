"""Layout of the flow's coordinate vector z: which atom, which slot, periodic or not.

A representation (internal or aligned Cartesian coordinates) produces z of shape [B, D] and
describes it with a Layout; flow layers read the layout to choose transforms (circular for
periodic dims) and the transformer conditioner groups dims into atom tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("bond", "angle", "torsion", "cart")


@dataclass(frozen=True)
class Layout:
    atom_of_dim: tuple[int, ...]   # token (atom) index of each dim, 0 <= a < n_tokens
    slot_of_dim: tuple[int, ...]   # position of the dim within its token, 0 <= s < 3
    kind_of_dim: tuple[str, ...]   # one of KINDS
    n_tokens: int

    def __post_init__(self) -> None:
        d = len(self.atom_of_dim)
        if not (len(self.slot_of_dim) == len(self.kind_of_dim) == d):
            raise ValueError("layout fields differ in length")
        if any(k not in KINDS for k in self.kind_of_dim):
            raise ValueError(f"unknown kind in layout; allowed: {KINDS}")

    @property
    def dim(self) -> int:
        return len(self.atom_of_dim)

    @property
    def periodic(self) -> torch.Tensor:
        """Bool [D]: torsions live on the circle [-pi, pi)."""
        return torch.tensor([k == "torsion" for k in self.kind_of_dim], dtype=torch.bool)

    def index_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.tensor(self.atom_of_dim, dtype=torch.long), torch.tensor(self.slot_of_dim, dtype=torch.long))
