from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STRUCTURES = ROOT / "presets" / "structures"


@pytest.fixture(scope="session")
def ala2_system():
    from molpt_tui.physics.systems import build_system

    return build_system(STRUCTURES / "alanine_dipeptide.pdb", ["amber99sbildn.xml"])


@pytest.fixture(scope="session")
def aa_obc1_system():
    from molpt_tui.physics.systems import build_system

    return build_system(STRUCTURES / "ala_ala.pdb", ["amber99sbildn.xml", "implicit/obc1.xml"])
