"""The full cross-temperature map T in Cartesian coordinates.

    T = R^-1 o L o H o R        T^-1 = R^-1 o H^-1 o L^-1 o R

R: representation (internal or aligned Cartesian coordinates, float64 for accuracy),
H: harmonic temperature map (fixed, from cold-data statistics), L: learned flow (float32,
identity at start). H and L run together in the flow's dtype (``InParameterDtype``). Every
piece returns its exact log|det|, so log|det J_T(x)| on the 3N-6 internal degrees of freedom
is the plain sum. Outputs sit in the representation's canonical frame; energies are invariant
to rigid motions, so that is all the loss needs.
"""
from __future__ import annotations

from typing import cast

from torch import Tensor

from .base import Composite, InParameterDtype, Transform, compose

__all__ = ["Transport"]


class Transport(Transform):
    """T and T^-1 between the cold and hot ensembles; ``harmonic`` may be None (H = identity).

    This is ``Composite(R, latent, Inverse(R))`` with R owned once: that Composite would hold
    the representation twice and store its buffers twice in every checkpoint. state_dict keys:
    ``representation.*``, ``latent.transform.harmonic.*``, ``latent.transform.flow.*``.
    """

    representation: Transform
    latent: InParameterDtype

    def __init__(self, representation: Transform, harmonic: Transform | None, flow: Transform) -> None:
        super().__init__()
        self.representation = representation
        inner = Composite(flow=flow) if harmonic is None else Composite(harmonic=harmonic, flow=flow)
        self.latent = InParameterDtype(inner)

    @property
    def _inner(self) -> Composite:
        return cast(Composite, self.latent.transform)

    @property
    def flow(self) -> Transform:
        """The learned flow L (what the optimiser trains)."""
        return self._inner["flow"]

    @property
    def harmonic(self) -> Transform | None:
        return self._inner["harmonic"] if "harmonic" in self._inner._modules else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Cold -> hot: x [B, N, 3] nm -> (T(x), log|det J_T(x)|)."""
        rep = self.representation
        return compose(x, (rep, self.latent, rep.inverse))

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Hot -> cold: y -> (T^-1(y), log|det J_T^-1(y)|)."""
        rep = self.representation
        return compose(y, (rep, self.latent.inverse, rep.inverse))

    def canonical(self, x: Tensor) -> Tensor:
        """x moved to the representation's frame (what T^-1(T(x)) should return)."""
        z, _ = self.representation(x)
        return self.representation.inverse(z)[0]
