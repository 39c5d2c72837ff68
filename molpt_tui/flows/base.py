"""Invertible maps and how they compose (after nflows' ``Transform`` / ``CompositeTransform`` /
``InverseTransform`` and zuko's small composable transforms).

The contract every piece of the cross-temperature map follows:

    forward(x) -> (y, logdet)      inverse(y) -> (x, logdet)

``logdet`` has one entry per sample and is log|det J| of the direction that was called, so at
corresponding points the two log-dets are negatives of each other. The loss and the flow-swap
acceptance use both directions, so both must be exact.

Representations (Cartesian x [B, N, 3] <-> z [B, D]) are not bijections of the full space: they
drop the six rigid-body degrees of freedom, and their log-det is that of the reduced coordinates
(see ``internal`` and ``cartesian``). Composition is unaffected: the chain rule holds on the
reduced space just the same.

``compose`` is the one place where maps are chained and log-dets summed; ``Composite``,
``Inverse`` and ``Transport`` are built on it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

__all__ = ["Composite", "InParameterDtype", "Inverse", "Transform", "compose"]

Step = Callable[[Tensor], tuple[Tensor, Tensor]]


class Transform(nn.Module):
    """An invertible map with exact log-determinants in both directions (see the module doc)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    if TYPE_CHECKING:
        # nn.Module types __call__ as returning Any; a transform's call is its forward.
        def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]: ...


def compose(x: Tensor, steps: Iterable[Step]) -> tuple[Tensor, Tensor]:
    """Apply ``steps`` in order; the log-det is the sum of theirs (chain rule).

    The first log-det is taken as it is rather than added to zeros: the value is the same, and
    no dtype is imposed, so a float32 latent map behind a float64 representation keeps the
    precision its own pieces produced. With no steps this is the identity.
    """
    logdet: Tensor | None = None
    for step in steps:
        x, ld = step(x)
        logdet = ld if logdet is None else logdet + ld
    if logdet is None:
        logdet = x.new_zeros(x.shape[0])
    return x, logdet


class Composite(Transform):
    """T = t_n o ... o t_1: forward applies t_1 first, inverse undoes t_n first.

    ``Composite(t1, t2, ...)`` names the steps 0, 1, ... (state_dict keys ``0.*``, ``1.*``);
    ``Composite(harmonic=h, flow=f)`` names them, in the order given. The children of a
    Composite are its steps, as in ``nn.Sequential``, so subclasses register no other modules.
    """

    def __init__(self, *transforms: Transform, **named: Transform) -> None:
        super().__init__()
        if transforms and named:
            raise TypeError("Composite takes either positional or named transforms, not both")
        items = named.items() if named else ((str(i), t) for i, t in enumerate(transforms))
        for name, t in items:
            if not isinstance(t, Transform):
                raise TypeError(f"{type(t).__name__} is not a Transform")
            self.add_module(name, t)

    def __iter__(self) -> Iterator[Transform]:
        return (cast(Transform, t) for t in self._modules.values())

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, key: int | str) -> Transform:
        if isinstance(key, str):
            return cast(Transform, self._modules[key])
        return list(self)[key]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return compose(x, self)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return compose(y, [t.inverse for t in reversed(list(self))])


class Inverse(Transform):
    """T^-1 as a transform: forward and inverse of ``transform`` swapped."""

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(x)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform(y)


class InParameterDtype(Transform):
    """``transform`` evaluated in the dtype of its parameters, results in the caller's dtype.

    The learned flow trains in float32 while the representation needs float64 (NeRF placement
    and bond standardisation lose digits in float32); this is the boundary between the two.
    Log-dets are summed inside, in the flow's dtype, and cast once on the way out. A transform
    without parameters runs in ``default``.
    """

    def __init__(self, transform: Transform, default: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.transform = transform
        self.default = default

    @property
    def dtype(self) -> torch.dtype:
        for p in self.transform.parameters():
            return p.dtype
        return self.default

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, ld = self.transform(x.to(self.dtype))
        return y.to(x.dtype), ld.to(x.dtype)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x, ld = self.transform.inverse(y.to(self.dtype))
        return x.to(y.dtype), ld.to(y.dtype)
