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
  4. the reference: a longer naive ladder run (--ref-ns per replica, another seed).

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
from molpt_tui.physics.torsions import backbone_of_topology
from molpt_tui.report.validation_plots import PopulationSeries, write_populations_figure
from molpt_tui.training.pt import LadderSampler, MDSpec, batch_means, planned_rounds, running_estimate

STATE = "phi>0"
MIN_ENTRIES = 10


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="ala2_300_1000_vacuum")
    p.add_argument("--work", type=Path, default=Path("checkpoints/bench_pt"))  # git ignores checkpoints/
    p.add_argument("--data-samples", type=int, default=None, help="samples per temperature (default: the preset's)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="preset overrides for training")
    p.add_argument("--ns", type=float, default=0.2, help="flow PT MD per replica (ns)")
    p.add_argument("--ref-ns", type=float, default=0.5, help="reference ladder MD per replica (ns)")
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

    # The reference: a longer naive ladder of its own, from the data's last samples, another seed.
    ref_path = work / f"reference_{a.ref_ns:g}ns.npz"
    t0 = time.perf_counter()
    if not ref_path.is_file():
        spec = MDSpec(ms.system_xml(), dt, cfg.data.friction_per_ps, cfg.data.platform)
        rd = load_data(data, ms)
        ref = LadderSampler(spec, cfg.ladder, swap_every, planned_rounds(spec, swap_every, a.ref_ns), a.seed + 1000,
                            backbone.state_indicators)
        ref.start([rd.at(t)[-1] for t in cfg.ladder])
        while not ref.done:
            ref.advance()
        np.savez(ref_path, phi_pos=np.asarray(ref.cold_states)[:, column])
    timings["reference_s"] = time.perf_counter() - t0
    with np.load(ref_path) as f:
        ref_pos = f["phi_pos"]
    p_ref, se_ref = batch_means(ref_pos.astype(float))

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
        return {"population": float(series.mean[-1]), "se": float(series.se[-1]), "entries": entries(indicator),
                "error_vs_reference": float(series.mean[-1] - p_ref), "total_ns": float(series.total_ns[-1]),
                "energy_evals": int(series.energy_evals[-1]), "acceptance": s["acc"], "round_trips": s["round_trips"],
                "ns_per_day_per_replica": s["ns_per_day"], "map_share": s.get("map_share", math.nan)}

    f_res, l_res = final(flow_s, "flow", flow_pos), final(ladder_s, "ladder", ladder_pos)
    # A batch-means error of a state visited a handful of times is itself unknown (it can be 0):
    # no ratio is claimed then.
    ratio = math.nan
    if min(f_res["entries"], l_res["entries"]) >= MIN_ENTRIES and f_res["se"] > 0 and l_res["se"] > 0:
        ratio = (l_res["se"] ** 2 * l_res["energy_evals"]) / (f_res["se"] ** 2 * f_res["energy_evals"])
    trips_ratio = ((f_res["round_trips"] / f_res["total_ns"]) / (l_res["round_trips"] / l_res["total_ns"])
                   if l_res["round_trips"] else math.nan)
    out = {"preset": a.preset, "state": STATE, "reference": {"population": p_ref, "se": se_ref,
                                                             "ns_per_replica": a.ref_ns, "replicas": n_ladder},
           "training": {"epochs": a.epochs, "overrides": a.overrides, "data_samples": cfg.data.n_samples,
                        "train_acc_flow": summary["started"]["train_acc_flow"]},
           "flow": f_res, "ladder": l_res, "evals_ratio_same_error": ratio,
           "round_trips_per_total_ns_ratio": trips_ratio, "reference_entries": entries(ref_pos), "timings_s": timings,
           "png": str(png),
           "cpus": os.cpu_count()}
    text = json.dumps(out, indent=2)
    print(text)
    if a.json is not None:
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
