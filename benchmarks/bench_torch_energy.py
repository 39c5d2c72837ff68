"""Energy + forces per configuration: the batched torch engine against the OpenMM bridge.

    python benchmarks/bench_torch_energy.py [--quick] [--no-protein] [--threads 1,2] [--out FILE]

Prints one JSON document. For each system (the two shipped structures in vacuum and in OBC1,
plus a 273-atom Ala/Gly helix in vacuum and OBC1 unless --no-protein) and each batch size
(64, 256, 4096; the helix stops at 256), it reports microseconds per configuration for:

- ``torch_<device>_<dtype>_<compiled|eager>[_<n>thr]``: ``TorchEnergy.energy(x)`` followed by
  ``backward()`` on the whole batch (so forces included), with torch limited to n intra-op
  threads on CPU; ``compile_s`` gives the first call's time (compilation, or reading the
  on-disk cache of an earlier run);
- ``bridge_<platform>_<w>w``: ``OpenMMBridge.evaluate`` (energies and forces, what the trainer
  calls) with w worker processes (0 = in-process), on the Reference and CPU platforms;
- ``openmm_reference`` / ``openmm_cpu``: a plain Python loop over one Context, as a user's own
  script would do it.

OpenMM costs the same per configuration at any batch size, so for big batches and the helix it
is timed on the first ``openmm_configs_timed`` configurations. ``best_openmm`` is the fastest
OpenMM contender of the row and ``speedup_*`` compares each torch contender with it.

Each figure is the best of a few repeats after a warm-up call, with the contenders interleaved
round by round, because the machines this runs on are often shared; in each round a torch
contender runs three times back to back (see ``best_seconds``). All numbers of one run
come from the same machine and process, so ratios are side by side. Configurations are the
shipped minimum plus 0.01 nm Gaussian noise.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import molpt_tui  # noqa: E402
from molpt_tui.physics.openmm_bridge import OpenMMBridge  # noqa: E402
from molpt_tui.physics.torch_energy import CompileMode, TorchEnergy, compiler_available  # noqa: E402

# The shipped structures, read from the installed package's presets.
STRUCTURES = Path(molpt_tui.__file__).resolve().parent / "presets" / "structures"
Runner = Callable[[], object]

SYSTEMS = {
    # name: (structure, force-field files)
    "ala_ala/vacuum": ("ala_ala", ("amber99sbildn.xml",)),
    "ala_ala/obc1": ("ala_ala", ("amber99sbildn.xml", "implicit/obc1.xml")),
    "alanine_dipeptide/vacuum": ("alanine_dipeptide", ("amber96.xml",)),
    "alanine_dipeptide/obc1": ("alanine_dipeptide", ("amber96.xml", "implicit/obc1.xml")),
}
PROTEIN = {
    "helix30/vacuum": ("helix30", ("amber99sbildn.xml",)),
    "helix30/obc1": ("helix30", ("amber99sbildn.xml", "implicit/obc1.xml")),
}


def _helix(forcefields: tuple[str, ...]) -> tuple[Any, Any]:
    """30-residue Ala/Gly helix built with the repository's structure script (273 atoms)."""
    spec = importlib.util.spec_from_file_location("make_structures", ROOT / "scripts" / "make_structures.py")
    assert spec is not None and spec.loader is not None
    ms = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ms)
    topology, positions = ms.helix(30, forcefields)
    return topology, positions


def build(structure: str, forcefields: tuple[str, ...]) -> tuple[Any, np.ndarray]:
    ff = app.ForceField(*forcefields)
    if structure == "helix30":
        topology, positions = _helix(forcefields)
    else:
        pdb = app.PDBFile(str(STRUCTURES / f"{structure}.pdb"))
        topology, positions = pdb.topology, pdb.positions
    system = ff.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    x0 = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return system, np.asarray(x0)


def torch_runner(engine: TorchEnergy, x: torch.Tensor, device: str) -> Runner:
    def once() -> object:
        xr = x.detach().clone().requires_grad_(True)
        energy = engine.energy(xr)
        (grad,) = torch.autograd.grad(energy.sum(), xr)
        if device == "cuda":
            torch.cuda.synchronize()
        return grad

    return once


def openmm_runner(system: Any, x: torch.Tensor, platform_name: str) -> Runner:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform_name))

    def once() -> object:
        xs = x.detach().numpy()
        energies = np.empty(len(xs))
        forces = np.empty_like(xs)
        for k, xk in enumerate(xs):
            context.setPositions(xk)
            state = context.getState(getEnergy=True, getForces=True)
            energies[k] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            forces[k] = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        return torch.from_numpy(forces)

    return once


def with_threads(run: Runner, threads: int) -> Runner:
    """Run with torch limited to `threads` intra-op threads (OpenMM's CPU platform is unaffected)."""
    def once() -> object:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run()
        finally:
            torch.set_num_threads(before)

    return once


def bridge_runner(bridge: OpenMMBridge, x: torch.Tensor) -> Runner:
    def once() -> object:
        return bridge.evaluate(x.detach().numpy())

    return once


def best_seconds(runners: dict[str, Runner], repeats: int,
                 burst: dict[str, int]) -> tuple[dict[str, float], dict[str, float]]:
    """Best wall time of each runner and its first call's time.

    Rounds are interleaved across contenders so that load from other processes on a shared
    machine hits all of them alike. Within a round, runners named in ``burst`` run that many
    times back to back: a torch call of ~1 ms right after an OpenMM loop measured 1.5-2x slower
    than in steady state (caches refilled by the other contender), and a training loop calls it
    back to back with only the flow in between.
    """
    first = {}
    for key, run in runners.items():
        start = time.perf_counter()
        run()  # warm-up: compilation, first-call allocations, OpenMM kernel setup
        first[key] = time.perf_counter() - start
    best = {key: float("inf") for key in runners}
    for _ in range(repeats):
        for key, run in runners.items():
            for _ in range(burst.get(key, 1)):
                start = time.perf_counter()
                run()
                best[key] = min(best[key], time.perf_counter() - start)
    return best, first


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batches 64 and 256 only, one repeat, no protein")
    parser.add_argument("--no-protein", action="store_true")
    parser.add_argument("--threads", default="1",
                        help="comma-separated torch intra-op thread counts to time, e.g. 1,2 (default: 1). "
                             "On a shared machine more threads can be far slower: every kernel waits for its "
                             "slowest thread")
    parser.add_argument("--eager", action="store_true",
                        help="also time the eager (uncompiled) kernels next to the compiled ones")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    load_at_start = [round(v, 2) for v in os.getloadavg()]
    thread_counts = [int(t) for t in args.threads.split(",")]

    batches = [64, 256] if args.quick else [64, 256, 4096]
    systems = dict(SYSTEMS)
    if not (args.quick or args.no_protein):
        systems.update(PROTEIN)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    def modes(device: str) -> list[CompileMode]:
        usable = compiler_available(device)[0]
        chosen: list[CompileMode] = ["on"] if usable else []
        return chosen + (["off"] if args.eager or not usable else [])

    rng = np.random.default_rng(0)
    results = []
    for name, (structure, forcefields) in systems.items():
        system, x0 = build(structure, forcefields)
        n_atoms = system.getNumParticles()
        engines = {}
        for batch in batches:
            if structure == "helix30" and batch > 256:
                continue  # keeps the default run within a few minutes on two cores
            x = torch.from_numpy(x0[None] + 0.01 * rng.standard_normal((batch,) + x0.shape))
            row = {"system": name, "n_atoms": n_atoms, "batch": batch}
            repeats = 1 if args.quick else (2 if (batch >= 4096 or n_atoms > 100) else 3)
            # A serial loop costs the same per configuration at any batch size, so time it on
            # a prefix where the whole batch would take minutes (big batch, big molecule).
            n_openmm = min(batch, 1024 if n_atoms <= 100 else 32)
            runners, per = {}, {}
            for device in devices:
                for dtype in (torch.float64, torch.float32):
                    for mode in modes(device):
                        # One engine per system and kind across batch sizes: it compiles once.
                        engine_key = (device, dtype, mode)
                        if engine_key not in engines:
                            engines[engine_key] = TorchEnergy.from_system(system, device=device, dtype=dtype,
                                                                          compile=mode)
                        engine = engines[engine_key]
                        dtype_name = str(dtype).split(".")[-1]
                        for threads in (thread_counts if device == "cpu" else [default_threads]):
                            key = (f"torch_{device}_{dtype_name}_{'compiled' if mode == 'on' else 'eager'}"
                                   + (f"_{threads}thr" if device == "cpu" else ""))
                            xd = x.to(device=device, dtype=dtype)
                            runners[key] = with_threads(torch_runner(engine, xd, device), threads)
                            per[key] = batch
            bridges = []
            for platform_name in ("Reference", "CPU"):
                key = f"openmm_{platform_name.lower()}"
                runners[key] = openmm_runner(system, x[:n_openmm], platform_name)
                per[key] = n_openmm
                for workers in sorted({0, os.cpu_count() or 1}):
                    bridge = OpenMMBridge(system, platform=platform_name, n_workers=workers)
                    bridges.append(bridge)
                    key = f"bridge_{platform_name.lower()}_{workers}w"
                    runners[key] = bridge_runner(bridge, x[:n_openmm])
                    per[key] = n_openmm
            best, first = best_seconds(runners, repeats, {k: 3 for k in runners if k.startswith("torch_")})
            for bridge in bridges:
                bridge.close()
            for key, seconds in best.items():
                row[key + "_us"] = round(1e6 * seconds / per[key], 2)
                if key.startswith("torch_"):
                    row[key + "_compile_s"] = round(first[key], 2)
            row["openmm_configs_timed"] = n_openmm
            openmm_keys = [k for k in best if not k.startswith("torch_")]
            best_key = min(openmm_keys, key=lambda k: row[k + "_us"])
            row["best_openmm"] = best_key
            for key in best:
                if key.startswith("torch_"):
                    row["speedup_" + key] = round(row[best_key + "_us"] / row[key + "_us"], 2)
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)

    report = {
        "benchmark": "torch_energy: energy+forces, microseconds per configuration",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_default_threads": default_threads,
            "torch_threads_timed": thread_counts,
            # Other jobs on a shared machine slow everything down, multi-threaded torch most.
            "load_average_at_start": load_at_start,
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
            "torch": torch.__version__,
            "openmm": openmm.version.version,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        # Whole-process peak, so it bounds the largest torch run above (the protein at 256 when present).
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
