"""Which OpenMM Systems the torch energy engine reproduces exactly, and what it says otherwise.

Supported: everything the shipped presets produce with ``nonbondedMethod=NoCutoff`` — harmonic
bonds and angles, periodic torsions, a NonbondedForce without cutoff or parameter offsets, the
OBC1/OBC2 generalized-Born forces that :mod:`openmm_forces` recognises, and CMMotionRemover
(no energy). Anything else is named, so the user can switch to ``engine = "openmm"``.
"""
from __future__ import annotations

from typing import Any

import openmm

from .openmm_forces import GB_METHOD_NAMES, IGNORED_FORCES, NONBONDED_METHOD_NAMES, parse_custom_gb


class UnsupportedSystemError(ValueError):
    """The System holds a force (or a nonbonded method) this engine does not reproduce."""


class CompilerUnavailableError(UnsupportedSystemError):
    """``compile = "on"`` was asked for on a device without a compiler for torch.compile."""


def _force_problem(force: Any) -> str | None:
    """None if the engine reproduces this force exactly, else a short description of why not."""
    name = type(force).__name__
    if name in IGNORED_FORCES:
        return None
    if isinstance(force, (openmm.HarmonicBondForce, openmm.HarmonicAngleForce, openmm.PeriodicTorsionForce)):
        if force.usesPeriodicBoundaryConditions():
            return f"{name} (periodic boundary conditions)"
        return None
    if isinstance(force, openmm.NonbondedForce):
        method = force.getNonbondedMethod()
        if method != openmm.NonbondedForce.NoCutoff:
            method_name = NONBONDED_METHOD_NAMES.get(method, method)
            return f"NonbondedForce (nonbonded method {method_name}; only NoCutoff is supported)"
        if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
            return "NonbondedForce (parameter offsets)"
        return None
    if isinstance(force, openmm.CustomGBForce):
        try:
            parse_custom_gb(force)
        except ValueError as exc:
            return f"CustomGBForce (not the OBC1/OBC2 model: {exc})"
        return None
    if isinstance(force, openmm.GBSAOBCForce):
        if force.getNonbondedMethod() != openmm.GBSAOBCForce.NoCutoff:
            method = GB_METHOD_NAMES.get(force.getNonbondedMethod(), force.getNonbondedMethod())
            return f"GBSAOBCForce (nonbonded method {method}; only NoCutoff is supported)"
        return None
    return name


def unsupported_forces(system: Any) -> list[str]:
    """Descriptions of what in ``system`` (an openmm.System) the torch engine cannot evaluate;
    empty when all is supported."""
    problems = []
    if any(system.isVirtualSite(i) for i in range(system.getNumParticles())):
        problems.append("virtual sites")
    if sum(isinstance(f, openmm.NonbondedForce) for f in system.getForces()) > 1:
        problems.append("more than one NonbondedForce")
    for force in system.getForces():
        problem = _force_problem(force)
        if problem is not None:
            problems.append(problem)
    return problems


def require_supported(system: Any) -> None:
    """Raise UnsupportedSystemError naming every problem, pointing to the OpenMM engine."""
    problems = unsupported_forces(system)
    if problems:
        raise UnsupportedSystemError(
            "the torch energy engine cannot evaluate this System: " + "; ".join(problems)
            + '. Use engine = "openmm" instead.'
        )
