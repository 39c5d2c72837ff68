"""Characters beyond ASCII and their fallbacks for terminals that cannot draw them.

The Linux console (TERM=linux) has no braille, a VT100 neither box drawing nor Greek; there the
monitor runs in ASCII mode (`--ascii`, or chosen from TERM / the output encoding). Every glyph the
monitor draws itself comes from `Glyphs` (and the plots use ASCII markers); other text goes through
`to_ascii`, which maps box drawing to - | +, braille dots to '.', and the few symbols and Greek
letters of the metric names to spelled-out forms.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from textual.content import Content
from textual.scrollbar import ScrollBar, ScrollBarRender

# Terminals known to lack braille or box drawing (the Linux console has box drawing only in
# some fonts, braille in none).
ASCII_TERMS = frozenset({"linux", "vt100", "vt102", "vt220", "vt52", "dumb", "ansi", "cons25"})

_SYMBOLS: dict[str, str] = {
    "β": "b", "ε": "e", "κ": "k", "·": "*", "−": "-", "–": "-", "—": "-", "→": "->", "←": "<-",
    "↔": "<->", "⁻¹": "^-1", "⁻": "^-", "¹": "1", "±": "+/-", "…": "...", "✔": "ok", "✘": "X",
    "•": "*", "●": "o", "━": "-", "█": "#", "░": "-", "▏": "|", "×": "x", "≈": "~", "≥": ">=", "≤": "<=",
    "°": "deg", "µ": "u", "‹": "<", "›": ">", "◀": "<", "▶": ">", "⏸": "||",
}


def _box_char(ch: str) -> str:
    code = ord(ch)
    if 0x2800 <= code <= 0x28FF:  # braille: any dot reads as one point
        return " " if code == 0x2800 else "."
    if 0x2500 <= code <= 0x257F:  # box drawing
        name_h = ch in "─━┄┅┈┉╌╍═╼╾"
        name_v = ch in "│┃┆┇┊┋╎╏║╽╿"
        return "-" if name_h else "|" if name_v else "+"
    if 0x2580 <= code <= 0x259F:  # block elements
        return "#"
    return ""


def to_ascii(text: str) -> str:
    """`text` with every non-ASCII character replaced by an ASCII stand-in ('?' if none)."""
    if text.isascii():
        return text
    # A middle dot between words separates items; inside a name (β·U) it multiplies.
    text = text.replace(" · ", " - ")
    for src, dst in _SYMBOLS.items():
        if len(src) > 1 and src in text:
            text = text.replace(src, dst)
    out = []
    for ch in text:
        if ch.isascii():
            out.append(ch)
            continue
        out.append(_SYMBOLS.get(ch) or _box_char(ch) or "?")
    return "".join(out)


@dataclass(frozen=True)
class Glyphs:
    ok: str = "✔"
    fail: str = "✘"
    pending: str = "…"
    bar_full: str = "█"
    bar_empty: str = "░"
    arrow: str = "→"
    ellipsis: str = "…"
    more_left: str = "‹"
    more_right: str = "›"


UNICODE = Glyphs()
ASCII = Glyphs(ok="ok", fail="X", pending="..", bar_full="#", bar_empty="-", arrow="->", ellipsis="...",
               more_left="<", more_right=">")


def wants_ascii(environ: Mapping[str, str] | None = None, encoding: str | None = None) -> bool:
    """Whether the terminal described by `environ` (default: this process's) and the output
    `encoding` can only show ASCII."""
    env = os.environ if environ is None else environ
    term = env.get("TERM", "").lower()
    if term in ASCII_TERMS or term.startswith(("vt1", "vt2")):
        return True
    if encoding is not None and "utf" not in encoding.lower().replace("-", ""):
        return True
    return False


def ascii_content(content: Content) -> Content:
    """`content` with its text made ASCII, each styled run keeping its style."""
    plain = content.plain
    if plain.isascii():
        return content
    cuts = sorted({0, len(plain), *(b for span in content.spans for b in (span.start, span.end))})
    pieces = content.divide(cuts[1:-1]) if len(cuts) > 2 else [content]
    out = []
    for piece in pieces:
        style = piece.spans[0].style if piece.spans else ""
        out.append(Content.styled(to_ascii(piece.plain), style) if style else Content(to_ascii(piece.plain)))
    return Content("").join(out)


class AsciiScrollBarRender(ScrollBarRender):
    """Scrollbars drawn with spaces only (the thumb shows by its colour): Textual's partial
    block glyphs do not exist on a VT100 or the Linux console."""

    VERTICAL_BARS: ClassVar[list[str]] = [" "] * 8
    HORIZONTAL_BARS: ClassVar[list[str]] = [" "] * 8


def use_ascii_scrollbars(on: bool = True) -> None:
    """Make every scrollbar of this process ASCII, or Textual's own again (Textual reads its
    renderer from the class, so the app sets it while it runs and restores it when it ends)."""
    ScrollBar.renderer = AsciiScrollBarRender if on else ScrollBarRender
