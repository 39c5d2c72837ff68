"""Choose and build the energy engine: the OpenMM bridge or the batched torch force field.

Both give U [B] in kJ/mol for x [B, N, 3] in nm, differentiable (dU/dx = -F), with +inf for
configurations that cannot be evaluated, counted in `n_nonfinite`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UserError


@dataclass
class EngineChoice:
    engine: object
    why: str

    @property
    def description(self) -> str:
        return self.engine.description

    @property
    def reason(self) -> str:
        """Why this engine, read when asked: a torch engine whose compiler fails on first use
        falls back to eager kernels after the choice was made, and says why in compile_note."""
        note = getattr(self.engine, "compile_note", "")
        return f"{self.why}; kernels not compiled: {note}" if note else self.why


def _bridge_workers(requested: int, us_per_config: float, batch_size: int) -> int:
    """0 = in-process. Worker processes only pay off when a batch costs far more than a pipe
    round trip (~0.2 ms): OBC1 dipeptide ~0.7-1 ms per configuration, vacuum ~19 us."""
    if requested > 0:
        return requested
    cores = os.cpu_count() or 1
    if cores < 2 or us_per_config * batch_size < 5000.0:
        return 0
    return min(cores, batch_size)


def make_openmm(ms, platform: str = "auto", n_workers: int = 0, batch_size: int = 64):
    from .openmm_bridge import OpenMMBridge

    probe = OpenMMBridge(ms.system, platform=platform, n_workers=0, sample_positions=ms.positions[None])
    workers = _bridge_workers(n_workers, probe.choice.us_per_config, batch_size)
    if workers == 0:
        return probe
    probe.close()
    bridge = OpenMMBridge(ms.system, platform=probe.platform, n_workers=workers, sample_positions=ms.positions[None])
    bridge.choice = probe.choice
    return bridge


def make_torch(ms, device: str = "cpu", compile: str = "auto", precision: str = "double"):
    import torch

    from .torch_energy import TorchEnergy, UnsupportedSystemError

    dtype = torch.float32 if precision == "single" else torch.float64
    try:
        return TorchEnergy.from_system(ms.system, device=device, dtype=dtype, compile=compile)
    except UnsupportedSystemError as exc:
        raise UserError(f"{ms.pdb_path}: {exc}") from None


def make_engine(ms, engine: str = "auto", platform: str = "auto", n_workers: int = 0, batch_size: int = 64,
                device: str = "cpu", compile: str = "auto", precision: str = "double") -> EngineChoice:
    if engine == "openmm":
        bridge = make_openmm(ms, platform, n_workers, batch_size)
        return EngineChoice(bridge, f"requested; OpenMM platform {bridge.platform}: {bridge.choice.reason}")
    if engine == "torch":
        return EngineChoice(make_torch(ms, device, compile, precision), "requested")
    # auto
    try:
        from .torch_energy import compiler_available, prefer_torch, unsupported_forces
    except ImportError:  # torch engine not available in this build
        bridge = make_openmm(ms, platform, n_workers, batch_size)
        return EngineChoice(bridge, f"torch engine unavailable; OpenMM platform {bridge.platform}: {bridge.choice.reason}")
    missing = unsupported_forces(ms.system)
    if not missing:
        compiled = compile != "off" and compiler_available(device)[0]
        use_torch, why = prefer_torch(ms.system, ms.n_atoms, batch_size, device, compiled=compiled)
        if use_torch:
            return EngineChoice(make_torch(ms, device, compile, precision), why)
    else:
        why = f"torch engine does not support {', '.join(missing)}"
    bridge = make_openmm(ms, platform, n_workers, batch_size)
    return EngineChoice(bridge, f"{why}; OpenMM platform {bridge.platform}: {bridge.choice.reason}")
