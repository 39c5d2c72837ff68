"""Training-step time breakdown per preset and energy engine (CPU): flow forward, flow inverse,
energies, backward.

    python benchmarks/bench_train_step.py [--presets quickstart aa_300_450_small] [--steps 5]
                                          [--engines auto openmm torch]

Uses each preset's own model and batch size on synthetic configurations (the PDB structure plus
small noise), so no MD data is needed. Prints JSON with milliseconds per step component, the
inverse/forward ratio of the flow and the parameter count, one row per engine of each preset
(the engines of a preset are timed one after the other in the same process). ``energies_ms`` is
what a step spends on U and dU/dx of its two batches (forward and inverse); ``engine_setup_s``
includes the torch engine's first call, i.e. compiling its kernels or loading them from the cache.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from molpt_tui.config import load_config
from molpt_tui.physics.engine_protocol import EnergyEngine
from molpt_tui.physics.engines import make_engine
from molpt_tui.physics.systems import system_from_config
from molpt_tui.physics.units import beta
from molpt_tui.training.losses import direction_term
from molpt_tui.training.setup import build_transport


def _ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _energy_and_forces(engine: EnergyEngine, x: torch.Tensor) -> torch.Tensor | None:
    xr = x.detach().clone().requires_grad_(True)
    torch.autograd.backward(engine.energy(xr).sum())
    return xr.grad


def bench(preset: str, steps: int, engine: str) -> dict[str, Any]:
    cfg = load_config(preset, [f"energy.engine={engine}"] if engine else [])
    ms = system_from_config(cfg)
    rng = np.random.default_rng(0)
    data = torch.tensor(ms.positions[None] + rng.normal(0, 0.005, (2048, ms.n_atoms, 3)))
    transport = build_transport(cfg, ms, data[:1024], data[1024:])
    bs = cfg.training.batch_size
    x, y = data[:bs], data[1024:1024 + bs]
    with torch.no_grad():
        tx, _ = transport(x)
    start = time.perf_counter()
    choice = make_engine(ms, cfg.energy.engine, cfg.energy.platform, cfg.energy.n_workers, bs,
                         compile=cfg.energy.compile)
    _energy_and_forces(choice.engine, tx)
    setup_s = time.perf_counter() - start
    row: dict[str, Any] = {
        "batch": bs,
        "params": sum(p.numel() for p in transport.flow.parameters()),
        "engine": choice.engine.description,
        "engine_reason": choice.reason,
        "engine_setup_s": setup_s,
        "flow_forward_ms": _ms(lambda: transport(x), steps),
        "flow_inverse_ms": _ms(lambda: transport.inverse(y), steps),
        "energies_ms": _ms(lambda: (_energy_and_forces(choice.engine, tx), _energy_and_forces(choice.engine, tx)),
                           steps),
    }

    reg = cfg.training.energy_reg_kt

    def full_step() -> None:
        # the trainer's own loss terms (linlogcut, non-finite samples left out)
        ty, ld_f = transport(x)
        tiy, ld_i = transport.inverse(y)
        fwd = direction_term(beta(cfg.temperatures.hot) * choice.engine.energy(ty), ld_f, reg)
        inv = direction_term(beta(cfg.temperatures.cold) * choice.engine.energy(tiy), ld_i, reg)
        torch.autograd.backward(fwd.loss + inv.loss)

    row["full_step_ms"] = _ms(full_step, steps)
    parts = row["flow_forward_ms"] + row["flow_inverse_ms"] + row["energies_ms"]
    row["backward_ms"] = max(0.0, row["full_step_ms"] - parts)
    row["inverse_forward_ratio"] = row["flow_inverse_ms"] / row["flow_forward_ms"]
    choice.engine.close()
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=["quickstart", "aa_300_450_small", "aa_300_450"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--engines", nargs="+", default=["openmm", "torch"], choices=["auto", "openmm", "torch"],
                        help="energy engines to time for each preset (default: openmm torch)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"device": "cpu", "threads": torch.get_num_threads(), "presets": {}}
    for preset in args.presets:
        for engine in args.engines:
            torch.manual_seed(0)
            out["presets"][f"{preset}/{engine}"] = bench(preset, args.steps, engine)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
