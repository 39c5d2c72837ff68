"""The headline figure: the phi > 0 population of alanine dipeptide at 300 K by two-replica flow PT
against the six-replica naive ladder, over MD time and energy evaluations, side by side.

    python benchmarks/bench_pt.py [--preset ala2_300_1000_vacuum] [--work DIR]
        [--data-samples N] [--epochs E] [--set model.hidden=32 ...]   # the training budget
        [--ns 0.2] [--ref-ns 0.5] [--swap-every K] [--seed S]          # the sampling budget

Steps, each skipped when its output is already in --work (delete it to redo one):
  1. replica-exchange data for the preset (`molpt-tui simulate`, --data-samples per temperature);
  2. a flow trained on it (`molpt-tui train --no-ui --epochs E`, --set overrides for its model);
  3. `molpt-tui pt RUN --baseline ladder --ns N`: flow PT and the ladder side by side, with the
     same total MD time (the ladder runs 2N/6 per replica);
  4. the reference, by neither sampler: replica-exchange umbrella sampling over (phi, psi) at the
     cold temperature (a --ref-grid x --ref-grid grid of harmonic windows of --ref-k, --ref-ps
     each, neighbours exchanging every 0.1 ps), unbiased with MBAR (pymbar:
     `pip install -e '.[bench]'`); two runs with other seeds, staged in opposite directions.

Prints JSON: the reference population, each sampler's final estimate with its batch-means
error, its total MD time, energy evaluations (MD force evaluations, the energy read after each
chunk, flow proposals), wall time, and how many times fewer energy evaluations flow PT needs
for the same error (errors scale as 1/sqrt(cost): ratio = (se_ladder^2 * evals_ladder) /
(se_flow^2 * evals_flow); only when both visited the state at least MIN_ENTRIES times, since the
error bar of a state entered twice means nothing), and the ratio of round trips per total MD
time. Writes the figure (--png, default WORK/headline.png).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from molpt_tui.cli import main as cli
from molpt_tui.config import load_config
from molpt_tui.physics.data import load_data
from molpt_tui.physics.systems import system_from_config
from molpt_tui.physics.torsions import RamachandranPair, backbone_of_topology
from molpt_tui.physics.umbrella import (
    Umbrella,
    UmbrellaPlan,
    mbar_population,
    sample_windows,
    snake,
    torsion_coordinate,
    windows_around,
)
from molpt_tui.report.validation_plots import PopulationSeries, write_populations_figure
from molpt_tui.training.pt import running_estimate

STATE = "phi>0"
MIN_ENTRIES = 10
REF_FRICTION = 5.0          # 1/ps
REF_EQUILIBRATION_PS = 2.0
REF_EXCHANGE_EVERY = 100    # MD steps between samples and window exchanges
REF_PER_WINDOW = 20         # samples per window into MBAR (0.75 ps apart at 15 ps per window)


def _run(args: list[str]) -> None:
    print("bench_pt: molpt-tui " + " ".join(args), flush=True)
    code = cli(args)
    if code != 0:
        raise SystemExit(f"bench_pt: `molpt-tui {' '.join(args)}` exited {code}")


def _series(label: str, phi_pos: np.ndarray, n_replicas: int, swap_every: int, timestep_fs: float,
            proposals_per_round: int) -> PopulationSeries:
    counts, mean, se = running_estimate(phi_pos.astype(float), n_points=80)
    ns_round = swap_every * timestep_fs * 1e-6
    return PopulationSeries(label=label, total_ns=counts * ns_round * n_replicas,
                            energy_evals=counts * (n_replicas * (swap_every + 1) + proposals_per_round),
                            mean=mean, se=se)


def umbrella_reference(work: Path, system_xml: str, start: np.ndarray, pair: RamachandranPair,
                       temperature: float, timestep_fs: float, a: argparse.Namespace) -> dict[str, Any]:
    """P(phi > 0) at `temperature` by replica-exchange umbrella sampling over (phi, psi) + MBAR: no
    flow, no temperature ladder. Both backbone torsions are restrained because psi is the slow
    motion at phi ~ 0 (restraining phi alone, runs staged from either side disagreed 3-6 fold).
    Two runs, other seeds, staged along the grid in opposite directions: their agreement is the
    check that nothing slow was left out."""
    summary = work / f"reference_reus2d_{a.ref_grid}x{a.ref_grid}x{a.ref_ps:g}ps_k{a.ref_k:g}.json"
    if summary.is_file():   # MBAR over 576 windows takes minutes: done once per set of samples
        cached: dict[str, Any] = json.loads(summary.read_text())
        return cached
    umbrella = Umbrella((torsion_coordinate(pair.phi.atoms), torsion_coordinate(pair.psi.atoms)))
    q0 = umbrella.values(start)[0]

    def around(value: float) -> list[float]:
        """Centres round the circle, starting at the one nearest `value`, so staging starts close."""
        c = list(windows_around(a.ref_grid))
        first = int(np.argmin(np.abs((np.asarray(c) - value + math.pi) % (2 * math.pi) - math.pi)))
        return c[first:] + c[:first]

    grid = snake(around(q0[0]), around(q0[1]))
    runs = {"forward": grid, "backward": (grid[0], *reversed(grid[1:]))}
    out: dict[str, Any] = {"method": "replica-exchange umbrella sampling over (phi, psi) + MBAR (pymbar), two runs",
                           "grid": f"{a.ref_grid} x {a.ref_grid}", "ps_per_window": a.ref_ps,
                           "stiffness_kj_per_rad2": a.ref_k, "exchange_every_steps": REF_EXCHANGE_EVERY,
                           "friction_per_ps": REF_FRICTION, "runs": {}}
    for i, (name, order) in enumerate(runs.items()):
        # Friction 5/ps: only the equilibrium matters here, and a stiffer bath decorrelates faster.
        plan = UmbrellaPlan(centres=order, stiffness=a.ref_k, temperature=temperature, ps_per_window=a.ref_ps,
                            equilibration_ps=REF_EQUILIBRATION_PS, sample_every=REF_EXCHANGE_EVERY,
                            timestep_fs=timestep_fs, friction_per_ps=REF_FRICTION, seed=a.seed + 1000 + 97 * i)
        path = work / f"reference_reus2d_{name}_{a.ref_grid}x{a.ref_grid}x{a.ref_ps:g}ps_k{a.ref_k:g}.npz"
        if not path.is_file():
            print(f"bench_pt: umbrella reference {name}: {len(order)} windows x {a.ref_ps:g} ps", flush=True)
            w = sample_windows(system_xml, umbrella, start, plan)
            np.savez(path, centres=np.asarray(order), values=np.stack(w.values),
                     exchange_acceptance=w.exchange_acceptance, md_steps=w.md_steps)
        with np.load(path) as f:
            v, acc, steps = list(f["values"]), f["exchange_acceptance"], int(f["md_steps"])
        p, se = mbar_population(umbrella, plan, v, _phi_positive, per_window=REF_PER_WINDOW)
        out["runs"][name] = {"population": p, "se": se, "exchange_acceptance_min": float(acc.min()),
                             "exchange_acceptance_mean": float(acc.mean()),
                             "total_ns": steps * timestep_fs * 1e-6, "energy_evals": steps}
    # The two runs are independent: their inverse-variance mean (one MBAR over both grids would
    # hold 1,152 states and 4x the samples, minutes per solve for the same number).
    r = list(out["runs"].values())
    w = np.array([1.0 / x["se"] ** 2 for x in r])
    p = float(np.sum(w * np.array([x["population"] for x in r])) / w.sum())
    out.update(population=p, se=float(1.0 / math.sqrt(w.sum())), total_ns=sum(x["total_ns"] for x in r),
               energy_evals=sum(x["energy_evals"] for x in r),
               runs_z=(r[0]["population"] - r[1]["population"]) / math.hypot(r[0]["se"], r[1]["se"]))
    summary.write_text(json.dumps(out, indent=2) + "\n")
    return out


def _phi_positive(q: np.ndarray) -> np.ndarray:
    return np.asarray(q[:, 0] > 0.0)


def training_budget(run: Path) -> dict[str, Any]:
    """What the map cost, read back from its run (it may have been trained outside this script)."""
    from molpt_tui.training.history import History
    from molpt_tui.training.metrics_log import read_events

    events = list(read_events(run / "metrics.jsonl"))
    h = History.from_events(events)
    assert h.run is not None and h.finished is not None, f"{run}: the training run did not finish"
    start = next(e for e in events if e.kind == "run_started").start_epoch
    return {"run": str(run), "n_params": h.run.n_params, "batch": h.run.batch_size,
            "steps": (h.finished.epoch - start) * h.run.steps_per_epoch, "energy_evals": h.finished.energy_evals,
            "train_s": h.finished.elapsed_s, "model_epoch": h.finished.best_epoch}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="ala2_300_1000_vacuum")
    p.add_argument("--work", type=Path, default=Path("checkpoints/bench_pt"))  # git ignores checkpoints/
    p.add_argument("--data-samples", type=int, default=None, help="samples per temperature (default: the preset's)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="preset overrides for training")
    p.add_argument("--ns", type=float, default=0.2, help="flow PT MD per replica (ns)")
    p.add_argument("--ref-grid", type=int, default=24, help="umbrella windows per torsion (reference: grid^2)")
    p.add_argument("--ref-ps", type=float, default=15.0, help="sampled MD per umbrella window (ps)")
    p.add_argument("--ref-k", type=float, default=200.0, help="umbrella stiffness (kJ/mol/rad^2)")
    p.add_argument("--swap-every", type=int, default=None)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--png", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data.npz"
    run = work / "run"
    pt_dir = work / "pt"
    overrides = [f"data.path={data}", *a.overrides]
    if a.data_samples is not None:
        overrides.append(f"data.n_samples={a.data_samples}")
    sets = [x for o in overrides for x in ("--set", o)]
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    if not data.is_file():
        _run(["simulate", "--preset", a.preset, *sets])
    timings["data_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not (run / "best.pt").is_file():
        _run(["train", "--no-ui", "--preset", a.preset, "--epochs", str(a.epochs), "--out", str(run), "--force",
              *sets])
    timings["train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    swap = [] if a.swap_every is None else ["--swap-every", str(a.swap_every)]
    if not (pt_dir / "summary.json").is_file():
        _run(["pt", str(run), "--no-ui", "--baseline", "ladder", "--ns", str(a.ns), "--seed", str(a.seed),
              "--out", str(pt_dir), "--force", *swap])
    timings["pt_s"] = time.perf_counter() - t0

    cfg = load_config(a.preset, overrides)
    ms = system_from_config(cfg)
    backbone = backbone_of_topology(ms.topology)
    column = backbone.state_names().index(STATE)
    summary = json.loads((pt_dir / "summary.json").read_text())
    swap_every = int(summary["started"]["swap_every"])
    dt = cfg.data.timestep_fs

    def phi_positive(path: Path) -> np.ndarray:
        with np.load(path, allow_pickle=False) as traj:
            pos = traj["positions"].astype(np.float64)
        return backbone.state_indicators(pos)[:, column]

    flow_pos = phi_positive(pt_dir / "trajectory_flow.npz")
    ladder_pos = phi_positive(pt_dir / "trajectory_ladder.npz")
    n_ladder = len(cfg.ladder)

    # The reference: replica-exchange umbrella sampling along phi at the cold temperature,
    # unbiased with MBAR; two runs, whose agreement is the check that the windows mixed.
    t0 = time.perf_counter()
    ref = umbrella_reference(work, ms.system_xml(), load_data(data, ms).at(cfg.temperatures.cold)[-1],
                             backbone.pairs[0], cfg.temperatures.cold, dt, a)
    timings["reference_s"] = time.perf_counter() - t0
    p_ref, se_ref = ref["population"], ref["se"]

    flow_s = _series("flow PT (2 replicas)", flow_pos, 2, swap_every, dt, 2)
    ladder_s = _series(f"naive ladder ({n_ladder} replicas)", ladder_pos, n_ladder, swap_every, dt, 0)
    png = a.png or work / "headline.png"
    write_populations_figure(png, [flow_s, ladder_s], f"{STATE} (300 K)", reference=p_ref, reference_se=se_ref,
                             title=f"{cfg.system_name}: {STATE} at {cfg.temperatures.cold:g} K, flow PT "
                                   f"{cfg.temperatures.cold:g}↔{cfg.temperatures.hot:g} K vs the naive ladder")

    def entries(indicator: np.ndarray) -> int:
        """Visits to the state: independent chances to estimate it, what the error bar rests on."""
        v = indicator.astype(np.int8)
        return int(v[0] + np.sum(np.diff(v) == 1)) if len(v) else 0

    def final(series: PopulationSeries, name: str, indicator: np.ndarray) -> dict[str, Any]:
        s = summary["samplers"][name]
        pop, se = float(series.mean[-1]), float(series.se[-1])
        n_rep = 2 if name == "flow" else n_ladder
        total_ns = float(series.total_ns[-1])
        return {"population": pop, "se": se, "entries": entries(indicator), "error_vs_reference": pop - p_ref,
                "z_vs_reference": (pop - p_ref) / math.hypot(se, se_ref) if se > 0 else math.nan,
                "total_ns": total_ns, "energy_evals": int(series.energy_evals[-1]), "acceptance": s["acc"],
                "round_trips": s["round_trips"], "ns_per_day_per_replica": s["ns_per_day"],
                # the sampler's own compute time: its replicas' MD one after another, and the map
                "wall_s": total_ns / n_rep / s["ns_per_day"] * 86400.0,
                "map_share": s.get("map_share", math.nan)}

    f_res, l_res = final(flow_s, "flow", flow_pos), final(ladder_s, "ladder", ladder_pos)
    # A batch-means error of a state visited a handful of times is itself unknown (it can be 0):
    # no ratio is claimed then.
    ratio = wall_ratio = math.nan
    if min(f_res["entries"], l_res["entries"]) >= MIN_ENTRIES and f_res["se"] > 0 and l_res["se"] > 0:
        ratio = (l_res["se"] ** 2 * l_res["energy_evals"]) / (f_res["se"] ** 2 * f_res["energy_evals"])
        wall_ratio = (l_res["se"] ** 2 * l_res["wall_s"]) / (f_res["se"] ** 2 * f_res["wall_s"])
    trips_ratio = ((f_res["round_trips"] / f_res["total_ns"]) / (l_res["round_trips"] / l_res["total_ns"])
                   if l_res["round_trips"] else math.nan)
    out = {"preset": a.preset, "state": STATE, "reference": ref,
           "training": training_budget(run), "data_samples": cfg.data.n_samples,
           "train_acc_flow": summary["started"]["train_acc_flow"],
           "flow": f_res, "ladder": l_res, "evals_ratio_same_error": ratio, "wall_ratio_same_error": wall_ratio,
           "round_trips_per_total_ns_ratio": trips_ratio, "timings_s": timings,
           "png": str(png),
           "cpus": os.cpu_count()}
    text = json.dumps(out, indent=2)
    print(text)
    if a.json is not None:
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
