"""Elementwise bijections used inside coupling layers, each with its exact log|dy/dx|.

* Monotone rational-quadratic (RQ) splines (Durkan et al., "Neural Spline Flows", 2019):
  - ``interval_rq_spline``: on [-B, B] with identity tails outside and unit derivative at both
    ends, so the map is C1 on the whole real line;
  - ``circular_rq_spline``: on [-pi, pi) with one derivative shared by both ends, so it is a
    smooth diffeomorphism of the circle (Rezende et al., "Normalizing flows on tori and
    spheres", 2020), optionally followed by a rotation.
* ``affine_transform`` (bounded log-scale) and ``circular_shift`` (the affine analogue on the
  circle: a scale other than 1 would not map the circle onto itself).

All functions are elementwise: ``x`` has shape [...], parameters have shape [..., k].

Exact identity at zero parameters
---------------------------------
Flows start at the identity and the swap acceptance at step 0 should equal the acceptance of the
map underneath, so zero parameters give the identity *bit for bit*, not to rounding:

* widths and heights come from the same softmax of equal inputs, so their knots are bitwise
  equal and every bin slope s = h/w is exactly 1;
* derivatives use ``_unit_softplus``, a softplus-shaped map with value exactly 1 at 0;
* the RQ formulas are rearranged so that every term that vanishes at the identity is a product
  with (d - s) or (h - w), which are exactly 0 there, and the output is written as
  ``x + corrections`` rather than ``y_k + h * fraction`` (the latter rounds).

The rearranged forms are algebraically the standard ones; where a rearrangement could lose
accuracy (the derivative numerator) it is written as a sum of non-negative terms.
"""
from __future__ import annotations

import math

import torch

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3

_PI = math.pi
_TWO_PI = 2.0 * math.pi


def interval_spline_n_params(n_bins: int) -> int:
    """widths K, heights K, interior derivatives K-1."""
    return 3 * n_bins - 1


def circular_spline_n_params(n_bins: int, shift: bool = True) -> int:
    """widths K, heights K, derivatives K (the last one is shared by both ends), rotation 1."""
    return 3 * n_bins + (1 if shift else 0)


def wrap_angle(a: torch.Tensor) -> torch.Tensor:
    """Map angles to [-pi, pi) in the tensor's dtype; values already in range come back unchanged.

    ``remainder`` alone would perturb in-range values by rounding (and can return exactly 2*pi
    for tiny negative inputs), so it is applied only to out-of-range entries and followed by a
    fix-up of the upper end.
    """
    out = torch.where((a >= _PI) | (a < -_PI), torch.remainder(a + _PI, _TWO_PI) - _PI, a)
    return torch.where(out >= _PI, out - _TWO_PI, out)


def _unit_softplus(raw: torch.Tensor) -> torch.Tensor:
    """Softplus-shaped, positive, f(0) == 1 exactly: f(r) = (r + sqrt(r^2 + 4)) / 2.

    torch's softplus(0) equals log(2) only to within an ulp that can depend on the kernel
    (vectorised vs scalar tail), which would break the bit-exact identity; sqrt(4) == 2 is
    exact in IEEE arithmetic. The r < 0 branch uses the cancellation-free form 2/(sqrt - r);
    each branch sees a clamped input so the unused one never produces inf/nan gradients.
    """
    rp = raw.clamp(min=0.0)
    rn = raw.clamp(max=0.0)
    pos = 0.5 * (rp + torch.sqrt(rp * rp + 4.0))
    neg = 2.0 / (torch.sqrt(rn * rn + 4.0) - rn)
    return torch.where(raw >= 0, pos, neg)


def _derivatives(raw: torch.Tensor, min_derivative: float) -> torch.Tensor:
    # 1 + c*(f - 1) rather than m + c*f: the latter gives m + (1 - m), which need not round to 1.
    return 1.0 + (1.0 - min_derivative) * (_unit_softplus(raw) - 1.0)


def _knots(raw: torch.Tensor, lo: float, hi: float, min_size: float) -> torch.Tensor:
    """Bin edges [..., K+1] from unnormalised sizes [..., K]; first edge lo, last hi exactly."""
    k = raw.shape[-1]
    if min_size * k >= 1.0:
        raise ValueError(f"minimum bin size {min_size} too large for {k} bins")
    frac = torch.softmax(raw.contiguous(), dim=-1)
    frac = min_size + (1.0 - min_size * k) * frac
    inner = lo + (hi - lo) * torch.cumsum(frac, dim=-1)[..., :-1]
    edge = inner.new_full(inner.shape[:-1] + (1,), 1.0)
    return torch.cat([lo * edge, inner, hi * edge], dim=-1)


def _gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(t, -1, idx.unsqueeze(-1)).squeeze(-1)


def _rq_log_slope(theta: torch.Tensor, s: torch.Tensor, d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
    """log dy/dx = 2 log s + log P - 2 log Den for an RQ bin at fractional position theta.

    P = d1 t^2 + 2 s t u + d0 u^2 (u = 1 - t) is written as m + (d1-m) t^2 + 2(s-m) t u + (d0-m) u^2
    with m = min(d0, d1, s), using t^2 + 2tu + u^2 = 1: all terms stay non-negative (no
    cancellation), and at the identity every correction is exactly 0 so P == 1 exactly.
    """
    u = 1.0 - theta
    tu = theta * u
    m = torch.minimum(torch.minimum(d0, d1), s)
    p = m + (d1 - m) * theta * theta + 2.0 * (s - m) * tu + (d0 - m) * u * u
    den = s + ((d0 - s) + (d1 - s)) * tu
    return 2.0 * torch.log(s) + torch.log(p) - 2.0 * torch.log(den)


def _rq_core(
    x: torch.Tensor, xknots: torch.Tensor, yknots: torch.Tensor, derivs: torch.Tensor, inverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """RQ spline on [xknots[0], xknots[-1]] for x already inside it.

    xknots, yknots: [..., K+1]; derivs: [..., K+1] (derivative at every knot).
    Returns (y, log|dy/dx|) for forward, (x, log|dx/dy|) for inverse.
    """
    k = xknots.shape[-1] - 1
    search = yknots if inverse else xknots
    # number of interior knots at or below the point = bin index in [0, K-1]
    idx = (x.unsqueeze(-1) >= search[..., 1:k]).sum(dim=-1)
    xk = _gather(xknots, idx)
    yk = _gather(yknots, idx)
    w = _gather(xknots, idx + 1) - xk
    h = _gather(yknots, idx + 1) - yk
    d0 = _gather(derivs, idx)
    d1 = _gather(derivs, idx + 1)
    s = h / w
    dl0 = d0 - s
    dl1 = d1 - s

    if not inverse:
        theta = ((x - xk) / w).clamp(0.0, 1.0)
        u = 1.0 - theta
        tu = theta * u
        den = s + (dl0 + dl1) * tu
        # y_k + h (s t^2 + d0 t u)/Den  ==  x + (y_k - x_k) + (h - w) t + h t u (dl0 u - dl1 t)/Den
        y = x + (yk - xk) + (h - w) * theta + h * tu * (dl0 * u - dl1 * theta) / den
        return y, _rq_log_slope(theta, s, d0, d1)

    # Inverse: root of a t^2 + b t + c = 0 (Durkan et al. eq. 6-8) in the cancellation-free
    # form t = 2 s xi / (b + sqrt(b^2 - 4ac)); x is again written as y + corrections.
    xi = x - yk
    dsum = dl0 + dl1
    a = xi * dsum - h * dl0
    b = h * d0 - xi * dsum
    c = -s * xi
    root = torch.sqrt((b * b - 4.0 * a * c).clamp(min=0.0))
    denom = (b + root).clamp(min=torch.finfo(x.dtype).tiny)
    theta = (2.0 * s * xi / denom).clamp(0.0, 1.0)
    # x_k + w t == y + (x_k - y_k) + xi (2h - b - root)/denom, using s*w = h
    out = x + (xk - yk) + xi * ((2.0 * h - b) - root) / denom
    return out, -_rq_log_slope(theta, s, d0, d1)


def interval_rq_spline(
    x: torch.Tensor,
    raw_widths: torch.Tensor,
    raw_heights: torch.Tensor,
    raw_derivs: torch.Tensor,
    *,
    inverse: bool = False,
    tail_bound: float = 5.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RQ spline on [-B, B], identity outside; returns (output, log|d out / d in|) elementwise.

    raw_widths, raw_heights: [..., K]; raw_derivs: [..., K-1] (interior knots; the two end
    derivatives are fixed at 1 to match the identity tails).
    """
    bound = float(tail_bound)
    xknots = _knots(raw_widths, -bound, bound, min_bin_width)
    yknots = _knots(raw_heights, -bound, bound, min_bin_height)
    one = raw_derivs.new_ones(raw_derivs.shape[:-1] + (1,))
    derivs = torch.cat([one, _derivatives(raw_derivs, min_derivative), one], dim=-1)
    inside = (x >= -bound) & (x <= bound)
    # the spline is evaluated at a clamped input so tail entries have finite (unused) gradients
    out, logdet = _rq_core(x.clamp(-bound, bound), xknots, yknots, derivs, inverse)
    return torch.where(inside, out, x), torch.where(inside, logdet, torch.zeros_like(logdet))


def circular_rq_spline(
    x: torch.Tensor,
    raw_widths: torch.Tensor,
    raw_heights: torch.Tensor,
    raw_derivs: torch.Tensor,
    raw_shift: torch.Tensor | None = None,
    *,
    inverse: bool = False,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Circle diffeomorphism of [-pi, pi): RQ spline with shared end derivative, then rotation.

    raw_widths, raw_heights, raw_derivs: [..., K] (raw_derivs[..., 0] is the derivative at both
    -pi and pi, so the map and its derivative are continuous across the cut). raw_shift: [...]
    rotation angle (any real; the result is wrapped), or None for no rotation. The rotation is
    what lets the map move mass across the cut, which a spline pinned at +-pi cannot.
    """
    xknots = _knots(raw_widths, -_PI, _PI, min_bin_width)
    yknots = _knots(raw_heights, -_PI, _PI, min_bin_height)
    d = _derivatives(raw_derivs, min_derivative)
    derivs = torch.cat([d, d[..., :1]], dim=-1)
    if not inverse:
        y, logdet = _rq_core(wrap_angle(x), xknots, yknots, derivs, inverse=False)
        if raw_shift is not None:
            y = y + raw_shift
        return wrap_angle(y), logdet
    y = wrap_angle(x if raw_shift is None else x - raw_shift)
    out, logdet = _rq_core(y, xknots, yknots, derivs, inverse=True)
    return wrap_angle(out), logdet


def bounded_log_scale(raw: torch.Tensor, max_log_scale: float) -> torch.Tensor:
    """a * tanh(raw / a): log-scale confined to (-a, a), slope 1 near 0."""
    a = float(max_log_scale)
    return a * torch.tanh(raw / a)


def affine_transform(
    x: torch.Tensor,
    shift: torch.Tensor,
    raw_log_scale: torch.Tensor,
    *,
    inverse: bool = False,
    max_log_scale: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """y = x * exp(ls) + shift, ls = a tanh(raw/a); returns (output, log|d out/d in|)."""
    ls = bounded_log_scale(raw_log_scale, max_log_scale)
    if not inverse:
        return x * torch.exp(ls) + shift, ls
    return (x - shift) * torch.exp(-ls), -ls


def circular_shift(
    x: torch.Tensor, shift: torch.Tensor, *, inverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation of the circle: y = wrap(x + shift); volume preserving."""
    y = wrap_angle(x - shift if inverse else x + shift)
    return y, torch.zeros_like(y)
