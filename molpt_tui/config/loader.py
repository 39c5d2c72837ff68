"""Preset files, `--set` overrides and saved run configs -> one validated `Config`.

Every problem is one line naming the file (or the flag) that gave the value, the key, what is
wrong and how to fix it. No value is ever evaluated as code.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UserError
from .presets import DEFAULT_PRESET, find_preset
from .schema import Config
from .settings import Invalid, check, coerce, declared, first_problem, show
from .tomlfile import Unreadable, parse_toml, read_toml

SET = "--set"
# A saved config's own record of its preset: data, read back by `load_saved_config`.
PRESET_KEY = "preset"
_PRESET_NAME = re.compile(r"[^/\\]{1,200}")
# The first line of saved configs before the preset was recorded as a key.
_LEGACY_HEADER = re.compile(r"# resolved molpt-tui configuration \(preset: (.*)\)\s*")

# Names users bring from other tools; difflib alone would not connect them.
_ALIASES = {"learning_rate": "lr", "batch": "batch_size", "n_epochs": "epochs", "warmup": "warmup_epochs",
            "temperature_cold": "cold", "temperature_hot": "hot", "t_cold": "cold", "t_hot": "hot",
            "forcefields": "forcefield", "force_field": "forcefield", "structure": "pdb"}


def _unknown(source: str, key: str, known: list[str]) -> ConfigError:
    name = key.rsplit(".", 1)[-1]
    alias = _ALIASES.get(name)
    close = [alias] if alias in known else difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(known)
    return ConfigError(source, _key(key), "unknown key", hint)


def _key(key: str) -> str:
    """A key as written by the user, bounded so a 10 kB key name stays a readable line."""
    return key if len(key) <= 80 else key[:77] + "..."


def _top_level() -> dict[str, Any]:
    return declared(Config)


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _apply(cfg: Config, data: dict[str, Any], source: str) -> None:
    """Set the keys of a parsed TOML document on `cfg`, typed by the schema; constraints are
    checked later by `validate`, once every source has had its say."""
    top = _top_level()
    for section, body in data.items():
        if section == PRESET_KEY:
            cfg.preset_name = _preset_name(body, source)
            continue
        if section not in top:
            raise _unknown(source, section, [*top, PRESET_KEY])
        tp, _ = top[section]
        if not _is_section(tp):
            setattr(cfg, section, _coerced(body, tp, source, section))
            cfg.origins[section] = source
            continue
        if not isinstance(body, dict):
            raise ConfigError(source, section, f"expected a table like [{section}], got {show(body)}")
        target = getattr(cfg, section)
        fields = declared(type(target))
        for key, value in body.items():
            full = f"{section}.{key}"
            if key not in fields:
                raise _unknown(source, full, list(fields))
            setattr(target, key, _coerced(value, fields[key][0], source, full))
            cfg.origins[full] = source


def _coerced(value: Any, tp: Any, source: str, key: str) -> Any:
    try:
        return coerce(value, tp)
    except Invalid as exc:
        raise ConfigError(source, key, exc.problem, exc.fix) from None


def _preset_name(value: Any, source: str) -> str:
    # The name becomes part of default file names (data/<preset>.npz), so no separators.
    if not isinstance(value, str) or not value.isprintable() or not _PRESET_NAME.fullmatch(value):
        raise ConfigError(source, PRESET_KEY, f"{show(value)} is not a preset name",
                          "a file name without '/', e.g. \"quickstart\"")
    return value


def _origin(cfg: Config, *keys: str) -> str:
    """Where a value came from, so a bad --set is not blamed on the preset file."""
    for key in keys:
        if cfg.origins.get(key, cfg.source) != cfg.source:
            return cfg.origins[key]
    return cfg.source


def _blamed(cfg: Config, key: str, value: Any) -> str:
    """The source of a bad value as the user wrote it: a typed flag such as `--device` was given
    as `--device tpu`, so the message starts with exactly that."""
    origin = _origin(cfg, key)
    if not origin.startswith("--") or origin == SET:
        return origin
    text = value if isinstance(value, str) else show(value)
    return f"{origin} {text if len(text) <= 60 else text[:57] + '...'}"


def validate(cfg: Config, check_files: bool = True) -> Config:
    """Check every key against its declaration and the keys against each other."""
    for name, (tp, _) in _top_level().items():
        if not _is_section(tp):
            _check_key(cfg, cfg, name, name)
            continue
        section = getattr(cfg, name)
        found = first_problem(section)
        if found is not None:
            key, exc = found
            full = f"{name}.{key}"
            raise ConfigError(_blamed(cfg, full, getattr(section, key)), full, exc.problem, exc.fix)
    _check_across(cfg)
    if check_files:
        _check_files(cfg)
    return cfg


def _check_key(cfg: Config, obj: Any, name: str, key: str) -> None:
    tp, rules = declared(type(obj))[name]
    try:
        check(getattr(obj, name), tp, rules)
    except Invalid as exc:
        raise ConfigError(_origin(cfg, key), key, exc.problem, exc.fix) from None


def _check_across(cfg: Config) -> None:
    t = cfg.temperatures
    src = _origin(cfg, "temperatures.cold", "temperatures.hot", "temperatures.ladder")
    if t.cold >= t.hot:
        raise ConfigError(src, "temperatures.cold", f"cold ({t.cold} K) must be below hot ({t.hot} K)",
                          "swap the values or raise temperatures.hot")
    if t.ladder:
        ladder = [float(v) for v in t.ladder]
        if sorted(ladder) != ladder or len(set(ladder)) != len(ladder):
            raise ConfigError(src, "temperatures.ladder", "must be strictly increasing")
        if t.cold not in ladder or t.hot not in ladder:
            raise ConfigError(src, "temperatures.ladder", "must contain temperatures.cold and temperatures.hot")
    m = cfg.model
    if m.conditioner == "transformer" and m.hidden % m.n_heads:
        raise ConfigError(_origin(cfg, "model.hidden", "model.n_heads"), "model.hidden",
                          f"{m.hidden} is not divisible by model.n_heads = {m.n_heads}",
                          "attention heads split the width evenly; pick hidden as a multiple of n_heads")
    d = cfg.data
    if d.test_fraction > 0 and cfg.test_seed == d.seed:
        raise ConfigError(_origin(cfg, "data.test_seed", "data.seed"), "data.test_seed",
                          f"{d.test_seed} is data.seed: the test run would repeat the training trajectories",
                          "give another seed, or 0 for data.seed + 1")
    if cfg.training.warmup_epochs > cfg.training.epochs:
        cfg.training.warmup_epochs = cfg.training.epochs


def _file_problem(path: Path) -> str:
    """Why `path` is not a readable file ("" when it is one)."""
    try:
        if path.is_file():
            return ""
    except OSError as exc:  # is_file() lets ENAMETOOLONG, EACCES and the like through
        return f"cannot use {path}: {exc.strerror or exc}"
    return f"file not found: {path}"


def _check_files(cfg: Config) -> None:
    pdb = cfg.pdb_path
    problem = _file_problem(pdb)
    if problem:
        where = ("relative to the current directory" if _from_flag(cfg, "system.pdb")
                 else "relative to the preset file")
        raise ConfigError(_origin(cfg, "system.pdb"), "system.pdb", problem,
                          f"give a path {where} or an absolute path")
    src = _origin(cfg, "system.forcefield")
    for ff in cfg.system.forcefield:
        if not _forcefield_exists(ff, cfg):
            raise ConfigError(src, "system.forcefield", f"force-field file not found: {ff}",
                              "use one of OpenMM's bundled files (e.g. amber96.xml, implicit/obc1.xml) or a path")


def forcefield_path(ff: str, cfg: Config) -> str:
    """A local file wins over OpenMM's bundled data of the same name."""
    local = cfg.resolve(ff)
    return str(local) if not _file_problem(local) else ff


def _forcefield_exists(ff: str, cfg: Config) -> bool:
    if not _file_problem(cfg.resolve(ff)):
        return True
    import importlib.util

    spec = importlib.util.find_spec("openmm")
    if spec is None or spec.origin is None:  # pragma: no cover - openmm is a dependency
        return True
    return not _file_problem(Path(spec.origin).parent / "app" / "data" / ff)


# --- presets and overrides -----------------------------------------------------

def load_config(preset: str | None = None, overrides: Sequence[str] = (), check_files: bool = True) -> Config:
    """A preset (name or .toml path; default: quickstart) with `--set` overrides, validated."""
    path = find_preset(preset or DEFAULT_PRESET)
    source = str(path)
    try:
        data = read_toml(path)
    except Unreadable as exc:
        raise ConfigError(source, "", exc.reason, exc.fix) from None
    cfg = Config(preset_name=path.stem, source=source, base_dir=str(path.resolve().parent))
    _apply(cfg, data, source)
    apply_overrides(cfg, overrides)
    return validate(cfg, check_files=check_files)


def parse_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise UserError(f"--set {text}: expected section.key=value, e.g. --set training.lr=1e-4")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _override_value(raw: str, source: str, key: str) -> Any:
    """TOML-typed value of a --set (numbers, booleans, lists); anything else is a string."""
    if "\n" in raw or "\r" in raw:
        # Otherwise `v = 1\n[system]...` would parse as more than one value.
        raise ConfigError(source, _key(key), "the value spans several lines", "give it on one line")
    try:
        document = parse_toml(f"v = {raw}")
    except Unreadable as exc:
        if exc.reason.startswith("not valid TOML"):
            return raw
        raise ConfigError(source, _key(key), exc.reason.replace("not usable TOML: ", "", 1), exc.fix) from None
    return document["v"] if set(document) == {"v"} else raw


def apply_overrides(cfg: Config, overrides: Sequence[str], source: str = SET) -> None:
    """`section.key=value` items (from `--set`, or from the flag named by `source`), typed and
    checked like preset keys."""
    for item in overrides:
        key, raw = parse_override(item)
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(source, _key(key), "expected section.key", "e.g. --set training.lr=1e-4")
        _apply(cfg, {parts[0]: {parts[1]: _override_value(raw, source, key)}}, source)
    _cwd_relative_overrides(cfg)


def _from_flag(cfg: Config, key: str) -> bool:
    return cfg.origins.get(key, "").startswith("--")


def _cwd_relative_overrides(cfg: Config) -> None:
    """A file named on the command line is relative to where the command runs, not to the
    preset file (`--set system.pdb=my.pdb`)."""
    if _from_flag(cfg, "system.pdb"):
        cfg.system.pdb = str(Path(os.path.expanduser(cfg.system.pdb)).absolute())
    if _from_flag(cfg, "system.forcefield"):
        cfg.system.forcefield = [str(Path(ff).resolve()) if not _file_problem(Path(ff)) else ff
                                 for ff in cfg.system.forcefield]


# --- saved run configs -----------------------------------------------------------

_SAVED_FIX = "start a new run instead"


def load_saved_config(path: Path, overrides: Sequence[str] = ()) -> Config:
    """The config a run directory saved (`dump_toml`), with overrides, validated like a preset.

    The preset name comes from its `preset` key; configs saved before that key existed named it
    in their first comment line, and failing that the run directory's name stands in.
    """
    source = str(path)
    if _file_problem(path):
        raise ConfigError(source, "", "no saved config here", "--resume needs the directory of an earlier run")
    try:
        data = read_toml(path)
    except Unreadable as exc:
        raise ConfigError(source, "", f"unreadable saved config: {exc.reason}", _SAVED_FIX) from None
    cfg = Config(preset_name=_legacy_preset_name(path) or path.parent.name, source=source,
                 base_dir=str(path.parent))
    _apply(cfg, data, source)
    if isinstance(data.get("data"), dict) and "validation_blocks" not in data["data"]:
        # Saved before the key existed: that run validated on the end of its trajectories, and a
        # resumed segment must select best.pt on the same split as the epochs before it.
        cfg.data.validation_blocks = 1
    apply_overrides(cfg, overrides)
    return validate(cfg)


def _legacy_preset_name(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline(1000)
    except (OSError, UnicodeDecodeError):
        return ""
    match = _LEGACY_HEADER.fullmatch(first)
    if match is None:
        return ""
    name = match.group(1).strip()
    # Unnamed configs wrote their source there, sometimes a file path.
    name = Path(name).stem if name.endswith(".toml") or "/" in name else name
    return name if name.isprintable() and _PRESET_NAME.fullmatch(name) else ""


def dump_toml(cfg: Config) -> str:
    """The resolved config as TOML, loadable by `load_saved_config` from any directory."""
    import tomli_w

    data: dict[str, Any] = {}
    if cfg.preset_name:
        data[PRESET_KEY] = cfg.preset_name
    data.update(cfg.to_dict())
    # Paths in a saved config must not depend on where the preset file was.
    data["system"]["pdb"] = str(cfg.pdb_path.resolve())
    data["system"]["forcefield"] = [
        str(Path(forcefield_path(ff, cfg)).resolve()) if not _file_problem(cfg.resolve(ff)) else ff
        for ff in cfg.system.forcefield
    ]
    header = "# resolved molpt-tui configuration; `molpt-tui train --resume DIR` reads it back\n"
    return header + tomli_w.dumps(data)
