"""Whatever a preset, a saved config or a `--set` holds, loading gives a Config or a UserError.

Random TOML documents (mostly the schema's own sections and keys, with values of any TOML type,
so that they get past the first check), random bytes and random text, and random overrides.
Any other exception (a KeyError, a RecursionError, a ValueError from deep inside) is a bug: the
command line would print a traceback instead of one line.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from molpt_testdata import STRUCTURES

from molpt_tui.config import (
    Config,
    apply_overrides,
    dump_toml,
    load_config,
    load_saved_config,
    validate,
)
from molpt_tui.errors import UserError

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Each example of the bytes test loads twice (as a preset and as a saved config).
FEWER = settings(SETTINGS, max_examples=100)


def _schema() -> dict[str, dict[str, Any]]:
    """Section -> key -> declared type (an empty dict for top-level keys such as description)."""
    hints = typing.get_type_hints(Config)
    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(Config):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        out[f.name] = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}
    return out


SCHEMA = _schema()
SECTIONS = [name for name, keys in SCHEMA.items() if keys]
KEYS = [f"{section}.{key}" for section in SECTIONS for key in SCHEMA[section]]

scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0.0, max_value=6000.0),
    st.text(max_size=20),
    st.sampled_from(["auto", "cpu", "cuda:0", "mps", "spline", "mlp", "none", "loss_stuck", "", "~"]),
    st.datetimes(), st.dates(), st.times(),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=8)


def plausible(tp: Any) -> st.SearchStrategy[Any]:
    """Values near what a key accepts, so that most documents get past the type checks and the
    range, choice and cross-key checks are exercised too."""
    origin = typing.get_origin(tp)
    if origin is list:
        return st.lists(plausible(typing.get_args(tp)[0]), max_size=4)
    if origin is typing.Literal:
        return st.sampled_from([*typing.get_args(tp), "bogus"])
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.one_of(st.integers(-2, 100), st.integers(-(2**63), 2**63 - 1))
    if tp is float:
        return st.one_of(st.floats(-10.0, 6000.0), st.floats(0.0, 1.0), st.integers(0, 5000))
    return st.one_of(st.text(max_size=12), st.sampled_from(["amber96.xml", "cpu", "cuda:1", "x.pdb"]))


def _weighted(known: list[str]) -> st.SearchStrategy[str]:
    # Mostly real names: a random one stops loading at the first key.
    if not known:
        return st.text(max_size=10)
    return st.integers(0, 19).flatmap(lambda i: st.text(max_size=10) if i == 0 else st.sampled_from(known))


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for section in draw(st.lists(_weighted(list(SCHEMA)), max_size=5, unique=True)):
        keys = SCHEMA.get(section, {})
        if not keys or draw(st.integers(0, 19)) == 0:
            doc[section] = draw(st.one_of(values, st.dictionaries(st.text(max_size=8), values, max_size=3)))
            continue
        body: dict[str, Any] = {}
        for key in draw(st.lists(_weighted(list(keys)), max_size=5, unique=True)):
            tp = keys.get(key)
            body[key] = draw(values if tp is None or draw(st.integers(0, 9)) == 0 else plausible(tp))
        doc[section] = body
    return doc


def _one_line(exc: UserError) -> None:
    assert len(str(exc).splitlines()) == 1, repr(str(exc))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config_properties")


def _with_system(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` on top of a valid [system] when it has none, so that later checks are reached too."""
    return doc if "system" in doc else {"system": {"pdb": str(STRUCTURES / "alanine_dipeptide.pdb")}, **doc}


@SETTINGS
@given(doc=documents(), check_files=st.booleans())
def test_random_toml_documents_load_or_raise_user_errors(folder: Path, doc: dict[str, Any], check_files: bool) -> None:
    path = folder / "random.toml"
    path.write_text(tomli_w.dumps(_with_system(doc)), encoding="utf-8")
    try:
        cfg = load_config(str(path), check_files=check_files)
    except UserError as exc:
        _one_line(exc)
        return
    assert isinstance(cfg, Config)
    assert validate(cfg, check_files=False) is cfg
    if check_files:
        # A config that loads can be saved in a run directory and resumed from it.
        saved = folder / "run" / "config.toml"
        saved.parent.mkdir(exist_ok=True)
        saved.write_text(dump_toml(cfg), encoding="utf-8")
        again = load_saved_config(saved, ())
        assert again.to_dict()["training"] == cfg.to_dict()["training"]
        assert again.alerts == cfg.alerts


encodings = st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1", "cp1252", "utf-8-sig"])


@FEWER
@given(data=st.one_of(
    st.binary(max_size=300),
    st.builds(lambda text, enc: text.encode(enc, errors="replace"), st.text(max_size=200), encodings),
    st.builds(lambda doc, enc: tomli_w.dumps(doc).encode(enc, errors="replace"), documents(), encodings),
    st.builds(lambda n, c: (b"v = " + c[0] * n + c[1] * n), st.integers(0, 3000),
              st.sampled_from([(b"[", b"]"), (b"{a=", b"}")])),
    st.builds(lambda n: b"[training]\nepochs = " + b"9" * n, st.integers(1, 6000)),
))
def test_random_bytes_load_or_raise_user_errors(folder: Path, data: bytes) -> None:
    for loader in (lambda p: load_config(str(p), check_files=False), lambda p: load_saved_config(p, ())):
        path = folder / "bytes" / "config.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        try:
            assert isinstance(loader(path), Config)
        except UserError as exc:
            _one_line(exc)


override_values = st.one_of(
    st.text(max_size=30),
    st.builds(str, scalars),
    st.builds(lambda v: tomli_w.dumps({"v": v})[4:].strip(), values),
    st.builds(lambda n: "[" * n + "]" * n, st.integers(0, 2000)),
    st.builds(lambda n: "7" * n, st.integers(1, 6000)),
)


@SETTINGS
@given(items=st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), override_values),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=20), override_values),
    st.text(max_size=30),
), max_size=4))
def test_random_overrides_apply_or_raise_user_errors(items: list[str]) -> None:
    cfg = Config(source="preset.toml", base_dir=str(STRUCTURES.parent))
    try:
        apply_overrides(cfg, items)
        validate(cfg, check_files=False)
    except UserError as exc:
        _one_line(exc)
        return
    assert isinstance(cfg, Config)


def test_the_strategies_reach_the_checks() -> None:
    # Guards against a schema walk that finds no keys: the documents would all be unknown keys.
    assert {"training", "temperatures", "alerts"} <= set(SECTIONS)
    assert "training.lr" in KEYS and "alerts.disabled" in KEYS
    assert SCHEMA["alerts"]["disabled"] == list[typing.get_args(SCHEMA["alerts"]["disabled"])[0]]
