"""OpenMM energy bridge: U(x) in kJ/mol for a batch of configurations, differentiable in torch.

Each worker process owns one OpenMM Context built from the serialised System and evaluates a
contiguous chunk of the batch. We own the worker processes and close them on normal exit,
on errors and on Ctrl-C (workers ignore SIGINT and leave when their pipe closes), so a script
never hangs on a leftover pool and no orphan survives its parent.

Failure policy: a non-finite input or a configuration OpenMM cannot evaluate gives U = +inf
(never 0, never the previous value) and zero force, and is counted in `n_nonfinite`.
"""
from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..processes import (
    ignore_job_signals,
    run_before_multiprocessing_exit,
    serve_requests,
    start_worker,
    stop_workers,
)
from .engine_protocol import Precision
from .openmm_platforms import PlatformUnavailableError, available_platforms, make_context, precision_of

if TYPE_CHECKING:
    import torch

# Kept for molpt_tui.physics.data until it imports them from molpt_tui.processes.
__all__ = ["OpenMMBridge", "PlatformChoice", "choose_platform", "measure_platforms",
           "pick_platform"]

# --- evaluation core (runs in workers and in-process) -----------------------------------------


def _evaluate(context: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [B, N, 3] nm float64 -> (U [B] kJ/mol, F [B, N, 3] kJ/mol/nm)."""
    import openmm

    n = x.shape[0]
    energies = np.full(n, np.inf)
    forces = np.zeros_like(x)
    for i in range(n):
        xi = x[i]
        if not np.all(np.isfinite(xi)):
            continue
        try:
            context.setPositions(xi)
            state = context.getState(getEnergy=True, getForces=True)
        except (openmm.OpenMMException, ValueError, OverflowError):
            continue
        energy = state.getPotentialEnergy()._value  # kJ/mol (OpenMM's internal unit)
        fi = state.getForces(asNumpy=True)._value
        if np.isfinite(energy) and np.all(np.isfinite(fi)):
            energies[i] = energy
            forces[i] = fi
    return energies, forces


def _worker_main(conn: Connection, system_xml: str, platform: str) -> None:
    ignore_job_signals()
    try:
        context = make_context(system_xml, platform)
        conn.send(("ready", None))
    except Exception as exc:  # report, then leave
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    serve_requests(conn, lambda x: _evaluate(context, x))


# --- platform choice -------------------------------------------------------------------------

# (timings in microseconds per configuration, errors) of the platforms that were tried.
PlatformTimings = tuple[dict[str, float], dict[str, str]]
# How the bridge measures candidate platforms: (system XML, sample [B, N, 3], candidates) ->
# timings. Tests pass fixed numbers, so that no test depends on which platform is faster here.
PlatformMeasure = Callable[[str, np.ndarray, Sequence[str]], PlatformTimings]


@dataclass
class PlatformChoice:
    platform: str
    us_per_config: float
    reason: str


def measure_platforms(system_xml: str, sample: np.ndarray, candidates: Sequence[str],
                      repeats: int = 20) -> PlatformTimings:
    """Energy + forces time per configuration of this very system on each candidate platform."""
    timings: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name in candidates:
        try:
            ctx = make_context(system_xml, name)
            _evaluate(ctx, sample[:2])  # warm-up (kernel compilation on GPU platforms)
            t0 = time.perf_counter()
            reps = max(1, repeats)
            for _ in range(reps):
                _evaluate(ctx, sample[:1])
            timings[name] = (time.perf_counter() - t0) / reps * 1e6
            del ctx
        except Exception as exc:
            errors[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return timings, errors


def pick_platform(timings: Mapping[str, float], errors: Mapping[str, str], candidates: Sequence[str],
                  requested: str) -> PlatformChoice:
    """The fastest measured platform, with the reason shown to the user."""
    if not timings:
        raise PlatformUnavailableError(f"no usable OpenMM platform among {list(candidates)}: {dict(errors)}")
    best = min(timings, key=lambda name: timings[name])
    if requested == "auto":
        others = ", ".join(f"{k} {v:.0f} us" for k, v in sorted(timings.items(), key=lambda kv: kv[1]))
        reason = f"fastest measured per configuration ({others})"
    else:
        reason = f"requested ({timings[best]:.0f} us per configuration)"
    return PlatformChoice(best, timings[best], reason)


def choose_platform(system_xml: str, sample: np.ndarray, requested: str = "auto",
                    measure: PlatformMeasure | None = None) -> PlatformChoice:
    """Time energy+forces on each usable platform with this very system and keep the fastest.

    Measured here: 22-atom vacuum dipeptide 19 us (Reference) vs 245 us (CPU, 1 thread); the
    23-atom OBC1 dipeptide 1062 us (Reference) vs 660 us (CPU). A fixed rule would get one of
    them wrong, so we measure (a few ms at start-up). A requested platform is timed too: the
    number of worker processes follows from its cost per configuration.
    """
    candidates = available_platforms() if requested == "auto" else [requested]
    timings, errors = (measure or measure_platforms)(system_xml, sample, candidates)
    return pick_platform(timings, errors, candidates, requested)


# --- the bridge ------------------------------------------------------------------------------

_LIVE_BRIDGES: weakref.WeakSet[OpenMMBridge] = weakref.WeakSet()


def _close_all() -> None:
    for bridge in list(_LIVE_BRIDGES):
        bridge.close()


run_before_multiprocessing_exit(_close_all)


class OpenMMBridge:
    """Batched OpenMM energies. `n_workers=0` evaluates in this process (cheapest for tiny
    systems, where a pipe round trip costs more than the energy)."""

    name = "openmm"
    # OpenMM kernels are built when a Context is made, never on first use.
    compiled = False
    compile_note = ""

    def __init__(self, system: Any, platform: str = "auto", n_workers: int = 0,
                 sample_positions: np.ndarray | None = None, *, measure: PlatformMeasure | None = None) -> None:
        """``system``: an openmm.System or its XML. ``measure``: see :data:`PlatformMeasure`."""
        import openmm

        self.system_xml: str = system if isinstance(system, str) else openmm.XmlSerializer.serialize(system)
        deserialized = openmm.XmlSerializer.deserialize(self.system_xml)
        self.n_atoms: int = deserialized.getNumParticles()
        if sample_positions is None:
            sample_positions = np.random.default_rng(0).normal(0.0, 0.3, (3, self.n_atoms, 3))
        sample = np.asarray(sample_positions, dtype=np.float64).reshape(-1, self.n_atoms, 3)
        self.choice = choose_platform(self.system_xml, sample, platform, measure)
        self.platform = self.choice.platform
        self.n_workers = int(n_workers)
        self.n_nonfinite = 0
        self.n_evaluated = 0
        self._closed = False
        self._context: Any = None
        self._procs: list[BaseProcess] = []
        self._conns: list[Connection] = []
        if self.n_workers == 0:
            self._context = make_context(self.system_xml, self.platform)
        else:
            self._start_workers()
        _LIVE_BRIDGES.add(self)

    @property
    def precision(self) -> Precision:
        return precision_of(self.platform)

    @property
    def device(self) -> torch.device:
        import torch

        return torch.device("cpu")  # OpenMM reads positions from host memory

    @property
    def description(self) -> str:
        where = "in-process" if self.n_workers == 0 else f"{self.n_workers} worker processes"
        return f"openmm ({self.platform}, {where})"

    def _start_workers(self) -> None:
        try:
            for _ in range(self.n_workers):
                proc, conn = start_worker(_worker_main, self.system_xml, self.platform)
                self._procs.append(proc)
                self._conns.append(conn)
            for conn in self._conns:
                status, payload = conn.recv()
                if status != "ready":
                    raise RuntimeError(f"OpenMM worker failed to start: {payload}")
            run_before_multiprocessing_exit(_close_all)
        except BaseException:
            self.close()
            raise

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x [B, N, 3] nm -> (U [B] kJ/mol, F [B, N, 3] kJ/(mol nm)), float64 numpy."""
        if self._closed:
            raise RuntimeError("OpenMMBridge is closed")
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 3 or x.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"expected positions of shape [B, {self.n_atoms}, 3], got {list(x.shape)}")
        if self.n_workers == 0 or x.shape[0] < 2:
            if self._context is None:
                self._context = make_context(self.system_xml, self.platform)
            energies, forces = _evaluate(self._context, x)
        else:
            energies, forces = self._evaluate_pool(x)
        self.n_evaluated += x.shape[0]
        self.n_nonfinite += int(np.count_nonzero(~np.isfinite(energies)))
        return energies, forces

    def _evaluate_pool(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chunks = np.array_split(np.arange(x.shape[0]), min(self.n_workers, x.shape[0]))
        used = []
        try:
            for conn, idx in zip(self._conns, chunks):
                conn.send(x[idx])
                used.append(conn)
            results = []
            for conn in used:
                status, payload = conn.recv()
                if status != "ok":
                    raise RuntimeError(f"OpenMM worker error: {payload}")
                results.append(payload)
        except BaseException:
            # A half-finished exchange leaves replies in the pipes; the pool is not reusable.
            self.close()
            raise
        energies = np.concatenate([r[0] for r in results])
        forces = np.concatenate([r[1] for r in results])
        return energies, forces

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable torch energies: U [B] in kJ/mol with dU/dx = -F."""
        return OpenMMEnergy.apply(x, self)

    def warm_up(self, x: torch.Tensor, log: Callable[[str], None], *, without_grad: bool = True) -> None:
        """Nothing to prepare: contexts are ready once the bridge is built."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        stop_workers(self._procs, self._conns)
        self._procs, self._conns = [], []
        self._context = None

    def __enter__(self) -> OpenMMBridge:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the real contract
        try:
            self.close()
        except Exception:
            pass


def _make_autograd_function() -> Any:
    import torch

    class _OpenMMEnergy(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, bridge: OpenMMBridge) -> torch.Tensor:
            energies, forces = bridge.evaluate(x.detach().cpu().double().numpy())
            f = torch.from_numpy(forces).to(device=x.device, dtype=x.dtype)
            # +inf energies carry zero force: they are masked or regularised downstream.
            ctx.save_for_backward(f)
            return torch.from_numpy(energies).to(device=x.device, dtype=x.dtype)

        @staticmethod
        def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
            (f,) = ctx.saved_tensors
            grad_out = torch.nan_to_num(grad_out, nan=0.0, posinf=0.0, neginf=0.0)
            return -f * grad_out[:, None, None], None

    return _OpenMMEnergy


class _LazyFunction:
    """Defers importing torch until an energy is actually needed (CLI --help stays fast)."""

    _fn: Any = None

    def apply(self, x: torch.Tensor, bridge: OpenMMBridge) -> torch.Tensor:
        if _LazyFunction._fn is None:
            _LazyFunction._fn = _make_autograd_function()
        result: torch.Tensor = _LazyFunction._fn.apply(x, bridge)
        return result


OpenMMEnergy = _LazyFunction()
