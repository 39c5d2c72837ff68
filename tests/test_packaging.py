"""The wheel carries everything a run needs: presets, structures and stylesheets, found by the
installed package itself, away from any source checkout.

Offline by construction: the wheel is built without build isolation, installed with --no-deps
and --no-index, and the fresh environment borrows this environment's dependencies (torch,
openmm, ...) through a .pth file instead of downloading them.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


def _clean_env() -> dict[str, str]:
    """No checkout on the path and no preset override: only what is installed may answer."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MOLPT_TUI_PRESETS", "PYTHONHOME")}
    env["NO_COLOR"] = "1"
    return env


def _run(args: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy: an in-tree build writes build/ and *.egg-info into the checkout.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "molpt_tui", src / "molpt_tui", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, src], cwd=src)
    (found,) = dist.glob("molpt_tui-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv.parent)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=venv).stdout.strip())
    # Dependencies come from this environment. A .pth line only appends a directory, so the .pth
    # files there (this checkout's editable install among them) are not run in the new one.
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "borrowed_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)), encoding="utf-8")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", wheel], cwd=venv.parent)
    return venv


def test_the_wheel_holds_the_presets_structures_and_stylesheets(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("molpt_tui/presets/quickstart.toml", "molpt_tui/presets/aa_300_450.toml",
                   "molpt_tui/presets/structures/alanine_dipeptide.pdb", "molpt_tui/presets/structures/ala_ala.pdb",
                   "molpt_tui/tui/app.tcss", "molpt_tui/config/__init__.py"):
        assert needed in names, sorted(names)
    assert not any(name.startswith(("presets/", "tests/")) for name in names)


def test_the_installed_command_lists_and_loads_the_shipped_presets(installed: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    listing = _run([installed / "bin" / "molpt-tui", "presets"], cwd=outside).stdout
    assert any(line.startswith("quickstart") and "(default)" in line for line in listing.splitlines()), listing
    code = ("import sys, molpt_tui\n"
            "from pathlib import Path\n"
            "from molpt_tui.config import load_config\n"
            "cfg = load_config('quickstart')\n"
            "package = Path(molpt_tui.__file__).resolve().parent\n"
            "assert Path(sys.prefix).resolve() in package.parents, package\n"
            "assert cfg.pdb_path.is_file() and cfg.pdb_path.resolve().parent == package / 'presets' / 'structures'\n"
            "print('PDB', cfg.pdb_path)\n")
    out = _run([installed / "bin" / "python", "-c", code], cwd=outside).stdout
    assert "PDB " in out and str(ROOT) not in out


def test_the_editable_install_finds_the_presets_of_the_checkout(tmp_path: Path) -> None:
    command = Path(sys.executable).parent / "molpt-tui"
    if not command.is_file():
        pytest.skip("molpt-tui is not installed in this environment")
    listing = _run([command, "presets"], cwd=tmp_path).stdout
    assert "quickstart" in listing and "aa_300_450" in listing
    code = "from molpt_tui.config import load_config; print(load_config('quickstart').pdb_path)"
    pdb = Path(_run([sys.executable, "-c", code], cwd=tmp_path).stdout.strip())
    assert pdb == ROOT / "molpt_tui" / "presets" / "structures" / "alanine_dipeptide.pdb"
