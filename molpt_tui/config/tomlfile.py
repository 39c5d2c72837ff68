"""Reading TOML files the user hands us, whatever they turn out to contain.

Presets, `--set` values and saved run configs all come through here, so that a file in the
wrong encoding, a binary file, or a document that makes the TOML parser itself fail (nesting
deep enough to exhaust the stack, integers too long to convert) is one reason in words, never
an exception from inside the parser.
"""
from __future__ import annotations

import codecs
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# Presets are a few kilobytes; a larger file is a mistake (a data file, a log), and reading it
# whole to find out would be slow.
MAX_BYTES = 1 << 20


class Unreadable(Exception):
    """A file or text that is not a TOML document we can use: why, and what to do about it."""

    def __init__(self, reason: str, fix: str = "") -> None:
        super().__init__(reason)
        self.reason, self.fix = reason, fix


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise Unreadable(f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise Unreadable(f"larger than {MAX_BYTES // 1024} KiB, so not a preset", "give a TOML preset file")
    return parse_toml(decode(raw))


_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
              (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def decode(raw: bytes) -> str:
    """The text of a TOML file, which the TOML standard requires to be UTF-8."""
    for bom, name in _WIDE_BOMS:  # UTF-32 first: its little-endian BOM starts like UTF-16's
        if raw.startswith(bom):
            raise Unreadable(f"{name} text, not UTF-8", "save it as UTF-8")
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]  # Windows editors add it; the text is still UTF-8
    if b"\x00" in raw:
        raise Unreadable("a binary file, not TOML text", "give a TOML text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                         "save it as UTF-8") from None


def parse_toml(text: str) -> dict[str, Any]:
    try:
        document: dict[str, Any] = tomllib.loads(text)
        return document
    except tomllib.TOMLDecodeError as exc:
        raise Unreadable(f"not valid TOML: {exc}", "fix the syntax at that line") from None
    except RecursionError:
        raise Unreadable("not usable TOML: arrays or tables nested too deeply",
                         "a preset needs only [section] tables of key = value") from None
    except ValueError as exc:
        # The parser converts integer literals with int(), whose digit limit it does not catch.
        if "integer string conversion" in str(exc):
            raise Unreadable("not usable TOML: an integer literal with thousands of digits",
                             "write numbers with a few digits") from None
        raise Unreadable(f"not valid TOML: {exc}", "fix the syntax") from None
