"""Choose and build the energy engine: the OpenMM bridge or the batched torch force field.

Both satisfy :class:`~molpt_tui.physics.engine_protocol.EnergyEngine`: U [B] in kJ/mol for
x [B, N, 3] in nm, differentiable (dU/dx = -F), with +inf for configurations that cannot be
evaluated, counted in `n_nonfinite`. Every setting the user gave is checked here before any
worker process starts, with the config key (or flag) named in the error.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import UserError, first_error_line, setting_phrase
from ..processes import usable_cpus
from .engine_protocol import EnergyEngine
from .openmm_platforms import PlatformUnavailableError, available_platforms, check_platform

if TYPE_CHECKING:
    import torch

    from .openmm_bridge import OpenMMBridge, PlatformMeasure
    from .systems import MolecularSystem
    from .torch_energy import CompileMode, TorchEnergy

EngineName = Literal["auto", "openmm", "torch"]
TorchPrecision = Literal["double", "single"]
ENGINE_NAMES = ("auto", "openmm", "torch")


def _quiet(message: str) -> None:
    """The default log: building an engine says nothing unless asked."""


@dataclass
class EngineChoice:
    engine: EnergyEngine
    why: str
    workers: int = 0   # worker processes the engine runs (the OpenMM bridge's pool; 0: in-process)

    @property
    def description(self) -> str:
        return self.engine.description

    @property
    def reason(self) -> str:
        """Why this engine, read when asked: a torch engine whose compiler fails on first use
        falls back to eager kernels after the choice was made, and says why in compile_note."""
        note = self.engine.compile_note
        return f"{self.why}; kernels not compiled: {note}" if note else self.why


# --------------------------------------------------------------------------------------------
# Settings the user gave, checked before anything is built.


def check_device(device: str | torch.device, key: str) -> None:
    """Raise a one-line UserError naming ``key`` (a config key or the flag that set it) when the
    torch engine cannot run on ``device`` here."""
    import torch

    said = setting_phrase(key, str(device))
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"{said}: not a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cpu":
        return
    if dev.type != "cuda":
        raise UserError(f"{said}: the torch energy engine runs on cpu or cuda")
    if not torch.cuda.is_available():
        raise UserError(f"{said}: CUDA is not available here (use cpu, or a machine with a CUDA GPU)")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise UserError(f"{said}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")


# --------------------------------------------------------------------------------------------
# The OpenMM bridge.


def bridge_workers(requested: int, us_per_config: float, batch_size: int, cores: int) -> int:
    """Worker processes for the bridge; 0 = in-process. ``requested`` > 0 is taken as given.

    Worker processes only pay off when a batch costs far more than a pipe round trip (~0.2 ms):
    OBC1 dipeptide ~0.7-1 ms per configuration, vacuum ~19 us. ``cores``: the CPUs the workers
    may use; on one, a worker would be the in-process bridge plus a pipe.
    """
    if requested > 0:
        return requested
    if cores < 2 or us_per_config * batch_size < 5000.0:
        return 0
    return min(cores, batch_size)


def make_openmm(ms: MolecularSystem, platform: str = "auto", n_workers: int = 0, batch_size: int = 64, *,
                platform_key: str = "energy.platform", log: Callable[[str], None] = _quiet,
                measure: PlatformMeasure | None = None, worker_cpus: int | None = None) -> OpenMMBridge:
    """The bridge on ``platform`` ("auto": the fastest measured) with ``n_workers`` processes
    (0: as many as pay off, from the measured cost per configuration, on at most ``worker_cpus``
    CPUs: the share of the process's CPUs that torch's threads leave; None: all of them)."""
    from .openmm_bridge import OpenMMBridge

    check_platform(platform, platform_key)
    try:
        probe = OpenMMBridge(ms.system, platform=platform, n_workers=0, sample_positions=ms.positions[None],
                             measure=measure)
    except PlatformUnavailableError as exc:
        raise UserError(f'{platform_key} = "{platform}": OpenMM cannot make a Context for this system here '
                        f"({first_error_line(exc)}); available platforms: {', '.join(available_platforms())}") from None
    cores = usable_cpus() if worker_cpus is None else worker_cpus
    workers = bridge_workers(n_workers, probe.choice.us_per_config, batch_size, cores)
    if workers == 0:
        return probe
    probe.close()
    log(f"starting {workers} OpenMM worker processes ({probe.platform} platform)")
    bridge = OpenMMBridge(ms.system, platform=probe.platform, n_workers=workers, sample_positions=ms.positions[None],
                          measure=lambda xml, sample, names: ({probe.platform: probe.choice.us_per_config}, {}))
    bridge.choice = probe.choice
    return bridge


# --------------------------------------------------------------------------------------------
# The torch engine.


def make_torch(ms: MolecularSystem, device: str = "cpu", compile: CompileMode = "auto",
               precision: TorchPrecision = "double", *, device_key: str = "training.device") -> TorchEnergy:
    import torch

    from .torch_energy import TorchEnergy
    from .torch_support import CompilerUnavailableError, UnsupportedSystemError

    check_device(device, device_key)
    dtype = torch.float32 if precision == "single" else torch.float64
    try:
        return TorchEnergy.from_system(ms.system, device=device, dtype=dtype, compile=compile)
    except CompilerUnavailableError as exc:
        raise UserError(str(exc)) from None
    except UnsupportedSystemError as exc:
        raise UserError(f"{ms.pdb_path}: {exc}") from None


# --------------------------------------------------------------------------------------------
# engine = "auto"


# Measured with benchmarks/bench_torch_energy.py (default run) on a shared 2-core x86 CPU (torch
# 2.13 CPU, OpenMM 8.6.1; energy + forces, microseconds per configuration; torch on one thread;
# "bridge" is the best OpenMMBridge setting of the row: Reference or CPU platform, in-process or
# two worker processes):
#
#   system (atoms)       batch  compiled f64  compiled f32  eager f64  best bridge
#   ala_ala vacuum (23)     64         6.4          3.7         31        24 (Reference, in-process)
#   ala_ala vacuum (23)    256         2.7          1.5         19        16 (Reference, 2 workers)
#   ala_ala vacuum (23)   4096         2.2          1.0         18        12 (Reference, 2 workers)
#   ala_ala OBC1 (23)       64        10.4          5.6         48       111 (CPU, 2 workers)
#   ala_ala OBC1 (23)      256         7.7          3.8         41        96 (CPU, 2 workers)
#   ala_ala OBC1 (23)     4096         7.2          3.0         59        91 (CPU, 2 workers)
#   helix vacuum (273)      64       126           64         4209       200 (CPU, 2 workers)
#   helix vacuum (273)     256        99           61         1606       164 (CPU, 2 workers)
#   helix OBC1 (273)        64       930          410         6456      3999 (CPU, 2 workers)
#   helix OBC1 (273)       256      1357          424         4944      3902 (CPU, 2 workers)
#
# A torch call also costs ~0.25 ms whatever the batch (guards, the autograd wrapper), repaid
# from batches of ~16. In implicit solvent OpenMM needs ~0.1 ms per small molecule even with a
# worker per core, so torch wins by 10-13x compiled and 1.3-2.5x uncompiled. In vacuum the
# compiled kernels are 4-6x faster per call than OpenMM's Reference loop (~22 us per small
# molecule), but at the batch sizes vacuum presets use the energies are a small part of a step
# (quickstart, batch 128: 6 of 45 ms), and a first run waits 20-30 s for the compiler, which
# runs of a few thousand steps never earn back; from batch 256 torch is taken. Uncompiled
# kernels lose to OpenMM in vacuum and for the 273-atom helix.
AUTO_MIN_BATCH_CPU = 16
AUTO_MIN_BATCH_VACUUM_CPU = 256
AUTO_MAX_ATOMS_COMPILED_CPU = 300   # measured up to 273 atoms
AUTO_MAX_GB_ATOMS_EAGER_CPU = 120
AUTO_MIN_BATCH_GPU = 32
# A chunk is at least one configuration, whose [N, N] matrices (~40 alive in the eager kernels)
# reach ~3 GiB at 3000 atoms in float64.
AUTO_MAX_ATOMS = 3000


def prefer_torch(system: Any, n_atoms: int, batch_size: int, device: str | torch.device,
                 compiled: bool = True) -> tuple[bool, str]:
    """Whether ``engine = "auto"`` should use the torch engine rather than OpenMM, and why.

    ``compiled``: whether the kernels will be compiled (a compiler is present and
    ``energy.compile`` is not "off"). The CPU rule follows the measurements tabulated above; the
    accelerator branch is not measured here (no GPU was available when the rule was set).
    """
    from .openmm_forces import has_gb_force
    from .torch_support import unsupported_forces

    problems = unsupported_forces(system)
    if problems:
        return False, "OpenMM: the torch engine does not support " + "; ".join(problems)
    if n_atoms > AUTO_MAX_ATOMS:
        return False, (f"OpenMM: {n_atoms} atoms without a cutoff means {n_atoms * (n_atoms - 1) // 2} pairs "
                       "per configuration; the torch engine's dense pair matrices would need several GiB")
    kind = str(device).split(":", 1)[0]
    gb = has_gb_force(system)
    if kind != "cpu":
        if batch_size >= AUTO_MIN_BATCH_GPU:
            return True, (f"torch on {kind}: a batch of {batch_size} is evaluated in one pass on the device, "
                          "where OpenMM would copy each configuration to the host and loop serially "
                          "(extrapolated from the CPU measurements; not measured on a GPU)")
        return False, (f"OpenMM: a batch of {batch_size} is too small to amortise the torch engine's "
                       "kernel launches per call")
    if batch_size < AUTO_MIN_BATCH_CPU:
        return False, (f"OpenMM: a batch of {batch_size} does not repay the torch engine's ~0.26 ms fixed "
                       "cost per call")
    if not compiled:
        if not gb:
            return False, ("OpenMM: in vacuum OpenMM is faster than the uncompiled torch kernels (23 atoms, "
                           "batch 256: 16 vs 19 us/config; 273 atoms: 0.16 vs 1.6 ms)")
        if n_atoms > AUTO_MAX_GB_ATOMS_EAGER_CPU:
            return False, (f"OpenMM: for {n_atoms} atoms in implicit solvent the uncompiled torch kernels are "
                           "slower than OpenMM with a worker per core (273 atoms: 4.9-6.5 vs 3.9-4.0 ms/config)")
        return True, ("torch (uncompiled): implicit solvent on CPU measured 1.3-2.5x faster than OpenMM with a "
                      "worker per core for 22-23 atoms (batch 256: 41-72 vs 90-96 us/config), on one core")
    if n_atoms > AUTO_MAX_ATOMS_COMPILED_CPU:
        return False, (f"OpenMM: {n_atoms} atoms is beyond the sizes where the compiled torch kernels were "
                       "measured faster on CPU (up to 273)")
    if not gb:
        if batch_size < AUTO_MIN_BATCH_VACUUM_CPU:
            return False, (f"OpenMM: in vacuum at batch {batch_size} the energies are a small part of a step "
                           "(OpenMM Reference ~22 us per small molecule), too little to repay the torch "
                           "kernels' compile time (20-30 s on a first run)")
        return True, ("torch (compiled): in vacuum at batch >= 256 the compiled kernels beat OpenMM's best "
                      "setting 6x for 23 atoms (2.7 vs 16 us/config) and 1.6x for 273 atoms (99 vs 164)")
    return True, ("torch (compiled): implicit solvent on CPU measured 10-13x faster than OpenMM with a worker "
                  "per core for 22-23 atoms (batch 256: 7.7 vs 96 us/config) and 3-4x at 273 atoms")


def make_engine(ms: MolecularSystem, engine: EngineName = "auto", platform: str = "auto", n_workers: int = 0,
                batch_size: int = 64, device: str = "cpu", compile: CompileMode = "auto",
                precision: TorchPrecision = "double", *, platform_key: str = "energy.platform",
                device_key: str = "training.device", log: Callable[[str], None] = _quiet,
                measure: PlatformMeasure | None = None, worker_cpus: int | None = None) -> EngineChoice:
    """The engine for ``ms`` and why it was chosen.

    ``platform_key``/``device_key``: the config keys (or flags) named when ``platform`` or
    ``device`` cannot be used here. ``log`` hears about waits (worker start-up). ``measure``:
    see :data:`~molpt_tui.physics.openmm_bridge.PlatformMeasure`. ``worker_cpus``: see `make_openmm`.
    """
    if engine not in ENGINE_NAMES:
        raise ValueError(f"engine must be one of {ENGINE_NAMES}, not {engine!r}")
    # Both settings are checked whichever engine ends up chosen: a wrong one is a wrong config.
    check_platform(platform, platform_key)
    if engine != "openmm":
        check_device(device, device_key)

    def openmm_engine() -> OpenMMBridge:
        return make_openmm(ms, platform, n_workers, batch_size, platform_key=platform_key, log=log, measure=measure,
                           worker_cpus=worker_cpus)

    if engine == "openmm":
        bridge = openmm_engine()
        return EngineChoice(bridge, f"requested; OpenMM platform {bridge.platform}: {bridge.choice.reason}",
                            bridge.n_workers)
    if engine == "torch":
        return EngineChoice(make_torch(ms, device, compile, precision, device_key=device_key), "requested")
    from .torch_energy import compiler_available

    compiled = compile != "off" and compiler_available(device)[0]
    use_torch, why = prefer_torch(ms.system, ms.n_atoms, batch_size, device, compiled=compiled)
    if use_torch:
        return EngineChoice(make_torch(ms, device, compile, precision, device_key=device_key), why)
    bridge = openmm_engine()
    return EngineChoice(bridge, f"{why}; OpenMM platform {bridge.platform}: {bridge.choice.reason}", bridge.n_workers)
