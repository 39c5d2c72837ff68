"""The OpenMM bridge against a direct OpenMM Context, its gradient, failures and shutdown."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import openmm
import psutil
import pytest
import torch

from molpt_tui.physics.openmm_bridge import OpenMMBridge


def _direct(system, x):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    energies, forces = [], []
    for xi in x:
        ctx.setPositions(xi)
        state = ctx.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole))
        forces.append(state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer))
    return np.array(energies), np.array(forces)


def _perturbed(ms, n, scale=0.01, seed=0):
    return ms.positions[None] + np.random.default_rng(seed).normal(0.0, scale, (n, ms.n_atoms, 3))


def test_constraints_are_absent_from_energy_systems(ala2_system):
    # OpenMM would drop the bond energy of constrained bonds.
    assert ala2_system.system.getNumConstraints() == 0


@pytest.mark.parametrize("n_workers", [0, 2])
def test_energies_and_forces_match_direct_context(ala2_system, aa_obc1_system, n_workers):
    for ms in (ala2_system, aa_obc1_system):
        x = _perturbed(ms, 6)
        with OpenMMBridge(ms.system, platform="Reference", n_workers=n_workers) as bridge:
            energies, forces = bridge.evaluate(x)
        ref_e, ref_f = _direct(ms.system, x)
        np.testing.assert_allclose(energies, ref_e, rtol=1e-8)
        np.testing.assert_allclose(forces, ref_f, rtol=1e-8, atol=1e-8 * np.abs(ref_f).max())


def test_gradient_is_minus_force_and_matches_finite_differences(ala2_system):
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


def test_nonfinite_and_failing_configurations_give_inf_and_are_counted(ala2_system):
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


def test_auto_platform_reports_its_choice(ala2_system):
    with OpenMMBridge(ala2_system.system, platform="auto", sample_positions=ala2_system.positions[None]) as bridge:
        assert bridge.platform in ("Reference", "CPU", "CUDA", "OpenCL")
        assert "fastest measured" in bridge.choice.reason
        assert bridge.platform in bridge.description


def test_workers_are_gone_after_close(ala2_system):
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    bridge = OpenMMBridge(ala2_system.system, platform="Reference", n_workers=2)
    bridge.evaluate(_perturbed(ala2_system, 4))
    started = {p.pid for p in me.children(recursive=True)} - before
    assert len(started) >= 2
    bridge.close()
    time.sleep(0.1)
    assert not ({p.pid for p in me.children(recursive=True)} & started)


def test_worker_error_closes_the_pool(ala2_system):
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


def test_exit_without_close_does_not_hang_on_workers():
    from molpt_testdata import STRUCTURES

    proc = subprocess.run([sys.executable, "-c", SCRIPT_CRASH, str(STRUCTURES / "alanine_dipeptide.pdb")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and proc.stdout.strip() == "ready"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_no_orphan_workers_after_ctrl_c_or_kill(tmp_path, sig):
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
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphan workers: {[p.pid for p in alive]}"
