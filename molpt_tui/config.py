"""Presets (TOML) -> one typed, validated configuration.

Every key is declared once, in the dataclasses below, with its type and (in `_CHECKS`) what
values are allowed. Loading reports the first problem as a single line naming the file, the
key and what is allowed. No value is ever evaluated as code.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


@dataclass
class SystemConfig:
    pdb: str = "structures/alanine_dipeptide.pdb"   # relative paths are relative to the preset file
    forcefield: list[str] = field(default_factory=lambda: ["amber96.xml"])
    name: str = ""                                    # shown in banners; defaults to the PDB stem


@dataclass
class TemperatureConfig:
    cold: float = 300.0                               # K
    hot: float = 450.0                                # K
    ladder: list[float] = field(default_factory=list)  # replica-exchange ladder; empty = geometric
    n_replicas: int = 3                               # used when ladder is empty


@dataclass
class DataConfig:
    path: str = ""                                    # default: data/<preset>.npz (relative to cwd)
    n_samples: int = 5000                             # saved samples per temperature
    stride: int = 100                                 # MD steps between saved samples
    equilibration_ps: float = 20.0
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    constraints: str = "none"                         # "none" | "hbonds"
    swap_every: int = 100                             # MD steps between replica swap attempts
    platform: str = "Reference"                       # OpenMM platform for MD
    seed: int = 2024
    validation_fraction: float = 0.1


@dataclass
class EnergyConfig:
    engine: str = "auto"                              # "auto" | "openmm" | "torch"
    platform: str = "auto"                            # OpenMM platform of the bridge
    n_workers: int = 0                                # 0 = one per core (capped by batch)
    compile: str = "auto"                             # torch engine kernels: "auto" | "on" | "off"
    precision: str = "double"                         # torch engine: "double" | "single"


@dataclass
class ModelConfig:
    representation: str = "internal"                  # "internal" | "cartesian"
    conditioner: str = "transformer"                  # "transformer" | "mlp"
    transform: str = "spline"                         # "spline" | "affine"
    n_layers: int = 6
    hidden: int = 64
    n_heads: int = 4
    n_blocks: int = 2
    n_bins: int = 8
    tail_bound: float = 5.0
    max_log_scale: float = 2.0
    harmonic_init: bool = True
    narrow_torsion_std: float = 0.5                   # rad; wider torsions are left alone at init


@dataclass
class TrainingConfig:
    epochs: int = 200
    batch_size: int = 64
    lr: float = 5e-4
    warmup_epochs: int = 50
    schedule: str = "cosine"                          # "cosine" | "plateau" | "constant"
    min_lr_factor: float = 0.01
    weight_decay: float = 1e-5
    grad_clip: float = 10.0
    steps_per_epoch: int = 0                          # 0 = one pass over the training pairs
    energy_reg_kt: float = 1000.0                     # linear below, logarithmic above (kT)
    device: str = "auto"                              # "auto" | "cpu" | "cuda" | "cuda:N"
    seed: int = 0
    checkpoint_every: int = 50
    nan_policy: str = "rollback"                      # "rollback" | "skip" | "stop"
    max_nan_failures: int = 5
    nan_lr_factor: float = 0.5


@dataclass
class LoggingConfig:
    eval_interval: int = 100                          # log every N epochs after epoch 100
    eval_samples: int = 1000                          # held-out pairs for acceptance / ESS
    progress_every_s: float = 30.0                    # plain progress line when not a TTY


@dataclass
class OutputConfig:
    dir: str = ""                                     # default: checkpoints/molecular_pt_<preset>


@dataclass
class Config:
    description: str = ""
    system: SystemConfig = field(default_factory=SystemConfig)
    temperatures: TemperatureConfig = field(default_factory=TemperatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    alerts: dict[str, float] = field(default_factory=dict)  # validated against AlertThresholds
    output: OutputConfig = field(default_factory=OutputConfig)
    # Not TOML keys: where the preset came from, for messages and relative paths.
    preset_name: str = field(default="", metadata={"internal": True})
    source: str = field(default="<defaults>", metadata={"internal": True})
    base_dir: str = field(default=".", metadata={"internal": True})
    origins: dict[str, str] = field(default_factory=dict, metadata={"internal": True})  # key -> file or "--set"

    # --- derived paths -------------------------------------------------------
    def resolve(self, path: str) -> Path:
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def pdb_path(self) -> Path:
        return self.resolve(self.system.pdb)

    @property
    def data_path(self) -> Path:
        if self.data.path:
            return Path(os.path.expanduser(self.data.path))
        return Path("data") / f"{self.preset_name or 'custom'}.npz"

    @property
    def run_dir(self) -> Path:
        if self.output.dir:
            return Path(os.path.expanduser(self.output.dir))
        return Path("checkpoints") / f"molecular_pt_{self.preset_name or 'custom'}"

    @property
    def ladder(self) -> list[float]:
        t = self.temperatures
        if t.ladder:
            return [float(v) for v in t.ladder]
        n = max(2, t.n_replicas)
        return [t.cold * (t.hot / t.cold) ** (i / (n - 1)) for i in range(n)]

    @property
    def system_name(self) -> str:
        return self.system.name or Path(self.system.pdb).stem

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("internal"):
                continue
            value = getattr(self, f.name)
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return out


# --- allowed values ----------------------------------------------------------

def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


def _one_of(*choices):
    def check(v):
        return v in choices
    check.allowed = "one of " + ", ".join(repr(c) for c in choices)  # type: ignore[attr-defined]
    return check


def _between(lo, hi):
    def check(v):
        return lo <= v <= hi
    check.allowed = f"between {lo} and {hi}"  # type: ignore[attr-defined]
    return check


_positive.allowed = "a number > 0"  # type: ignore[attr-defined]
_non_negative.allowed = "a number >= 0"  # type: ignore[attr-defined]

_CHECKS: dict[str, Any] = {
    "temperatures.cold": _positive,
    "temperatures.hot": _positive,
    "temperatures.n_replicas": _between(2, 64),
    "data.n_samples": _between(10, 10_000_000),
    "data.stride": _positive,
    "data.equilibration_ps": _non_negative,
    "data.timestep_fs": _between(0.01, 5.0),
    "data.friction_per_ps": _positive,
    "data.constraints": _one_of("none", "hbonds"),
    "data.swap_every": _positive,
    "data.platform": _one_of("Reference", "CPU", "CUDA", "OpenCL"),
    "data.validation_fraction": _between(0.01, 0.5),
    "energy.engine": _one_of("auto", "openmm", "torch"),
    "energy.platform": _one_of("auto", "Reference", "CPU", "CUDA", "OpenCL"),
    "energy.n_workers": _between(0, 256),
    "energy.compile": _one_of("auto", "on", "off"),
    "energy.precision": _one_of("double", "single"),
    "model.representation": _one_of("internal", "cartesian"),
    "model.conditioner": _one_of("transformer", "mlp"),
    "model.transform": _one_of("spline", "affine"),
    "model.n_layers": _between(1, 64),
    "model.hidden": _between(1, 8192),
    "model.n_heads": _between(1, 64),
    "model.n_blocks": _between(1, 32),
    "model.n_bins": _between(2, 128),
    "model.tail_bound": _positive,
    "model.max_log_scale": _positive,
    "model.narrow_torsion_std": _between(0.0, 3.2),
    "training.epochs": _between(1, 10_000_000),
    "training.batch_size": _between(1, 1_000_000),
    "training.lr": _between(1e-12, 1.0),
    "training.warmup_epochs": _non_negative,
    "training.schedule": _one_of("cosine", "plateau", "constant"),
    "training.min_lr_factor": _between(0.0, 1.0),
    "training.weight_decay": _non_negative,
    "training.grad_clip": _positive,
    "training.steps_per_epoch": _non_negative,
    "training.energy_reg_kt": _positive,
    "training.checkpoint_every": _between(1, 10_000_000),
    "training.nan_policy": _one_of("rollback", "skip", "stop"),
    "training.max_nan_failures": _between(1, 1000),
    "training.nan_lr_factor": _between(0.0, 1.0),
    "logging.eval_interval": _between(1, 10_000_000),
    "logging.eval_samples": _between(2, 10_000_000),
    "logging.progress_every_s": _positive,
}

_TYPE_NAMES = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner).removeprefix('a ').removeprefix('an ')}s"
    return _TYPE_NAMES.get(tp, str(tp))


def _coerce(value: Any, tp, source: str, key: str) -> Any:
    """Check a TOML value against a schema type; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(source, key, f"expected {_type_name(tp)}, got {value!r}")
        return [_coerce(v, inner, source, key) for v in value]
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(source, key, f"expected {_type_name(tp)}, got {value!r}")
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(source, key, f"must be finite, got {value!r}")
    return value


# Names users bring from other tools; difflib alone would not connect them.
_ALIASES = {"learning_rate": "lr", "batch": "batch_size", "n_epochs": "epochs", "warmup": "warmup_epochs",
            "temperature_cold": "cold", "temperature_hot": "hot", "t_cold": "cold", "t_hot": "hot",
            "forcefields": "forcefield", "force_field": "forcefield", "structure": "pdb"}


def _unknown(source: str, key: str, known: list[str]) -> ConfigError:
    name = key.rsplit(".", 1)[-1]
    alias = _ALIASES.get(name)
    close = [alias] if alias in known else difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(known)
    return ConfigError(source, key, "unknown key", hint)


def _section_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _alert_fields() -> dict[str, Any]:
    from .training.alerts import AlertThresholds  # lazy: alerts are pure Python, no torch

    return _section_types(AlertThresholds)


def _apply(cfg: Config, data: dict[str, Any], source: str) -> None:
    top = _section_types(Config)
    for section, body in data.items():
        if section not in top:
            raise _unknown(source, section, list(top))
        tp = top[section]
        if section == "description":
            cfg.description = _coerce(body, str, source, section)
            continue
        if not isinstance(body, dict):
            raise ConfigError(source, section, "expected a table like [" + section + "]")
        if section == "alerts":
            fields = _alert_fields()
            for key, value in body.items():
                if key not in fields:
                    raise _unknown(source, f"alerts.{key}", list(fields))
                cfg.alerts[key] = _coerce(value, fields[key], source, f"alerts.{key}")
                cfg.origins[f"alerts.{key}"] = source
            continue
        target = getattr(cfg, section)
        fields = _section_types(type(target))
        for key, value in body.items():
            full = f"{section}.{key}"
            if key not in fields:
                raise _unknown(source, full, list(fields))
            setattr(target, key, _coerce(value, fields[key], source, full))
            cfg.origins[full] = source
    del tp


def _origin(cfg: Config, *keys: str) -> str:
    """Where a value came from, so a bad --set is not blamed on the preset file."""
    for key in keys:
        if cfg.origins.get(key, cfg.source) != cfg.source:
            return cfg.origins[key]
    return cfg.source


def validate(cfg: Config, check_files: bool = True) -> Config:
    for key, check in _CHECKS.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not check(value):
            raise ConfigError(_origin(cfg, key), key, f"{value!r} is not allowed", f"allowed: {check.allowed}")
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
    src = _origin(cfg, "system.forcefield")
    if not cfg.system.forcefield:
        raise ConfigError(src, "system.forcefield", "needs at least one force-field XML file")
    if cfg.training.warmup_epochs > cfg.training.epochs:
        cfg.training.warmup_epochs = cfg.training.epochs
    if check_files:
        pdb = cfg.pdb_path
        if not pdb.is_file():
            where = ("relative to the current directory" if cfg.origins.get("system.pdb") == "--set"
                     else "relative to the preset file")
            raise ConfigError(_origin(cfg, "system.pdb"), "system.pdb", f"file not found: {pdb}",
                              f"give a path {where} or an absolute path")
        for ff in cfg.system.forcefield:
            if not _forcefield_exists(ff, cfg):
                raise ConfigError(src, "system.forcefield", f"force-field file not found: {ff}",
                                  "use one of OpenMM's bundled files (e.g. amber96.xml, implicit/obc1.xml) or a path")
    return cfg


def forcefield_path(ff: str, cfg: Config) -> str:
    """A local file wins over OpenMM's bundled data of the same name."""
    local = cfg.resolve(ff)
    return str(local) if local.is_file() else ff


def _forcefield_exists(ff: str, cfg: Config) -> bool:
    if cfg.resolve(ff).is_file():
        return True
    import importlib.util

    spec = importlib.util.find_spec("openmm")
    if spec is None or spec.origin is None:  # pragma: no cover - openmm is a dependency
        return True
    return (Path(spec.origin).parent / "app" / "data" / ff).is_file()


# --- presets -------------------------------------------------------------------

def presets_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("MOLPT_TUI_PRESETS")
    if env:
        dirs.append(Path(env))
    dirs.append(Path(__file__).resolve().parent.parent / "presets")  # source checkout / editable
    dirs.append(Path(sys.prefix) / "share" / "molpt-tui" / "presets")  # regular install
    return [d for d in dirs if d.is_dir()]


def list_presets() -> list[tuple[str, str, Path]]:
    seen: dict[str, tuple[str, str, Path]] = {}
    for d in presets_dirs():
        for path in sorted(d.glob("*.toml")):
            if path.stem in seen:
                continue
            try:
                with open(path, "rb") as fh:
                    desc = str(tomllib.load(fh).get("description", ""))
            except (OSError, tomllib.TOMLDecodeError):
                desc = "(unreadable)"
            seen[path.stem] = (path.stem, desc, path)
    return list(seen.values())


DEFAULT_PRESET = "quickstart"


def find_preset(name_or_path: str) -> Path:
    candidate = Path(os.path.expanduser(name_or_path))
    if candidate.suffix == ".toml" or os.sep in name_or_path:
        if not candidate.is_file():
            raise UserError(f"{name_or_path}: preset file not found (give an existing .toml file or a preset name; "
                            f"`molpt-tui presets` lists them)")
        return candidate
    names = {name: path for name, _, path in list_presets()}
    if name_or_path in names:
        return names[name_or_path]
    close = difflib.get_close_matches(name_or_path, list(names), n=1)
    hint = f"did you mean '{close[0]}'?" if close else "`molpt-tui presets` lists them"
    raise UserError(f"--preset: unknown preset '{name_or_path}' ({hint})")


def parse_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise UserError(f"--set {text}: expected section.key=value, e.g. --set training.lr=1e-4")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _override_value(raw: str) -> Any:
    """TOML-typed value of a --set (numbers, booleans, lists); anything else is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def load_config(preset: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                check_files: bool = True) -> Config:
    path = find_preset(preset or DEFAULT_PRESET)
    source = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}", "fix the syntax at that line") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
    cfg = Config(preset_name=path.stem, source=source, base_dir=str(path.resolve().parent))
    _apply(cfg, data, source)
    apply_overrides(cfg, overrides)
    return validate(cfg, check_files=check_files)


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> None:
    """`--set section.key=value` items, typed and checked like preset keys."""
    for item in overrides:
        key, raw = parse_override(item)
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError("--set", key, "expected section.key", "e.g. --set training.lr=1e-4")
        _apply(cfg, {parts[0]: {parts[1]: _override_value(raw)}}, "--set")
    _cwd_relative_overrides(cfg)


def _cwd_relative_overrides(cfg: Config) -> None:
    """A file named on the command line is relative to where the command runs, not to the
    preset file (`--set system.pdb=my.pdb`)."""
    if cfg.origins.get("system.pdb") == "--set":
        cfg.system.pdb = str(Path(os.path.expanduser(cfg.system.pdb)).absolute())
    if cfg.origins.get("system.forcefield") == "--set":
        cfg.system.forcefield = [str(Path(ff).resolve()) if Path(ff).is_file() else ff for ff in cfg.system.forcefield]


def config_from_dict(data: dict[str, Any], source: str, base_dir: str, preset_name: str = "") -> Config:
    """Rebuild a config saved in a run directory or a checkpoint (same validation as presets)."""
    cfg = Config(preset_name=preset_name, source=source, base_dir=base_dir)
    _apply(cfg, data, source)
    return validate(cfg, check_files=False)


def dump_toml(cfg: Config) -> str:
    import tomli_w

    data = cfg.to_dict()
    # Paths in a saved config must not depend on where the preset file was.
    data["system"]["pdb"] = str(cfg.pdb_path.resolve())
    data["system"]["forcefield"] = [
        str(Path(forcefield_path(ff, cfg)).resolve()) if cfg.resolve(ff).is_file() else ff
        for ff in cfg.system.forcefield
    ]
    header = f"# resolved molpt-tui configuration (preset: {cfg.preset_name or cfg.source})\n"
    return header + tomli_w.dumps(data)
