"""Tick positions and labels for the terminal plots, correct for every range and pane size.

The contract every function here keeps, whatever it is handed (NaN, ±inf, a reversed or empty
range, 1e-300 or 1e308, a width of 20 or 400 columns): it returns ticks that lie inside the
range, strictly increase, and carry distinct, non-empty labels, and it never raises. An empty
result only means "no tick fits" (an integer axis over [1.2, 1.8]); the plot then draws none.
A wide pane over a run of two epochs once found a path through the old tick loop that left its
step unbound: every loop here ends in an explicit fallback instead.

Log axes are drawn on transformed values (log10, or symlog for data that reach zero or below),
so their ticks are positions on the transformed axis with labels in data units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# sign(y)·log10(1 + |y|/c): linear within ±c, logarithmic beyond. c = 1 kT (or a loss of order
# one) keeps small values near zero readable while 1e12 still fits on the same axis.
SYMLOG_LINTHRESH = 1.0
# Mantissas of "round" steps, smallest first.
NICE_STEPS = (1.0, 2.0, 2.5, 5.0)
INTEGER_STEPS = (1, 2, 2.5, 5)
# A range narrower than this fraction of its magnitude cannot be told apart in floating point
# labels of reasonable length: it is drawn as a constant with one tick.
RELATIVE_RESOLUTION = 1e-12
# Bounds on what a caller may ask for: more ticks than this never fit on any terminal.
MAX_TICKS = 200
# Labels in fixed notation between these magnitudes, scientific outside.
FIXED_MIN, FIXED_MAX = 1e-3, 1e5


@dataclass(frozen=True)
class Ticks:
    """Tick positions (on the drawn axis) and their labels (in data units)."""

    positions: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.positions)


def _clamp_count(max_ticks: int) -> int:
    try:
        n = int(max_ticks)
    except (TypeError, ValueError, OverflowError):
        return 2
    return min(max(n, 1), MAX_TICKS)


def _ordered(lo: float, hi: float) -> tuple[float, float] | None:
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError, OverflowError):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return (lo, hi) if lo <= hi else (hi, lo)


def _midpoint(lo: float, hi: float) -> float:
    mid = lo / 2.0 + hi / 2.0  # never overflows, unlike (lo + hi) / 2
    return mid if lo <= mid <= hi else lo  # halving a subnormal can underflow to 0


def _strictly_inside(values: list[float], lo: float, hi: float) -> list[float]:
    """Finite values within [lo, hi], increasing, without duplicates (rounding to float can
    merge neighbours at huge magnitudes or push one just outside the range)."""
    out: list[float] = []
    for v in values:
        if math.isfinite(v) and lo <= v <= hi and (not out or v > out[-1]):
            out.append(0.0 if v == 0 else v)  # no "-0"
    return out


# --- labels ------------------------------------------------------------------------------------
def compact_exponent(text: str) -> str:
    """'2.50e+04' -> '2.5e4': plot axes get only a few columns and the '+0' carries nothing."""
    mantissa, sep, exponent = text.partition("e")
    if not sep:
        return text
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    try:
        return f"{mantissa}e{int(exponent)}"
    except ValueError:
        return text


def format_tick(value: float) -> str:
    """One short label (3 significant digits), for an axis whose ticks are far apart."""
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        return "?"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    a = abs(value)
    if 1e-2 <= a < 1e3:
        return f"{value:.3g}"
    return compact_exponent(f"{value:.1e}")


def tick_labels(values: list[float], spacing_fraction: float = 1e-3) -> list[str]:
    """Labels in one shared format (same decimals, or same mantissa digits), with the fewest
    digits that keep neighbouring labels distinct and each label within `spacing_fraction` of
    the tick spacing of its tick."""
    if not values:
        return []
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) != len(values):
        return [format_tick(v) for v in values]
    nonzero = [abs(v) for v in values if v != 0]
    if not nonzero:
        return ["0"] * len(values)
    biggest, smallest = max(nonzero), min(nonzero)
    spacing = min((b - a for a, b in zip(values, values[1:])), default=biggest)
    tolerance = max(spacing, biggest * 1e-15) * spacing_fraction
    fixed = FIXED_MIN <= biggest < FIXED_MAX and (len(values) > 1 or smallest >= FIXED_MIN)
    candidates: list[list[str]] = []
    if fixed:
        for d in range(0, 13):
            candidates.append([f"{v:.{d}f}" for v in values])
    for d in range(0, 17):
        candidates.append([compact_exponent(f"{v:.{d}e}") for v in values])
    for labels in candidates:
        labels = ["0" if float(label) == 0 else label for label in labels]
        if len(set(labels)) == len(labels) and all(abs(float(s) - v) <= tolerance for s, v in zip(labels, values)):
            return labels
    return [repr(v) for v in values]  # repr round-trips: always distinct for distinct floats


# --- linear axes -------------------------------------------------------------------------------
def _integer_ticks(lo: float, hi: float, max_ticks: int) -> list[float]:
    first, last = math.ceil(lo), math.floor(hi)
    if first > last:
        return []
    if first == last:
        return _strictly_inside([float(first)], lo, hi)
    span = last - first  # Python ints: exact however large
    magnitude = 10 ** max(len(str(span // max_ticks)) - 1, 0)
    for scale in (magnitude, magnitude * 10, magnitude * 100):
        for m in INTEGER_STEPS:
            if m * scale != int(m * scale):
                continue  # 2.5 x 1: not an integer step
            step = int(m * scale)
            k0, k1 = -(-first // step), last // step
            if k1 - k0 + 1 <= max_ticks:
                ticks = _strictly_inside([float(k * step) for k in range(k0, k1 + 1)], lo, hi)
                if ticks:
                    return ticks
    return _strictly_inside([float(first)], lo, hi)


def _float_ticks(lo: float, hi: float, max_ticks: int) -> list[float]:
    span = hi - lo
    scale = max(abs(lo), abs(hi))
    if span == 0 or span < scale * RELATIVE_RESOLUTION:
        return [_midpoint(lo, hi)]
    # Per tick, without forming a span that overflows: hi - lo can exceed the largest float.
    raw = hi / max_ticks - lo / max_ticks
    if not (math.isfinite(raw) and raw > 0):
        return [_midpoint(lo, hi)]
    exponent = math.floor(math.log10(raw))
    for e in (exponent, exponent + 1, exponent + 2):
        for m in NICE_STEPS:
            try:
                step = m * 10.0 ** e
            except OverflowError:
                continue
            if not (math.isfinite(step) and step > 0):
                continue
            k0, k1 = math.ceil(lo / step), math.floor(hi / step)
            if k1 - k0 + 1 > max_ticks:
                continue
            ticks = _strictly_inside([k * step for k in range(k0, k1 + 1)], lo, hi)
            if ticks:
                return ticks
    return [_midpoint(lo, hi)]


def linear_ticks(lo: float, hi: float, max_ticks: int = 5, *, integer: bool = False) -> Ticks:
    """At most `max_ticks` round ticks (1, 2, 2.5, 5 × 10^k steps; integer steps on an integer
    axis) in [lo, hi], with labels in one format."""
    bounds = _ordered(lo, hi)
    if bounds is None:
        return Ticks()
    lo, hi = bounds
    n = _clamp_count(max_ticks)
    positions = _integer_ticks(lo, hi, n) if integer else _float_ticks(lo, hi, n)
    if integer:
        labels = [_integer_label(v) for v in positions]
        if len(set(labels)) != len(labels):
            labels = tick_labels(positions)
        return Ticks(positions, labels)
    return Ticks(positions, tick_labels(positions))


def _integer_label(value: float) -> str:
    if abs(value) < 1e6:
        return str(int(value))
    return compact_exponent(f"{value:.2e}")


def nice_ticks(lo: float, hi: float, max_ticks: int = 5, *, integer: bool = False) -> list[float]:
    """Positions of `linear_ticks` (kept for callers that label ticks themselves)."""
    return linear_ticks(lo, hi, max_ticks, integer=integer).positions


# --- log axes ----------------------------------------------------------------------------------
def symlog(value: float, linthresh: float = SYMLOG_LINTHRESH) -> float:
    return math.copysign(math.log10(1.0 + abs(value) / linthresh), value)


def symlog_inverse(t: float, linthresh: float = SYMLOG_LINTHRESH) -> float:
    try:
        return math.copysign(linthresh * (10.0 ** abs(t) - 1.0), t)
    except OverflowError:
        return math.copysign(math.inf, t)


MANTISSA_LEVELS = ((1.0,), (1.0, 5.0), (1.0, 2.0, 5.0))


def _log10_pairs(lo: float, hi: float, n: int) -> list[tuple[float, float]]:
    """(position, value) of round values on a log10 axis over [lo, hi] (exponents)."""
    first, last = math.ceil(lo), math.floor(hi)
    if last - first + 1 > n:
        # Many decades: every k-th decade, k itself round (1, 2, 5, 10, ...).
        return [(e, _pow10(e)) for e in _integer_ticks(lo, hi, n)]
    best: list[tuple[float, float]] = []
    for mantissas in MANTISSA_LEVELS:
        pairs = []
        for d in range(first - 1, last + 1):
            for m in mantissas:
                p = math.log10(m) + d
                if lo <= p <= hi:
                    pairs.append((p, m * _pow10(d)))
        pairs.sort()
        if len(pairs) > n:
            break
        best = pairs
        if len(pairs) >= min(n, 4):
            break
    return best


def _symlog_pairs(lo: float, hi: float, n: int) -> list[tuple[float, float]]:
    """(position, value) of 0 and ±round values on a symlog axis over [lo, hi]."""
    top = min(math.ceil(max(abs(lo), abs(hi))) + 1, 309)

    def inside(values: list[float]) -> list[tuple[float, float]]:
        pairs = {symlog(v): v for v in values if math.isfinite(v)}
        return sorted((p, v) for p, v in pairs.items() if lo <= p <= hi)

    decades = inside([s * _pow10(d) for d in range(0, top + 1) for s in (1.0, -1.0)] + [0.0])
    if len(decades) > n:
        # Many decades: every k-th decade on both sides, k round, as many as fit.
        for k in range(n, 0, -1):
            exponents = _integer_ticks(0.0, float(top), k)
            pairs = inside([s * _pow10(e) for e in exponents for s in (1.0, -1.0)] + [0.0])
            if len(pairs) <= n:
                return pairs
        return []
    best = decades if len(decades) >= 2 else []
    if len(best) >= min(n, 4):
        return best
    # Values below the linear threshold crowd around zero: only a range that lies within it
    # gets ticks there.
    start = 0 if max(abs(lo), abs(hi)) >= symlog(SYMLOG_LINTHRESH) else -3
    for mantissas in MANTISSA_LEVELS[1:]:
        values = [s * m * _pow10(d) for d in range(start, top + 1) for m in mantissas for s in (1.0, -1.0)]
        pairs = inside(values + [0.0])
        if len(pairs) > n:
            break
        if len(pairs) >= 2:
            best = pairs
        if len(pairs) >= min(n, 4):
            break
    return best


def log_ticks(lo: float, hi: float, *, symlog_axis: bool, max_ticks: int = 5) -> Ticks:
    """Ticks for an axis drawn in log10 (`symlog_axis=False`) or symlog units, [lo, hi] in those
    units. Round data values (decades, then fives and twos as room allows) when at least two fit;
    otherwise evenly spaced positions labelled with their values, never raw logarithms."""
    bounds = _ordered(lo, hi)
    if bounds is None:
        return Ticks()
    lo, hi = bounds
    n = _clamp_count(max_ticks)
    inverse = symlog_inverse if symlog_axis else _pow10
    if hi - lo < 1e-12 * max(1.0, abs(lo), abs(hi)):
        mid = _midpoint(lo, hi)
        return Ticks([mid], [format_tick(inverse(mid))])
    pairs = _symlog_pairs(lo, hi, n) if symlog_axis else _log10_pairs(lo, hi, n)
    positions = _strictly_inside([p for p, _ in pairs], lo, hi)
    if len(positions) >= 2 and len(positions) == len(pairs):
        labels = tick_labels_sparse([v for _, v in pairs])
        if len(set(labels)) == len(labels):
            return Ticks(positions, labels)
    # A narrow range between round values: even positions, labelled by their data values.
    positions = _float_ticks(lo, hi, min(n, 3))
    values = [inverse(p) for p in positions]
    if all(math.isfinite(v) for v in values):
        labels = tick_labels(values, spacing_fraction=0.05)
    else:
        labels = [format_tick(v) for v in values]
    if len(set(labels)) != len(labels):
        mid = _midpoint(lo, hi)
        return Ticks([mid], [format_tick(inverse(mid))])
    return Ticks(positions, labels)


def tick_labels_sparse(values: list[float]) -> list[str]:
    """Labels for round values spread over decades (1, 5, 10, 1e3, ...): each its own short form."""
    labels = [format_tick(v) for v in values]
    if len(set(labels)) == len(labels):
        return labels
    return tick_labels(values)


def _pow10(t: float) -> float:
    try:
        return float(10.0 ** t)
    except OverflowError:
        return math.inf
