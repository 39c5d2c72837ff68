"""Batched, differentiable potential energy in PyTorch, built from an OpenMM ``System``.

The flow's loss needs U(x) and dU/dx for whole batches of configurations. Going through an
OpenMM Context means one ``setPositions``/``getState`` round trip per configuration; this engine
evaluates the same functional forms for a batch [B, N, 3] at once, on CPU or GPU.

What it supports is decided in :mod:`torch_support` (anything else raises
:class:`UnsupportedSystemError`; use ``engine = "openmm"`` for those); how the System becomes
kernel constants is :mod:`openmm_forces`; the kernels are :mod:`torch_kernels`; when ``auto``
takes this engine is :func:`molpt_tui.physics.engines.prefer_torch`.

The GB terms run over *all* pairs, exceptions included, as OpenMM's ParticlePairNoExclusions
terms do; only the NonbondedForce sees exceptions.

Energies and exact gradients come from the kernels (analytic for the pair terms), chunk by chunk
over the batch; autograd holds only the [B, N, 3] gradient between forward and backward (see
:class:`_BatchedEnergy`). The price is that second derivatives are not available (the backward
is once-differentiable).

With ``compile="auto"`` (the default) the kernels go through ``torch.compile`` when a compiler
for the device is present, which fuses each pass into one loop: about 5x faster than the eager
kernels on CPU. The first call compiles (seconds; cached on disk for later runs). If compiling
fails, the engine warns, says so in :attr:`TorchEnergy.compile_note` and runs eager.

On a CPU shared with other jobs, multi-threaded torch can be many times slower than one thread
(every kernel waits for its slowest thread); the benchmark times both, and callers that own
the process may want ``torch.set_num_threads`` set to the cores they really have.
"""
from __future__ import annotations

import math
import os
import shutil
import time
import types
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from ..errors import first_error_line
from .engine_protocol import Precision
from .openmm_forces import read_terms
from .torch_kernels import Terms, energy_and_grad
from .torch_support import CompilerUnavailableError, UnsupportedSystemError, require_supported

CompileMode = Literal["auto", "on", "off"]
# (energy [b], gradient [3, N, b] or None) of coordinates [3, N, b]
Kernel = Callable[[torch.Tensor], tuple[torch.Tensor, "torch.Tensor | None"]]

# What a caller shows while the first call compiles: measured 20-40 s on 2 CPU cores.
COMPILE_WAIT = ("torch energy kernels: compiling for this system, or loading them from torch's cache "
                "(20-40 s the first time)")

__all__ = ["COMPILE_WAIT", "TorchEnergy", "UnsupportedSystemError", "compiler_available"]


class _BatchedEnergy(torch.autograd.Function):
    """U(x) whose backward returns the gradient the kernels computed alongside the energy.

    Autograd never records the pairwise arrays: what it holds between forward and backward is
    the [B, N, 3] gradient alone.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, engine: TorchEnergy, need_grad: bool) -> torch.Tensor:
        energy, grad = engine._evaluate(x, need_grad)
        if need_grad:
            ctx.save_for_backward(grad)
        return energy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_energy: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (grad,) = ctx.saved_tensors
        return grad_energy[:, None, None] * grad, None, None


def compiler_available(device: str | torch.device) -> tuple[bool, str]:
    """Whether torch.compile can generate kernels for ``device`` here, and if not, why."""
    kind = torch.device(device).type
    if kind == "cpu":
        compilers = [os.environ.get("CXX", ""), "c++", "g++", "clang++"]
        if not any(name and shutil.which(name) for name in compilers):
            return False, "no C++ compiler on PATH (torch.compile's CPU backend needs one)"
        return True, ""
    if kind == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False, "triton is not installed (torch.compile's GPU backend needs it)"
        return True, ""
    return False, f"torch.compile is not used on {kind}"


class TorchEnergy:
    """Batched potential energy U(x) in kJ/mol for configurations x [B, N, 3] in nm."""

    name = "torch"

    def __init__(self, terms: Terms, device: str | torch.device, dtype: torch.dtype,
                 chunk_elements: int | None = None, compile: CompileMode = "auto") -> None:
        if compile not in ("auto", "on", "off"):
            raise ValueError(f"compile must be 'auto', 'on' or 'off', not {compile!r}")
        self._terms = terms
        self.n_atoms = terms.n_atoms
        self.device = torch.device(device)
        self.dtype = dtype
        # Elements of one [N, N, chunk] matrix; None: chosen per device in _chunk_size.
        self.chunk_elements = None if chunk_elements is None else int(chunk_elements)
        self.compile_mode = compile
        usable, why_not = compiler_available(self.device)
        if compile == "on" and not usable:
            raise CompilerUnavailableError(f"energy.compile = \"on\" but {why_not}; set it to \"auto\" or \"off\"")
        self.compiled = compile != "off" and usable
        self.compile_note = why_not if compile == "auto" and not usable else ""
        self._kernels: dict[bool, Kernel] = {}
        self._itemsize = torch.empty((), dtype=dtype).element_size()
        self.n_nonfinite = 0

    @property
    def description(self) -> str:
        dtype_name = str(self.dtype).replace("torch.", "")
        mode = "compiled" if self.compiled else "eager"
        return f"torch ({self.device.type}, {dtype_name}, {mode})"

    @property
    def precision(self) -> Precision:
        return "double" if self.dtype == torch.float64 else "single"

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_system(cls, system: Any, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                    chunk_elements: int | None = None, compile: CompileMode = "auto") -> TorchEnergy:
        """The engine for an openmm.System; UnsupportedSystemError names what it cannot evaluate."""
        require_supported(system)
        return cls(read_terms(system, device, dtype), device, dtype, chunk_elements, compile)

    # ---- evaluation ------------------------------------------------------------------------

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """U [B] in kJ/mol of x [B, N, 3] in nm; differentiable (forces are -dU/dx).

        Rows whose coordinates or energy are not finite come back as +inf with a zero gradient,
        so a masked or clamped loss does not turn them into NaN parameter updates.
        """
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x))
        if x.dim() != 3 or x.shape[1] != self.n_atoms or x.shape[2] != 3:
            raise ValueError(f"expected coordinates of shape [B, {self.n_atoms}, 3], got {tuple(x.shape)}")
        xe = x.to(device=self.device, dtype=self.dtype)
        need_grad = torch.is_grad_enabled() and xe.requires_grad
        result: torch.Tensor = _BatchedEnergy.apply(xe, self, need_grad)  # type: ignore[no-untyped-call]
        return result

    __call__ = energy

    def warm_up(self, x: torch.Tensor, log: Callable[[str], None], *, without_grad: bool = True) -> None:
        """Compile the kernels now for batches like ``x`` (with forces, and without unless
        ``without_grad`` is False), so that the wait is announced and no later call pays it."""
        if not self.compiled:
            return
        log(COMPILE_WAIT)
        started = time.perf_counter()
        probe = x.detach().to(device=self.device, dtype=self.dtype).requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(self.energy(probe).sum(), probe)
        if without_grad:
            with torch.no_grad():
                self.energy(probe[:2])
        state = "compiled" if self.compiled else "not compiled"
        log(f"torch energy kernels {state} in {time.perf_counter() - started:.1f} s")

    def close(self) -> None:
        """Nothing to release; present so all engines can be closed the same way."""

    def _chunk_size(self) -> int:
        """Most configurations evaluated in one kernel call."""
        pairs = self.n_atoms * self.n_atoms
        if self.chunk_elements is not None:
            return max(1, self.chunk_elements // pairs)
        if self.device.type == "cuda":
            # A GPU wants large kernels; 2**24 elements keep even the eager fallback's ~40 live
            # matrices within about 5 GiB in float64.
            return max(1, 2**24 // pairs)
        # On CPU a matrix that stays near the L2 cache is fastest: for Ala-Ala in OBC1 (compiled,
        # one thread) 1 MiB per matrix beat 2 MiB by 2x at batch 4096 and 256 KiB by 1.25x. The
        # SIMD lanes run over the batch, so keep 16 configurations unless one matrix would then
        # pass 64 MiB (about 700 atoms in float64).
        per_config = pairs * self._itemsize
        return max(1, (1 << 20) // per_config, min(16, (64 << 20) // per_config))

    def _kernel(self, with_grad: bool) -> Kernel:
        kernel = self._kernels.get(with_grad)
        if kernel is None:
            terms = self._terms

            def eager(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
                return energy_and_grad(x, terms, with_grad)

            kernel = eager
            if self.compiled:
                # Dynamo keeps its compiled variants per code object, at most 8 of them, and
                # checks their guards on every call. A code object of this engine's own keeps its
                # kernels apart from those of every other engine in the process (a test session
                # or a benchmark builds dozens), so none evicts or slows another.
                own = types.FunctionType(eager.__code__.replace(), eager.__globals__, eager.__name__,
                                         eager.__defaults__, eager.__closure__)
                compiled = torch.compile(own, fullgraph=True)

                def kernel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
                    # Only the batch dimension is dynamic, from the first call: the trainer's
                    # batches, a last partial batch and evaluation chunks share one kernel, while
                    # the atom count stays a constant the compiler can plan loops around. A
                    # kernel compiled with a symbolic atom count (dynamic=True) ran the 273-atom
                    # helix 2.5x slower when its first call had been a 23-atom molecule.
                    torch._dynamo.maybe_mark_dynamic(x, 2)
                    result: tuple[torch.Tensor, torch.Tensor | None] = compiled(x)
                    return result
            self._kernels[with_grad] = kernel
        return kernel

    def _run(self, x: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.compiled:
            return self._kernel(with_grad)(x)
        try:
            return self._kernel(with_grad)(x)
        except Exception as exc:  # the compiler is an external toolchain; never lose a run to it
            if self.compile_mode == "on":
                raise
            self.compiled = False
            self._kernels.clear()
            self.compile_note = f"torch.compile failed ({type(exc).__name__}: {first_error_line(exc)}); running eager"
            warnings.warn(self.compile_note, RuntimeWarning, stacklevel=3)
            return self._kernel(with_grad)(x)

    def _evaluate(self, x: torch.Tensor, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = x.detach()
        batch = x.shape[0]
        if batch == 0:
            return x.new_zeros(0), (torch.zeros_like(x) if need_grad else None)
        # Equal chunks: a tiny last chunk would run with mostly empty SIMD lanes.
        n_chunks = max(1, -(-batch // self._chunk_size()))
        step = max(1, -(-batch // n_chunks))
        energies: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        with torch.no_grad():
            for start in range(0, batch, step):
                uc, gc = self._run(x[start:start + step].permute(2, 1, 0).contiguous(), need_grad)
                energies.append(uc)
                if gc is not None:
                    grads.append(gc.permute(2, 1, 0))
        energy = energies[0] if len(energies) == 1 else torch.cat(energies)
        grad = (grads[0] if len(grads) == 1 else torch.cat(grads)) if need_grad else None
        # Non-finite coordinates reach the energy as NaN (see energy_and_grad).
        bad = ~torch.isfinite(energy)
        n_bad = int(bad.sum())
        if n_bad:
            self.n_nonfinite += n_bad
            energy = torch.where(bad, torch.full_like(energy, math.inf), energy)
            if grad is not None:
                grad = torch.where(bad[:, None, None], torch.zeros_like(grad), grad)
        return energy, grad
