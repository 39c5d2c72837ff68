"""Training-step time breakdown per preset (CPU): flow forward, flow inverse, energies, backward.

    python benchmarks/bench_train_step.py [--presets quickstart aa_300_450_small] [--steps 5]

Uses each preset's own model and batch size on synthetic configurations (the PDB structure plus
small noise), so no MD data is needed. Prints JSON with milliseconds per step component, the
inverse/forward ratio of the flow and the parameter count.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from molpt_tui.config import load_config
from molpt_tui.physics.engines import make_engine
from molpt_tui.physics.systems import system_from_config
from molpt_tui.physics.units import beta
from molpt_tui.training.trainer import build_transport


def _ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def bench(preset, steps, engine):
    cfg = load_config(preset, [f"energy.engine={engine}"] if engine else [])
    ms = system_from_config(cfg)
    rng = np.random.default_rng(0)
    data = torch.tensor(ms.positions[None] + rng.normal(0, 0.005, (2048, ms.n_atoms, 3)))
    transport = build_transport(cfg, ms, data[:1024], data[1024:])
    choice = make_engine(ms, cfg.energy.engine, cfg.energy.platform, cfg.energy.n_workers, cfg.training.batch_size)
    bs = cfg.training.batch_size
    x, y = data[:bs], data[1024:1024 + bs]
    with torch.no_grad():
        tx, _ = transport(x)
    row = {
        "batch": bs,
        "params": sum(p.numel() for p in transport.flow.parameters()),
        "engine": choice.engine.description,
        "flow_forward_ms": _ms(lambda: transport(x), steps),
        "flow_inverse_ms": _ms(lambda: transport.inverse(y), steps),
        "energies_ms": _ms(lambda: (choice.engine.energy(tx), choice.engine.energy(tx)), steps),
    }

    def full_step():
        ty, ld_f = transport(x)
        tiy, ld_i = transport.inverse(y)
        loss = (beta(cfg.temperatures.hot) * choice.engine.energy(ty) - ld_f).mean() + \
               (beta(cfg.temperatures.cold) * choice.engine.energy(tiy) - ld_i).mean()
        loss.backward()

    row["full_step_ms"] = _ms(full_step, steps)
    row["backward_ms"] = max(0.0, row["full_step_ms"] - row["flow_forward_ms"] - row["flow_inverse_ms"] - row["energies_ms"])
    row["inverse_forward_ratio"] = row["flow_inverse_ms"] / row["flow_forward_ms"]
    choice.engine.close()
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=["quickstart", "aa_300_450_small", "aa_300_450"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--engine", default="", help="override energy.engine (openmm|torch|auto)")
    args = parser.parse_args()
    torch.manual_seed(0)
    out = {"device": "cpu", "threads": torch.get_num_threads(),
           "presets": {p: bench(p, args.steps, args.engine) for p in args.presets}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
