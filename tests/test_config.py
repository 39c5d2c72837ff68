"""Presets load, validate and fail with one clear line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from molpt_tui.config import list_presets, load_config
from molpt_tui.errors import ConfigError, UserError

REQUIRED = {"quickstart", "aa_300_450", "aa_300_450_small", "aa_300_670", "aa_300_1000", "ala2_300_1000_vacuum"}


def test_all_required_presets_exist_and_validate():
    names = {name for name, _, _ in list_presets()}
    assert REQUIRED <= names
    for name in names:
        cfg = load_config(name)
        assert cfg.pdb_path.is_file()
        assert cfg.temperatures.cold < cfg.temperatures.hot
        assert cfg.ladder[0] == cfg.temperatures.cold and cfg.ladder[-1] == cfg.temperatures.hot


def test_standard_preset_has_the_seed_settings():
    cfg = load_config("aa_300_450")
    assert (cfg.temperatures.cold, cfg.temperatures.hot) == (300.0, 450.0)
    assert cfg.system.forcefield == ["amber99sbildn.xml", "implicit/obc1.xml"]
    assert (cfg.training.epochs, cfg.training.lr, cfg.training.warmup_epochs, cfg.training.batch_size) == (3000, 5e-4, 50, 64)
    assert cfg.model.conditioner == "transformer"
    vac = load_config("ala2_300_1000_vacuum")
    assert vac.system.forcefield == ["amber96.xml"] and vac.temperatures.hot == 1000.0


def test_overrides_are_typed_by_the_schema():
    cfg = load_config("quickstart", ["training.lr=1e-4", "training.epochs=7", "model.conditioner=transformer",
                                     "temperatures.ladder=[300, 450]"])
    assert cfg.training.lr == 1e-4 and isinstance(cfg.training.lr, float)
    assert cfg.training.epochs == 7
    assert cfg.model.conditioner == "transformer"
    assert cfg.ladder == [300.0, 450.0]
    with pytest.raises(ConfigError, match="training.epochs: expected an integer"):
        load_config("quickstart", ["training.epochs=1.5"])


def _write(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BASE = '[system]\npdb = "{pdb}"\nforcefield = ["amber96.xml"]\n'


@pytest.mark.parametrize("body, match", [
    ("[training]\nlearning_rate = 1e-3\n", r"training.learning_rate: unknown key \(did you mean 'lr'\?\)"),
    ("[trainig]\nlr = 1e-3\n", r"trainig: unknown key \(did you mean 'training'\?\)"),
    ("[training]\nlr = -1e-3\n", r"training.lr: -0.001 is not allowed"),
    ("[training]\nbatch_size = 0\n", r"training.batch_size: 0 is not allowed"),
    ("[training]\nbatch_size = \"64\"\n", r"training.batch_size: expected an integer"),
    ("[temperatures]\ncold = 450.0\nhot = 300.0\n", r"temperatures.cold: cold \(450.0 K\) must be below hot"),
    ("[model]\nconditioner = \"lstm\"\n", r"model.conditioner: 'lstm' is not allowed \(allowed: one of"),
    ("[alerts]\nstuck_los = 5\n", r"alerts.stuck_los: unknown key"),
    ("[training\nlr = 1\n", r"not valid TOML"),
])
def test_bad_presets_name_file_and_key(tmp_path, body, match):
    from molpt_testdata import STRUCTURES

    path = _write(tmp_path, BASE.format(pdb=STRUCTURES / "alanine_dipeptide.pdb") + body)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    assert str(info.value).startswith(path)
    assert "\n" not in str(info.value)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"system.pdb: file not found"):
        load_config(_write(tmp_path, '[system]\npdb = "nope.pdb"\n'))
    from molpt_testdata import STRUCTURES

    with pytest.raises(ConfigError, match=r"system.forcefield: force-field file not found: nope.xml"):
        load_config(_write(tmp_path, BASE.format(pdb=STRUCTURES / "ala_ala.pdb").replace("amber96.xml", "nope.xml")))
    with pytest.raises(UserError, match="unknown preset 'quickstar' \\(did you mean 'quickstart'\\?\\)"):
        load_config("quickstar")


def test_cli_bad_preset_is_one_line_exit_2(tmp_path):
    path = _write(tmp_path, "[training]\nlr = -1\n")
    proc = subprocess.run([sys.executable, "-m", "molpt_tui", "simulate", "--preset", path],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "training.lr" in proc.stderr


def test_help_and_version_do_not_import_heavy_modules():
    code = ("import sys; from molpt_tui.cli import main\n"
            "for argv in (['--help'], ['--version'], ['train', '--help'], ['simulate', '--help'], ['check-energy', '--help'],"
            " ['plot', '--help'], ['watch', '--help'], ['presets']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'openmm', 'textual', 'numpy', 'matplotlib') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stderr, proc.stderr


def test_resolved_config_round_trips(tmp_path):
    import tomllib

    from molpt_tui.config import config_from_dict, dump_toml

    cfg = load_config("aa_300_450_small", ["training.lr=2e-4"])
    text = dump_toml(cfg)
    again = config_from_dict(tomllib.loads(text.split("\n", 1)[1]), "saved", str(tmp_path))
    assert again.to_dict()["training"] == cfg.to_dict()["training"]
    assert again.pdb_path == cfg.pdb_path.resolve()
