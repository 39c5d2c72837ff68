"""Presets, overrides and saved configs load, validate and fail with one clear line."""
from __future__ import annotations

import codecs
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from molpt_testdata import STRUCTURES

from molpt_tui.config import (
    DEFAULT_PRESET,
    RULE_IDS,
    AlertThresholds,
    Config,
    apply_overrides,
    dump_toml,
    find_preset,
    list_presets,
    load_config,
    load_saved_config,
    validate,
)
from molpt_tui.errors import ConfigError, UserError

REQUIRED = {"quickstart", "aa_300_450", "aa_300_450_small", "aa_300_670", "aa_300_1000", "ala2_300_1000_vacuum"}
PACKAGE_PRESETS = Path(__file__).resolve().parent.parent / "molpt_tui" / "presets"
BASE = '[system]\npdb = "{pdb}"\nforcefield = ["amber96.xml"]\n'


def _write(tmp_path: Path, text: str, name: str = "p.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _preset(tmp_path: Path, body: str = "", name: str = "p.toml") -> str:
    """A valid preset plus `body`; a body marked with a leading ^ holds top-level keys, so it goes
    first, and other lines before any table join [system]."""
    base = BASE.format(pdb=STRUCTURES / "alanine_dipeptide.pdb")
    if body.startswith("^"):
        return _write(tmp_path, body[1:] + base, name)
    return _write(tmp_path, base + body, name)


def _one_line_error(exc: BaseException, starts: str, max_len: int = 400) -> str:
    text = str(exc)
    assert text.startswith(starts), text
    assert len(text.splitlines()) == 1, text
    assert len(text) < max_len, text
    return text


# --- shipped presets -----------------------------------------------------------------------------

def test_every_shipped_preset_loads_from_the_package_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.delenv("MOLPT_TUI_PRESETS", raising=False)
    warnings: list[str] = []
    infos = list_presets(warn=warnings.append)
    assert warnings == []
    assert REQUIRED <= {info.name for info in infos}
    assert DEFAULT_PRESET in {info.name for info in infos}
    for info in infos:
        assert info.path.parent == PACKAGE_PRESETS and info.description
        cfg = load_config(info.name)
        assert cfg.preset_name == info.name
        assert cfg.pdb_path.is_file() and cfg.pdb_path.parent == PACKAGE_PRESETS / "structures"
        assert cfg.ladder[0] == cfg.temperatures.cold and cfg.ladder[-1] == cfg.temperatures.hot
        assert isinstance(cfg.alerts, AlertThresholds)
        # Every shipped preset survives a save in a run directory and a resume from it.
        run = tmp_path / info.name
        run.mkdir()
        (run / "config.toml").write_text(dump_toml(cfg), encoding="utf-8")
        again = load_saved_config(run / "config.toml", ())
        assert again.preset_name == info.name
        assert again.pdb_path == cfg.pdb_path.resolve()
        assert again.to_dict() == dataclasses.replace(
            cfg, system=dataclasses.replace(cfg.system, pdb=str(cfg.pdb_path.resolve()))).to_dict()
        assert dump_toml(again) == dump_toml(cfg)


def test_the_default_preset_is_used_without_a_name():
    assert load_config().preset_name == DEFAULT_PRESET == load_config(None).preset_name


def test_overrides_are_typed_by_the_schema():
    cfg = load_config("quickstart", ["training.lr=1e-4", "training.epochs=7", "model.conditioner=transformer",
                                     "temperatures.ladder=[300, 450]", "alerts.rising_window=7",
                                     'alerts.disabled=["loss_stuck"]'])
    assert cfg.training.lr == 1e-4 and isinstance(cfg.training.lr, float)
    assert cfg.training.epochs == 7
    assert cfg.model.conditioner == "transformer"
    assert cfg.ladder == [300.0, 450.0] and all(isinstance(t, float) for t in cfg.temperatures.ladder)
    assert cfg.alerts.rising_window == 7 and cfg.alerts.disabled == ["loss_stuck"]
    assert cfg.origins["training.lr"] == "--set"
    with pytest.raises(ConfigError, match=r"training.epochs: expected an integer"):
        load_config("quickstart", ["training.epochs=1.5"])


def test_a_later_override_wins_and_bad_values_are_blamed_on_their_source(tmp_path):
    path = _preset(tmp_path, "[training]\nlr = -1.0\n")
    assert load_config(path, ["training.lr=1e-3"]).training.lr == 1e-3  # the override replaces the bad value
    with pytest.raises(ConfigError) as info:
        load_config("quickstart", ["data.n_samples=5"])
    _one_line_error(info.value, "--set: data.n_samples: 5 is not allowed (allowed: an integer between 10 and")
    cfg = load_config("quickstart")
    apply_overrides(cfg, ["training.device='tpu'"], source="--device")
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    _one_line_error(info.value, "--device tpu: training.device: 'tpu' is not a device (allowed: auto, cpu, cuda or")


def test_a_setting_is_named_as_the_user_gave_it():
    """Checks made after loading (is CUDA here?) quote a typed flag as typed, anything else by key."""
    cfg = load_config("quickstart", ["training.lr=1e-3"])
    apply_overrides(cfg, ["training.device='cuda'"], source="--device")
    assert cfg.named("training.device") == "--device"
    assert cfg.named("training.lr") == "training.lr"  # --set names the key, not the flag
    assert cfg.named("training.epochs") == "training.epochs"  # from the preset file


@pytest.mark.parametrize("body, match", [
    ("[training]\nlearning_rate = 1e-3\n", r"training.learning_rate: unknown key \(did you mean 'lr'\?\)"),
    ("[trainig]\nlr = 1e-3\n", r"trainig: unknown key \(did you mean 'training'\?\)"),
    ("[training]\nlr = -1e-3\n", r"training.lr: -0.001 is not allowed"),
    ("[training]\nbatch_size = 0\n", r"training.batch_size: 0 is not allowed"),
    ("[training]\nbatch_size = \"64\"\n", r"training.batch_size: expected an integer"),
    ("[training]\nbatch_size = true\n", r"training.batch_size: expected an integer, got True"),
    ("[training]\nlr = true\n", r"training.lr: expected a number, got True"),
    ("[training]\nlr = nan\n", r"training.lr: must be finite, got nan"),
    ("[training]\ngrad_clip = inf\n", r"training.grad_clip: must be finite, got inf"),
    ("[model]\nharmonic_init = 1\n", r"model.harmonic_init: expected true or false, got 1"),
    ("[temperatures]\ncold = 450.0\nhot = 300.0\n", r"temperatures.cold: cold \(450.0 K\) must be below hot"),
    ("[temperatures]\ncold = 0\n", r"temperatures.cold: 0.0 is not allowed \(allowed: a number > 0 and <= 5000\)"),
    ("[temperatures]\ncold = -10\n", r"temperatures.cold: -10.0 is not allowed"),
    ("[temperatures]\nhot = 1e9\n", r"temperatures.hot: 1000000000.0 is not allowed \(allowed: a number > 0 and"),
    ("[temperatures]\nladder = [300.0, 9000.0, 450.0]\n", r"temperatures.ladder: 9000.0 is not allowed"),
    ("[temperatures]\nladder = [300.0, 450.0, 400.0]\n", r"temperatures.ladder: must be strictly increasing"),
    ("[temperatures]\nladder = [\"300\", 450.0]\n", r"temperatures.ladder: expected a number, got '300'"),
    ("[temperatures]\nn_replicas = 1\n", r"temperatures.n_replicas: 1 is not allowed"),
    ("[model]\nconditioner = \"lstm\"\n", r"model.conditioner: 'lstm' is not allowed \(allowed: one of"),
    ("[model]\nconditioner = 3\n", r"model.conditioner: expected one of 'transformer', 'mlp', got 3"),
    ("[model]\nhidden = 100\nn_heads = 8\n", r"model.hidden: 100 is not divisible by model.n_heads = 8"),
    ("[training]\ndevice = \"meta\"\n", r"training.device: 'meta' is not a device \(allowed: auto, cpu, cuda or"),
    ("[training]\ndevice = \"mps\"\n", r"training.device: 'mps' is not a device"),
    ("[training]\ndevice = \"cuda:x\"\n", r"training.device: 'cuda:x' is not a device"),
    ("[training]\nseed = -1\n", r"training.seed: -1 is not allowed"),
    ("[training]\nnan_lr_factor = 0.0\n", r"training.nan_lr_factor: 0.0 is not allowed"),
    ("name = \"two\\nlines\"\n", r"system.name: contains the non-printable character '\\n'"),
    ("name = \"" + "n" * 201 + "\"\n", r"system.name: is 201 characters long \(at most 200 allowed\)"),
    ("^description = 5\n", r"description: expected a string, got 5"),
    ("^training = 5\n", r"training: expected a table like \[training\], got 5"),
    ("^preset = \"a/b\"\n", r"preset: 'a/b' is not a preset name"),
    ("[alerts]\nstuck_los = 5\n", r"alerts.stuck_los: unknown key \(did you mean 'stuck_loss'\?\)"),
    ("[training\nlr = 1\n", r"not valid TOML"),
])
def test_bad_presets_name_file_and_key(tmp_path, body, match):
    path = _preset(tmp_path, body)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    _one_line_error(info.value, path)


def test_valid_devices_and_edges_of_ranges_load(tmp_path):
    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:15"):
        assert load_config("quickstart", [f"training.device={device!r}"]).training.device == device
    cfg = load_config("quickstart", ["temperatures.hot=5000", "temperatures.ladder=[300, 5000]",
                                     "alerts.acc_naive_margin=0", "alerts.rising_window=2"])
    assert cfg.temperatures.hot == 5000.0 and cfg.alerts.acc_naive_margin == 0.0
    # Warmup longer than the run is shortened, not refused: a short test run keeps its preset.
    assert load_config("quickstart", ["training.epochs=3", "training.warmup_epochs=50"]).training.warmup_epochs == 3


# --- [alerts] ------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, match", [
    ("rising_window = 1", r"alerts.rising_window: 1 is not allowed \(allowed: an integer between 2 and"),
    ("grad_window = 0", r"alerts.grad_window: 0 is not allowed"),
    ("grad_explosion_factor = 1.0", r"alerts.grad_explosion_factor: 1.0 is not allowed \(allowed: a number > 1"),
    ("acc_drop_factor = 0.5", r"alerts.acc_drop_factor: 0.5 is not allowed"),
    ("acc_naive_margin = 1.0", r"alerts.acc_naive_margin: 1.0 is not allowed \(allowed: a number >= 0 and < 1\)"),
    ("acc_naive_margin = -0.1", r"alerts.acc_naive_margin: -0.1 is not allowed"),
    ("rearm_epochs = -1", r"alerts.rearm_epochs: -1 is not allowed"),
    ("grad_min_history = 0", r"alerts.grad_min_history: 0 is not allowed"),
    ("logdet_min_scale = 0", r"alerts.logdet_min_scale: 0.0 is not allowed"),
    ('disabled = ["no_such_rule"]', r"alerts.disabled: 'no_such_rule' is not allowed \(allowed: one of 'initial_"),
    ('disabled = "loss_stuck"', r"alerts.disabled: expected a list of strings"),
    ("initial_loss_max = \"big\"", r"alerts.initial_loss_max: expected a number, got 'big'"),
    ("stuck_window = 2.5", r"alerts.stuck_window: expected an integer, got 2.5"),
])
def test_alert_thresholds_are_checked_at_load(tmp_path, body, match):
    path = _preset(tmp_path, f"[alerts]\n{body}\n")
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    _one_line_error(info.value, path)


def test_alerts_are_a_typed_section_that_the_rules_accept():
    from molpt_tui.training import alerts as rules

    cfg = load_config("quickstart", ["alerts.initial_loss_max=1e17", 'alerts.disabled=["logdet_asymmetry"]'])
    assert cfg.alerts == AlertThresholds(initial_loss_max=1e17, disabled=["logdet_asymmetry"])
    assert AlertThresholds.from_mapping(cfg.alerts) is cfg.alerts
    assert AlertThresholds.from_mapping(cfg.to_dict()["alerts"]) == cfg.alerts
    # One schema: the rules module re-exports it and has a rule for every id.
    assert rules.AlertThresholds is AlertThresholds and rules.RULE_IDS == RULE_IDS
    assert set(rules.RULES) == set(RULE_IDS) == set(rules.HINTS)
    with pytest.raises(ValueError, match=r"alerts\.rising_window"):
        AlertThresholds(rising_window=1)


# --- preset files that are not ordinary TOML -----------------------------------------------------

@pytest.mark.parametrize("text", ["", "   \n\t\n", "# only a comment\n\n# and another\n"])
def test_empty_presets_are_the_defaults(tmp_path, text):
    path = _write(tmp_path, text)
    cfg = load_config(path, check_files=False)
    assert cfg.to_dict() == Config().to_dict() and cfg.preset_name == "p"
    with pytest.raises(ConfigError) as info:  # the default structure is relative to the preset file
        load_config(path)
    _one_line_error(info.value, f"{path}: system.pdb: file not found")
    structures = tmp_path / "structures"
    structures.mkdir(exist_ok=True)
    (structures / "alanine_dipeptide.pdb").write_bytes((STRUCTURES / "alanine_dipeptide.pdb").read_bytes())
    assert load_config(path).pdb_path == structures / "alanine_dipeptide.pdb"


HUGE_INT = "1" * 5000
HUGE_HEX = "0x" + "f" * 400  # hex literals have no digit limit, but do not fit a float


@pytest.mark.parametrize("data, match", [
    (codecs.BOM_UTF16_LE + "[training]\nlr = 1\n".encode("utf-16-le"), r"UTF-16 text, not UTF-8 \(save it as UTF-8\)"),
    (codecs.BOM_UTF16_BE + "[training]\n".encode("utf-16-be"), "UTF-16 text, not UTF-8"),
    (codecs.BOM_UTF32_LE + "[training]\n".encode("utf-32-le"), "UTF-32 text, not UTF-8"),
    ('[system]\nname = "caf\xe9"\n'.encode("latin-1"), r"not UTF-8 text \(byte 0xe9 at offset 20\)"),
    (bytes(range(256)) * 4, "a binary file, not TOML text"),
    (b"\x89PNG\r\n\x1a\n" + bytes(64), "a binary file"),
    (b"v = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    (f"[training]\nepochs = {HUGE_INT}\n".encode(), "an integer literal with thousands of digits"),
    (f"[training]\nlr = {HUGE_HEX}\n".encode(), r"training.lr: <an integer of about 482 digits> is too large"),
    (f"[training]\nepochs = {HUGE_HEX}\n".encode(), r"training.epochs: <an integer of about 482 digits> is not"),
    (b"[training]\nlr = 1e999\n", r"training.lr: must be finite, got inf"),
    (b"x" * (2 << 20), "larger than 1024 KiB"),
])
def test_files_that_are_not_ordinary_toml_are_one_line(tmp_path, data, match):
    path = tmp_path / "odd.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(str(path))
    _one_line_error(info.value, str(path))


def test_a_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(codecs.BOM_UTF8 + BASE.format(pdb=STRUCTURES / "alanine_dipeptide.pdb").encode())
    assert load_config(str(path)).system.forcefield == ["amber96.xml"]


@pytest.mark.parametrize("item, match", [
    (f"training.epochs={HUGE_INT}", r"--set: training.epochs: an integer literal with thousands of digits"),
    (f"training.lr={HUGE_HEX}", r"--set: training.lr: <an integer of about 482 digits> is too large"),
    ("training.lr=" + "[" * 3000 + "]" * 3000, r"--set: training.lr: arrays or tables nested too deeply"),
    ("training.lr=1e400", r"--set: training.lr: must be finite"),
    ("system.forcefield=[]", r"--set: system.forcefield: must not be empty"),
    ("system.name=a\nb", r"--set: system.name: the value spans several lines"),
    ("training.device=cuda:1:2", r"--set: training.device: 'cuda:1:2' is not a device"),
    ("temperatures.hot=1e9", r"--set: temperatures.hot: 1000000000.0 is not allowed"),
    ("alerts.rising_window=1", r"--set: alerts.rising_window: 1 is not allowed"),
    ("training.lrr=1", r"--set: training.lrr: unknown key \(did you mean 'lr'\?\)"),
    ("lr=1", r"--set: lr: expected section.key"),
    ("a.b.c=1", r"--set: a.b.c: expected section.key"),
    ("sys\ntem.pdb=x", r"--set: sys\\ntem: unknown key"),
])
def test_bad_overrides_are_one_line(item, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config("quickstart", [item])
    _one_line_error(info.value, "--set: ")


# --- the presets directory -------------------------------------------------------------------------

def test_an_unreadable_preset_in_the_env_directory_is_skipped_with_a_warning(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "broken.toml").write_bytes(codecs.BOM_UTF16_LE + "x = 1".encode("utf-16-le"))
    (mine / "syntax.toml").write_text("[training\n", encoding="utf-8")
    (mine / "good.toml").write_text('description = "mine"\n' + BASE.format(pdb=STRUCTURES / "ala_ala.pdb"),
                                    encoding="utf-8")
    monkeypatch.setenv("MOLPT_TUI_PRESETS", str(mine))
    warnings: list[str] = []
    infos = {info.name: info for info in list_presets(warn=warnings.append)}
    assert "broken" not in infos and "syntax" not in infos
    assert infos["good"].description == "mine" and REQUIRED <= set(infos)
    assert len(warnings) == 2 and all("skipped, unreadable preset" in w for w in warnings)
    assert any("broken.toml" in w and "UTF-16" in w for w in warnings)
    assert any("syntax.toml" in w and "not valid TOML" in w for w in warnings)
    assert list_presets() == list(infos.values())  # without a callback the list is the same
    assert load_config().preset_name == DEFAULT_PRESET
    assert load_config("good").pdb_path == STRUCTURES / "ala_ala.pdb"
    with pytest.raises(ConfigError) as info:
        load_config("broken")
    _one_line_error(info.value, f"{mine / 'broken.toml'}: UTF-16 text, not UTF-8 (save it as UTF-8)")


def test_the_env_directory_comes_first_and_a_bad_one_is_reported(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "quickstart.toml").write_text('description = "shadow"\n' + BASE.format(pdb=STRUCTURES / "ala_ala.pdb"),
                                          encoding="utf-8")
    monkeypatch.setenv("MOLPT_TUI_PRESETS", str(mine))
    assert find_preset("quickstart") == mine / "quickstart.toml"
    assert load_config().pdb_path == STRUCTURES / "ala_ala.pdb"
    monkeypatch.setenv("MOLPT_TUI_PRESETS", str(tmp_path / "nowhere"))
    warnings: list[str] = []
    assert REQUIRED <= {info.name for info in list_presets(warn=warnings.append)}
    assert warnings == [f"MOLPT_TUI_PRESETS={tmp_path / 'nowhere'}: not a directory; ignored"]


def test_unknown_and_missing_presets_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"system.pdb: file not found"):
        load_config(_write(tmp_path, '[system]\npdb = "nope.pdb"\n'))
    with pytest.raises(ConfigError, match=r"system.forcefield: force-field file not found: nope.xml"):
        load_config(_write(tmp_path, BASE.format(pdb=STRUCTURES / "ala_ala.pdb").replace("amber96.xml", "nope.xml")))
    with pytest.raises(UserError, match="unknown preset 'quickstar' \\(did you mean 'quickstart'\\?\\)"):
        load_config("quickstar")
    with pytest.raises(UserError, match="preset file not found"):
        load_config(str(tmp_path / "absent.toml"))
    with pytest.raises(UserError, match="unknown preset"):
        load_config("x" * 5000)  # longer than a file name may be: still just unknown


def test_a_pdb_path_the_file_system_refuses_is_one_line(tmp_path):
    path = _write(tmp_path, f'[system]\npdb = "{"a" * 300}.pdb"\n')
    with pytest.raises(ConfigError, match=r"system.pdb: cannot use .*: File name too long") as info:
        load_config(path)
    _one_line_error(info.value, path, max_len=1000)  # the user's own path is quoted whole


# --- saved run configs ----------------------------------------------------------------------------

def _saved(tmp_path: Path, text: str | bytes, run: str = "run7") -> Path:
    folder = tmp_path / run
    folder.mkdir(exist_ok=True)
    path = folder / "config.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_the_saved_config_records_its_preset_and_reloads_equal(tmp_path):
    cfg = load_config("aa_300_450_small", ["training.lr=2e-4", "alerts.rising_window=9"])
    cfg.data.path = str(tmp_path / "data.npz")
    text = dump_toml(cfg)
    assert 'preset = "aa_300_450_small"' in text.splitlines()[:3]
    path = _saved(tmp_path, text, run="elsewhere")
    again = load_saved_config(path, ["training.epochs=9"])
    assert again.preset_name == "aa_300_450_small"  # from the data, not the directory name
    assert again.training.lr == 2e-4 and again.training.epochs == 9 and again.alerts.rising_window == 9
    assert again.data_path == tmp_path / "data.npz" and again.pdb_path == cfg.pdb_path.resolve()
    assert again.source == str(path) and again.origins["training.epochs"] == "--set"


def test_saved_configs_of_the_previous_format_still_load(tmp_path):
    body = dump_toml(load_config("quickstart")).split("\n", 2)[2]  # drop the header and the preset key
    old = _saved(tmp_path, "# resolved molpt-tui configuration (preset: aa_300_670)\n" + body)
    assert load_saved_config(old, ()).preset_name == "aa_300_670"
    assert load_saved_config(_saved(tmp_path, body, run="run_by_dir"), ()).preset_name == "run_by_dir"
    from_path = _saved(tmp_path, "# resolved molpt-tui configuration (preset: /x/y/mine.toml)\n" + body, run="r3")
    assert load_saved_config(from_path, ()).preset_name == "mine"


def test_a_run_saved_before_validation_blocks_keeps_validating_on_its_tail(tmp_path):
    """A resumed segment selects best.pt against the epochs before it: on their split."""
    text = dump_toml(load_config("quickstart"))
    assert "validation_blocks = 5" in text
    assert load_saved_config(_saved(tmp_path, text, run="new"), ()).data.validation_blocks == 5
    old = _saved(tmp_path, text.replace("validation_blocks = 5\n", ""), run="old")
    assert load_saved_config(old, ()).data.validation_blocks == 1
    assert load_saved_config(old, ["data.validation_blocks=3"]).data.validation_blocks == 3


@pytest.mark.parametrize("data, match", [
    (b"", r"system.pdb: file not found"),
    (codecs.BOM_UTF16_LE + "a = 1".encode("utf-16-le"), r"unreadable saved config: UTF-16 text, not UTF-8 \(start"),
    (b"\xfa\xfb garbage", r"unreadable saved config: not UTF-8 text \(byte 0xfa at offset 0\)"),
    (bytes(range(256)), r"unreadable saved config: a binary file"),
    (b"[training\n", r"unreadable saved config: not valid TOML: .*\(start a new run instead\)"),
    (b"x = " + b"[" * 5000 + b"]" * 5000, r"unreadable saved config: not usable TOML: arrays or tables nested"),
    (f"[training]\nepochs = {HUGE_INT}\n".encode(), r"unreadable saved config: not usable TOML: an integer literal"),
    (f"[training]\nlr = {HUGE_HEX}\n".encode(), r"training.lr: <an integer of about 482 digits> is too large"),
    (b"[training]\nlr = 5\n", r"training.lr: 5.0 is not allowed"),
])
def test_unreadable_or_bad_saved_configs_are_one_line(tmp_path, data, match):
    path = _saved(tmp_path, data)
    with pytest.raises(ConfigError, match=match) as info:
        load_saved_config(path, ())
    _one_line_error(info.value, str(path))


def test_a_missing_saved_config_says_what_resume_needs(tmp_path):
    with pytest.raises(ConfigError, match="no saved config here") as info:
        load_saved_config(tmp_path / "config.toml", ())
    _one_line_error(info.value, str(tmp_path / "config.toml"))


def test_errors_stay_on_one_line_whatever_the_key():
    with pytest.raises(ConfigError) as info:
        load_config("quickstart", ["training.\u2028x=1"])
    assert len(str(info.value).splitlines()) == 1 and "\\u2028" in str(info.value)
    assert str(UserError("a\nb\x00c")) == "a\\nb\\x00c"


# --- the command line -------------------------------------------------------------------------------

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
            "for argv in (['--help'], ['--version'], ['train', '--help'], ['simulate', '--help'],"
            " ['check-energy', '--help'], ['plot', '--help'], ['watch', '--help'], ['presets']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'openmm', 'textual', 'numpy', 'matplotlib') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stderr, proc.stderr


# --- the independent test set and the divergence verdict -----------------------------------------

def test_the_test_run_lies_beside_the_data_with_another_seed():
    cfg = load_config("quickstart", ["data.path=/d/quick.npz"])
    assert cfg.test_data_path == Path("/d/quick.test.npz")
    assert cfg.test_n_samples == round(cfg.data.n_samples * cfg.data.test_fraction)
    assert cfg.test_seed == cfg.data.seed + 1
    test = cfg.for_test_run()
    assert test.data_path == Path("/d/quick.test.npz") and test.data.n_samples == cfg.test_n_samples
    assert test.data.seed == cfg.data.seed + 1 and test.test_n_samples == 0
    assert cfg.data.path == "/d/quick.npz"         # the original is untouched
    # `simulate --out X` puts the test run beside X
    assert cfg.for_test_run(Path("/o/x.npz")).data_path == Path("/o/x.test.npz")
    named = load_config("quickstart", ["data.path=/d/quick.npz", "data.test_path=/t/other.npz", "data.test_seed=99"])
    assert named.test_data_path == Path("/t/other.npz") and named.for_test_run().data.seed == 99


def test_a_test_run_that_repeats_training_is_refused_and_a_small_one_has_ten_samples():
    with pytest.raises(ConfigError) as info:
        load_config("quickstart", ["data.seed=5", "data.test_seed=5"])
    assert "data.test_seed" in _one_line_error(info.value, "--set")
    assert load_config("quickstart", ["data.n_samples=20", "data.test_fraction=0.1"]).test_n_samples == 10


def test_no_test_set_and_divergence_settings_load():
    cfg = load_config("quickstart", ["data.test_fraction=0", "data.test_seed=2024", "alerts.stop_on_divergence=false",
                                     "alerts.diverged_epochs=5", "alerts.diverged_orders=3"])
    assert cfg.test_n_samples == 0
    assert cfg.alerts.stop_on_divergence is False and cfg.alerts.diverged_epochs == 5
    assert AlertThresholds().stop_on_divergence is True
    with pytest.raises(ConfigError, match=r"alerts\.diverged_epochs"):
        load_config("quickstart", ["alerts.diverged_epochs=0"])
