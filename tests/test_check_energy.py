"""`molpt-tui check-energy`: engines against OpenMM directly, exit codes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from molpt_testdata import STRUCTURES


def _compiler_available():
    from molpt_tui.physics.torch_energy import compiler_available

    return compiler_available("cpu")[0]


@pytest.mark.parametrize("engine, ff, extra, description", [
    ("openmm", ["amber99sbildn.xml"], [], "openmm (Reference, in-process)"),
    ("torch", ["amber99sbildn.xml", "implicit/obc1.xml"], [], "torch (cpu, float64, compiled)"),
    ("torch", ["amber99sbildn.xml", "implicit/obc1.xml"], ["--precision", "single", "--compile", "off"],
     "torch (cpu, float32, eager)"),
], ids=["openmm", "torch", "torch-single-eager"])
def test_check_energy_within_tolerance_exits_0(engine, ff, extra, description):
    if "compiled" in description and not _compiler_available():
        description = description.replace("compiled", "eager")
    proc = subprocess.run([sys.executable, "-m", "molpt_tui", "check-energy", "--pdb", str(STRUCTURES / "ala_ala.pdb"),
                           "--forcefield", *ff, "--engine", engine, "--samples", "4", "--json", *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["engine"] == description
    assert result["max_rel_energy_error"] <= result["energy_tolerance"]
    assert result["max_rel_force_error"] <= result["force_tolerance"]


def test_check_energy_outside_tolerance_exits_1(monkeypatch, capsys):
    from molpt_tui.physics import check

    reference = check._reference

    def off_by_a_permille(system, x):  # a reference that disagrees with any correct engine
        energies, forces = reference(system, x)
        return energies * 1.001, forces

    monkeypatch.setattr(check, "_reference", off_by_a_permille)

    class Args:
        pdb, forcefield, engine, samples, noise, json = str(STRUCTURES / "alanine_dipeptide.pdb"), \
            ["amber99sbildn.xml"], "openmm", 3, 0.01, False
        compile, precision = "auto", "double"

    assert check.check_energy_command(Args) == 1
    assert "OUTSIDE TOLERANCE" in capsys.readouterr().out
