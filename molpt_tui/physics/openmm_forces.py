"""Reading an OpenMM ``System`` into the dense constants of the torch kernels (:class:`Terms`).

Recognises ``HarmonicBondForce``, ``HarmonicAngleForce``, ``PeriodicTorsionForce``,
``NonbondedForce`` (exceptions *replace* the Lorentz-Berthelot pair, so exclusions are exceptions
with zero chargeProd and epsilon, and 1-4 pairs carry their own scaled parameters) and the two
OBC generalized-Born forms:

- the ``CustomGBForce`` written by ``implicit/obc1.xml`` and ``implicit/obc2.xml``
  (``GBSAOBC1Force`` / ``GBSAOBC2Force`` in ``openmm.app.internal.customgbforces``), with or
  without the ACE surface-area term and with or without salt (kappa). Its expressions are
  recognised term by term, so a modified expression is refused rather than silently
  mis-evaluated;
- the native ``GBSAOBCForce`` (OBC II, as in ``amber99_obc.xml``), including the Reference
  platform's extra term for an atom buried inside another's descreening sphere, which the
  ``CustomGBForce`` version does not have.

Which Systems as a whole are supported is decided in :mod:`torch_support`; this module assumes
it was asked first.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import openmm
import torch

from .torch_kernels import GBTerms, Terms

# Coulomb constant of NonbondedForce and GBSAOBCForce in OpenMM 8 (kJ nm / (mol e^2)). Measured
# from a two-charge Reference-platform Context; the CustomGBForce expressions hard-code their own
# (slightly different) 138.935485, which is used for those terms.
ONE_4PI_EPS0 = 138.93545764438198
_CUSTOM_GB_COULOMB = 138.935485

# Reference-platform constants of GBSAOBCForce (ObcParameters.cpp): dielectric offset and the
# ACE probe radius, both in nm.
_OBC_DIELECTRIC_OFFSET = 0.009
_ACE_PROBE_RADIUS = 0.14

NONBONDED_METHOD_NAMES = {
    openmm.NonbondedForce.NoCutoff: "NoCutoff",
    openmm.NonbondedForce.CutoffNonPeriodic: "CutoffNonPeriodic",
    openmm.NonbondedForce.CutoffPeriodic: "CutoffPeriodic",
    openmm.NonbondedForce.Ewald: "Ewald",
    openmm.NonbondedForce.PME: "PME",
    openmm.NonbondedForce.LJPME: "LJPME",
}
GB_METHOD_NAMES = {0: "NoCutoff", 1: "CutoffNonPeriodic", 2: "CutoffPeriodic"}


# OpenMM's force classes a System may hold that contribute no energy.
IGNORED_FORCES = ("CMMotionRemover",)
GB_FORCE_TYPES = (openmm.CustomGBForce, openmm.GBSAOBCForce)


def has_gb_force(system: Any) -> bool:
    """Whether the System carries an implicit-solvent (generalized Born) force."""
    return any(isinstance(f, GB_FORCE_TYPES) for f in system.getForces())


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


def _split_expression(expression: str) -> tuple[str, dict[str, float], dict[str, str]]:
    parts = [p.replace(" ", "").replace("\t", "").replace("\n", "") for p in expression.split(";")]
    parts = [p for p in parts if p]
    core = parts[0]
    numeric: dict[str, float] = {}
    symbolic: dict[str, str] = {}
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
class GBModel:
    """One OBC generalized-Born force reduced to per-atom arrays and a handful of constants."""

    kind: str                  # "OBC1", "OBC2" (CustomGBForce) or "GBSAOBCForce"
    charge: np.ndarray         # e
    offset_radius: np.ndarray  # nm, rho_i - offset ("or")
    scaled_radius: np.ndarray  # nm, descreening radius ("sr")
    tanh_coeffs: tuple[float, float, float]  # (a, b, c) in tanh(a*psi - b*psi^2 + c*psi^3)
    b_offset: float            # radius = or + b_offset in the Born-radius formula
    coulomb: float
    solute_dielectric: float
    solvent_dielectric: float
    kappa: float = 0.0
    ace_factor: float | None = None    # kJ/mol/nm^2 times 4 pi; None: no surface-area term
    ace_offset: float = 0.0
    ace_probe: float = _ACE_PROBE_RADIUS
    engulf_term: bool = False  # Reference GBSAOBCForce's extra term for a buried atom


def parse_custom_gb(force: Any) -> GBModel:
    """Map a CustomGBForce onto the OBC model, or raise ValueError saying what differs."""
    if force.getNonbondedMethod() != openmm.CustomGBForce.NoCutoff:
        method = GB_METHOD_NAMES.get(force.getNonbondedMethod(), str(force.getNonbondedMethod()))
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
    consts: dict[str, float] = {}
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
    return GBModel(
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


def parse_gbsaobc(force: Any) -> GBModel:
    """Map a native GBSAOBCForce onto the OBC model with the Reference platform's constants."""
    if force.getNonbondedMethod() != openmm.GBSAOBCForce.NoCutoff:
        method = GB_METHOD_NAMES.get(force.getNonbondedMethod(), str(force.getNonbondedMethod()))
        raise ValueError(f"nonbonded method {method} (only NoCutoff is supported)")
    n = force.getNumParticles()
    charge, radius, scale = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        q, r, s = force.getParticleParameters(i)
        charge[i] = md_value(q)
        radius[i] = md_value(r)
        scale[i] = float(s)
    offset_radius = radius - _OBC_DIELECTRIC_OFFSET
    solute, solvent = float(force.getSoluteDielectric()), float(force.getSolventDielectric())
    # The Reference kernel switches the polar term off when either dielectric is zero.
    coulomb = ONE_4PI_EPS0 if (solute != 0.0 and solvent != 0.0) else 0.0
    return GBModel(
        kind="GBSAOBCForce",
        charge=charge,
        offset_radius=offset_radius,
        scaled_radius=offset_radius * scale,
        tanh_coeffs=(1.0, 0.8, 4.85),
        b_offset=_OBC_DIELECTRIC_OFFSET,
        coulomb=coulomb,
        solute_dielectric=solute if coulomb else 1.0,
        solvent_dielectric=solvent if coulomb else 1.0,
        ace_factor=4.0 * math.pi * md_value(force.getSurfaceAreaEnergy()),
        ace_offset=_OBC_DIELECTRIC_OFFSET,
        engulf_term=True,
    )


def md_value(value: Any) -> float:
    """A bare float in OpenMM's default units (nm, kJ/mol, e, rad)."""
    if isinstance(value, openmm.unit.Quantity):
        return float(value.value_in_unit_system(openmm.unit.md_unit_system))
    return float(value)




# --------------------------------------------------------------------------------------------
# The whole System as kernel constants.


def read_terms(system: Any, device: str | torch.device, dtype: torch.dtype) -> Terms:
    """Every energy term of a supported System as dense tensors on ``device`` in ``dtype``.

    Forces this module does not know (only CMMotionRemover is expected once the support check
    has passed) are skipped.
    """
    n = system.getNumParticles()
    bonds: list[tuple[int, int, float, float]] = []
    angles: list[tuple[int, int, int, float, float]] = []
    torsions: list[tuple[int, int, int, int, int, float, float]] = []
    nonbonded: list[Any] = []
    gb_models: list[GBModel] = []
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, r0, kb = force.getBondParameters(k)
                bonds.append((i, j, md_value(r0), md_value(kb)))
        elif isinstance(force, openmm.HarmonicAngleForce):
            for k in range(force.getNumAngles()):
                p0, p1, p2, theta0, ka = force.getAngleParameters(k)
                angles.append((p0, p1, p2, md_value(theta0), md_value(ka)))
        elif isinstance(force, openmm.PeriodicTorsionForce):
            for k in range(force.getNumTorsions()):
                p0, p1, p2, p3, per, phase, kt = force.getTorsionParameters(k)
                torsions.append((p0, p1, p2, p3, int(per), md_value(phase), md_value(kt)))
        elif isinstance(force, openmm.NonbondedForce):
            nonbonded.append(force)
        elif isinstance(force, openmm.CustomGBForce):
            gb_models.append(parse_custom_gb(force))
        elif isinstance(force, openmm.GBSAOBCForce):
            gb_models.append(parse_gbsaobc(force))

    # Dense symmetric pair matrices with a zero diagonal. An exception overwrites its
    # pair's Lorentz-Berthelot parameters, which is exactly OpenMM's "the exception
    # replaces the standard interaction" (exclusions are exceptions with zero parameters).
    coul, sigma, eps = np.zeros((n, n)), np.zeros((n, n)), np.zeros((n, n))
    for force in nonbonded:
        q, s, e = np.zeros(n), np.zeros(n), np.zeros(n)
        for i in range(n):
            qi, si, ei = force.getParticleParameters(i)
            q[i], s[i], e[i] = md_value(qi), md_value(si), md_value(ei)
        coul = ONE_4PI_EPS0 * np.outer(q, q)
        sigma = 0.5 * (s[:, None] + s[None, :])
        eps = np.sqrt(np.outer(e, e))
        for k in range(force.getNumExceptions()):
            i, j, qq, se, ee = force.getExceptionParameters(k)
            for a, b in ((i, j), (j, i)):
                coul[a, b], sigma[a, b], eps[a, b] = ONE_4PI_EPS0 * md_value(qq), md_value(se), md_value(ee)
    for mat in (coul, sigma, eps):
        np.fill_diagonal(mat, 0.0)

    dev = torch.device(device)

    def t(values: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=dtype, device=dev)

    def per_atom(values: Any) -> torch.Tensor:
        # [n, 1] and [N, N, 1]: the kernels keep the batch as the innermost dimension.
        return t(values)[..., None]

    def idx(rows: Any, width: int) -> torch.Tensor:
        return torch.as_tensor(np.asarray(rows, dtype=np.int64).reshape(-1, width), device=dev)

    gb_terms = []
    for model in gb_models:
        ace_radius = model.offset_radius + model.ace_offset
        pair = -model.coulomb * np.outer(model.charge, model.charge)
        np.fill_diagonal(pair, 0.0)
        a, b, c = model.tanh_coeffs
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
            tanh_coeffs=(float(a), float(b), float(c)),
            inv_solute=1.0 / model.solute_dielectric,
            inv_solvent=1.0 / model.solvent_dielectric,
            kappa=float(model.kappa),
            has_ace=model.ace_factor is not None,
            engulf_term=model.engulf_term,
        ))
    return Terms(
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
