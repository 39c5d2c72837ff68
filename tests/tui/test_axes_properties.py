"""Property tests of the code that computes ticks, layouts and decimation for the plot panes.

Each function is handed random ranges and sizes (widths 20–400 columns, integer and float axes,
one-point and constant series, huge and tiny magnitudes, NaN and ±inf mixed in) and may only
return valid results: ticks inside the range, strictly increasing, each with a distinct label;
lines that fit; never an exception. A wide pane over a run of two epochs once crashed the tick
code (UnboundLocalError), which is the first regression case here.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from molpt_tui.tui.axes import MAX_TICKS, Ticks, linear_ticks, log_ticks, nice_ticks, symlog, tick_labels
from molpt_tui.tui.chart import Curve, render_chart
from molpt_tui.tui.decimate import minmax_decimate, symlog_transform
from molpt_tui.tui.fit import cut_words, fit_items, wrap_spans
from molpt_tui.tui.glyphs import to_ascii
from molpt_tui.tui.widgets.keybar import KeyEntry, choose_entries
from molpt_tui.tui.widgets.viewbar import visible_window

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any float a metrics file can hold, weighted towards the edges that broke things.
edge_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from([0.0, -0.0, 1.0, 2.0, 1e-300, -1e-300, 1e308, -1e308, 5e-324, 1.7976931348623157e308]),
    st.integers(min_value=-10**6, max_value=10**6).map(float),
)
widths = st.integers(min_value=20, max_value=400)


def tick_counts(width: int) -> list[int]:
    """The tick budgets panes of this width ask for (x: columns // 9, y: rows // 3)."""
    return [max(2, width // 9), max(2, width // 14), 1, 2, 3]


def check_ticks(ticks: Ticks, lo: float, hi: float, budget: int) -> None:
    positions, labels = ticks.positions, ticks.labels
    assert len(positions) == len(labels)
    assert len(positions) <= max(1, min(budget, MAX_TICKS))
    a, b = min(lo, hi), max(lo, hi)
    for p in positions:
        assert math.isfinite(p) and a <= p <= b, (p, a, b)
    assert all(x < y for x, y in zip(positions, positions[1:]))
    assert all(isinstance(s, str) and s.strip() for s in labels)
    assert len(set(labels)) == len(labels), labels


@SETTINGS
@given(lo=edge_floats, hi=edge_floats, width=widths, integer=st.booleans())
@example(lo=1.0, hi=2.0, width=154, integer=True)    # two epochs in a 154-column pane: the old crash
@example(lo=1.0, hi=2.0, width=190, integer=True)    # a full-width tmux split of a 1080p screen
@example(lo=1.0, hi=1.0, width=400, integer=True)    # one epoch
@example(lo=-1e308, hi=1e308, width=400, integer=False)
@example(lo=1e-300, hi=1.0000000001e-300, width=20, integer=False)
def test_linear_ticks_are_valid_for_every_range_and_width(lo: float, hi: float, width: int, integer: bool) -> None:
    for budget in tick_counts(width):
        ticks = linear_ticks(lo, hi, budget, integer=integer)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            assert len(ticks) == 0
            continue
        check_ticks(ticks, lo, hi, budget)
        a, b = min(lo, hi), max(lo, hi)
        if not integer:
            assert len(ticks) >= 1
        elif math.ceil(a) <= math.floor(b):
            assert len(ticks) >= 1
            assert all(p == int(p) for p in ticks.positions)
        assert nice_ticks(lo, hi, budget, integer=integer) == ticks.positions


@SETTINGS
@given(lo=edge_floats, hi=edge_floats, width=widths, symlog_axis=st.booleans())
def test_log_ticks_are_valid_for_every_range_and_width(lo: float, hi: float, width: int, symlog_axis: bool) -> None:
    # Positions on a log axis are exponents (or symlog values): keep them in a drawable range.
    lo = max(min(lo, 400.0), -400.0) if math.isfinite(lo) else lo
    hi = max(min(hi, 400.0), -400.0) if math.isfinite(hi) else hi
    for budget in tick_counts(width):
        ticks = log_ticks(lo, hi, symlog_axis=symlog_axis, max_ticks=budget)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            assert len(ticks) == 0
            continue
        check_ticks(ticks, lo, hi, budget)
        assert len(ticks) >= 1


@SETTINGS
@given(values=st.lists(st.floats(min_value=-1e300, max_value=1e300), min_size=1, max_size=30, unique=True))
def test_tick_labels_share_a_format_and_stay_distinct(values: list[float]) -> None:
    values = sorted(values)
    labels = tick_labels(values)
    assert len(labels) == len(values) and len(set(labels)) == len(labels)
    biggest = max(abs(v) for v in values)
    spacing = min((b - a for a, b in zip(values, values[1:])), default=biggest)
    # Each label is within a thousandth of the tick spacing of its value (or of the precision
    # of a float at the largest magnitude shown).
    for label, value in zip(labels, values):
        assert abs(float(label) - value) <= max(spacing, biggest * 1e-15) * 1e-3 + 1e-300


def test_symlog_ticks_are_readable_when_data_sit_at_six() -> None:
    ticks = log_ticks(symlog(-6.0), symlog(6.0), symlog_axis=True, max_ticks=5)
    assert ticks.labels == ["-5", "-1", "0", "1", "5"]  # not only -1/0/1
    wide = log_ticks(symlog(-500.0), symlog(1e6), symlog_axis=True, max_ticks=5)
    assert "0" in wide.labels and any(label.startswith("-") for label in wide.labels)
    assert any("e" in label for label in wide.labels)  # the decades above 1e3


def test_integer_axes_of_one_or_two_epochs_in_any_width() -> None:
    for width in range(20, 401):
        assert linear_ticks(1, 2, max(2, width // 9), integer=True).labels == ["1", "2"]
        assert linear_ticks(0.5, 1.5, max(2, width // 9), integer=True).labels == ["1"]


# --- whole figures --------------------------------------------------------------------------------
series = st.lists(edge_floats, min_size=0, max_size=60)


@st.composite
def curves(draw: st.DrawFn) -> list[Curve]:
    out = []
    for i in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(st.sampled_from(["random", "one", "constant", "huge", "tiny"]))
        if kind == "random":
            y = np.array(draw(series), dtype=float)
        elif kind == "one":
            y = np.array([draw(edge_floats)])
        elif kind == "constant":
            y = np.full(draw(st.integers(1, 50)), draw(st.floats(allow_nan=False, allow_infinity=False)))
        elif kind == "huge":
            y = np.array(draw(st.lists(st.floats(min_value=1e250, max_value=1e308), min_size=1, max_size=20)))
        else:
            y = np.array(draw(st.lists(st.floats(min_value=-1e-290, max_value=1e-290), min_size=1, max_size=20)))
        first = draw(st.integers(min_value=0, max_value=10**6))
        x = np.arange(first, first + y.size, dtype=float)
        err = None
        if draw(st.booleans()):
            err = np.array(draw(st.lists(edge_floats, min_size=y.size, max_size=y.size)), dtype=float)
        out.append(Curve(f"c{i}", "cyan", x, y, err=err, faint=draw(st.booleans()), points=draw(st.booleans())))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=curves(), width=widths, height=st.integers(min_value=1, max_value=60), log_y=st.booleans(),
       ascii_only=st.booleans(), monochrome=st.booleans())
def test_a_figure_renders_for_any_data_and_pane_size(data: list[Curve], width: int, height: int, log_y: bool,
                                                     ascii_only: bool, monochrome: bool) -> None:
    text, info = render_chart(data, width, height, log_y=log_y, ascii_only=ascii_only, monochrome=monochrome)
    lines = text.plain.split("\n")
    assert len(lines) <= height and all(len(line) <= width for line in lines), (width, height, lines)
    assert info.points >= 0 and info.mode in ("linear", "log", "symlog")
    if info.x_range is not None:
        assert info.x_range[0] <= info.x_range[1]
    for ticks in (info.y_ticks, info.x_ticks):
        if ticks.positions:
            check_ticks(ticks, ticks.positions[0], ticks.positions[-1], MAX_TICKS)
    if ascii_only:
        assert text.plain.isascii()
    if info.points and len(lines) == height:
        # Every y tick label printed is one of the ticks, on the axis column.
        for line in lines[1:-3]:
            label = line[: max(len(s) for s in info.y_ticks.labels)].strip() if info.y_ticks.labels else ""
            assert not label or label in info.y_ticks.labels


@SETTINGS
@given(y=st.lists(edge_floats, max_size=400), bins=st.integers(min_value=-5, max_value=400))
def test_decimation_keeps_order_extremes_and_only_finite_points(y: list[float], bins: int) -> None:
    values = np.array(y, dtype=float)
    x = np.arange(values.size)
    xd, yd = minmax_decimate(x, values, bins)
    finite = values[np.isfinite(values)]
    assert np.isfinite(yd).all() and np.all(np.diff(xd) > 0)
    assert len(xd) <= max(2 * max(bins, 1) + 4, finite.size)
    if finite.size:
        assert yd.max() == finite.max() and yd.min() == finite.min()
        assert xd[-1] == x[np.isfinite(values)][-1]


@SETTINGS
@given(y=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=2, max_size=50))
def test_symlog_is_monotonic(y: list[float]) -> None:
    values = np.sort(np.array(y))
    t = symlog_transform(values)
    assert np.all(np.diff(t) >= 0) and np.isfinite(t).all()


# --- text layout ----------------------------------------------------------------------------------
words = st.text(alphabet=st.characters(codec="ascii", categories=["L", "N", "P", "Zs"]), max_size=200)
paths = st.lists(st.text(alphabet="abcdefgh_-.0123456789", min_size=1, max_size=25), min_size=1, max_size=8).map(
    lambda parts: "/" + "/".join(parts))


@SETTINGS
@given(text=st.one_of(words, paths, st.tuples(words, paths, words).map(" ".join)),
       width=st.integers(min_value=1, max_value=120), indent=st.integers(min_value=0, max_value=8))
def test_wrapping_fits_keeps_every_character_and_breaks_paths_at_slashes(text: str, width: int, indent: int) -> None:
    text = text.replace("\n", " ")
    spans = wrap_spans(text, width, indent)
    room_first, room_rest = width, max(width - min(indent, max(width - 1, 0)), 1)
    for i, (a, b) in enumerate(spans):
        assert 0 <= a <= b <= len(text)
        assert b - a <= (room_first if i == 0 else room_rest)
    assert "".join(text[a:b] for a, b in spans).replace(" ", "") == text.replace(" ", "")
    for token in text.split():
        if len(token) <= room_rest:
            assert any(text[a:b].find(token) >= 0 for a, b in spans), token  # short words never split
    for a, b in spans[:-1]:
        piece = text[a:b]
        nxt = text[b:b + 1]
        if piece and nxt and not nxt.isspace() and "/" in piece and not piece.endswith("/"):
            # A path broken inside a name only when no '/' was within reach.
            assert "/" not in piece[1:] or len(piece) == room_rest or len(piece) == room_first


@SETTINGS
@given(text=words, width=st.integers(min_value=0, max_value=120))
def test_cut_words_fits_and_ends_at_a_word(text: str, width: int) -> None:
    out = cut_words(text, width)
    assert len(out) <= width or (width < 1 and out == "")
    if len(text) <= width:
        assert out == text
    soft = cut_words(text, width, hard=False)
    if soft and soft != text:
        head = soft.removesuffix("…")
        assert head and text.startswith(head) and text[len(head)] in " ·|,;:"


@SETTINGS
@given(items=st.lists(st.text(min_size=1, max_size=15), max_size=20), width=st.integers(min_value=0, max_value=200))
def test_fit_items_takes_whole_items_only(items: list[str], width: int) -> None:
    n = fit_items(items, width)
    assert len("  ".join(items[:n])) <= width
    if n < len(items):
        assert len("  ".join(items[: n + 1])) > width


@SETTINGS
@given(keys=st.lists(st.tuples(st.sampled_from("pcglezvsq?]"), st.text(alphabet="abcdefghij ", min_size=1,
                                                                         max_size=12)),
                     max_size=12, unique_by=lambda k: k[0]),
       width=st.integers(min_value=0, max_value=200))
def test_key_bar_shows_whole_entries_by_priority(keys: list[tuple[str, str]], width: int) -> None:
    entries = [KeyEntry(k, d, f"a{k}", True) for k, d in keys]
    priority = ["aq", "a?"]
    shown = choose_entries(entries, width, priority)
    assert len("  ".join(e.text for e in shown)) <= width
    assert [e for e in entries if e in shown] == shown  # declaration order kept
    ranked = [e for e in entries if e.action in priority]
    for e in ranked:
        if e not in shown:
            assert all(x.action not in priority[priority.index(e.action) + 1:] or x in ranked for x in shown)


@SETTINGS
@given(labels=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=14),
       width=st.integers(min_value=1, max_value=200), data=st.data())
def test_view_bar_always_shows_the_current_pane(labels: list[str], width: int, data: st.DataObject) -> None:
    current = data.draw(st.integers(min_value=0, max_value=len(labels) - 1))
    first, last = visible_window(labels, current, width)
    assert first <= current < last


@pytest.mark.parametrize("text", ["βU − log|det J| [kT]", "✔ ok · epoch 5 → 1.2±0.1", "⠉⠒⢄┌─┐│└┘"])
def test_ascii_fallback_leaves_only_ascii(text: str) -> None:
    assert to_ascii(text).isascii()
