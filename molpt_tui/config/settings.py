"""One declaration per configuration key: its type, default, allowed values and doc.

A key is a dataclass field whose annotation gives the type (`bool`, `int`, `float`, `str`, a
`typing.Literal` of strings for choices, or a `list` of those) and whose metadata, made by
`setting(...)`, carries the constraints and the doc. `coerce` turns a TOML value into that type, `problem` says what is
wrong with a value; both read only the declaration, so a new key needs no code elsewhere.
"""
from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import typing
from dataclasses import dataclass
from typing import Any, Literal

# Unbounded text would let a preset smuggle megabytes into banners and file names; 4096 is the
# usual PATH_MAX, enough for any path or description.
MAX_TEXT = 4096


@dataclass(frozen=True)
class Setting:
    """Constraints of one key (for a list: `min_len`/`max_len` bound its length, the rest apply
    to each entry)."""

    doc: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_len: int = 0
    max_len: int | None = None
    pattern: str | None = None      # full match, for strings
    allowed: str = ""               # what `pattern` accepts, in words
    kind: str = ""                  # "a device": the problem reads "'tpu' is not a device"


def setting(*, doc: str = "", ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, min_len: int = 0, max_len: int | None = None, pattern: str | None = None,
            allowed: str = "", kind: str = "") -> dict[str, Setting]:
    """Field metadata declaring a key's constraints: `x: int = field(default=1, metadata=setting(ge=0))`."""
    return {"setting": Setting(doc=doc, ge=ge, gt=gt, le=le, lt=lt, min_len=min_len, max_len=max_len,
                               pattern=pattern, allowed=allowed, kind=kind)}


class Invalid(Exception):
    """A value that breaks its declaration; the caller adds the file and key."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix


# Values quoted in messages are bounded: a 4000-digit integer or a list nested 900 deep must
# still give one short line.
class _Short(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        # repr() itself refuses integers of more than 4300 digits (hex literals get that long).
        if x.bit_length() > 128:
            return f"<an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits>"
        return super().repr_int(x, level)


_repr = _Short()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlong = 40
_repr.maxlist = 6
_repr.maxdict = 4
_repr.maxlevel = 3


def show(value: Any) -> str:
    return _repr.repr(value)


def declared(cls: type) -> dict[str, tuple[Any, Setting]]:
    """Key -> (type, constraints) of the TOML keys of a section class (internal fields left out)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[Any, Setting]] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        out[f.name] = (hints[f.name], f.metadata.get("setting", Setting()))
    return out


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return "a list of " + _plural(type_name(inner))
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    return {float: "a number", int: "an integer", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _plural(name: str) -> str:
    if name.startswith("one of "):
        return "strings (each " + name + ")"
    if name == "true or false":
        return "booleans"
    return name.removeprefix("a ").removeprefix("an ") + "s"


def coerce(value: Any, tp: Any) -> Any:
    """A TOML value as the declared type; ints are accepted where numbers are expected."""
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise Invalid(f"expected {type_name(tp)}, got {show(value)}")
        return [coerce(v, inner) for v in value]
    if origin is Literal:
        if not isinstance(value, str):
            raise Invalid(f"expected {type_name(tp)}, got {show(value)}")
        return value
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise Invalid(f"expected {type_name(tp)}, got {show(value)}")
    if tp is float:
        try:
            value = float(value)
        except OverflowError:
            raise Invalid(f"{show(value)} is too large for a number", "give a value that fits a float") from None
        if not math.isfinite(value):
            raise Invalid(f"must be finite, got {show(value)}")
    return value


def check(value: Any, tp: Any, rules: Setting) -> None:
    """Raise `Invalid` when `value` is not of the declared type or breaks its constraints."""
    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise Invalid(f"expected {type_name(tp)}, got {show(value)}")
        if len(value) < rules.min_len:
            raise Invalid("must not be empty" if rules.min_len == 1 else
                          f"has {len(value)} entries, needs at least {rules.min_len}")
        if rules.max_len is not None and len(value) > rules.max_len:
            raise Invalid(f"has {len(value)} entries", f"at most {rules.max_len} allowed")
        (inner,) = typing.get_args(tp)
        each = dataclasses.replace(rules, min_len=0, max_len=None)  # the lengths bound the list itself
        for item in value:
            _check_one(item, inner, each)
        return
    _check_one(value, tp, rules)


def _check_one(value: Any, tp: Any, rules: Setting) -> None:
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        if value not in choices or not isinstance(value, str):
            raise Invalid(f"{show(value)} is not allowed", "allowed: " + type_name(tp))
        return
    if tp is str:
        _check_text(value, rules)
        return
    if tp is bool:
        if not isinstance(value, bool):
            raise Invalid(f"expected true or false, got {show(value)}")
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (tp is int and not isinstance(value, int)):
        raise Invalid(f"expected {type_name(tp)}, got {show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"must be finite, got {show(value)}")
    # Python compares ints and floats exactly, so a huge integer is judged correctly here.
    inside = ((rules.ge is None or value >= rules.ge) and (rules.gt is None or value > rules.gt)
              and (rules.le is None or value <= rules.le) and (rules.lt is None or value < rules.lt))
    if not inside:
        raise Invalid(f"{show(value)} is not allowed", f"allowed: {type_name(tp)} {bounds(rules)}")


def _check_text(value: Any, rules: Setting) -> None:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {show(value)}")
    if not value.isprintable():
        bad = next(ch for ch in value if not ch.isprintable())
        raise Invalid(f"contains the non-printable character {bad!a}",
                      "write it on one line, without control characters")
    limit = MAX_TEXT if rules.max_len is None else rules.max_len
    if len(value) > limit:
        raise Invalid(f"is {len(value)} characters long", f"at most {limit} allowed")
    if len(value) < rules.min_len:
        raise Invalid("must not be empty")
    if rules.pattern is not None and not re.fullmatch(rules.pattern, value):
        raise Invalid(f"{show(value)} is not {rules.kind or 'allowed'}", f"allowed: {rules.allowed or rules.pattern}")


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def bounds(rules: Setting) -> str:
    """The allowed range in words, e.g. "between 1 and 64" or "> 0 and <= 5000"."""
    if rules.ge is not None and rules.le is not None and rules.gt is None and rules.lt is None:
        return f"between {_num(rules.ge)} and {_num(rules.le)}"
    parts = [f"{op} {_num(bound)}" for op, bound in ((">", rules.gt), (">=", rules.ge), ("<", rules.lt),
                                                      ("<=", rules.le)) if bound is not None]
    return " and ".join(parts)


def first_problem(obj: Any) -> tuple[str, Invalid] | None:
    """The first key of a section instance whose value breaks its declaration, with the problem."""
    for name, (tp, rules) in declared(type(obj)).items():
        try:
            check(getattr(obj, name), tp, rules)
        except Invalid as exc:
            return name, exc
    return None
