"""Batched, differentiable potential energy in PyTorch, built from an OpenMM ``System``.

The flow's loss needs U(x) and dU/dx for whole batches of configurations. Going through an
OpenMM Context means one ``setPositions``/``getState`` round trip per configuration; this engine
evaluates the same functional forms for a batch [B, N, 3] at once, on CPU or GPU.

Supported (everything the shipped presets produce with ``nonbondedMethod=NoCutoff``):

- ``HarmonicBondForce``, ``HarmonicAngleForce``, ``PeriodicTorsionForce``;
- ``NonbondedForce`` (NoCutoff) with exceptions: an exception *replaces* the Lorentz-Berthelot
  pair (so exclusions are exceptions with zero chargeProd and epsilon, and 1-4 pairs carry their
  own scaled parameters);
- the ``CustomGBForce`` written by ``implicit/obc1.xml`` and ``implicit/obc2.xml``
  (``GBSAOBC1Force`` / ``GBSAOBC2Force`` in ``openmm.app.internal.customgbforces``), with or
  without the ACE surface-area term and with or without salt (kappa). Its expressions are
  recognised term by term, so a modified expression is reported as unsupported rather than
  silently mis-evaluated;
- the native ``GBSAOBCForce`` (OBC II, as in ``amber99_obc.xml``), including the Reference
  platform's extra term for an atom buried inside another's descreening sphere, which the
  ``CustomGBForce`` version does not have;
- ``CMMotionRemover`` contributes no energy and is ignored.

Anything else raises :class:`UnsupportedSystemError`; use ``engine = "openmm"`` for those.

The GB terms run over *all* pairs, exceptions included, as OpenMM's ParticlePairNoExclusions
terms do; only the NonbondedForce sees exceptions.

Energies and exact gradients come from the kernels in :mod:`torch_kernels` (analytic for the
pair terms), chunk by chunk over the batch; autograd holds only the [B, N, 3] gradient between
forward and backward (see :class:`_BatchedEnergy`). The price is that second derivatives are not
available (the backward is once-differentiable).

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
import re
import shutil
import types
import warnings
from dataclasses import dataclass

import numpy as np
import openmm
import torch

from .torch_kernels import GBTerms, Terms, energy_and_grad

# Coulomb constant of NonbondedForce and GBSAOBCForce in OpenMM 8 (kJ nm / (mol e^2)). Measured
# from a two-charge Reference-platform Context; the CustomGBForce expressions hard-code their own
# (slightly different) 138.935485, which is used for those terms.
ONE_4PI_EPS0 = 138.93545764438198
_CUSTOM_GB_COULOMB = 138.935485

# Reference-platform constants of GBSAOBCForce (ObcParameters.cpp): dielectric offset and the
# ACE probe radius, both in nm.
_OBC_DIELECTRIC_OFFSET = 0.009
_ACE_PROBE_RADIUS = 0.14

_IGNORED_FORCES = ("CMMotionRemover",)

_NONBONDED_METHOD_NAMES = {
    openmm.NonbondedForce.NoCutoff: "NoCutoff",
    openmm.NonbondedForce.CutoffNonPeriodic: "CutoffNonPeriodic",
    openmm.NonbondedForce.CutoffPeriodic: "CutoffPeriodic",
    openmm.NonbondedForce.Ewald: "Ewald",
    openmm.NonbondedForce.PME: "PME",
    openmm.NonbondedForce.LJPME: "LJPME",
}
_GB_METHOD_NAMES = {0: "NoCutoff", 1: "CutoffNonPeriodic", 2: "CutoffPeriodic"}


class UnsupportedSystemError(ValueError):
    """The System holds a force (or a nonbonded method) this engine does not reproduce."""


# --------------------------------------------------------------------------------------------
# Recognising the OBC CustomGBForce.
#
# Expressions are compared after removing whitespace and splitting at ';' into a core expression
# and 'name=value' definitions. Numeric definitions (dielectrics, kappa, offset) are read as
# parameters; symbolic ones must equal the template exactly.

_I_CORE = "select(step(r+sr2-or1),0.5*(1/L-1/U+0.25*(r-sr2^2/r)*(1/(U^2)-1/(L^2))+0.5*log(L/U)/r),0)"
_I_DEFS = {"U": "r+sr2", "L": "max(or1,D)", "D": "abs(r-sr2)"}
# B = 1/(1/or - tanh(a*psi - b*psi^2 + c*psi^3)/radius): (a, b, c) per model.
_B_CORES = {
    "1/(1/or-tanh(0.8*psi+2.909125*psi^3)/radius)": ("OBC1", (0.8, 0.0, 2.909125)),
    "1/(1/or-tanh(psi-0.8*psi^2+4.85*psi^3)/radius)": ("OBC2", (1.0, 0.8, 4.85)),
}
_B_DEFS = {"psi": "I*or", "radius": "or+offset"}
_SELF_CORE = "-0.5*138.935485*(1/soluteDielectric-1/solventDielectric)*charge^2/B"
_SELF_CORE_SALT = "-0.5*138.935485*(1/soluteDielectric-exp(-kappa*B)/solventDielectric)*charge^2/B"
_ACE_CORE = "28.3919551*(radius+0.14)^2*(radius/B)^6"
_ACE_DEFS = {"radius": "or+offset"}
_PAIR_CORE = "-138.935485*(1/soluteDielectric-1/solventDielectric)*charge1*charge2/f"
_PAIR_CORE_SALT = "-138.935485*(1/soluteDielectric-exp(-kappa*f)/solventDielectric)*charge1*charge2/f"
_PAIR_DEFS = {"f": "sqrt(r^2+B1*B2*exp(-r^2/(4*B1*B2)))"}
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _split_expression(expression: str):
    parts = [p.replace(" ", "").replace("\t", "").replace("\n", "") for p in expression.split(";")]
    parts = [p for p in parts if p]
    core, numeric, symbolic = parts[0], {}, {}
    for part in parts[1:]:
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"cannot parse definition {part!r}")
        if _NUMBER.match(value):
            numeric[name] = float(value)
        else:
            symbolic[name] = value
    return core, numeric, symbolic


@dataclass
class _GBModel:
    """One OBC generalized-Born force reduced to per-atom arrays and a handful of constants."""

    kind: str                  # "OBC1", "OBC2" (CustomGBForce) or "GBSAOBCForce"
    charge: np.ndarray         # e
    offset_radius: np.ndarray  # nm, rho_i - offset ("or")
    scaled_radius: np.ndarray  # nm, descreening radius ("sr")
    tanh_coeffs: tuple         # (a, b, c) in tanh(a*psi - b*psi^2 + c*psi^3)
    b_offset: float            # radius = or + b_offset in the Born-radius formula
    coulomb: float
    solute_dielectric: float
    solvent_dielectric: float
    kappa: float = 0.0
    ace_factor: float | None = None    # kJ/mol/nm^2 times 4 pi; None: no surface-area term
    ace_offset: float = 0.0
    ace_probe: float = _ACE_PROBE_RADIUS
    engulf_term: bool = False  # Reference GBSAOBCForce's extra term for a buried atom


def _parse_custom_gb(force: openmm.CustomGBForce) -> _GBModel:
    """Map a CustomGBForce onto the OBC model, or raise ValueError saying what differs."""
    if force.getNonbondedMethod() != openmm.CustomGBForce.NoCutoff:
        method = _GB_METHOD_NAMES.get(force.getNonbondedMethod(), str(force.getNonbondedMethod()))
        raise ValueError(f"nonbonded method {method} (only NoCutoff is supported)")
    names = [force.getPerParticleParameterName(i) for i in range(force.getNumPerParticleParameters())]
    if names != ["charge", "or", "sr"]:
        raise ValueError(f"per-particle parameters {names}, expected ['charge', 'or', 'sr']")
    if force.getNumGlobalParameters() or force.getNumTabulatedFunctions() or force.getNumEnergyParameterDerivatives():
        raise ValueError("global parameters, tabulated functions or parameter derivatives are not OBC")
    if force.getNumComputedValues() != 2:
        raise ValueError("expected exactly two computed values (I, B)")
    pair_nx = openmm.CustomGBForce.ParticlePairNoExclusions
    single = openmm.CustomGBForce.SingleParticle

    name, expression, kind = force.getComputedValueParameters(0)
    core, _, symbolic = _split_expression(expression)
    if name != "I" or kind != pair_nx or core != _I_CORE or symbolic != _I_DEFS:
        raise ValueError("first computed value is not the OBC descreening integral I")
    name, expression, kind = force.getComputedValueParameters(1)
    core, numeric, symbolic = _split_expression(expression)
    if name != "B" or kind != single or core not in _B_CORES or symbolic != _B_DEFS or set(numeric) != {"offset"}:
        raise ValueError("second computed value is not an OBC1/OBC2 Born radius B")
    model_name, coeffs = _B_CORES[core]
    b_offset = numeric["offset"]

    self_term = pair_term = ace_term = None
    for k in range(force.getNumEnergyTerms()):
        expression, kind = force.getEnergyTermParameters(k)
        core, numeric, symbolic = _split_expression(expression)
        if kind == single and core in (_SELF_CORE, _SELF_CORE_SALT) and not symbolic and self_term is None:
            self_term = (core == _SELF_CORE_SALT, numeric)
        elif kind == single and core == _ACE_CORE and symbolic == _ACE_DEFS and ace_term is None:
            ace_term = numeric
        elif kind == pair_nx and core in (_PAIR_CORE, _PAIR_CORE_SALT) and symbolic == _PAIR_DEFS and pair_term is None:
            pair_term = (core == _PAIR_CORE_SALT, numeric)
        else:
            raise ValueError(f"energy term {expression!r} is not part of the OBC model")
    if self_term is None or pair_term is None:
        raise ValueError("missing the GB self or pair energy term")
    if "cutoff" in self_term[1] or "cutoff" in pair_term[1]:
        raise ValueError("GB energy with a cutoff")
    consts = {}
    for salted, numeric in (self_term, pair_term):
        required = {"soluteDielectric", "solventDielectric"} | ({"kappa"} if salted else set())
        if not required <= set(numeric):
            raise ValueError(f"GB energy term lacks {sorted(required - set(numeric))}")
        for key in required:
            if key in consts and consts[key] != numeric[key]:
                raise ValueError(f"GB energy terms disagree on {key}")
            consts[key] = numeric[key]
    if self_term[0] != pair_term[0]:
        raise ValueError("GB self and pair terms disagree on salt screening")
    if ace_term is not None and "offset" not in ace_term:
        raise ValueError("ACE term without an offset")

    params = np.array([force.getParticleParameters(i) for i in range(force.getNumParticles())], dtype=np.float64)
    params = params.reshape(-1, 3)
    return _GBModel(
        kind=model_name,
        charge=params[:, 0].copy(),
        offset_radius=params[:, 1].copy(),
        scaled_radius=params[:, 2].copy(),
        tanh_coeffs=coeffs,
        b_offset=b_offset,
        coulomb=_CUSTOM_GB_COULOMB,
        solute_dielectric=consts["soluteDielectric"],
        solvent_dielectric=consts["solventDielectric"],
        kappa=consts.get("kappa", 0.0) if self_term[0] else 0.0,
        ace_factor=28.3919551 if ace_term is not None else None,
        ace_offset=ace_term["offset"] if ace_term is not None else 0.0,
    )


def _parse_gbsaobc(force: openmm.GBSAOBCForce) -> _GBModel:
    if force.getNonbondedMethod() != openmm.GBSAOBCForce.NoCutoff:
        method = _GB_METHOD_NAMES.get(force.getNonbondedMethod(), str(force.getNonbondedMethod()))
        raise ValueError(f"nonbonded method {method} (only NoCutoff is supported)")
    n = force.getNumParticles()
    charge, radius, scale = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        q, r, s = force.getParticleParameters(i)
        charge[i] = _strip(q)
        radius[i] = _strip(r)
        scale[i] = float(s)
    offset_radius = radius - _OBC_DIELECTRIC_OFFSET
    solute, solvent = float(force.getSoluteDielectric()), float(force.getSolventDielectric())
    # The Reference kernel switches the polar term off when either dielectric is zero.
    coulomb = ONE_4PI_EPS0 if (solute != 0.0 and solvent != 0.0) else 0.0
    return _GBModel(
        kind="GBSAOBCForce",
        charge=charge,
        offset_radius=offset_radius,
        scaled_radius=offset_radius * scale,
        tanh_coeffs=(1.0, 0.8, 4.85),
        b_offset=_OBC_DIELECTRIC_OFFSET,
        coulomb=coulomb,
        solute_dielectric=solute if coulomb else 1.0,
        solvent_dielectric=solvent if coulomb else 1.0,
        ace_factor=4.0 * math.pi * _strip(force.getSurfaceAreaEnergy()),
        ace_offset=_OBC_DIELECTRIC_OFFSET,
        engulf_term=True,
    )


def _strip(value) -> float:
    """A bare float in OpenMM's default units (nm, kJ/mol, e, rad)."""
    if isinstance(value, openmm.unit.Quantity):
        return float(value.value_in_unit_system(openmm.unit.md_unit_system))
    return float(value)


# --------------------------------------------------------------------------------------------
# Support check.


def _force_problem(force) -> str | None:
    """None if the engine reproduces this force exactly, else a short description of why not."""
    name = type(force).__name__
    if name in _IGNORED_FORCES:
        return None
    if isinstance(force, (openmm.HarmonicBondForce, openmm.HarmonicAngleForce, openmm.PeriodicTorsionForce)):
        if force.usesPeriodicBoundaryConditions():
            return f"{name} (periodic boundary conditions)"
        return None
    if isinstance(force, openmm.NonbondedForce):
        method = force.getNonbondedMethod()
        if method != openmm.NonbondedForce.NoCutoff:
            method_name = _NONBONDED_METHOD_NAMES.get(method, method)
            return f"NonbondedForce (nonbonded method {method_name}; only NoCutoff is supported)"
        if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
            return "NonbondedForce (parameter offsets)"
        return None
    if isinstance(force, openmm.CustomGBForce):
        try:
            _parse_custom_gb(force)
        except ValueError as exc:
            return f"CustomGBForce (not the OBC1/OBC2 model: {exc})"
        return None
    if isinstance(force, openmm.GBSAOBCForce):
        if force.getNonbondedMethod() != openmm.GBSAOBCForce.NoCutoff:
            method = _GB_METHOD_NAMES.get(force.getNonbondedMethod(), force.getNonbondedMethod())
            return f"GBSAOBCForce (nonbonded method {method}; only NoCutoff is supported)"
        return None
    return name


def unsupported_forces(system: openmm.System) -> list[str]:
    """Descriptions of what in ``system`` the torch engine cannot evaluate; empty when all is supported."""
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


# --------------------------------------------------------------------------------------------
# The engine.


class _BatchedEnergy(torch.autograd.Function):
    """U(x) whose backward returns the gradient the kernels computed alongside the energy.

    Autograd never records the pairwise arrays: what it holds between forward and backward is
    the [B, N, 3] gradient alone.
    """

    @staticmethod
    def forward(ctx, x, engine, need_grad):
        energy, grad = engine._evaluate(x, need_grad)
        if need_grad:
            ctx.save_for_backward(grad)
        return energy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_energy):
        (grad,) = ctx.saved_tensors
        return grad_energy[:, None, None] * grad, None, None


def compiler_available(device) -> tuple[bool, str]:
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

    def __init__(self, terms: Terms, device, dtype, chunk_elements: int | None = None, compile: str = "auto"):
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
            raise UnsupportedSystemError(f"energy.compile = \"on\" but {why_not}; set it to \"auto\" or \"off\"")
        self.compiled = compile != "off" and usable
        self.compile_note = why_not if compile == "auto" and not usable else ""
        self._kernels: dict[bool, object] = {}
        self._itemsize = torch.empty((), dtype=dtype).element_size()
        self.n_nonfinite = 0

    @property
    def description(self) -> str:
        dtype_name = str(self.dtype).replace("torch.", "")
        mode = "compiled" if self.compiled else "eager"
        return f"torch ({self.device.type}, {dtype_name}, {mode})"

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_system(cls, system: openmm.System, device="cpu", dtype=torch.float64,
                    chunk_elements: int | None = None, compile: str = "auto") -> "TorchEnergy":
        problems = unsupported_forces(system)
        if problems:
            raise UnsupportedSystemError(
                "the torch energy engine cannot evaluate this System: " + "; ".join(problems)
                + '. Use engine = "openmm" instead.'
            )
        n = system.getNumParticles()
        bonds, angles, torsions, nonbonded, gb_models = [], [], [], [], []
        for force in system.getForces():
            if isinstance(force, openmm.HarmonicBondForce):
                for k in range(force.getNumBonds()):
                    i, j, r0, kb = force.getBondParameters(k)
                    bonds.append((i, j, _strip(r0), _strip(kb)))
            elif isinstance(force, openmm.HarmonicAngleForce):
                for k in range(force.getNumAngles()):
                    i, j, l, theta0, ka = force.getAngleParameters(k)
                    angles.append((i, j, l, _strip(theta0), _strip(ka)))
            elif isinstance(force, openmm.PeriodicTorsionForce):
                for k in range(force.getNumTorsions()):
                    i, j, l, m, per, phase, kt = force.getTorsionParameters(k)
                    torsions.append((i, j, l, m, int(per), _strip(phase), _strip(kt)))
            elif isinstance(force, openmm.NonbondedForce):
                nonbonded.append(force)
            elif isinstance(force, openmm.CustomGBForce):
                gb_models.append(_parse_custom_gb(force))
            elif isinstance(force, openmm.GBSAOBCForce):
                gb_models.append(_parse_gbsaobc(force))

        # Dense symmetric pair matrices with a zero diagonal. An exception overwrites its
        # pair's Lorentz-Berthelot parameters, which is exactly OpenMM's "the exception
        # replaces the standard interaction" (exclusions are exceptions with zero parameters).
        coul, sigma, eps = np.zeros((n, n)), np.zeros((n, n)), np.zeros((n, n))
        for force in nonbonded:
            q, s, e = np.zeros(n), np.zeros(n), np.zeros(n)
            for i in range(n):
                qi, si, ei = force.getParticleParameters(i)
                q[i], s[i], e[i] = _strip(qi), _strip(si), _strip(ei)
            coul = ONE_4PI_EPS0 * np.outer(q, q)
            sigma = 0.5 * (s[:, None] + s[None, :])
            eps = np.sqrt(np.outer(e, e))
            for k in range(force.getNumExceptions()):
                i, j, qq, se, ee = force.getExceptionParameters(k)
                for a, b in ((i, j), (j, i)):
                    coul[a, b], sigma[a, b], eps[a, b] = ONE_4PI_EPS0 * _strip(qq), _strip(se), _strip(ee)
        for m in (coul, sigma, eps):
            np.fill_diagonal(m, 0.0)

        dev = torch.device(device)

        def t(values):
            return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=dtype, device=dev)

        def per_atom(values):
            # [n, 1] and [N, N, 1]: the kernels keep the batch as the innermost dimension.
            return t(values)[..., None]

        def idx(rows, width):
            return torch.as_tensor(np.asarray(rows, dtype=np.int64).reshape(-1, width), device=dev)

        gb_terms = []
        for model in gb_models:
            ace_radius = model.offset_radius + model.ace_offset
            pair = -model.coulomb * np.outer(model.charge, model.charge)
            np.fill_diagonal(pair, 0.0)
            gb_terms.append(GBTerms(
                offset_radius=per_atom(model.offset_radius),
                born_radius_scale=per_atom(model.offset_radius + model.b_offset),
                o_row=per_atom(np.repeat(model.offset_radius[:, None], n, axis=1)),
                s_col=per_atom(np.repeat(model.scaled_radius[None, :], n, axis=0)),
                inv_o_row=per_atom(np.repeat(1.0 / model.offset_radius[:, None], n, axis=1)),
                self_coeff=per_atom(-0.5 * model.coulomb * model.charge ** 2),
                pair_coeff=per_atom(pair),
                ace_prefactor=per_atom((model.ace_factor or 0.0) * (ace_radius + model.ace_probe) ** 2),
                ace_radius=per_atom(ace_radius),
                tanh_coeffs=tuple(float(v) for v in model.tanh_coeffs),
                inv_solute=1.0 / model.solute_dielectric,
                inv_solvent=1.0 / model.solvent_dielectric,
                kappa=float(model.kappa),
                has_ace=model.ace_factor is not None,
                engulf_term=model.engulf_term,
            ))
        terms = Terms(
            n_atoms=n,
            bond_idx=idx([b[:2] for b in bonds], 2),
            bond_r0=per_atom([b[2] for b in bonds]),
            bond_k=per_atom([b[3] for b in bonds]),
            angle_idx=idx([a[:3] for a in angles], 3),
            angle_theta0=per_atom([a[3] for a in angles]),
            angle_k=per_atom([a[4] for a in angles]),
            torsion_idx=idx([d[:4] for d in torsions], 4),
            torsion_n=per_atom([d[4] for d in torsions]),
            torsion_phase=per_atom([d[5] for d in torsions]),
            torsion_k=per_atom([d[6] for d in torsions]),
            has_pairs=bool(nonbonded or gb_terms) and n > 1,
            eye=per_atom(np.eye(n)),
            off_diagonal=torch.as_tensor(~np.eye(n, dtype=bool), device=dev)[..., None],
            coul=per_atom(coul),
            sigma2=per_atom(sigma ** 2),
            eps4=per_atom(4.0 * eps),
            gb=gb_terms,
        )
        return cls(terms, dev, dtype, chunk_elements, compile)

    # ---- evaluation ------------------------------------------------------------------------

    def energy(self, x) -> torch.Tensor:
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
        return _BatchedEnergy.apply(xe, self, need_grad)

    __call__ = energy

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

    def _kernel(self, with_grad: bool):
        kernel = self._kernels.get(with_grad)
        if kernel is None:
            terms = self._terms

            def kernel(x):
                return energy_and_grad(x, terms, with_grad)

            if self.compiled:
                # Dynamo keeps its compiled variants per code object, at most 8 of them, and
                # checks their guards on every call. A code object of this engine's own keeps its
                # kernels apart from those of every other engine in the process (a test session
                # or a benchmark builds dozens), so none evicts or slows another.
                own = types.FunctionType(kernel.__code__.replace(), kernel.__globals__, kernel.__name__,
                                         kernel.__defaults__, kernel.__closure__)
                compiled = torch.compile(own, fullgraph=True)

                def kernel(x):
                    # Only the batch dimension is dynamic, from the first call: the trainer's
                    # batches, a last partial batch and evaluation chunks share one kernel, while
                    # the atom count stays a constant the compiler can plan loops around. A
                    # kernel compiled with a symbolic atom count (dynamic=True) ran the 273-atom
                    # helix 2.5x slower when its first call had been a 23-atom molecule.
                    torch._dynamo.maybe_mark_dynamic(x, 2)
                    return compiled(x)
            self._kernels[with_grad] = kernel
        return kernel

    def _run(self, x: torch.Tensor, with_grad: bool):
        if not self.compiled:
            return self._kernel(with_grad)(x)
        try:
            return self._kernel(with_grad)(x)
        except Exception as exc:  # the compiler is an external toolchain; never lose a run to it
            if self.compile_mode == "on":
                raise
            self.compiled = False
            self._kernels.clear()
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            self.compile_note = f"torch.compile failed ({type(exc).__name__}: {first_line}); running eager"
            warnings.warn(self.compile_note, RuntimeWarning, stacklevel=3)
            return self._kernel(with_grad)(x)

    def _evaluate(self, x: torch.Tensor, need_grad: bool):
        x = x.detach()
        batch = x.shape[0]
        if batch == 0:
            return x.new_zeros(0), (torch.zeros_like(x) if need_grad else None)
        # Equal chunks: a tiny last chunk would run with mostly empty SIMD lanes.
        n_chunks = max(1, -(-batch // self._chunk_size()))
        step = max(1, -(-batch // n_chunks))
        energies, grads = [], []
        with torch.no_grad():
            for start in range(0, batch, step):
                uc, gc = self._run(x[start:start + step].permute(2, 1, 0).contiguous(), need_grad)
                energies.append(uc)
                if need_grad:
                    grads.append(gc.permute(2, 1, 0))
        energy = energies[0] if len(energies) == 1 else torch.cat(energies)
        grad = (grads[0] if len(grads) == 1 else torch.cat(grads)) if need_grad else None
        # Non-finite coordinates reach the energy as NaN (see energy_and_grad).
        bad = ~torch.isfinite(energy)
        n_bad = int(bad.sum())
        if n_bad:
            self.n_nonfinite += n_bad
            energy = torch.where(bad, torch.full_like(energy, math.inf), energy)
            if need_grad:
                grad = torch.where(bad[:, None, None], torch.zeros_like(grad), grad)
        return energy, grad


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
_AUTO_MIN_BATCH_CPU = 16
_AUTO_MIN_BATCH_VACUUM_CPU = 256
_AUTO_MAX_ATOMS_COMPILED_CPU = 300   # measured up to 273 atoms
_AUTO_MAX_GB_ATOMS_EAGER_CPU = 120
_AUTO_MIN_BATCH_GPU = 32
# A chunk is at least one configuration, whose [N, N] matrices (~40 alive in the eager kernels)
# reach ~3 GiB at 3000 atoms in float64.
_AUTO_MAX_ATOMS = 3000


def _has_gb(system: openmm.System) -> bool:
    return any(isinstance(f, (openmm.CustomGBForce, openmm.GBSAOBCForce)) for f in system.getForces())


def prefer_torch(system: openmm.System, n_atoms: int, batch_size: int, device,
                 compiled: bool = True) -> tuple[bool, str]:
    """Whether ``engine = "auto"`` should use this torch engine rather than OpenMM, and why.

    ``compiled``: whether the kernels will be compiled (a compiler is present and
    ``energy.compile`` is not "off"). The CPU rule follows the measurements tabulated above; the
    accelerator branch is not measured here (no GPU was available when the rule was set).
    """
    problems = unsupported_forces(system)
    if problems:
        return False, "OpenMM: the torch engine does not support " + "; ".join(problems)
    if n_atoms > _AUTO_MAX_ATOMS:
        return False, (f"OpenMM: {n_atoms} atoms without a cutoff means {n_atoms * (n_atoms - 1) // 2} pairs "
                       "per configuration; the torch engine's dense pair matrices would need several GiB")
    kind = torch.device(device).type
    gb = _has_gb(system)
    if kind != "cpu":
        if batch_size >= _AUTO_MIN_BATCH_GPU:
            return True, (f"torch on {kind}: a batch of {batch_size} is evaluated in one pass on the device, "
                          "where OpenMM would copy each configuration to the host and loop serially "
                          "(extrapolated from the CPU measurements; not measured on a GPU)")
        return False, (f"OpenMM: a batch of {batch_size} is too small to amortise the torch engine's "
                       "kernel launches per call")
    if batch_size < _AUTO_MIN_BATCH_CPU:
        return False, (f"OpenMM: a batch of {batch_size} does not repay the torch engine's ~0.26 ms fixed "
                       "cost per call")
    if not compiled:
        if not gb:
            return False, ("OpenMM: in vacuum OpenMM is faster than the uncompiled torch kernels (23 atoms, "
                           "batch 256: 16 vs 19 us/config; 273 atoms: 0.16 vs 1.6 ms)")
        if n_atoms > _AUTO_MAX_GB_ATOMS_EAGER_CPU:
            return False, (f"OpenMM: for {n_atoms} atoms in implicit solvent the uncompiled torch kernels are "
                           "slower than OpenMM with a worker per core (273 atoms: 4.9-6.5 vs 3.9-4.0 ms/config)")
        return True, ("torch (uncompiled): implicit solvent on CPU measured 1.3-2.5x faster than OpenMM with a "
                      "worker per core for 22-23 atoms (batch 256: 41-72 vs 90-96 us/config), on one core")
    if n_atoms > _AUTO_MAX_ATOMS_COMPILED_CPU:
        return False, (f"OpenMM: {n_atoms} atoms is beyond the sizes where the compiled torch kernels were "
                       "measured faster on CPU (up to 273)")
    if not gb:
        if batch_size < _AUTO_MIN_BATCH_VACUUM_CPU:
            return False, (f"OpenMM: in vacuum at batch {batch_size} the energies are a small part of a step "
                           "(OpenMM Reference ~22 us per small molecule), too little to repay the torch "
                           "kernels' compile time (20-30 s on a first run)")
        return True, ("torch (compiled): in vacuum at batch >= 256 the compiled kernels beat OpenMM's best "
                      "setting 6x for 23 atoms (2.7 vs 16 us/config) and 1.6x for 273 atoms (99 vs 164)")
    return True, ("torch (compiled): implicit solvent on CPU measured 10-13x faster than OpenMM with a worker "
                  "per core for 22-23 atoms (batch 256: 7.7 vs 96 us/config) and 3-4x at 273 atoms")
