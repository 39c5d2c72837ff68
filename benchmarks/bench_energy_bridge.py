"""OpenMM bridge vs a plain serial OpenMM loop, and MD throughput per replica. Prints JSON.

    python benchmarks/bench_energy_bridge.py [--batch 256] [--repeats 3]

For both shipped systems in their presets' force fields: microseconds per configuration for
energy + forces through the bridge in-process, with 1 worker process and with one worker per
core, next to a plain loop over one OpenMM Context on the same configurations (same run, side
by side). MD: ns/day of one Langevin replica, flexible bonds at 1 fs and X-H constraints at 2 fs.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import openmm
import openmm.unit as u

from molpt_tui.config import Config, load_config
from molpt_tui.physics.openmm_bridge import OpenMMBridge
from molpt_tui.physics.systems import system_from_config


def _timeit(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def serial_loop(system: Any, platform: str, x: np.ndarray) -> Callable[[], None]:
    props = {"Threads": "1"} if platform == "CPU" else {}
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform), props)

    def run() -> None:
        for xi in x:
            ctx.setPositions(xi)
            st = ctx.getState(getEnergy=True, getForces=True)
            st.getPotentialEnergy()
            st.getForces(asNumpy=True)
    return run


def md_ns_per_day(cfg: Config, constraints: str, timestep_fs: float, steps: int) -> float:
    ms = system_from_config(cfg, constraints=constraints)
    integ = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, timestep_fs * u.femtosecond)
    ctx = openmm.Context(ms.system, integ, openmm.Platform.getPlatformByName(cfg.data.platform))
    ctx.setPositions(ms.positions)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 200)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, 1)
    integ.step(200)
    t0 = time.perf_counter()
    integ.step(steps)
    sec = time.perf_counter() - t0
    return steps * timestep_fs * 1e-6 / sec * 86400


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--md-steps", type=int, default=20000)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    out = {"cores": cores, "batch": args.batch, "unit": "us per configuration (energy + forces)", "systems": {}}
    for preset in ("quickstart", "aa_300_450"):
        cfg = load_config(preset)
        ms = system_from_config(cfg)
        x = ms.positions[None] + np.random.default_rng(0).normal(0, 0.01, (args.batch, ms.n_atoms, 3))
        row = {"n_atoms": ms.n_atoms, "forcefield": cfg.system.forcefield}
        for platform in ("Reference", "CPU"):
            row[f"serial_loop_{platform}"] = _timeit(serial_loop(ms.system, platform, x), args.repeats) / len(x) * 1e6
            for label, workers in (("in_process", 0), ("1_worker", 1), (f"{cores}_workers", cores)):
                with OpenMMBridge(ms.system, platform=platform, n_workers=workers) as bridge:
                    seconds = _timeit(partial(bridge.evaluate, x), args.repeats)
                    row[f"bridge_{label}_{platform}"] = seconds / len(x) * 1e6
        row["md_ns_per_day_flexible_1fs"] = md_ns_per_day(cfg, "none", 1.0, args.md_steps)
        row["md_ns_per_day_hbonds_2fs"] = md_ns_per_day(cfg, "hbonds", 2.0, args.md_steps // 2)
        out["systems"][preset] = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
