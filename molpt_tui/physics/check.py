"""`molpt-tui check-energy`: an engine against OpenMM directly, on perturbed configurations.

:func:`run_check` takes typed arguments (the application layer maps flags onto them) and
returns a :class:`CheckResult`; :func:`format_check` renders it for a terminal.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UserError
from .engine_protocol import Precision

if TYPE_CHECKING:
    from .engines import EngineName, TorchPrecision
    from .openmm_bridge import PlatformMeasure
    from .torch_energy import CompileMode

# Energies: relative to |U| (floored at 1 kJ/mol so near-zero energies do not inflate it).
# Forces: max abs error relative to the largest force component of the batch.
# Single/mixed precision engines (OpenMM CPU/OpenCL, torch float32) are held to 1e-4.
ENERGY_RTOL: dict[Precision, float] = {"double": 1e-6, "mixed": 1e-4, "single": 1e-4}
FORCE_RTOL = 1e-4


@dataclass(frozen=True)
class CheckResult:
    """One engine against OpenMM's Reference platform on the same configurations."""

    pdb: str
    forcefield: list[str]
    n_atoms: int
    samples: int
    noise: float                 # nm
    engine: str                  # the engine's description
    reason: str                  # why that engine
    precision: Precision
    max_rel_energy_error: float
    max_abs_force_error: float   # kJ/mol/nm
    max_force: float             # kJ/mol/nm, the largest reference force component
    max_rel_force_error: float
    energy_tolerance: float
    force_tolerance: float
    ok: bool

    @property
    def exit_code(self) -> int:
        """0 within tolerance, 1 outside (bad input never gets this far: UserError, exit 2)."""
        return 0 if self.ok else 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quiet(message: str) -> None:
    """The default log: silent."""


def _reference(system: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energies [B] and forces [B, N, 3] straight from a Reference-platform Context; non-finite
    where OpenMM cannot evaluate a configuration."""
    import openmm

    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    energies = np.full(len(x), np.inf)
    forces = np.zeros_like(x)
    for i, xi in enumerate(x):
        try:
            ctx.setPositions(xi)
            st = ctx.getState(getEnergy=True, getForces=True)
        except (openmm.OpenMMException, ValueError, OverflowError):
            continue
        energies[i] = st.getPotentialEnergy()._value
        forces[i] = st.getForces(asNumpy=True)._value
    return energies, forces


def validate_check_inputs(samples: int, noise: float, forcefield: Sequence[str]) -> None:
    """UserError, one line naming the flag, for inputs that would make the comparison meaningless."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserError(f"--samples {samples}: must be a whole number >= 1 (e.g. 16)")
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not math.isfinite(noise) or noise <= 0:
        raise UserError(f"--noise {noise}: must be a finite perturbation > 0 in nm (e.g. 0.01)")
    if not forcefield:
        raise UserError("--forcefield: give at least one OpenMM force-field XML (e.g. amber99sbildn.xml)")


def run_check(pdb: str | Path, forcefield: Sequence[str], engine: EngineName = "auto", samples: int = 16,
              noise: float = 0.01, *, seed: int = 0, compile: CompileMode = "auto",
              precision: TorchPrecision = "double", platform: str = "auto", n_workers: int = 0, device: str = "cpu",
              log: Callable[[str], None] = _quiet, measure: PlatformMeasure | None = None) -> CheckResult:
    """Evaluate ``samples`` configurations (the PDB structure plus Gaussian noise of ``noise`` nm)
    with the chosen engine and with OpenMM's Reference platform, and compare.

    ``platform``/``n_workers``: of the OpenMM bridge, as ``energy.platform``/``energy.n_workers``;
    ``device``: of the torch engine (cpu, cuda, cuda:N).
    ``log`` hears what the check is doing during waits (worker start-up, kernel compilation).
    ``measure``: see :data:`~molpt_tui.physics.openmm_bridge.PlatformMeasure`.
    """
    validate_check_inputs(samples, noise, forcefield)
    import torch

    from .engines import make_engine
    from .systems import build_system

    ms = build_system(Path(pdb), list(forcefield))
    choice = make_engine(ms, engine=engine, platform=platform, n_workers=n_workers, batch_size=samples, device=device,
                         compile=compile, precision=precision, platform_key="--platform", device_key="--device",
                         log=log, measure=measure)
    eng = choice.engine
    try:
        x = ms.positions[None] + np.random.default_rng(seed).normal(0.0, noise, (samples, ms.n_atoms, 3))
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        eng.warm_up(xt, log, without_grad=False)
        u = eng.energy(xt)
        (grad,) = torch.autograd.grad(u.sum(), xt)
        energies = u.detach().double().cpu().numpy()
        forces = -grad.double().cpu().numpy()
    finally:
        eng.close()
    ref_e, ref_f = _reference(ms.system, x)
    finite = np.isfinite(ref_e)
    if not finite.any():
        raise UserError(f"--noise {noise}: OpenMM cannot evaluate any of the perturbed configurations of {pdb}; "
                        "use a smaller --noise (e.g. 0.01)")
    # Where OpenMM has no energy, the engine must not report one either (it gives +inf there).
    agree_nonfinite = bool(np.all(~np.isfinite(energies[~finite])))
    e_err = float(np.max(np.abs(energies[finite] - ref_e[finite]) / np.maximum(np.abs(ref_e[finite]), 1.0)))
    f_err = float(np.max(np.abs(forces[finite] - ref_f[finite])))
    f_scale = float(np.max(np.abs(ref_f[finite])))
    prec = eng.precision
    ok = agree_nonfinite and e_err <= ENERGY_RTOL[prec] and f_err <= FORCE_RTOL * f_scale
    return CheckResult(
        pdb=str(pdb), forcefield=list(forcefield), n_atoms=ms.n_atoms, samples=samples, noise=float(noise),
        engine=eng.description, reason=choice.reason, precision=prec,
        max_rel_energy_error=e_err, max_abs_force_error=f_err, max_force=f_scale,
        max_rel_force_error=f_err / f_scale if f_scale else 0.0,
        energy_tolerance=ENERGY_RTOL[prec], force_tolerance=FORCE_RTOL, ok=bool(ok),
    )


def format_check(result: CheckResult) -> str:
    """The human-readable report, ending in the verdict (OK / OUTSIDE TOLERANCE)."""
    verdict = "OK" if result.ok else "OUTSIDE TOLERANCE"
    return "\n".join([
        f"engine:                {result.engine} ({result.reason})",
        f"system:                {result.pdb} ({result.n_atoms} atoms), {' '.join(result.forcefield)}",
        f"configurations:        {result.samples} (noise {result.noise:g} nm)",
        f"max rel energy error:  {result.max_rel_energy_error:.3e} (tolerance {result.energy_tolerance:.0e})",
        f"max force error:       {result.max_abs_force_error:.3e} kJ/mol/nm "
        f"({result.max_rel_force_error:.3e} of max|F|, tolerance {result.force_tolerance:.0e})",
        verdict,
    ])


def format_check_json(result: CheckResult) -> str:
    return json.dumps(result.as_dict(), indent=2)

