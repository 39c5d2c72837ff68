"""The OpenMM bridge against a direct OpenMM Context, its gradient, failures and shutdown; the
platform and worker choices (from fixed timings: no test depends on what is faster here); the
checks of a configured platform."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import psutil
import pytest
import torch

from molpt_tui import processes
from molpt_tui.errors import UserError
from molpt_tui.physics import openmm_bridge, openmm_platforms
from molpt_tui.physics.engine_protocol import EnergyEngine
from molpt_tui.physics.engines import EngineName, bridge_workers, make_engine, make_openmm
from molpt_tui.physics.openmm_bridge import (
    OpenMMBridge,
    PlatformMeasure,
    PlatformTimings,
    measure_platforms,
    pick_platform,
)
from molpt_tui.physics.openmm_platforms import PlatformUnavailableError, check_platform
from molpt_tui.physics.systems import MolecularSystem


def _direct(system: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    energies, forces = [], []
    for xi in x:
        ctx.setPositions(xi)
        state = ctx.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole))
        per_nm = openmm.unit.kilojoule_per_mole / openmm.unit.nanometer
        forces.append(state.getForces(asNumpy=True).value_in_unit(per_nm))
    return np.array(energies), np.array(forces)


def _perturbed(ms: MolecularSystem, n: int, scale: float = 0.01, seed: int = 0) -> np.ndarray:
    return ms.positions[None] + np.random.default_rng(seed).normal(0.0, scale, (n, ms.n_atoms, 3))


def test_constraints_are_absent_from_energy_systems(ala2_system: MolecularSystem) -> None:
    # OpenMM would drop the bond energy of constrained bonds.
    assert ala2_system.system.getNumConstraints() == 0


@pytest.mark.parametrize("n_workers", [0, 2])
def test_energies_and_forces_match_direct_context(ala2_system: MolecularSystem, aa_obc1_system: MolecularSystem,
                                                   n_workers: int) -> None:
    for ms in (ala2_system, aa_obc1_system):
        x = _perturbed(ms, 6)
        with OpenMMBridge(ms.system, platform="Reference", n_workers=n_workers) as bridge:
            energies, forces = bridge.evaluate(x)
        ref_e, ref_f = _direct(ms.system, x)
        np.testing.assert_allclose(energies, ref_e, rtol=1e-8)
        np.testing.assert_allclose(forces, ref_f, rtol=1e-8, atol=1e-8 * np.abs(ref_f).max())


def test_gradient_is_minus_force_and_matches_finite_differences(ala2_system: MolecularSystem) -> None:
    bridge = OpenMMBridge(ala2_system.system, platform="Reference")
    x = torch.tensor(_perturbed(ala2_system, 2, seed=3), requires_grad=True)
    u = bridge.energy(x)
    assert u.dtype == torch.float64
    (grad,) = torch.autograd.grad(u.sum(), x)
    _, forces = bridge.evaluate(x.detach().numpy())
    np.testing.assert_allclose(grad.numpy(), -forces, rtol=1e-12)
    # central differences on a handful of coordinates
    rng = np.random.default_rng(1)
    h = 1e-6
    for _ in range(6):
        b, a, d = rng.integers(2), rng.integers(ala2_system.n_atoms), rng.integers(3)
        xp = x.detach().numpy().copy()
        xm = xp.copy()
        xp[b, a, d] += h
        xm[b, a, d] -= h
        fd = (bridge.evaluate(xp)[0][b] - bridge.evaluate(xm)[0][b]) / (2 * h)
        assert fd == pytest.approx(grad[b, a, d].item(), rel=1e-5, abs=1e-4)
    bridge.close()


def test_nonfinite_and_failing_configurations_give_inf_and_are_counted(ala2_system: MolecularSystem) -> None:
    bridge = OpenMMBridge(ala2_system.system, platform="Reference")
    x = _perturbed(ala2_system, 4)
    x[1, 3, 0] = np.nan
    x[2] = 0.0  # all atoms on top of each other: OpenMM yields a non-finite energy
    x[3, 5] = np.inf
    energies, forces = bridge.evaluate(x)
    assert np.isfinite(energies[0])
    assert np.all(np.isposinf(energies[1:]))
    assert np.all(forces[1:] == 0.0)
    assert bridge.n_nonfinite == 3
    # a later good batch is not polluted by the failure (no stale values)
    e2, _ = bridge.evaluate(x[:1])
    assert e2[0] == energies[0]
    bridge.close()


def _fixed(timings: dict[str, float]) -> PlatformMeasure:
    """Timings for the bridge to choose from, instead of measuring: no test depends on which
    platform happens to be faster on a loaded machine."""

    def measure(system_xml: str, sample: np.ndarray, names: Sequence[str]) -> PlatformTimings:
        return ({n: timings[n] for n in names if n in timings},
                {n: "not offered by this test" for n in names if n not in timings})

    return measure


def test_auto_platform_takes_the_fastest_measured_and_says_so() -> None:
    choice = pick_platform({"Reference": 40.0, "CPU": 25.0}, {}, ["Reference", "CPU"], "auto")
    assert choice.platform == "CPU" and choice.us_per_config == 25.0
    assert choice.reason == "fastest measured per configuration (CPU 25 us, Reference 40 us)"
    requested = pick_platform({"Reference": 19.4}, {}, ["Reference"], "Reference")
    assert requested.platform == "Reference" and requested.reason == "requested (19 us per configuration)"
    with pytest.raises(PlatformUnavailableError, match="no usable OpenMM platform"):
        pick_platform({}, {"CUDA": "no device"}, ["CUDA"], "CUDA")


def test_bridge_reports_the_auto_choice(ala2_system: MolecularSystem) -> None:
    with OpenMMBridge(ala2_system.system, platform="auto", sample_positions=ala2_system.positions[None],
                      measure=_fixed({"Reference": 12.0})) as bridge:
        assert bridge.platform == "Reference"
        assert bridge.choice.reason == "fastest measured per configuration (Reference 12 us)"
        assert bridge.description == "openmm (Reference, in-process)"


def test_measuring_times_what_works_and_records_what_does_not(ala2_system: MolecularSystem) -> None:
    xml = openmm.XmlSerializer.serialize(ala2_system.system)
    timings, errors = measure_platforms(xml, ala2_system.positions[None], ["Reference", "NoSuchPlatform"], repeats=2)
    assert set(timings) == {"Reference"} and timings["Reference"] > 0.0
    assert set(errors) == {"NoSuchPlatform"}


def test_the_bridge_is_an_energy_engine(ala2_system: MolecularSystem) -> None:
    with OpenMMBridge(ala2_system.system, platform="Reference", measure=_fixed({"Reference": 10.0})) as bridge:
        assert isinstance(bridge, EnergyEngine)
        assert bridge.name == "openmm" and bridge.device == torch.device("cpu")
        assert bridge.precision == "double" and not bridge.compiled and bridge.compile_note == ""
        bridge.warm_up(torch.tensor(_perturbed(ala2_system, 2)), print)  # nothing to do, nothing said


@pytest.mark.parametrize("requested, us, batch, cores, expected", [
    (3, 1.0, 64, 2, 3),          # asked for: taken as given
    (0, 5000.0, 64, 1, 0),       # one core: nothing to spread over
    (0, 20.0, 64, 2, 0),         # vacuum: 1.3 ms a batch does not repay the pipes
    (0, 1000.0, 64, 2, 2),       # implicit solvent: a worker per core
    (0, 1000.0, 3, 4, 0),        # a tiny batch
    (0, 1000.0, 8, 16, 8),       # never more workers than configurations
])
def test_worker_count_rule(requested: int, us: float, batch: int, cores: int, expected: int) -> None:
    assert bridge_workers(requested, us, batch, cores) == expected


def test_engine_choice_from_fixed_timings(ala2_system: MolecularSystem) -> None:
    choice = make_engine(ala2_system, "openmm", platform="auto", batch_size=64, measure=_fixed({"Reference": 10.0}))
    assert choice.description == "openmm (Reference, in-process)"
    assert choice.reason == "requested; OpenMM platform Reference: fastest measured per configuration (Reference 10 us)"
    choice.engine.close()
    said: list[str] = []
    choice = make_engine(ala2_system, "openmm", platform="Reference", n_workers=2, log=said.append,
                         measure=_fixed({"Reference": 10.0}))
    try:
        assert choice.description == "openmm (Reference, 2 worker processes)"
        assert said == ["starting 2 OpenMM worker processes (Reference platform)"]
    finally:
        choice.engine.close()


def _only_reference_and_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openmm_platforms, "available_platforms", lambda: ["Reference", "CPU"])


def test_a_platform_this_machine_lacks_is_named_with_what_it_has(monkeypatch: pytest.MonkeyPatch) -> None:
    _only_reference_and_cpu(monkeypatch)
    with pytest.raises(UserError) as info:
        check_platform("CUDA", "energy.platform")
    message = str(info.value)
    assert message.startswith('energy.platform = "CUDA": this machine\'s OpenMM has no CUDA platform')
    assert "available here: Reference, CPU" in message and "\n" not in message
    with pytest.raises(UserError, match=r'^energy\.platform = "Cuda": not an OpenMM platform'):
        check_platform("Cuda", "energy.platform")
    check_platform("auto", "energy.platform")
    check_platform("CPU", "data.platform", allow_auto=False)
    with pytest.raises(UserError, match=r'^data\.platform = "auto"'):
        check_platform("auto", "data.platform", allow_auto=False)


def test_a_missing_platform_fails_before_any_worker_starts(monkeypatch: pytest.MonkeyPatch,
                                                          ala2_system: MolecularSystem) -> None:
    _only_reference_and_cpu(monkeypatch)

    def no_bridge(*args: object, **kwargs: object) -> None:
        raise AssertionError("a bridge was built for a platform that is not here")

    monkeypatch.setattr(openmm_bridge, "OpenMMBridge", no_bridge)
    engines: tuple[EngineName, ...] = ("openmm", "auto", "torch")
    for engine in engines:
        with pytest.raises(UserError, match=r'^energy\.platform = "CUDA"'):
            make_engine(ala2_system, engine, platform="CUDA", n_workers=2)


def test_a_platform_without_a_working_context_is_a_user_error(ala2_system: MolecularSystem) -> None:
    def broken(system_xml: str, sample: np.ndarray, names: Sequence[str]) -> PlatformTimings:
        return {}, {n: "Error initializing context: no device" for n in names}

    with pytest.raises(UserError, match=r'^energy\.platform = "CPU": OpenMM cannot make a Context .*no device'):
        make_openmm(ala2_system, "CPU", measure=broken)


def test_usable_cpus_follows_slurm_and_the_cgroup_quota(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert processes.usable_cpus() == 1
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert processes.usable_cpus() >= 1
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert processes._cgroup_cpu_quota(quota) == 2
    quota.write_text("max 100000\n")
    assert processes._cgroup_cpu_quota(quota) is None
    assert processes._cgroup_cpu_quota(tmp_path / "absent") is None


def test_workers_are_gone_after_close(ala2_system: MolecularSystem) -> None:
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    bridge = OpenMMBridge(ala2_system.system, platform="Reference", n_workers=2)
    bridge.evaluate(_perturbed(ala2_system, 4))
    started = {p.pid for p in me.children(recursive=True)} - before
    assert len(started) >= 2
    bridge.close()
    time.sleep(0.1)
    assert not ({p.pid for p in me.children(recursive=True)} & started)


def test_worker_error_closes_the_pool(ala2_system: MolecularSystem) -> None:
    bridge = OpenMMBridge(ala2_system.system, platform="Reference", n_workers=2)
    with pytest.raises(ValueError):
        bridge.evaluate(np.zeros((4, 5, 3)))  # wrong atom count is refused before dispatch
    bridge.evaluate(_perturbed(ala2_system, 4))  # still usable
    bridge.close()
    with pytest.raises(RuntimeError):
        bridge.evaluate(_perturbed(ala2_system, 2))


SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np
    from molpt_tui.physics.systems import build_system
    from molpt_tui.physics.openmm_bridge import OpenMMBridge
    ms = build_system(sys.argv[1], ["amber99sbildn.xml"])
    bridge = OpenMMBridge(ms.system, platform="Reference", n_workers=2)
    x = ms.positions[None].repeat(8, axis=0)
    try:
        print("ready", flush=True)
        while True:
            bridge.evaluate(x)
    except KeyboardInterrupt:
        bridge.close()
        print("closed", flush=True)
        sys.exit(130)
""")


SCRIPT_CRASH = textwrap.dedent("""
    import sys
    from molpt_tui.physics.systems import build_system
    from molpt_tui.physics.openmm_bridge import OpenMMBridge
    ms = build_system(sys.argv[1], ["amber99sbildn.xml"])
    bridge = OpenMMBridge(ms.system, platform="Reference", n_workers=2)
    print("ready", flush=True)
    raise SystemExit(3)  # never closes the bridge: interpreter exit must still end the workers
""")


def test_exit_without_close_does_not_hang_on_workers() -> None:
    from molpt_testdata import STRUCTURES

    proc = subprocess.run([sys.executable, "-c", SCRIPT_CRASH, str(STRUCTURES / "alanine_dipeptide.pdb")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and proc.stdout.strip() == "ready"


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_no_orphan_workers_after_ctrl_c_or_kill(tmp_path: Path, sig: signal.Signals) -> None:
    from molpt_testdata import STRUCTURES

    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(STRUCTURES / "alanine_dipeptide.pdb")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2
    os.kill(proc.pid, sig)
    proc.wait(timeout=20)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "closed" in proc.stdout.read()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphan workers: {[p.pid for p in alive]}"
