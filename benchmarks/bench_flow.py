"""Forward vs inverse cost of FlowModel (prints JSON).

D = 60 coordinates on 21 atom tokens (Z-matrix style: 19 atoms with bond/angle/torsion, one
with bond/angle, one with a bond), transformer and MLP conditioners, a small (~50-150k
parameters) and a large (~1-3M) configuration, batch 64 and 256.

For every case it times, as medians over repeats measured side by side in one process:
  * forward / inverse without autograd (what the swap acceptance and sampling use);
  * forward+backward / inverse+backward of a scalar loss (what a training step pays per
    direction);
and the inverse/forward ratios. A coupling inverse needs one conditioner pass per layer, so the
ratios should be close to 1 (the autoregressive prototype paid one pass per coordinate).

    python benchmarks/bench_flow.py [--device cpu|cuda] [--threads N] [--min-time 0.3]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable

import torch

from molpt_tui.flows.layout import Layout
from molpt_tui.flows.model import FlowModel

CONFIGS = {
    "transformer-small": dict(conditioner="transformer", n_layers=4, hidden=48, n_heads=4, n_blocks=1),
    "transformer-large": dict(conditioner="transformer", n_layers=8, hidden=128, n_heads=8, n_blocks=2),
    "mlp-small": dict(conditioner="mlp", n_layers=4, hidden=32, n_blocks=1),
    "mlp-large": dict(conditioner="mlp", n_layers=8, hidden=192, n_blocks=2),
}


def bench_layout(n_tokens: int = 21) -> Layout:
    atom, slot, kind = [], [], []
    for t in range(n_tokens):
        for s, k in enumerate(("bond", "angle", "torsion")[: min(3, t + 1)]):
            atom.append(t)
            slot.append(s)
            kind.append(k)
    return Layout(tuple(atom), tuple(slot), tuple(kind), n_tokens)


def sample(layout: Layout, n: int, device) -> torch.Tensor:
    z = torch.randn(n, layout.dim)
    per = layout.periodic
    z[:, per] = (torch.rand(n, int(per.sum())) * 2 - 1) * math.pi
    return z.to(device)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, min_time: float, min_reps: int = 3) -> list[float]:
    """Seconds per call (one entry per call) after two warm-up calls."""
    for _ in range(2):
        fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _directions(model: FlowModel, z: torch.Tensor) -> tuple[Callable[[], None], ...]:
    """The four timed calls for one model and batch: forward/inverse, without and with backward."""

    def fwd_nograd() -> None:
        with torch.no_grad():
            model(z)

    def inv_nograd() -> None:
        with torch.no_grad():
            model.inverse(z)

    def fwd_grad() -> None:
        y, ld = model(z)
        (y.square().sum() - ld.sum()).backward()

    def inv_grad() -> None:
        x, ld = model.inverse(z)
        (x.square().sum() - ld.sum()).backward()

    return fwd_nograd, inv_nograd, fwd_grad, inv_grad


def run(device: str, min_time: float, batches: list[int]) -> dict:
    layout = bench_layout()
    torch.manual_seed(0)
    results = []
    for name, cfg in CONFIGS.items():
        model = FlowModel(layout, **cfg).to(device)
        with torch.no_grad():  # off the identity, so the spline search is not trivially uniform
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
        for batch in batches:
            z = sample(layout, batch, device)

            fwd_nograd, inv_nograd, fwd_grad, inv_grad = _directions(model, z)

            # interleave the pair being compared so drift in machine load hits both alike
            t = {k: [] for k in ("fwd", "inv", "fwd_bwd", "inv_bwd")}
            for _ in range(3):
                t["fwd"] += timed(fwd_nograd, device, min_time / 3)
                t["inv"] += timed(inv_nograd, device, min_time / 3)
                t["fwd_bwd"] += timed(fwd_grad, device, min_time / 3)
                t["inv_bwd"] += timed(inv_grad, device, min_time / 3)
            # medians for the headline; minima too, as they are least affected by other load
            med = {k: statistics.median(v) for k, v in t.items()}
            best = {k: min(v) for k, v in t.items()}
            model.zero_grad(set_to_none=True)
            results.append(
                dict(
                    config=name,
                    **{k: v for k, v in cfg.items()},
                    n_params=sum(p.numel() for p in model.parameters()),
                    batch=batch,
                    forward_ms=round(1e3 * med["fwd"], 3),
                    inverse_ms=round(1e3 * med["inv"], 3),
                    inverse_over_forward=round(med["inv"] / med["fwd"], 3),
                    forward_backward_ms=round(1e3 * med["fwd_bwd"], 3),
                    inverse_backward_ms=round(1e3 * med["inv_bwd"], 3),
                    inverse_over_forward_with_backward=round(med["inv_bwd"] / med["fwd_bwd"], 3),
                    min_ms={k: round(1e3 * v, 3) for k, v in best.items()},
                    inverse_over_forward_min=round(best["inv"] / best["fwd"], 3),
                    reps=len(t["fwd"]),
                )
            )
    return dict(
        benchmark="flow_forward_inverse",
        device=str(device) if torch.device(device).type == "cpu" else torch.cuda.get_device_name(),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        machine=platform.machine(),
        dim=layout.dim,
        n_tokens=layout.n_tokens,
        n_periodic=int(layout.periodic.sum()),
        dtype="float32",
        results=results,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds of timing per measurement")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(run(args.device, args.min_time, args.batches), indent=1))


if __name__ == "__main__":
    main()
