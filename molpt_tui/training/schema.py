"""Typed reads of saved state (checkpoints): each problem names its key and what was found.

A checkpoint unpickles into plain containers that may hold anything; these helpers turn "the
wrong thing under a key" into one `SchemaError(key, problem)` that the checkpoint loader words
as a user-facing line. Python's `bool` is an `int`, and `float('nan')` is a float: both are
refused where they would be nonsense.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch


class SchemaError(ValueError):
    """`key` (dotted, e.g. ``schedule.scale``) holds something unusable; `problem` says what."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem

    def within(self, prefix: str) -> SchemaError:
        """The same problem, with its key as seen from the enclosing container."""
        return SchemaError(f"{prefix}.{self.key}" if self.key else prefix, self.problem)


def describe(value: object) -> str:
    """What a value is, for a message: "a string ('3')", "NaN", "a list"."""
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 30 else value[:27] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value!r}"
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def required(data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise SchemaError(key, "is missing")
    return data[key]


def as_mapping(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SchemaError(key, f"must be a table of values, got {describe(value)}")
    return value


def as_int(value: object, key: str, minimum: int | None = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(key, f"must be an integer, got {describe(value)}")
    if minimum is not None and value < minimum:
        raise SchemaError(key, f"must be >= {minimum}, got {value}")
    return value


def as_optional_int(value: object, key: str, minimum: int | None = 0) -> int | None:
    return None if value is None else as_int(value, key, minimum)


def as_float(value: object, key: str, allow_nan: bool = False, allow_inf: bool = True) -> float:
    """A number (an int is fine); NaN and +-inf only where the state can legitimately hold them."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(key, f"must be a number, got {describe(value)}")
    number = float(value)
    if math.isnan(number) and not allow_nan:
        raise SchemaError(key, "must be a number, got NaN")
    if math.isinf(number) and not allow_inf:
        raise SchemaError(key, f"must be finite, got {number}")
    return number


def as_str(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise SchemaError(key, f"must be a string, got {describe(value)}")
    return value


def as_str_list(value: object, key: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SchemaError(key, f"must be a list of strings, got {describe(value)}")
    return list(value)


def as_tensor(value: object, key: str, finite: bool = True) -> torch.Tensor:
    """A tensor; floating ones must hold no NaN or inf (weights that would poison training)."""
    if not isinstance(value, torch.Tensor):
        raise SchemaError(key, f"must be a tensor, got {describe(value)}")
    if finite and (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise SchemaError(key, f"holds {bad} NaN or infinite value(s) of {value.numel()}")
    return value


def as_byte_tensor(value: object, key: str) -> torch.Tensor:
    """An RNG state: a flat uint8 tensor, as `torch.Generator.get_state()` gives it."""
    tensor = as_tensor(value, key)
    if tensor.dtype != torch.uint8 or tensor.ndim != 1:
        raise SchemaError(key, f"must be a random-generator state (a flat uint8 tensor), got {describe(tensor)}")
    return tensor


def tensor_table(value: object, key: str) -> dict[str, torch.Tensor]:
    """A state_dict: string keys, tensor values, every floating one finite."""
    table = as_mapping(value, key)
    if not table:
        raise SchemaError(key, "is empty")
    out: dict[str, torch.Tensor] = {}
    for name, tensor in table.items():
        if not isinstance(name, str):
            raise SchemaError(key, f"has a key that is not a string ({describe(name)})")
        out[name] = as_tensor(tensor, f"{key}.{name}")
    return out
