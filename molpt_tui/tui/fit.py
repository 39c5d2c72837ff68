"""Fitting text into a width without cutting words or file names in the middle.

Textual folds a word longer than its line wherever the line ends, which breaks paths mid-name in
the log pane; truncating at a fixed width cuts header and footer words in half. These pure
functions decide where lines break (at spaces; inside a path after a '/'; only a token with
neither is split by width) and where a line that must stay one line is cut (at a word boundary,
with an ellipsis). Property tests check them over random texts and widths.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

_TOKENS = re.compile(r"\S+|\s+")


def _first_piece(token: str, room: int) -> int:
    """Length of the first line's share of a token wider than the line: up to and including its
    last '/' (or '\\', else '-', '_', '.', ',', ':') within `room`, else `room` characters."""
    window = token[:room]
    cut = max(window.rfind(c) for c in "/\\")
    if cut <= 0:
        cut = max(window.rfind(c) for c in "-_.,:")
    return cut + 1 if cut > 0 else max(room, 1)


def wrap_spans(text: str, width: int, indent: int = 0) -> list[tuple[int, int]]:
    """(start, end) offsets of the lines `text` wraps to at `width` columns. Continuation lines
    are meant to be drawn after `indent` spaces; spaces at a break are dropped; every line fits."""
    return [(a, b) for a, b, _ in wrap_lines(text, width, indent)]


def wrap_lines(text: str, width: int, indent: int = 0) -> list[tuple[int, int, bool]]:
    """As `wrap_spans`, with whether each line continues a wrapped one (and so is drawn after
    `indent` spaces) rather than starting a line of `text` itself."""
    width = max(int(width), 1)
    indent = min(max(int(indent), 0), width - 1) if width > 1 else 0
    out: list[tuple[int, int, bool]] = []
    for line_start, line in _lines(text):
        for i, (a, b) in enumerate(_wrap_line(line, line_start, width, indent)):
            out.append((a, b, i > 0))
    return out


def _lines(text: str) -> list[tuple[int, str]]:
    out, pos = [], 0
    for part in text.split("\n"):
        out.append((pos, part))
        pos += len(part) + 1
    return out


def _wrap_line(line: str, base: int, width: int, indent: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None  # the line being filled, as offsets into `line`
    room = width
    # A line's own indentation (a list item, a continued message) is kept when it leaves room.
    lead = len(line) - len(line.lstrip(" "))
    lead = lead if lead < width // 2 else 0
    for match in _TOKENS.finditer(line):
        if match.group().isspace():
            continue
        start, end = match.start(), match.end()
        if current is None and not spans and start == lead:
            start = 0
        if current is not None:
            if end - current[0] <= room:  # the word and the spaces before it fit
                current = (current[0], end)
                continue
            spans.append((base + current[0], base + current[1]))
            current = None
            room = max(width - indent, 1)
        while end - start > room:
            piece = _first_piece(line[start:end], room)
            spans.append((base + start, base + start + piece))
            start += piece
            room = max(width - indent, 1)
        current = (start, end)
    if current is not None:
        spans.append((base + current[0], base + current[1]))
    if not spans:
        spans.append((base, base))
    return spans


def wrap_text(text: str, width: int, indent: int = 0) -> list[str]:
    """The lines of `text` at `width`, continuation lines prefixed by `indent` spaces."""
    lines = []
    for a, b, continued in wrap_lines(text, width, indent):
        lines.append(" " * min(indent, max(width - 1, 0)) + text[a:b] if continued and indent else text[a:b])
    return lines


def cut_words(text: str, width: int, ellipsis: str = "…", *, hard: bool = True) -> str:
    """`text` if it fits, else its longest prefix that ends at a word boundary, plus `ellipsis`.
    Without a word boundary to cut at, a single token wider than the line is cut where it must
    (`hard`), or nothing is returned."""
    width = max(int(width), 0)
    if len(text) <= width:
        return text
    room = width - len(ellipsis)
    if room <= 0:
        return ellipsis[:width] if hard else ""
    head = text[: room + 1]
    cut = head.rstrip().rfind(" ")
    if cut > 0:
        # A separator left dangling at the cut reads as a missing item: drop it too.
        head = text[:cut].rstrip(" ·|,;:")
        if head.strip():
            return head + ellipsis
    return text[:room] + ellipsis if hard else ""


def fit_items(items: Sequence[str], width: int, separator: str = "  ") -> int:
    """How many of `items` (in order, whole) fit in `width` joined by `separator`."""
    used = 0
    for i, item in enumerate(items):
        extra = len(item) + (len(separator) if i else 0)
        if used + extra > width:
            return i
        used += extra
    return len(items)



def keep_by_priority(lengths: Sequence[int], priorities: Sequence[int], width: int,
                     separators: int | Sequence[int] = 0) -> list[int]:
    """Indices (in order) of the items that stay when whole items are left out, lowest priority
    first (among equals the rightmost), until they fit in `width`. `separators`: the columns put
    before an item that is not the first kept (one for all, or one per item). A line of status
    figures loses its least telling figure, never half of one."""
    seps = [separators] * len(lengths) if isinstance(separators, int) else list(separators)
    kept = list(range(len(lengths)))

    def used() -> int:
        return sum(lengths[i] for i in kept) + sum(seps[i] for i in kept[1:])

    while kept and used() > width:
        lowest = min(priorities[i] for i in kept)
        kept.remove(max(i for i in kept if priorities[i] == lowest))
    return kept
