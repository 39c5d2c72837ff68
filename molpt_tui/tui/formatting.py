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
