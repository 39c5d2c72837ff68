"""Number and time formatting shared by the panes (fixed widths keep the table from jittering)."""
from __future__ import annotations

import math


def fmt_num(value: float | None, sig: int = 4) -> str:
    if value is None:
        return "–"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value == 0:
        return "0"
    a = abs(value)
    if a >= 10 ** (sig + 1) or a < 1e-3:
        return compact_exp(f"{value:.{max(sig - 2, 1)}e}")
    return compact_exp(f"{value:.{sig}g}")


def compact_exp(text: str) -> str:
    """'8.19e+04' -> '8.19e4': table columns are narrow and the '+0' carries nothing."""
    mantissa, _, exponent = text.partition("e")
    if not exponent:
        return text
    return f"{mantissa}e{int(exponent)}"


def fmt_pct(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}%"


def fmt_frac(value: float | None) -> str:
    """Acceptance rates span 1e-10..1: keep three digits, switch to exponent when tiny."""
    if value is None or not math.isfinite(value):
        return "–"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.1e}"
    return f"{value:.3f}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 100:
        return f"{hours}h"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes:02d}:{secs:02d}"


def fmt_rate(seconds_per_it: float | None) -> str:
    if seconds_per_it is None or not math.isfinite(seconds_per_it) or seconds_per_it <= 0:
        return "? s/it"
    if seconds_per_it < 1:
        return f"{1.0 / seconds_per_it:.2f} it/s"
    return f"{seconds_per_it:.2f} s/it"


def fmt_params(n: int | None) -> str:
    if not n:
        return "? params"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} M params"
    if n >= 10_000:
        return f"{n / 1e3:.1f} k params"
    return f"{n} params"


def fmt_temperature(kelvin: float) -> str:
    return f"{kelvin:.1f}K"


def fmt_transport(t_cold: float, t_hot: float) -> str:
    return f"{fmt_temperature(t_cold)} → {fmt_temperature(t_hot)}"


def fmt_ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_count(n: int | None) -> str:
    """Counts of energy evaluations run to 1e9: '812', '45.2 k', '1.23 M', '4.56 G'."""
    if n is None or n < 0:
        return "–"
    if n < 10_000:
        return str(n)
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return str(n)  # pragma: no cover - unreachable


# --- table columns: one format per column ---------------------------------------------------------
# Values of a column are formatted alike (same decimals, or all scientific) so they line up and
# can be compared at a glance; the format is chosen from every value the column holds.
FIXED_LIMIT = 1e5   # at or above: the whole column in scientific notation
PCT_LIMIT = 1e3     # an improvement beyond ±this many % is not a change but a verdict


def column_format(values: list[float], *, decimals: int = 2) -> str:
    """'fixed' or 'sci' for a column of kT values."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    return "sci" if finite and max(finite) >= FIXED_LIMIT else "fixed"


def fmt_column(value: float, fmt: str, decimals: int = 2) -> str:
    if not math.isfinite(value):
        return "–" if math.isnan(value) else ("∞" if value > 0 else "-∞")
    if fmt == "sci":
        return compact_exp(f"{value:.{decimals + 1}e}")
    return f"{value:.{decimals}f}"


def fmt_improvement(value: float) -> str:
    """Improvement in %; a change past ±1000 % means the quantity exploded (or crossed zero):
    shown as a word, never as an 18-digit percentage."""
    if not math.isfinite(value):
        return "–"
    if value <= -PCT_LIMIT:
        return "diverged"
    if value >= PCT_LIMIT:
        return f">{PCT_LIMIT:.0f}%"
    text = f"{value:.1f}%"
    return "0.0%" if text == "-0.0%" else text


def prob_format(values: list[float]) -> str:
    """'fixed' (3 decimals) unless some acceptance is below 1e-3, then 'sci' for the column."""
    finite = [v for v in values if math.isfinite(v) and v != 0]
    return "sci" if finite and min(abs(v) for v in finite) < 1e-3 else "fixed"


def fmt_prob_column(value: float, fmt: str) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:.2e}" if fmt == "sci" else f"{value:.3f}"


def fmt_lr(value: float) -> str:
    """Learning rates always as '1.00e-3' so a column of them lines up."""
    if not math.isfinite(value):
        return "–"
    return compact_exp(f"{value:.2e}")


def fmt_scaled(value: float) -> str:
    """A non-negative amount in at most about five characters plus a unit prefix: '0.25', '183',
    '1.23 k', '3.4 M', '5.6 T', then '1.2e15': a status line keeps its width whatever it is fed."""
    if value < 999.5:
        return compact_exp(f"{value:.3g}") if value < 100 else f"{value:.0f}"
    for scale, unit in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        if value / scale < 999.5:
            return f"{value / scale:.3g} {unit}"
    return compact_exp(f"{value:.1e}")


def fmt_gib(mib: float) -> str:
    """MiB as GiB with one decimal ('10.2'); huge values scaled, never a long row of digits."""
    gib = mib / 1024.0
    return f"{gib:.1f}" if gib < 9999.95 else fmt_scaled(gib)


def fmt_mib(mib: float) -> str:
    """Resident memory: '812 MiB' below a GiB, '12.3 GiB' above."""
    if mib < 1023.5:
        return f"{fmt_scaled(mib)} MiB"
    return f"{fmt_gib(mib)} GiB"


def fmt_kelvin(kelvin: float) -> str:
    """A ladder temperature without decimals it does not have: '300', '367.5'."""
    if not math.isfinite(kelvin):
        return "–"
    return f"{kelvin:.0f}" if abs(kelvin - round(kelvin)) < 0.05 else f"{kelvin:.1f}"
