"""`molpt-tui check-energy`: engines against OpenMM directly, exit codes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from molpt_testdata import STRUCTURES


@pytest.mark.parametrize("engine, ff", [
    ("openmm", ["amber99sbildn.xml"]),
    ("torch", ["amber99sbildn.xml", "implicit/obc1.xml"]),
])
def test_check_energy_within_tolerance_exits_0(engine, ff):
    proc = subprocess.run([sys.executable, "-m", "molpt_tui", "check-energy", "--pdb", str(STRUCTURES / "ala_ala.pdb"),
                           "--forcefield", *ff, "--engine", engine, "--samples", "4", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["engine"].startswith(engine)
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

    assert check.check_energy_command(Args) == 1
    assert "OUTSIDE TOLERANCE" in capsys.readouterr().out
