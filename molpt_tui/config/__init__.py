"""Presets (TOML) -> one typed, validated configuration.

Every key is declared once, as a dataclass field in `schema` (or `alerts` for `[alerts]`): its
type, default, allowed values and doc. Loading reports the first problem as a single line
naming the file (or flag), the key and what is allowed. No value is ever evaluated as code.

- `settings`: the declaration helper `setting(...)` and the checks that read declarations
- `schema`: the sections and `Config`; `alerts`: `AlertThresholds` and the alert rule ids
- `tomlfile`: reading TOML whatever the file holds; `presets`: where presets are found
- `loader`: presets, `--set` overrides and saved run configs -> a validated `Config`
"""
from __future__ import annotations

from .alerts import RULE_IDS, AlertThresholds, RuleId
from .loader import (
    PRESET_KEY,
    apply_overrides,
    dump_toml,
    forcefield_path,
    load_config,
    load_saved_config,
    parse_override,
    validate,
)
from .presets import DEFAULT_PRESET, ENV_VAR, PresetInfo, find_preset, list_presets, presets_dirs
from .schema import (
    T_MAX,
    Config,
    DataConfig,
    EnergyConfig,
    LoggingConfig,
    ModelConfig,
    OutputConfig,
    SystemConfig,
    TemperatureConfig,
    TrainingConfig,
)
from .settings import Setting, setting

__all__ = [
    "DEFAULT_PRESET", "ENV_VAR", "PRESET_KEY", "RULE_IDS", "T_MAX", "AlertThresholds", "Config", "DataConfig",
    "EnergyConfig", "LoggingConfig", "ModelConfig", "OutputConfig", "PresetInfo", "RuleId", "Setting",
    "SystemConfig", "TemperatureConfig", "TrainingConfig", "apply_overrides", "dump_toml", "find_preset",
    "forcefield_path", "list_presets", "load_config", "load_saved_config", "parse_override", "presets_dirs",
    "setting", "validate",
]
