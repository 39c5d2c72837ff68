"""Replica-exchange (parallel tempering) MD data: simulate, save, load, validate.

The MD itself is in `replica_md`, the file format in `data_file`; this module puts them
together and is the import point for callers (`simulate`, `load_data`, `ReplicaData`).

Bonds: by default fully flexible with a 1 fs step, so the sampled ensemble is exactly the
Boltzmann distribution of the flexible System whose energies train the flow. (`constraints =
"hbonds"` with a larger step is available; the representation then holds X-H bonds fixed.)
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UserError
from ..processes import usable_cpus
from .autocorr import independent_samples, integrated_time_angle
from .data_file import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ReplicaData,
    check_destination,
    estimated_size,
    load_data,
    write_data_file,
)
from .openmm_platforms import check_platform
from .replica_md import (
    MIN_ATOM_DISTANCE_NM,
    MDSettings,
    ProgressCallback,
    ProgressReporter,
    SimulationInterrupted,
    SimulationProgress,
    StopCheck,
    md_time,
    run_replica_exchange,
    swap_log_acceptance,
)

if TYPE_CHECKING:
    from ..config import Config
    from .systems import MolecularSystem

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "ReplicaData", "SimulationInterrupted", "SimulationPlan", "SimulationProgress",
    "SlowCoordinate", "TextProgress", "format_progress", "load_data", "preflight_simulate", "simulate",
    "slow_coordinates", "swap_log_acceptance",
]

LogFn = Callable[[str], object]


# --- checks before any MD ----------------------------------------------------------------------

@dataclass
class SimulationPlan:
    """What `preflight_simulate` found good: run it with `simulate`."""

    out_path: Path
    missing_dirs: list[Path]      # created only when the data file is written
    system: MolecularSystem       # the MD System (data.constraints)
    settings: MDSettings


def preflight_simulate(cfg: Config, out_path: str | Path | None = None, force: bool = False,
                       n_procs: int | None = None) -> SimulationPlan:
    """Every check `simulate` makes before it starts MD, and nothing written (one probe file is
    created and removed in the destination directory). A command that makes its data on the
    way (`train`) calls it before it announces or creates anything, so that a data path it
    cannot write fails first, as one line."""
    if n_procs is not None and n_procs < 1:
        raise UserError(f"--processes must be >= 1 (got {n_procs})")
    from .systems import system_from_config

    path = Path(out_path) if out_path else cfg.data_path
    d = cfg.data
    ladder = tuple(float(t) for t in cfg.ladder)
    ms = system_from_config(cfg, constraints=d.constraints)
    check_structure(ms.positions, ms.atom_names, str(ms.pdb_path))
    check_platform(d.platform, "data.platform", allow_auto=False)
    missing = check_destination(path, force, estimated_size(len(ladder), d.n_samples, ms.n_atoms))
    settings = MDSettings(
        system_xml=ms.system_xml(), positions=np.asarray(ms.positions, dtype=np.float64), ladder=ladder,
        timestep_fs=d.timestep_fs, friction_per_ps=d.friction_per_ps, platform=d.platform, seed=d.seed,
        n_samples=d.n_samples, stride=d.stride, swap_every=d.swap_every, equilibration_ps=d.equilibration_ps,
        n_procs=min(len(ladder), n_procs or usable_cpus()), source=ms.pdb_path.name,
    )
    return SimulationPlan(out_path=path, missing_dirs=missing, system=ms, settings=settings)


def check_structure(positions: np.ndarray, atom_names: list[str], source: str) -> None:
    """A starting structure MD can run from: finite coordinates, no two atoms on top of each
    other. Either gives NaN within the first steps, after minutes of start-up."""
    x = np.asarray(positions, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        first = int(bad[0])
        raise UserError(f"{source}: {bad.size} atom(s) have non-finite coordinates (first: atom {first + 1} "
                        f"{atom_names[first]}); fix the coordinates in the structure file")
    n = len(x)
    # Rows in blocks keep the pair distances to a few MB for large systems.
    rows = max(1, 500_000 // max(n, 1))
    for start in range(0, n, rows):
        block = x[start:start + rows]
        dist = np.linalg.norm(block[:, None, :] - x[None, :, :], axis=-1)
        idx = np.arange(start, start + len(block))
        dist[np.arange(len(block))[:, None] >= (np.arange(n)[None, :] - start)] = np.inf  # pairs i < j only
        i, j = np.unravel_index(int(np.argmin(dist)), dist.shape)
        if dist[i, j] < MIN_ATOM_DISTANCE_NM:
            a, b = int(idx[i]), int(j)
            raise UserError(f"{source}: atoms {a + 1} ({atom_names[a]}) and {b + 1} ({atom_names[b]}) are "
                            f"{dist[i, j]:.3f} nm apart (closer than {MIN_ATOM_DISTANCE_NM} nm): the structure has "
                            "overlapping atoms; fix the coordinates in the structure file")


# --- how much a data file holds of its slowest motions ------------------------------------------

# Cores of the two states of a two-state torsion (degrees): a transition is counted when the
# torsion goes from one core to the other, so recrossings of the boundary are not transitions.
_PHI_CORE_DEG = 20.0        # phi < -20 or phi > +20: the phi < 0 and phi > 0 basins
_OMEGA_TRANS_DEG = 150.0    # |omega| > 150: trans; |omega| < 30: cis
_OMEGA_CIS_DEG = 30.0


@dataclass(frozen=True)
class SlowCoordinate:
    """One backbone torsion at one temperature of a data file."""

    label: str            # "phi ALA2 @ 300 K"
    n_samples: int
    tau: float            # integrated autocorrelation time, in samples (>= 1)
    transitions: int      # core-to-core changes of a two-state torsion (phi sign, omega cis/trans); -1: n/a

    @property
    def n_independent(self) -> float:
        return independent_samples(self.n_samples, self.tau)


def _transitions(state: np.ndarray) -> int:
    """Changes between states 0 and 1 along a series with -1 (between the cores) in between."""
    core = state[state >= 0]
    return int(np.count_nonzero(np.diff(core))) if core.size > 1 else 0


def slow_coordinates(data: ReplicaData, topology: object, temperatures: tuple[float, ...]) -> list[SlowCoordinate]:
    """tau_int and transitions of every backbone torsion (phi, psi, omega, found from the bonds)
    at each of `temperatures`; empty for a molecule without a peptide backbone."""
    from .torsions import backbone_of_topology, dihedrals

    backbone = backbone_of_topology(topology)
    out: list[SlowCoordinate] = []
    for temperature in temperatures:
        x = data.at(temperature)
        for torsion in backbone.torsions:
            theta = dihedrals(x, torsion.atoms)
            deg = np.degrees(theta)
            if torsion.kind == "phi":
                state = np.where(deg > _PHI_CORE_DEG, 1, np.where(deg < -_PHI_CORE_DEG, 0, -1))
                moves = _transitions(state)
            elif torsion.kind == "omega":
                state = np.where(np.abs(deg) > _OMEGA_TRANS_DEG, 1, np.where(np.abs(deg) < _OMEGA_CIS_DEG, 0, -1))
                moves = _transitions(state)
            else:
                moves = -1
            out.append(SlowCoordinate(label=f"{torsion.label} @ {temperature:g} K", n_samples=len(x),
                                      tau=integrated_time_angle(theta), transitions=moves))
    return out


# --- progress as text ---------------------------------------------------------------------------

def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_progress(p: SimulationProgress) -> str:
    """One plain line for a progress event (logs, the headless reporter)."""
    text = (f"simulate: {p.phase} {100 * p.fraction:.0f}% ({md_time(p.simulated_ns)} of {md_time(p.planned_ns)} "
            f"per replica, {p.n_replicas} replicas")
    if math.isfinite(p.ns_per_day):
        text += f", {p.ns_per_day:.1f} ns/day per replica"
    acc = [a for a in p.swap_acceptance if math.isfinite(a)]
    if acc:
        text += f", swap acceptance {' '.join(f'{a:.2f}' for a in p.swap_acceptance)}"
    if p.eta_s is not None and p.phase != "writing":
        text += f", ETA {_duration(p.eta_s)}"
    return text + ")"


class TextProgress:
    """The default display when `simulate` is given no callback: a tqdm bar on a terminal
    (stderr), otherwise one line through `log` at each phase change and every `every_s`
    seconds (log files get lines, not carriage-return spam)."""

    def __init__(self, log: LogFn = print, tty: bool | None = None, every_s: float = 30.0):
        self.log = log
        self.tty = os.isatty(2) if tty is None else tty
        self.every_s = every_s
        self.bar: Any = None
        self.phase: str | None = None
        self.last_line = -math.inf

    def __call__(self, p: SimulationProgress) -> None:
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=round(p.planned_ns, 6), desc="simulate", unit="ns", dynamic_ncols=True,
                                mininterval=0.5, file=sys.stderr, bar_format="{l_bar}{bar}| {n:.4f}/{total:.4f} ns "
                                "[{elapsed}<{remaining}{postfix}]")
            self.bar.n = min(round(p.simulated_ns, 6), self.bar.total)
            rate = f", {p.ns_per_day:.0f} ns/day" if math.isfinite(p.ns_per_day) else ""
            self.bar.set_postfix_str(f"{p.phase}{rate}", refresh=True)
            return
        if p.phase != self.phase or p.elapsed_s - self.last_line >= self.every_s:
            self.phase, self.last_line = p.phase, p.elapsed_s
            self.log(format_progress(p))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# --- simulate -----------------------------------------------------------------------------------

def simulate(cfg: Config, out_path: str | Path | None = None, force: bool = False,
             progress: ProgressCallback | bool | None = None, n_procs: int | None = None,
             log: LogFn = print, should_stop: StopCheck | None = None,
             progress_interval_s: float = 2.0) -> Path:
    """Run replica-exchange MD for `cfg` and write the data file (default `cfg.data_path`).

    - Checks first (`preflight_simulate`): --processes >= 1, the structure (finite, no
      overlapping atoms), `data.platform`, the destination (nothing in the way, writable, free
      space). Missing parent directories are created, but only when the file is written.
    - `progress`: a callable gets a SimulationProgress at each phase change ("minimising",
      "equilibrating", "sampling", "writing") and every `progress_interval_s` in between;
      None/True: the default text display (TextProgress through `log`); False: no progress.
      `log` also gets the final "Wrote ..." line.
    - Stopping: `should_stop` is polled between MD chunks; a truthy answer raises
      SimulationInterrupted (a string answer such as "SIGTERM" is its reason and sets its
      exit_code to 128 + n). KeyboardInterrupt becomes SimulationInterrupted("SIGINT", exit
      code 130). A stop once the data are complete is not honoured: the file is written (a
      second or so) and returned, and the caller sees its own flag.
    - Guarantees on every failure or stop: the worker processes are closed, no data file,
      temp file or new directory is left, an existing file (with --force) is untouched.
      Bad input and blown-up MD (non-finite positions or energies, naming the replica and its
      temperature) raise UserError; disk errors on the final write too.
    """
    plan = preflight_simulate(cfg, out_path, force, n_procs)
    text: TextProgress | None = None
    callback: ProgressCallback | None
    if progress is None or progress is True:
        callback = text = TextProgress(log)
    elif progress is False:
        callback = None
    else:
        callback = progress
    s = plan.settings
    reporter = ProgressReporter(s, callback, progress_interval_s)
    try:
        result = run_replica_exchange(s, reporter, should_stop)
        reporter.report("writing", s.total_rounds, s.n_samples, result.swap_acceptance, force=True)
        d = cfg.data
        meta = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION,
            "forcefield": list(cfg.system.forcefield), "pdb": str(cfg.pdb_path.name),
            "timestep_fs": d.timestep_fs, "stride": d.stride, "swap_every": d.swap_every,
            "equilibration_ps": d.equilibration_ps, "friction_per_ps": d.friction_per_ps,
            "constraints": d.constraints, "seed": d.seed, "platform": d.platform,
            "ns_per_day_per_replica": result.ns_per_day, "wall_seconds": result.wall_seconds,
        }
        ms = plan.system
        arrays = {
            "positions": result.positions, "temperatures": np.array(s.ladder), "potential_energy": result.energies,
            "atom_names": np.array(ms.atom_names), "residue_names": np.array(ms.residue_names),
            "swap_acceptance": result.swap_acceptance, "swap_attempts": result.swap_attempts,
        }
        try:
            write_data_file(plan.out_path, arrays, meta, plan.missing_dirs)
        except KeyboardInterrupt:
            raise SimulationInterrupted("SIGINT", s.ns_after(s.total_rounds), s.ns_after(s.total_rounds)) from None
    finally:
        if text is not None:
            text.close()
    acc = ", ".join(f"{a:.3f}" for a in result.swap_acceptance)
    log(f"Wrote {plan.out_path}: {s.n_samples} samples x {len(s.ladder)} temperatures, "
        f"swap acceptance {acc}, {result.ns_per_day:.1f} ns/day per replica")
    slow = _slowest(plan.system.topology, result.positions, s.ladder, (cfg.temperatures.cold, cfg.temperatures.hot))
    if slow is not None:
        moves = f", {slow.transitions} transitions" if slow.transitions >= 0 else ""
        log(f"  about {slow.n_independent:.0f} independent samples for the slowest backbone torsion ({slow.label}: "
            f"autocorrelation time {slow.tau:.1f} samples{moves})")
    return plan.out_path


def _slowest(topology: object, positions: np.ndarray, ladder: tuple[float, ...],
             temperatures: tuple[float, float]) -> SlowCoordinate | None:
    data = ReplicaData(positions=positions, temperatures=np.asarray(ladder), potential_energy=np.empty(0),
                       atom_names=[], meta={})
    found = slow_coordinates(data, topology, tuple(t for t in temperatures if t in ladder))
    return min(found, key=lambda c: c.n_independent) if found else None
