"""`molpt-tui check-energy`: an engine against OpenMM directly, on perturbed configurations."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# Energies: relative to |U| (floored at 1 kJ/mol so near-zero energies do not inflate it).
# Forces: max abs error relative to the largest force component of the batch.
# Single/mixed precision engines (OpenMM CPU/OpenCL, torch float32) are held to 1e-4.
ENERGY_RTOL = {"double": 1e-6, "mixed": 1e-4, "single": 1e-4}
FORCE_RTOL = 1e-4


def _reference(system, x):
    import openmm

    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    energies, forces = [], []
    for xi in x:
        ctx.setPositions(xi)
        st = ctx.getState(getEnergy=True, getForces=True)
        energies.append(st.getPotentialEnergy()._value)
        forces.append(st.getForces(asNumpy=True)._value)
    return np.array(energies), np.array(forces)


def _precision(engine) -> str:
    precision = getattr(engine, "precision", None)
    if precision:
        return precision
    dtype = str(getattr(engine, "dtype", "float64"))
    return "double" if "64" in dtype else "single"


def run_check(pdb, forcefield, engine="auto", samples=16, noise=0.01, seed=0, compile="auto",
              precision="double") -> dict:
    import torch

    from .engines import make_engine
    from .systems import build_system

    ms = build_system(Path(pdb), list(forcefield))
    choice = make_engine(ms, engine=engine, batch_size=samples, compile=compile, precision=precision)
    eng = choice.engine
    try:
        x = ms.positions[None] + np.random.default_rng(seed).normal(0.0, noise, (samples, ms.n_atoms, 3))
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        u = eng.energy(xt)
        (grad,) = torch.autograd.grad(u.sum(), xt)
        energies = u.detach().double().numpy()
        forces = -grad.double().numpy()
    finally:
        eng.close()
    ref_e, ref_f = _reference(ms.system, x)
    e_err = float(np.max(np.abs(energies - ref_e) / np.maximum(np.abs(ref_e), 1.0)))
    f_err = float(np.max(np.abs(forces - ref_f)))
    f_scale = float(np.max(np.abs(ref_f)))
    precision = _precision(eng)
    ok = e_err <= ENERGY_RTOL[precision] and f_err <= FORCE_RTOL * f_scale
    return {
        "pdb": str(pdb), "forcefield": list(forcefield), "n_atoms": ms.n_atoms, "samples": samples,
        "engine": eng.description, "reason": choice.reason,
        "max_rel_energy_error": e_err, "max_abs_force_error": f_err, "max_force": f_scale,
        "max_rel_force_error": f_err / f_scale if f_scale else 0.0,
        "precision": precision, "energy_tolerance": ENERGY_RTOL[precision], "force_tolerance": FORCE_RTOL, "ok": bool(ok),
    }


def check_energy_command(args) -> int:
    from ..errors import UserError

    if args.samples < 1:
        raise UserError(f"--samples: must be >= 1, got {args.samples}")
    result = run_check(args.pdb, args.forcefield, args.engine, args.samples, args.noise,
                       compile=args.compile, precision=args.precision)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        verdict = "OK" if result["ok"] else "OUTSIDE TOLERANCE"
        print(f"engine:                {result['engine']} ({result['reason']})")
        print(f"system:                {result['pdb']} ({result['n_atoms']} atoms), {' '.join(result['forcefield'])}")
        print(f"configurations:        {result['samples']}")
        print(f"max rel energy error:  {result['max_rel_energy_error']:.3e} (tolerance {result['energy_tolerance']:.0e})")
        print(f"max force error:       {result['max_abs_force_error']:.3e} kJ/mol/nm "
              f"({result['max_rel_force_error']:.3e} of max|F|, tolerance {result['force_tolerance']:.0e})")
        print(verdict)
    return 0 if result["ok"] else 1
