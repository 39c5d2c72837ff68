"""The contract every energy engine meets (the OpenMM bridge and the torch force field).

Callers (the trainer, ``check-energy``, benchmarks) hold an ``EnergyEngine`` and use nothing
else of it, so engines can be swapped without anyone probing for attributes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

# "mixed": single-precision forces with double accumulation (OpenMM's CPU and OpenCL platforms).
Precision = Literal["double", "mixed", "single"]


@runtime_checkable
class EnergyEngine(Protocol):
    """U(x) in kJ/mol for a batch x [B, N, 3] in nm, differentiable with dU/dx = -F.

    A configuration that cannot be evaluated (non-finite coordinates or energy) gives +inf with
    a zero gradient, never NaN or a stale value, and is counted in ``n_nonfinite``.
    """

    @property
    def name(self) -> str:
        """Short engine kind: "openmm" or "torch"."""
        ...

    @property
    def description(self) -> str:
        """One line for logs and summaries, e.g. "openmm (CPU, 2 worker processes)"."""
        ...

    @property
    def device(self) -> torch.device:
        """Where ``energy`` wants its input; other devices work but cost a copy."""
        ...

    @property
    def precision(self) -> Precision:
        """The arithmetic of the energies and forces, which sets how closely they match OpenMM Reference."""
        ...

    @property
    def compiled(self) -> bool:
        """Whether evaluation runs compiled kernels (the first evaluation then waits for a compiler)."""
        ...

    @property
    def compile_note(self) -> str:
        """Why kernels that could have been compiled are not ("" when nothing to say)."""
        ...

    @property
    def n_atoms(self) -> int: ...

    @property
    def n_nonfinite(self) -> int:
        """Configurations evaluated so far that came back +inf."""
        ...

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """U [B] in kJ/mol of x [B, N, 3] in nm; differentiable."""
        ...

    def warm_up(self, x: torch.Tensor, log: Callable[[str], None], *, without_grad: bool = True) -> None:
        """Do now the one-time work of a first evaluation of batches like ``x`` (compiling kernels,
        with forces and, unless ``without_grad`` is False, without), announcing waits through ``log``."""
        ...

    def close(self) -> None:
        """Release worker processes and contexts; idempotent."""
        ...
