"""OpenMM energy bridge: U(x) in kJ/mol for a batch of configurations, differentiable in torch.

Each worker process owns one OpenMM Context built from the serialised System and evaluates a
contiguous chunk of the batch. We own the worker processes and close them on normal exit,
on errors and on Ctrl-C (workers ignore SIGINT and leave when their pipe closes), so a script
never hangs on a leftover pool and no orphan survives its parent.

Failure policy: a non-finite input or a configuration OpenMM cannot evaluate gives U = +inf
(never 0, never the previous value) and zero force, and is counted in `n_nonfinite`.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import signal
import time
import weakref
from dataclasses import dataclass

import numpy as np

PLATFORMS = ("Reference", "CPU", "CUDA", "OpenCL")


# --- evaluation core (runs in workers and in-process) -----------------------------------------

def _make_context(system_xml: str, platform: str):
    import openmm

    system = openmm.XmlSerializer.deserialize(system_xml)
    plat = openmm.Platform.getPlatformByName(platform)
    props = {}
    if platform == "CPU":
        props["Threads"] = "1"  # parallelism comes from our worker processes
    if platform in ("CUDA", "OpenCL"):
        props["Precision"] = "double" if platform == "CUDA" else "mixed"
    return openmm.Context(system, openmm.VerletIntegrator(0.001), plat, props)


def _evaluate(context, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def ignore_job_signals() -> None:
    """Ctrl-C, scancel/systemd (SIGTERM), a dropped SSH session (SIGHUP) and SIGUSR1 reach the
    whole process group; the parent decides when workers stop, and a dead parent is noticed
    as EOF on the pipe."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)


def stop_workers(procs, conns, timeout: float = 5.0) -> None:
    """Ask workers to leave (None on the pipe), then SIGKILL stragglers: they ignore SIGTERM,
    so `Process.terminate` would not end them."""
    for conn in conns:
        try:
            conn.send(None)
        except (OSError, EOFError):
            pass
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=2.0)
    for conn in conns:
        conn.close()


def _worker_main(conn, system_xml: str, platform: str) -> None:
    ignore_job_signals()
    try:
        context = _make_context(system_xml, platform)
        conn.send(("ready", None))
    except Exception as exc:  # report, then leave
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # parent gone: leave rather than become an orphan
        if msg is None:
            return
        try:
            conn.send(("ok", _evaluate(context, msg)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


# --- platform choice -------------------------------------------------------------------------

def available_platforms() -> list[str]:
    import openmm

    names = {openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())}
    return [p for p in PLATFORMS if p in names]


@dataclass
class PlatformChoice:
    platform: str
    us_per_config: float
    reason: str


def choose_platform(system_xml: str, sample: np.ndarray, requested: str = "auto", repeats: int = 20) -> PlatformChoice:
    """Time energy+forces on each usable platform with this very system and keep the fastest.

    Measured here: 22-atom vacuum dipeptide 19 us (Reference) vs 245 us (CPU, 1 thread); the
    23-atom OBC1 dipeptide 1062 us (Reference) vs 660 us (CPU). A fixed rule would get one of
    them wrong, so we measure (a few ms at start-up).
    """
    candidates = available_platforms() if requested == "auto" else [requested]
    timings: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name in candidates:
        try:
            ctx = _make_context(system_xml, name)
            _evaluate(ctx, sample[:2])  # warm-up (kernel compilation on GPU platforms)
            t0 = time.perf_counter()
            reps = max(1, repeats)
            for _ in range(reps):
                _evaluate(ctx, sample[:1])
            timings[name] = (time.perf_counter() - t0) / reps * 1e6
            del ctx
        except Exception as exc:
            errors[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not timings:
        raise RuntimeError(f"no usable OpenMM platform among {candidates}: {errors}")
    best = min(timings, key=timings.get)
    if requested == "auto":
        others = ", ".join(f"{k} {v:.0f} us" for k, v in sorted(timings.items(), key=lambda kv: kv[1]))
        reason = f"fastest measured per configuration ({others})"
    else:
        reason = f"requested ({timings[best]:.0f} us per configuration)"
    return PlatformChoice(best, timings[best], reason)


# --- the bridge ------------------------------------------------------------------------------

_LIVE_BRIDGES: "weakref.WeakSet[OpenMMBridge]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for bridge in list(_LIVE_BRIDGES):
        bridge.close()


class OpenMMBridge:
    """Batched OpenMM energies. `n_workers=0` evaluates in this process (cheapest for tiny
    systems, where a pipe round trip costs more than the energy)."""

    name = "openmm"

    def __init__(self, system, platform: str = "auto", n_workers: int = 0, sample_positions: np.ndarray | None = None):
        import openmm

        self.system_xml = system if isinstance(system, str) else openmm.XmlSerializer.serialize(system)
        deserialized = openmm.XmlSerializer.deserialize(self.system_xml)
        self.n_atoms = deserialized.getNumParticles()
        if sample_positions is None:
            sample_positions = np.random.default_rng(0).normal(0.0, 0.3, (3, self.n_atoms, 3))
        sample = np.asarray(sample_positions, dtype=np.float64).reshape(-1, self.n_atoms, 3)
        self.choice = choose_platform(self.system_xml, sample, platform)
        self.platform = self.choice.platform
        self.n_workers = int(n_workers)
        self.n_nonfinite = 0
        self.n_evaluated = 0
        self._closed = False
        self._context = None
        self._procs: list = []
        self._conns: list = []
        if self.n_workers == 0:
            self._context = _make_context(self.system_xml, self.platform)
        else:
            self._start_workers()
        _LIVE_BRIDGES.add(self)

    @property
    def precision(self) -> str:
        """'double' (Reference, CUDA here) or 'mixed' (CPU, OpenCL: single-precision forces)."""
        return "double" if self.platform in ("Reference", "CUDA") else "mixed"

    @property
    def description(self) -> str:
        where = "in-process" if self.n_workers == 0 else f"{self.n_workers} worker processes"
        return f"openmm ({self.platform}, {where})"

    def _start_workers(self) -> None:
        # spawn, not fork: forking a process that holds torch/OpenMM threads can deadlock.
        ctx = mp.get_context("spawn")
        try:
            for _ in range(self.n_workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(child, self.system_xml, self.platform), daemon=True)
                proc.start()
                child.close()
                self._procs.append(proc)
                self._conns.append(parent)
            for conn in self._conns:
                status, payload = conn.recv()
                if status != "ready":
                    raise RuntimeError(f"OpenMM worker failed to start: {payload}")
            # atexit runs last-registered first: multiprocessing registered its own exit hook
            # when these processes started, and that hook would SIGTERM (ignored) and then wait
            # on them forever. Ours must run before it.
            atexit.unregister(_close_all)
            atexit.register(_close_all)
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
                self._context = _make_context(self.system_xml, self.platform)
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

    def energy(self, x):
        """Differentiable torch energies: U [B] in kJ/mol with dU/dx = -F."""
        return OpenMMEnergy.apply(x, self)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        stop_workers(self._procs, self._conns)
        self._procs, self._conns = [], []
        self._context = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):  # best effort; close() is the real contract
        try:
            self.close()
        except Exception:
            pass


def _make_autograd_function():
    import torch

    class _OpenMMEnergy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, bridge):
            energies, forces = bridge.evaluate(x.detach().cpu().double().numpy())
            f = torch.from_numpy(forces).to(device=x.device, dtype=x.dtype)
            # +inf energies carry zero force: they are masked or regularised downstream.
            ctx.save_for_backward(f)
            return torch.from_numpy(energies).to(device=x.device, dtype=x.dtype)

        @staticmethod
        def backward(ctx, grad_out):
            (f,) = ctx.saved_tensors
            grad_out = torch.nan_to_num(grad_out, nan=0.0, posinf=0.0, neginf=0.0)
            return -f * grad_out[:, None, None], None

    return _OpenMMEnergy


class _LazyFunction:
    """Defers importing torch until an energy is actually needed (CLI --help stays fast)."""

    _fn = None

    def apply(self, x, bridge):
        if _LazyFunction._fn is None:
            _LazyFunction._fn = _make_autograd_function()
        return _LazyFunction._fn.apply(x, bridge)


OpenMMEnergy = _LazyFunction()
