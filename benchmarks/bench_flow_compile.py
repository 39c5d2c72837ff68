"""A training step with the flow's spline kernels eager and compiled (training.compile_flow), side by side.

    python benchmarks/bench_flow_compile.py [--presets quickstart aa_300_450_small] [--rounds 6]
                                            [--steps 5] [--threads 1] [--cold]

Each preset's own model, batch and energy engine on synthetic configurations (the PDB structure
plus small noise; no MD data needed), with the flow's weights moved off the identity. One flow
serves both modes, switched between rounds (eager, compiled, eager, ...), so both see the same
weights and the same load; the figure per mode is the median step over its rounds. A step is the
trainer's: both directions, energies, the loss, backward. ``first_compiled_step_s`` is the first
step with compiled kernels, i.e. the compile itself (``--cold``: into an empty cache directory, as
on a first run; otherwise torch's cache may already hold the kernels). ``max_abs_diff`` compares
outputs and log-dets of the two modes on the same batch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np


def _step_fn(preset: str) -> tuple[Any, Any, Any]:
    import torch

    from molpt_tui.config import load_config
    from molpt_tui.physics.engines import make_engine
    from molpt_tui.physics.systems import system_from_config
    from molpt_tui.physics.units import beta
    from molpt_tui.training.losses import direction_term
    from molpt_tui.training.setup import build_transport

    cfg = load_config(preset, [])
    ms = system_from_config(cfg)
    rng = np.random.default_rng(0)
    data = torch.tensor(ms.positions[None] + rng.normal(0, 0.005, (2048, ms.n_atoms, 3)))
    torch.manual_seed(0)
    transport = build_transport(cfg, ms, data[:1024], data[1024:])
    with torch.no_grad():
        for p in transport.flow.parameters():
            p.add_(0.02 * torch.randn_like(p))
    bs = cfg.training.batch_size
    x, y = data[:bs], data[1024:1024 + bs]
    engine = make_engine(ms, cfg.energy.engine, cfg.energy.platform, cfg.energy.n_workers, bs,
                         compile=cfg.energy.compile).engine
    engine.warm_up(x, lambda text: None)
    reg, b_hot, b_cold = cfg.training.energy_reg_kt, beta(cfg.temperatures.hot), beta(cfg.temperatures.cold)

    def step() -> None:
        ty, ld_f = transport(x)
        tiy, ld_i = transport.inverse(y)
        fwd = direction_term(b_hot * engine.energy(ty), ld_f, reg)
        inv = direction_term(b_cold * engine.energy(tiy), ld_i, reg)
        torch.autograd.backward(fwd.loss + inv.loss)
        transport.zero_grad(set_to_none=True)

    def outputs() -> list[Any]:
        with torch.enable_grad():
            return [t.detach() for t in (*transport(x), *transport.inverse(y))]

    return transport, step, outputs


def bench(preset: str, rounds: int, steps: int) -> dict[str, Any]:
    from molpt_tui.flows.coupling import use_training_kernels
    from molpt_tui.flows.spline_kernels import EAGER, compiled_kernels

    transport, step, outputs = _step_fn(preset)
    compiled = compiled_kernels()
    use_training_kernels(transport, EAGER)
    step()
    eager_out = outputs()
    use_training_kernels(transport, compiled)
    started = time.perf_counter()
    step()
    first = time.perf_counter() - started
    diff = max(float((a - b).abs().max()) for a, b in zip(outputs(), eager_out))
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(rounds):
        for mode, kernels in (("eager", EAGER), ("compiled", compiled)):
            use_training_kernels(transport, kernels)
            started = time.perf_counter()
            for _ in range(steps):
                step()
            times[mode].append((time.perf_counter() - started) / steps * 1e3)
    eager_ms, compiled_ms = statistics.median(times["eager"]), statistics.median(times["compiled"])
    return {
        "params": sum(p.numel() for p in transport.flow.parameters()),
        "eager_step_ms": round(eager_ms, 1),
        "compiled_step_ms": round(compiled_ms, 1),
        "speedup": round(eager_ms / compiled_ms, 2),
        "eager_rounds_ms": [round(t, 1) for t in times["eager"]],
        "compiled_rounds_ms": [round(t, 1) for t in times["compiled"]],
        "first_compiled_step_s": round(first, 1),
        "max_abs_diff": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["quickstart", "aa_300_450_small"])
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds per mode")
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, and the compiler's")
    parser.add_argument("--cold", action="store_true", help="compile into an empty cache directory")
    args = parser.parse_args()
    # read when torch's compiler is first imported
    os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = str(args.threads)
    if args.cold:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_flow_compile_")
    import torch

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"device": "cpu", "threads": args.threads, "cold_cache": args.cold,
                           "load_before": os.getloadavg()[0], "python": sys.version.split()[0],
                           "torch": torch.__version__, "presets": {}}
    for preset in args.presets:
        out["presets"][preset] = bench(preset, args.rounds, args.steps)
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
