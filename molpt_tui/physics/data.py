"""Replica-exchange (parallel tempering) MD data: simulate, save, load, validate.

Every temperature of the ladder runs Langevin MD in OpenMM; every `swap_every` steps
neighbours attempt a swap (Metropolis on (beta_i - beta_j)(U_i - U_j), alternating even and
odd pairs). Configurations move between temperatures, so on an accepted swap the velocities
are rescaled by sqrt(T_new / T_old). Replicas are spread over worker processes when there
are cores for them.

Bonds: by default fully flexible with a 1 fs step, so the sampled ensemble is exactly the
Boltzmann distribution of the flexible System whose energies train the flow. (`constraints =
"hbonds"` with a larger step is available; the representation then holds X-H bonds fixed.)
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .openmm_bridge import ignore_job_signals, stop_workers
from .units import beta

FORMAT_NAME = "molpt-tui.replica-data"
FORMAT_VERSION = 1


@dataclass
class ReplicaData:
    positions: np.ndarray          # [n_temps, n_samples, n_atoms, 3] nm
    temperatures: np.ndarray       # [n_temps] K
    potential_energy: np.ndarray   # [n_temps, n_samples] kJ/mol, from the MD System
    atom_names: list[str]
    meta: dict

    def index_of(self, temperature: float) -> int:
        hits = np.flatnonzero(np.isclose(self.temperatures, temperature, atol=1e-6))
        if hits.size == 0:
            held = ", ".join(f"{t:g}" for t in self.temperatures)
            raise UserError(f"data file has no samples at {temperature:g} K (it holds {held} K); "
                            "run `molpt-tui simulate --force` with this preset")
        return int(hits[0])

    def at(self, temperature: float) -> np.ndarray:
        return self.positions[self.index_of(temperature)]


# --- MD workers --------------------------------------------------------------------------------

def _md_worker(conn, system_xml, temperatures, timestep_fs, friction, platform, seed):
    ignore_job_signals()
    import openmm
    import openmm.unit as u

    system = openmm.XmlSerializer.deserialize(system_xml)
    contexts = {}
    for k, temp in temperatures.items():
        integ = openmm.LangevinMiddleIntegrator(temp * u.kelvin, friction / u.picosecond, timestep_fs * u.femtosecond)
        integ.setRandomNumberSeed(seed + 7919 * k + 1)
        props = {"Threads": "1"} if platform == "CPU" else {}
        contexts[k] = openmm.Context(system, integ, openmm.Platform.getPlatformByName(platform), props)
    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        op, payload = msg
        try:
            if op == "set":
                for k, (pos, vel) in payload.items():
                    contexts[k].setPositions(pos)
                    if vel is None:
                        contexts[k].setVelocitiesToTemperature(temperatures[k] * u.kelvin, seed + 104729 * k + 3)
                    else:
                        contexts[k].setVelocities(vel)
                conn.send(("ok", None))
            elif op == "minimize":
                for ctx in contexts.values():
                    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 500)
                conn.send(("ok", None))
            elif op == "run":
                out = {}
                for k, ctx in contexts.items():
                    ctx.getIntegrator().step(payload)
                    st = ctx.getState(getPositions=True, getVelocities=True, getEnergy=True)
                    out[k] = (st.getPositions(asNumpy=True)._value, st.getVelocities(asNumpy=True)._value,
                              st.getPotentialEnergy()._value)
                conn.send(("ok", out))
        except Exception as exc:  # report and keep the protocol in step
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class _ReplicaPool:
    def __init__(self, system_xml, ladder, timestep_fs, friction, platform, seed, n_procs):
        ctx = mp.get_context("spawn")
        self.procs, self.conns, self.owner = [], [], {}
        groups = [list(range(len(ladder)))[i::n_procs] for i in range(n_procs)]
        try:
            for group in groups:
                parent, child = ctx.Pipe()
                temps = {k: ladder[k] for k in group}
                proc = ctx.Process(target=_md_worker, args=(child, system_xml, temps, timestep_fs, friction, platform, seed),
                                   daemon=True)
                proc.start()
                child.close()
                self.procs.append(proc)
                self.conns.append(parent)
                for k in group:
                    self.owner[k] = len(self.conns) - 1
            for conn in self.conns:
                if conn.recv() != "ready":
                    raise RuntimeError("MD worker failed to start")
        except BaseException:
            self.close()
            raise

    def _all(self, op, payloads):
        for conn, payload in zip(self.conns, payloads):
            conn.send((op, payload))
        out = {}
        for conn in self.conns:
            status, result = conn.recv()
            if status != "ok":
                raise RuntimeError(f"MD worker error: {result}")
            if result:
                out.update(result)
        return out

    def set_states(self, states):
        payloads = [{} for _ in self.conns]
        for k, st in states.items():
            payloads[self.owner[k]][k] = st
        self._all("set", payloads)

    def minimize(self):
        self._all("minimize", [None] * len(self.conns))

    def run(self, n_steps):
        return self._all("run", [n_steps] * len(self.conns))

    def close(self):
        stop_workers(self.procs, self.conns)
        self.procs, self.conns = [], []


# --- simulation -----------------------------------------------------------------------------

def swap_log_acceptance(beta_i, beta_j, u_i, u_j):
    """log of the Metropolis ratio for exchanging configurations between two temperatures."""
    return (beta_i - beta_j) * (u_i - u_j)


def simulate(cfg, out_path: Path | None = None, force: bool = False, progress: bool = True,
             n_procs: int | None = None, log=print) -> Path:
    from .systems import system_from_config

    out_path = Path(out_path or cfg.data_path)
    if out_path.exists() and not force:
        raise UserError(f"{out_path}: data file exists; it is never overwritten (use --force to replace it, "
                        "or --set data.path=OTHER.npz)")
    d = cfg.data
    ms = system_from_config(cfg, constraints=d.constraints)
    ladder = cfg.ladder
    n_temps = len(ladder)
    betas = np.array([beta(t) for t in ladder])
    n_procs = n_procs or max(1, min(n_temps, os.cpu_count() or 1))
    rng = np.random.default_rng(d.seed)
    round_steps = math.gcd(d.stride, d.swap_every)
    eq_steps = int(round(d.equilibration_ps * 1000.0 / d.timestep_fs))
    eq_rounds = -(-eq_steps // round_steps)
    prod_rounds = d.n_samples * d.stride // round_steps
    total_rounds = eq_rounds + prod_rounds
    positions = np.empty((n_temps, d.n_samples, ms.n_atoms, 3), dtype=np.float32)
    energies = np.empty((n_temps, d.n_samples), dtype=np.float64)
    attempts = np.zeros(n_temps - 1, dtype=np.int64)
    accepted = np.zeros(n_temps - 1, dtype=np.int64)
    replica_at = np.arange(n_temps)  # which walker sits at each temperature (for diagnostics)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    pool = _ReplicaPool(ms.system_xml(), ladder, d.timestep_fs, d.friction_per_ps, d.platform, d.seed, n_procs)
    bar = None
    t_start = time.perf_counter()
    try:
        pool.set_states({k: (ms.positions, None) for k in range(n_temps)})
        pool.minimize()
        tty = progress and os.isatty(2)
        if tty:
            from tqdm import tqdm

            bar = tqdm(total=total_rounds, desc="simulate", unit="round", dynamic_ncols=True, mininterval=0.5)
        last_line = time.perf_counter()
        sample = 0
        swap_parity = 0
        for r in range(total_rounds):
            states = pool.run(round_steps)
            step = (r + 1) * round_steps
            if step % d.swap_every == 0 and n_temps > 1:
                changed = {}
                for i in range(swap_parity, n_temps - 1, 2):
                    j = i + 1
                    ui, uj = states[i][2], states[j][2]
                    log_acc = swap_log_acceptance(betas[i], betas[j], ui, uj)
                    if r >= eq_rounds:
                        attempts[i] += 1
                    if log_acc >= 0 or rng.random() < math.exp(log_acc):
                        if r >= eq_rounds:
                            accepted[i] += 1
                        (pi, vi, _), (pj, vj, _) = states[i], states[j]
                        states[i] = (pj, vj * math.sqrt(ladder[i] / ladder[j]), uj)
                        states[j] = (pi, vi * math.sqrt(ladder[j] / ladder[i]), ui)
                        replica_at[[i, j]] = replica_at[[j, i]]
                        changed[i], changed[j] = states[i][:2], states[j][:2]
                swap_parity ^= 1
                if changed:
                    pool.set_states(changed)
            if r >= eq_rounds and (step - eq_rounds * round_steps) % d.stride == 0 and sample < d.n_samples:
                for k in range(n_temps):
                    positions[k, sample] = states[k][0]
                    energies[k, sample] = states[k][2]
                sample += 1
            if bar is not None:
                bar.update(1)
            if progress and r % 200 == 0:
                now = time.perf_counter()
                ns = step * d.timestep_fs * 1e-6
                rate = f"{ns:.3f} ns/replica, {ns / max(now - t_start, 1e-9) * 86400:.0f} ns/day"
                if bar is not None:
                    bar.set_postfix_str(rate, refresh=False)
                elif now - last_line >= 30.0:
                    # Log files get one plain line every 30 s instead of carriage-return spam.
                    log(f"simulate: {100 * (r + 1) / total_rounds:.0f}% ({rate})")
                    last_line = now
    finally:
        pool.close()
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t_start
    total_steps = total_rounds * round_steps
    ns_per_day = total_steps * d.timestep_fs * 1e-6 / elapsed * 86400
    acc = np.where(attempts > 0, accepted / np.maximum(attempts, 1), np.nan)
    meta = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION,
        "forcefield": list(cfg.system.forcefield), "pdb": str(cfg.pdb_path.name),
        "timestep_fs": d.timestep_fs, "stride": d.stride, "swap_every": d.swap_every,
        "equilibration_ps": d.equilibration_ps, "friction_per_ps": d.friction_per_ps,
        "constraints": d.constraints, "seed": d.seed, "platform": d.platform,
        "ns_per_day_per_replica": ns_per_day, "wall_seconds": elapsed,
    }
    _write_npz(out_path, positions, np.array(ladder), energies, ms, meta, acc, attempts)
    log(f"Wrote {out_path}: {d.n_samples} samples x {n_temps} temperatures, "
        f"swap acceptance {', '.join(f'{a:.3f}' for a in acc)}, {ns_per_day:.1f} ns/day per replica")
    return out_path


def _write_npz(path, positions, temperatures, energies, ms, meta, acc, attempts):
    # Written under a temporary name and renamed: an interrupted run never leaves a file
    # that looks complete.
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=str(path.parent))
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                positions=positions, temperatures=temperatures, potential_energy=energies,
                atom_names=np.array(ms.atom_names), residue_names=np.array(ms.residue_names),
                swap_acceptance=acc, swap_attempts=attempts,
                meta=np.array(repr(meta)),
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_data(path: str | Path, ms=None) -> ReplicaData:
    """Load and validate a data file; with `ms` it must match that system's atoms."""
    import ast

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: data file not found (run `molpt-tui simulate` or `molpt-tui train` to create it)")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = ast.literal_eval(str(z["meta"]))
            if meta.get("format") != FORMAT_NAME:
                raise ValueError("not a molpt-tui replica data file")
            if int(meta.get("version", 0)) > FORMAT_VERSION:
                raise ValueError(f"format version {meta['version']} is newer than this molpt-tui")
            data = ReplicaData(
                positions=np.asarray(z["positions"], dtype=np.float64),
                temperatures=np.asarray(z["temperatures"], dtype=np.float64),
                potential_energy=np.asarray(z["potential_energy"]),
                atom_names=[str(a) for a in z["atom_names"]],
                meta=dict(meta, swap_acceptance=np.asarray(z["swap_acceptance"]),
                          swap_attempts=np.asarray(z["swap_attempts"]),
                          residue_names=[str(a) for a in z["residue_names"]]),
            )
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path}: unreadable data file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                        "delete it or run `molpt-tui simulate --force`") from None
    if ms is not None:
        if data.positions.shape[2] != ms.n_atoms or data.atom_names != list(ms.atom_names):
            raise UserError(f"{path}: data file is for another system ({data.positions.shape[2]} atoms, "
                            f"{meta.get('pdb')}) than {ms.pdb_path.name} ({ms.n_atoms} atoms); "
                            "use --set data.path=... or `molpt-tui simulate --force`")
    return data
