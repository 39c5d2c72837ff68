"""The torch energy engine against a direct OpenMM Reference-platform Context.

Every comparison uses perturbed configurations (Gaussian noise of 0.01 nm around a minimised
structure), so bonded terms, 1-4 exceptions, exclusions and the GB integrals are all off their
minima. Forces come from autograd through ``TorchEnergy.energy`` (whose backward returns the
kernels' analytic gradient).
"""
from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch
from molpt_testdata import STRUCTURES

from molpt_tui.errors import UserError
from molpt_tui.physics import torch_energy
from molpt_tui.physics.engine_protocol import EnergyEngine
from molpt_tui.physics.engines import EngineName, check_device, make_engine, prefer_torch
from molpt_tui.physics.torch_energy import Kernel, TorchEnergy, compiler_available
from molpt_tui.physics.torch_support import UnsupportedSystemError, unsupported_forces

ROOT = Path(__file__).resolve().parent.parent

# (structure, force-field files, extra createSystem arguments)
CASES = {
    "ala_ala-vacuum": ("ala_ala", ("amber99sbildn.xml",), {}),
    "ala_ala-obc1": ("ala_ala", ("amber99sbildn.xml", "implicit/obc1.xml"), {}),
    "ala_ala-obc2": ("ala_ala", ("amber99sbildn.xml", "implicit/obc2.xml"), {}),
    "ala_ala-obc2-salt": ("ala_ala", ("amber99sbildn.xml", "implicit/obc2.xml"),
                          {"implicitSolventKappa": 1.0 / unit.nanometer}),
    "ala_ala-obc1-no-sasa": ("ala_ala", ("amber99sbildn.xml", "implicit/obc1.xml"), {"sasaMethod": None}),
    "dipeptide-vacuum": ("alanine_dipeptide", ("amber96.xml",), {}),
    "dipeptide-obc1": ("alanine_dipeptide", ("amber96.xml", "implicit/obc1.xml"), {}),
    "dipeptide-obc2": ("alanine_dipeptide", ("amber96.xml", "implicit/obc2.xml"), {}),
    "dipeptide-gbsaobcforce": ("alanine_dipeptide", ("amber96.xml", "amber96_obc.xml"), {}),
    "protein-vacuum": ("polypeptide", ("amber99sbildn.xml",), {}),
    "protein-obc1": ("polypeptide", ("amber99sbildn.xml", "implicit/obc1.xml"), {}),
}
RTOL = {torch.float64: 1e-6, torch.float32: 1e-4}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # On the shared 2-core test machines, two torch threads contending with other jobs made
    # these tests several times slower; results do not depend on the thread count.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

FORCE_TOL = 1e-4  # max |F - F_ref| / max |F_ref|


def _load_make_structures() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_structures", ROOT / "scripts" / "make_structures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _polypeptide(forcefields: tuple[str, ...]) -> tuple[Any, Any]:
    """A 30-residue Ala/Gly helix (273 atoms), protonated; _case minimises it."""
    return _load_make_structures().helix(30, forcefields)


@functools.cache
def _case(name: str) -> tuple[Any, np.ndarray]:
    """(system, minimised positions [N, 3] in nm) for a CASES entry."""
    structure, forcefields, kwargs = CASES[name]
    ff = app.ForceField(*forcefields)
    if structure == "polypeptide":
        topology, positions = _polypeptide(forcefields)
    else:
        pdb = app.PDBFile(str(STRUCTURES / f"{structure}.pdb"))
        topology, positions = pdb.topology, np.array(pdb.positions.value_in_unit(unit.nanometer))
    system = ff.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None, **kwargs)
    if structure == "polypeptide":
        context = _context(system)
        context.setPositions(positions)
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, 100)
        positions = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return system, np.asarray(positions)


def _engine(system: Any, **kwargs: Any) -> TorchEnergy:
    """The engine with eager kernels: the same code the compiled path runs, without compile time.
    The compiled path has its own tests below."""
    kwargs.setdefault("compile", "off")
    return TorchEnergy.from_system(system, **kwargs)


def _context(system: Any) -> Any:
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))


def _reference(system: Any, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energies [B] and forces [B, N, 3] from OpenMM's Reference platform, one configuration at a time."""
    context = _context(system)
    energies, forces = [], []
    for x in xs:
        context.setPositions(x)
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        forces.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    return np.array(energies), np.array(forces)


def _perturbed(positions: np.ndarray, n: int = 8, sigma: float = 0.01, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return positions[None] + sigma * rng.standard_normal((n,) + positions.shape)


def _torch_energy_forces(engine: TorchEnergy, xs: np.ndarray,
                         input_dtype: torch.dtype = torch.float64) -> tuple[np.ndarray, np.ndarray]:
    x = torch.tensor(xs, dtype=input_dtype, requires_grad=True)
    energy = engine.energy(x)
    energy.sum().backward()
    return energy.detach().double().numpy(), -x.grad.double().numpy()


def _assert_matches(energy: np.ndarray, forces: np.ndarray, ref_energy: np.ndarray, ref_forces: np.ndarray,
                    dtype: torch.dtype) -> None:
    rel = np.abs(energy - ref_energy) / np.abs(ref_energy)
    assert rel.max() <= RTOL[dtype], f"energy relative error {rel.max():.2e}: {energy} vs {ref_energy}"
    force_err = np.abs(forces - ref_forces).max() / np.abs(ref_forces).max()
    assert force_err <= FORCE_TOL, f"force error {force_err:.2e} of max|F|"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES))
def test_energy_and_forces_match_openmm_reference(case: str, dtype: torch.dtype) -> None:
    system, positions = _case(case)
    xs = _perturbed(positions)
    ref_energy, ref_forces = _reference(system, xs)
    engine = _engine(system, dtype=dtype)
    energy, forces = _torch_energy_forces(engine, xs, input_dtype=dtype)
    _assert_matches(energy, forces, ref_energy, ref_forces, dtype)
    assert engine.n_nonfinite == 0


def test_implicit_solvent_is_actually_evaluated() -> None:
    # Guards against a GB term that silently evaluates to zero: vacuum and OBC energies of the
    # same configurations must differ by the (large, negative) solvation free energy.
    _, positions = _case("ala_ala-obc1")
    xs = _perturbed(positions, n=2)
    vacuum = _engine(_case("ala_ala-vacuum")[0]).energy(torch.tensor(xs))
    obc1 = _engine(_case("ala_ala-obc1")[0]).energy(torch.tensor(xs))
    obc2 = _engine(_case("ala_ala-obc2")[0]).energy(torch.tensor(xs))
    assert torch.all(obc1 - vacuum < -100.0)
    assert torch.all((obc1 - obc2).abs() > 1.0)


def _three_body_gb_system(force: Any) -> Any:
    system = openmm.System()
    for _ in range(3):
        system.addParticle(12.0)
    system.addForce(force)
    return system


def test_gb_buried_atom_branch_matches_both_openmm_implementations() -> None:
    # A small atom inside a large atom's descreening sphere: the native GBSAOBCForce adds an
    # extra term there that the CustomGBForce (obc2.xml) version lacks; both must be reproduced.
    from openmm.app.internal.customgbforces import GBSAOBC2Force

    charges, radii, scales = [0.5, -0.3, -0.2], [0.30, 0.10, 0.15], [1.0, 0.8, 0.7]
    native = openmm.GBSAOBCForce()
    custom = GBSAOBC2Force(SA="ACE")
    for q, r, s in zip(charges, radii, scales):
        native.addParticle(q, r, s)
        custom.addParticle([q, r, s])
    custom.finalize()
    xs = np.array([
        [[0.0, 0.0, 0.0], [0.05, 0.02, 0.0], [0.6, 0.1, 0.2]],
        [[0.0, 0.0, 0.0], [0.12, -0.03, 0.04], [0.3, 0.3, 0.0]],
        [[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.45, 0.1]],
    ])
    results = []
    for force in (native, custom):
        system = _three_body_gb_system(force)
        ref_energy, ref_forces = _reference(system, xs)
        energy, forces = _torch_energy_forces(_engine(system), xs)
        _assert_matches(energy, forces, ref_energy, ref_forces, torch.float64)
        results.append(ref_energy)
    # The buried configurations really exercise the branch where the two models differ.
    assert abs(results[0][0] - results[1][0]) > 1e-3


def test_torsion_phase_sign_and_periodicity_match_openmm() -> None:
    # Amber phases are 0 or 180 degrees, which hide the sign convention of the dihedral.
    system = openmm.System()
    for _ in range(5):
        system.addParticle(12.0)
    torsions = openmm.PeriodicTorsionForce()
    torsions.addTorsion(0, 1, 2, 3, 1, 0.4, 3.0)
    torsions.addTorsion(0, 1, 2, 3, 3, -1.1, 1.5)
    torsions.addTorsion(1, 2, 3, 4, 2, 2.5, 2.0)
    torsions.addTorsion(4, 3, 2, 1, 5, 0.7, 0.8)
    system.addForce(torsions)
    angles = openmm.HarmonicAngleForce()
    angles.addAngle(0, 1, 2, 1.9, 300.0)
    angles.addAngle(2, 3, 4, 2.0, 250.0)
    system.addForce(angles)
    base = np.array([[0.1, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.15], [0.1, 0.05, 0.2], [0.15, 0.0, 0.3]])
    xs = _perturbed(base, n=16, sigma=0.03, seed=3)
    ref_energy, ref_forces = _reference(system, xs)
    energy, forces = _torch_energy_forces(_engine(system), xs)
    _assert_matches(energy, forces, ref_energy, ref_forces, torch.float64)


def test_exceptions_replace_the_pair_interaction() -> None:
    # A pair with an exception must see only the exception's parameters; a pair without one
    # the Lorentz-Berthelot combination; an excluded pair nothing.
    system = openmm.System()
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    for q, s, e in [(0.4, 0.30, 0.5), (-0.3, 0.25, 0.8), (0.2, 0.35, 0.3), (-0.1, 0.28, 0.6)]:
        system.addParticle(12.0)
        nb.addParticle(q, s, e)
    nb.addException(0, 1, -0.05, 0.27, 0.2)   # scaled 1-4 style
    nb.addException(2, 1, 0.0, 1.0, 0.0)      # exclusion, given with i > j
    system.addForce(nb)
    base = np.array([[0.0, 0.0, 0.0], [0.35, 0.0, 0.0], [0.3, 0.4, 0.0], [0.0, 0.3, 0.35]])
    xs = _perturbed(base, n=6, sigma=0.03, seed=5)
    ref_energy, ref_forces = _reference(system, xs)
    energy, forces = _torch_energy_forces(_engine(system), xs)
    _assert_matches(energy, forces, ref_energy, ref_forces, torch.float64)


def test_chunked_evaluation_equals_single_chunk() -> None:
    system, positions = _case("protein-obc1")
    xs = torch.tensor(_perturbed(positions, n=3, seed=7))
    whole = _engine(system, chunk_elements=10**9)
    # Small enough that every configuration is its own chunk.
    pieces = _engine(system, chunk_elements=1)
    assert pieces._chunk_size() == 1
    x1 = xs.clone().requires_grad_(True)
    x2 = xs.clone().requires_grad_(True)
    u1, u2 = whole.energy(x1), pieces.energy(x2)
    (g1,) = torch.autograd.grad(u1.sum(), x1)
    (g2,) = torch.autograd.grad(u2.sum(), x2)
    torch.testing.assert_close(u1, u2, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-9)


def test_backward_keeps_only_the_gradient() -> None:
    # Memory bound: what autograd holds between forward and backward is one [B, N, 3] tensor,
    # and one chunk's [N, N, chunk] matrices stay within 64 MiB each.
    system, positions = _case("protein-obc1")
    engine = _engine(system)
    x = torch.tensor(_perturbed(positions, n=4), requires_grad=True)
    energy = engine.energy(x)
    assert [tuple(t.shape) for t in energy.grad_fn.saved_tensors] == [tuple(x.shape)]
    n = engine.n_atoms
    assert engine._chunk_size() == 16  # 273 atoms: the 16-configuration floor, 9.1 MiB per matrix
    assert engine._chunk_size() * n * n * 8 <= 64 << 20
    huge = _engine(system, dtype=torch.float32)
    huge.n_atoms = 3000  # only the chunk rule is asked
    assert huge._chunk_size() == 1


def test_chunks_are_equal_and_cover_the_batch() -> None:
    system, positions = _case("dipeptide-obc1")
    xs = torch.tensor(_perturbed(positions, n=11, seed=2))
    seen = []
    engine = _engine(system, chunk_elements=4 * 22 * 22)  # at most 4 configurations per call
    kernel = engine._kernel

    def spy(with_grad: bool) -> Kernel:
        inner = kernel(with_grad)

        def run(xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            seen.append(xc.shape[2])
            return inner(xc)
        return run

    engine._kernel = spy
    energy = engine.energy(xs)
    assert seen == [4, 4, 3]
    seen.clear()
    engine.energy(xs[:9])
    assert seen == [3, 3, 3]  # three equal chunks, not 4 + 4 + 1
    np.testing.assert_allclose(energy.numpy(), _reference(system, xs.numpy())[0], rtol=1e-9)


def test_nonfinite_input_gives_inf_and_is_counted() -> None:
    system, positions = _case("dipeptide-obc2")
    xs = _perturbed(positions, n=4, seed=11)
    ref_energy, ref_forces = _reference(system, xs)
    engine = _engine(system)
    x = torch.tensor(xs)
    x[1, 5, 2] = float("nan")
    x[3, 0, 0] = float("inf")
    x.requires_grad_(True)
    energy = engine.energy(x)
    assert energy[1].item() == math.inf and energy[3].item() == math.inf
    assert engine.n_nonfinite == 2
    # The finite rows are unaffected by their neighbours in the batch.
    np.testing.assert_allclose(energy[[0, 2]].detach().numpy(), ref_energy[[0, 2]], rtol=1e-9)
    # A loss that masks the bad rows must stay finite: they contribute zero gradient, not NaN.
    loss = torch.where(torch.isfinite(energy), energy, torch.zeros_like(energy)).sum()
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert torch.all(x.grad[[1, 3]] == 0)
    np.testing.assert_allclose(-x.grad[[0, 2]].numpy(), ref_forces[[0, 2]], atol=1e-8 * np.abs(ref_forces).max())
    engine.energy(x.detach()[:2])
    assert engine.n_nonfinite == 3


def test_coincident_atoms_give_inf_not_nan() -> None:
    system, positions = _case("dipeptide-vacuum")
    engine = _engine(system)
    x = torch.tensor(positions[None].repeat(2, axis=0))
    x[0, 20] = x[0, 0]   # two atoms with no bond path shorter than 1-5 on top of each other
    energy = engine.energy(x)
    assert energy[0].item() == math.inf
    assert math.isfinite(energy[1].item())
    assert engine.n_nonfinite == 1


def test_dtype_device_and_interface() -> None:
    system, positions = _case("ala_ala-obc1")
    engine = _engine(system, device="cpu", dtype=torch.float32)
    assert engine.name == "torch"
    assert engine.description == "torch (cpu, float32, eager)"
    # A float64 input is computed in the engine's dtype; the gradient returns in the input's.
    x = torch.tensor(_perturbed(positions, n=3), dtype=torch.float64, requires_grad=True)
    energy = engine.energy(x)
    assert energy.dtype == torch.float32 and energy.shape == (3,)
    energy.sum().backward()
    assert x.grad.dtype == torch.float64
    with torch.no_grad():
        assert engine.energy(x).requires_grad is False
    with pytest.raises(ValueError):
        engine.energy(torch.zeros(2, 5, 3))
    empty = torch.zeros(0, engine.n_atoms, 3, requires_grad=True)
    engine.energy(empty).sum().backward()
    assert empty.grad.shape == (0, engine.n_atoms, 3)
    engine.close()


def test_unsupported_force_is_named_and_points_to_openmm() -> None:
    system, _ = _case("dipeptide-vacuum")
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    assert unsupported_forces(system) == []
    external = openmm.CustomExternalForce("k*x^2")
    external.addGlobalParameter("k", 1.0)
    system.addForce(external)
    assert unsupported_forces(system) == ["CustomExternalForce"]
    with pytest.raises(UnsupportedSystemError, match="CustomExternalForce") as info:
        _engine(system)
    assert isinstance(info.value, ValueError)
    assert 'engine = "openmm"' in str(info.value)


def test_unsupported_nonbonded_method_and_gb_model_are_named() -> None:
    pdb = app.PDBFile(str(STRUCTURES / "ala_ala.pdb"))
    ff = app.ForceField("amber99sbildn.xml")
    system = ff.createSystem(pdb.topology, nonbondedMethod=app.CutoffNonPeriodic, constraints=None)
    problems = unsupported_forces(system)
    assert len(problems) == 1 and "NonbondedForce" in problems[0] and "CutoffNonPeriodic" in problems[0]
    with pytest.raises(UnsupportedSystemError, match="CutoffNonPeriodic"):
        _engine(system)
    # HCT is a CustomGBForce too, but not an OBC one: it must be refused, not mis-evaluated.
    hct = app.ForceField("amber99sbildn.xml", "implicit/hct.xml").createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    problems = unsupported_forces(hct)
    assert len(problems) == 1 and problems[0].startswith("CustomGBForce")
    with pytest.raises(UnsupportedSystemError, match="CustomGBForce"):
        _engine(hct)


def test_prefer_torch_rule() -> None:
    vacuum, _ = _case("dipeptide-vacuum")
    obc1, _ = _case("ala_ala-obc1")
    native_gb, _ = _case("dipeptide-gbsaobcforce")
    # Compiled kernels on CPU: implicit solvent from batches of 16, vacuum only from 256, and only
    # up to the sizes that were measured.
    use, reason = prefer_torch(obc1, 23, 256, "cpu")
    assert use is True and "implicit solvent" in reason and "compiled" in reason
    assert prefer_torch(native_gb, 22, 64, torch.device("cpu"))[0] is True
    assert prefer_torch(obc1, 23, 1, "cpu")[0] is False
    assert prefer_torch(vacuum, 22, 128, "cpu")[0] is False
    assert prefer_torch(vacuum, 22, 256, "cpu")[0] is True
    assert prefer_torch(obc1, 273, 256, "cpu")[0] is True
    assert prefer_torch(obc1, 301, 256, "cpu")[0] is False
    # Uncompiled kernels: only small molecules in implicit solvent.
    assert prefer_torch(obc1, 23, 256, "cpu", compiled=False)[0] is True
    assert prefer_torch(vacuum, 22, 4096, "cpu", compiled=False)[0] is False
    assert prefer_torch(obc1, 273, 256, "cpu", compiled=False)[0] is False
    # An accelerator takes batched work whatever the solvent model.
    assert prefer_torch(vacuum, 22, 256, "cuda")[0] is True
    assert prefer_torch(vacuum, 22, 256, "cuda:0")[0] is True
    assert prefer_torch(vacuum, 22, 1, "cuda")[0] is False
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(vacuum))
    system.addForce(openmm.CustomExternalForce("x"))
    use, reason = prefer_torch(system, 22, 4096, "cuda")
    assert use is False and "CustomExternalForce" in reason


# --------------------------------------------------------------------------------------------
# The compiled kernels: same numbers as OpenMM, and a failing compiler never loses a run. Each
# case compiles (seconds, cached on disk afterwards), so only a few systems go through it.

needs_compiler = pytest.mark.skipif(not compiler_available("cpu")[0], reason="no C++ compiler for torch.compile")


@needs_compiler
@pytest.mark.parametrize("case, dtype", [
    ("ala_ala-obc1", torch.float64),
    ("ala_ala-obc1", torch.float32),
    ("dipeptide-gbsaobcforce", torch.float64),
    ("dipeptide-vacuum", torch.float64),
], ids=["obc1-f64", "obc1-f32", "gbsaobcforce-f64", "vacuum-f64"])
def test_compiled_kernels_match_openmm_reference(case: str, dtype: torch.dtype) -> None:
    system, positions = _case(case)
    xs = _perturbed(positions, n=24, seed=4)
    ref_energy, ref_forces = _reference(system, xs)
    engine = TorchEnergy.from_system(system, dtype=dtype, compile="on")
    energy, forces = _torch_energy_forces(engine, xs, input_dtype=dtype)
    assert engine.compiled and engine.description.endswith("compiled)")
    _assert_matches(energy, forces, ref_energy, ref_forces, dtype)
    # A different batch size reuses the kernel (dynamic batch dimension) and stays right.
    energy5, forces5 = _torch_energy_forces(engine, xs[:5], input_dtype=dtype)
    _assert_matches(energy5, forces5, ref_energy[:5], ref_forces[:5], dtype)
    if dtype == torch.float64 and case == "ala_ala-obc1":
        with torch.no_grad():  # the energy-only kernel
            no_grad = engine.energy(torch.tensor(xs)).numpy()
        np.testing.assert_allclose(no_grad, ref_energy, rtol=1e-9)


def test_failing_compiler_falls_back_to_eager_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    system, positions = _case("ala_ala-obc1")
    xs = _perturbed(positions, n=3)
    ref_energy, ref_forces = _reference(system, xs)
    monkeypatch.setattr(torch_energy, "compiler_available", lambda device: (True, ""))

    def broken_compile(fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            raise RuntimeError("C++ compile error: cannot find Python.h\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    engine = TorchEnergy.from_system(system)
    assert engine.compiled
    with pytest.warns(RuntimeWarning, match="running eager"):
        energy, forces = _torch_energy_forces(engine, xs)
    _assert_matches(energy, forces, ref_energy, ref_forces, torch.float64)
    assert not engine.compiled and engine.description == "torch (cpu, float64, eager)"
    assert "RuntimeError: C++ compile error: cannot find Python.h" in engine.compile_note
    # The reason a run or check-energy shows is read after use, so it carries the fallback.
    from molpt_tui.physics.engines import EngineChoice

    assert EngineChoice(engine, "requested").reason == f"requested; kernels not compiled: {engine.compile_note}"
    # With compile = "on" the user asked for it: the failure is raised, not hidden.
    strict = TorchEnergy.from_system(system, compile="on")
    with pytest.raises(RuntimeError, match=r"Python\.h"):
        strict.energy(torch.tensor(xs))


def test_no_compiler_means_eager_or_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    system, _ = _case("ala_ala-obc1")
    monkeypatch.setattr(torch_energy.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert compiler_available("cpu") == (False, "no C++ compiler on PATH (torch.compile's CPU backend needs one)")
    engine = TorchEnergy.from_system(system)
    assert not engine.compiled and "no C++ compiler" in engine.compile_note
    with pytest.raises(UnsupportedSystemError, match='compile = "on" but no C\\+\\+ compiler'):
        TorchEnergy.from_system(system, compile="on")
    with pytest.raises(ValueError, match="compile must be"):
        TorchEnergy.from_system(system, compile="yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", ["ala_ala-obc1", "dipeptide-gbsaobcforce", "protein-obc1"])
def test_cuda_matches_openmm_reference(case: str, dtype: torch.dtype) -> None:
    system, positions = _case(case)
    xs = _perturbed(positions, n=64, seed=9)
    ref_energy, ref_forces = _reference(system, xs)
    engine = TorchEnergy.from_system(system, device="cuda", dtype=dtype)  # compiled when triton is present
    x = torch.tensor(xs, dtype=dtype, device="cuda", requires_grad=True)
    energy = engine.energy(x)
    energy.sum().backward()
    assert energy.device.type == "cuda" and x.grad.device.type == "cuda"
    _assert_matches(energy.detach().double().cpu().numpy(), -x.grad.double().cpu().numpy(),
                    ref_energy, ref_forces, dtype)


def test_the_torch_engine_is_an_energy_engine() -> None:
    system, _ = _case("ala_ala-obc1")
    double, single = _engine(system), _engine(system, dtype=torch.float32)
    assert isinstance(double, EnergyEngine) and isinstance(single, EnergyEngine)
    assert double.device == torch.device("cpu") and not double.compiled
    assert (double.precision, single.precision) == ("double", "single")


def test_warm_up_announces_the_compile_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in compiler (the eager kernel itself): the compiled path, without the wait.
    system, positions = _case("ala_ala-obc1")
    monkeypatch.setattr(torch_energy, "compiler_available", lambda device: (True, ""))
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    engine = TorchEnergy.from_system(system)
    said: list[str] = []
    engine.warm_up(torch.tensor(_perturbed(positions, n=4), dtype=torch.float32), said.append)
    assert said[0] == torch_energy.COMPILE_WAIT and said[1].startswith("torch energy kernels compiled in ")
    assert sorted(engine._kernels) == [False, True]  # both kernels: with and without forces
    eager = _engine(system)
    eager.warm_up(torch.tensor(_perturbed(positions, n=4)), said.append)
    assert len(said) == 2 and not eager._kernels  # nothing to compile, nothing said


def test_a_device_this_machine_lacks_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from molpt_tui.physics.systems import build_system

    ms = build_system(STRUCTURES / "ala_ala.pdb", ["amber99sbildn.xml"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    engines: tuple[EngineName, ...] = ("torch", "auto")
    for engine in engines:
        with pytest.raises(UserError, match=r'^training\.device = "cuda": CUDA is not available here') as info:
            make_engine(ms, engine, device="cuda")
        assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"^--device gpu0: not a device"):
        check_device("gpu0", "--device")
    check_device("cpu", "training.device")
