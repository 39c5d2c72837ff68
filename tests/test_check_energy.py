"""`molpt-tui check-energy`: engines against OpenMM directly, exit codes, bad input.

No test here depends on a choice made by timing: the OpenMM platform is named, and where the
bridge would time it to decide on worker processes, fixed timings are passed instead.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from molpt_testdata import STRUCTURES

from molpt_tui.errors import UserError
from molpt_tui.physics import check, torch_energy
from molpt_tui.physics.check import format_check, format_check_json, run_check
from molpt_tui.physics.engines import EngineName
from molpt_tui.physics.openmm_bridge import PlatformTimings


def _compiler_available() -> bool:
    return torch_energy.compiler_available("cpu")[0]


def _reference_is_fast(system_xml: str, sample: np.ndarray, names: Sequence[str]) -> PlatformTimings:
    """Fixed timings: 10 us per configuration, so the bridge stays in-process."""
    return {name: 10.0 for name in names}, {}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "molpt_tui", "check-energy", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("engine, ff, options, description", [
    ("openmm", ["amber99sbildn.xml"], {"platform": "Reference"}, "openmm (Reference, in-process)"),
    pytest.param("torch", ["amber99sbildn.xml", "implicit/obc1.xml"], {}, "torch (cpu, float64, compiled)",
                 marks=pytest.mark.integration),  # compiles the kernels: ~10 s
    ("torch", ["amber99sbildn.xml", "implicit/obc1.xml"], {"precision": "single", "compile": "off"},
     "torch (cpu, float32, eager)"),
], ids=["openmm", "torch", "torch-single-eager"])
def test_check_energy_within_tolerance(engine: EngineName, ff: list[str], options: dict[str, Any],
                                       description: str) -> None:
    if "compiled" in description and not _compiler_available():
        description = description.replace("compiled", "eager")
    result = run_check(STRUCTURES / "ala_ala.pdb", ff, engine, samples=4, measure=_reference_is_fast, **options)
    assert result.ok and result.exit_code == 0
    assert result.engine == description
    assert result.max_rel_energy_error <= result.energy_tolerance
    assert result.max_rel_force_error <= result.force_tolerance
    assert format_check(result).splitlines()[-1] == "OK"
    assert json.loads(format_check_json(result))["engine"] == result.engine
    if engine == "openmm":
        assert result.precision == "double" and result.energy_tolerance == 1e-6


@pytest.mark.integration
def test_check_energy_cli_within_tolerance_exits_0() -> None:
    proc = _cli("--pdb", str(STRUCTURES / "ala_ala.pdb"), "--forcefield", "amber99sbildn.xml", "implicit/obc1.xml",
                "--engine", "torch", "--precision", "single", "--compile", "off", "--samples", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["engine"] == "torch (cpu, float32, eager)"
    assert result["max_rel_energy_error"] <= result["energy_tolerance"]


def test_outside_tolerance_is_a_result_with_exit_code_1(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = check._reference

    def off_by_a_permille(system: object, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        energies, forces = reference(system, x)  # a reference that disagrees with any correct engine
        return energies * 1.001, forces

    monkeypatch.setattr(check, "_reference", off_by_a_permille)
    result = run_check(STRUCTURES / "alanine_dipeptide.pdb", ["amber99sbildn.xml"], "openmm", samples=3,
                       platform="Reference", measure=_reference_is_fast)
    assert not result.ok and result.exit_code == 1
    assert result.max_rel_energy_error > result.energy_tolerance
    assert format_check(result).splitlines()[-1] == "OUTSIDE TOLERANCE"


@pytest.mark.parametrize("noise", [-0.01, 0.0, math.nan, math.inf])
def test_noise_that_is_not_a_positive_finite_number_is_a_user_error(noise: float) -> None:
    with pytest.raises(UserError, match=r"^--noise .*: must be a finite perturbation > 0 in nm") as info:
        run_check(STRUCTURES / "ala_ala.pdb", ["amber99sbildn.xml"], "openmm", samples=2, noise=noise)
    assert "\n" not in str(info.value)


def test_samples_below_one_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"^--samples 0: must be a whole number >= 1"):
        run_check(STRUCTURES / "ala_ala.pdb", ["amber99sbildn.xml"], "openmm", samples=0)


def test_a_device_this_machine_lacks_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"^--device cuda: CUDA is not available here"):
        run_check(STRUCTURES / "ala_ala.pdb", ["amber99sbildn.xml"], "torch", samples=2, device="cuda")


@pytest.mark.integration
@pytest.mark.parametrize("noise", ["-1", "nan"])
def test_bad_noise_exits_2_with_one_line(noise: str) -> None:
    proc = _cli("--pdb", str(STRUCTURES / "ala_ala.pdb"), "--engine", "openmm", f"--noise={noise}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--noise" in lines[0] and "Traceback" not in proc.stderr


def test_the_compile_wait_is_announced(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in compiler (the eager kernel itself) takes the compiled path without the wait.
    monkeypatch.setattr(torch_energy, "compiler_available", lambda device: (True, ""))
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    said: list[str] = []
    result = run_check(STRUCTURES / "ala_ala.pdb", ["amber99sbildn.xml", "implicit/obc1.xml"], "torch", samples=2,
                       log=said.append)
    assert result.ok and result.engine == "torch (cpu, float64, compiled)"
    assert said[0] == torch_energy.COMPILE_WAIT
    assert said[1].startswith("torch energy kernels compiled in ") and len(said) == 2
