"""Replica-exchange (parallel tempering) Langevin MD in worker processes.

Every temperature of the ladder runs Langevin MD in OpenMM; every `swap_every` steps
neighbours attempt a swap (Metropolis on (beta_i - beta_j)(U_i - U_j), alternating even and
odd pairs). Configurations move between temperatures, so on an accepted swap the velocities
are rescaled by sqrt(T_new / T_old). Replicas are spread over worker processes when there
are cores for them.

This module runs the MD and nothing else: it never touches the file system. Every MD chunk
is checked for non-finite positions and energies, so a blown-up replica stops the run with
a message instead of filling a data file with NaN.
"""
from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

import numpy as np

from ..errors import UserError
from ..processes import ignore_job_signals, serve_requests, start_worker, stop_workers
from .units import beta

Phase = Literal["minimising", "equilibrating", "sampling", "writing"]
StopCheck = Callable[[], bool | str | None]

# Closer than this, two atoms of a starting structure overlap: the force field's repulsion
# is then astronomically large and the first MD step gives NaN.
MIN_ATOM_DISTANCE_NM = 0.05
# Free diffusion of a small molecule in Langevin MD covers ~100 nm per microsecond; coordinates
# this far out mean the integration exploded (and would overflow the float32 of the data file).
MAX_COORDINATE_NM = 1e6


@dataclass(frozen=True)
class SimulationProgress:
    """One progress report of `simulate`: sent at each phase change and every few seconds.

    All replicas advance in lockstep, so MD time is given per replica; the `total_` properties
    count all replicas together."""

    phase: Phase
    simulated_ns: float                 # MD time each replica has run so far
    planned_ns: float                   # equilibration + sampling, per replica
    temperatures: tuple[float, ...]     # K, the ladder (one replica per temperature)
    samples: int                        # saved samples per temperature so far
    planned_samples: int
    ns_per_day: float                   # per replica since MD began; nan before the first chunk
    swap_acceptance: tuple[float, ...]  # neighbour pairs (i, i+1), sampling phase so far; nan before an attempt
    elapsed_s: float                    # since `simulate` started the workers
    eta_s: float | None                 # until the data are written; None until there is a rate

    @property
    def n_replicas(self) -> int:
        return len(self.temperatures)

    @property
    def total_simulated_ns(self) -> float:
        return self.simulated_ns * self.n_replicas

    @property
    def total_planned_ns(self) -> float:
        return self.planned_ns * self.n_replicas

    @property
    def fraction(self) -> float:
        return min(1.0, self.simulated_ns / self.planned_ns) if self.planned_ns > 0 else 1.0


ProgressCallback = Callable[[SimulationProgress], None]


class SimulationInterrupted(UserError):
    """MD stopped before the data were written: `should_stop` asked for it or Ctrl-C
    (KeyboardInterrupt) arrived. The workers are gone and no data file or temp file is left.

    `exit_code` is 128 + n when the reason names a signal ("SIGTERM" -> 143), else 130; the
    caller may overwrite it before re-raising."""

    def __init__(self, reason: str, simulated_ns: float, planned_ns: float, exit_code: int | None = None):
        self.reason = reason
        self.simulated_ns = simulated_ns
        self.planned_ns = planned_ns
        self.exit_code = _exit_code_for(reason) if exit_code is None else exit_code
        super().__init__(f"simulation stopped ({reason}) after {md_time(simulated_ns)} of {md_time(planned_ns)} "
                         "of MD per replica; no data file was written (run the command again to start over)")


def md_time(ns: float) -> str:
    """MD time for messages: ps below 0.1 ns, where "0.0000 ns" would say nothing."""
    return f"{ns * 1000:.3g} ps" if ns < 0.1 else f"{ns:.3f} ns"


def _exit_code_for(reason: str) -> int:
    sig = getattr(signal, reason, None)
    if isinstance(sig, signal.Signals):
        return 128 + int(sig)
    return 130


@dataclass(frozen=True)
class MDSettings:
    """Everything the MD needs, already validated (the caller checks config and structure)."""

    system_xml: str
    positions: np.ndarray           # [N, 3] nm, starting structure (every replica)
    ladder: tuple[float, ...]       # K
    timestep_fs: float
    friction_per_ps: float
    platform: str
    seed: int
    n_samples: int
    stride: int
    swap_every: int
    equilibration_ps: float
    n_procs: int
    source: str                     # the structure file, for messages

    @property
    def round_steps(self) -> int:
        return math.gcd(self.stride, self.swap_every)

    @property
    def eq_rounds(self) -> int:
        eq_steps = round(self.equilibration_ps * 1000.0 / self.timestep_fs)
        return -(-eq_steps // self.round_steps)

    @property
    def total_rounds(self) -> int:
        return self.eq_rounds + self.n_samples * self.stride // self.round_steps

    def ns_after(self, rounds: int) -> float:
        return rounds * self.round_steps * self.timestep_fs * 1e-6


@dataclass
class MDResult:
    positions: np.ndarray           # [n_temps, n_samples, n_atoms, 3] float32 nm
    energies: np.ndarray            # [n_temps, n_samples] float64 kJ/mol
    swap_acceptance: np.ndarray     # [n_temps - 1], nan where never attempted
    swap_attempts: np.ndarray       # [n_temps - 1] int64
    wall_seconds: float
    ns_per_day: float               # per replica


# --- MD workers --------------------------------------------------------------------------------

def _md_worker(conn: Connection, system_xml: str, temperatures: dict[int, float], timestep_fs: float,
               friction: float, platform: str, seed: int) -> None:
    ignore_job_signals()
    try:
        import openmm
        import openmm.unit as u

        system = openmm.XmlSerializer.deserialize(system_xml)
        contexts: dict[int, Any] = {}
        for k, temp in temperatures.items():
            integ = openmm.LangevinMiddleIntegrator(temp * u.kelvin, friction / u.picosecond,
                                                    timestep_fs * u.femtosecond)
            integ.setRandomNumberSeed(seed + 7919 * k + 1)
            props = {"Threads": "1"} if platform == "CPU" else {}
            contexts[k] = openmm.Context(system, integ, openmm.Platform.getPlatformByName(platform), props)
    except Exception as exc:  # e.g. a GPU platform that is registered but has no usable device
        conn.send(("error", _first_line(exc)))
        return
    conn.send(("ready", None))
    serve_requests(conn, lambda msg: _worker_op(contexts, temperatures, seed, *msg), describe=_first_line)


def _worker_op(contexts: dict[int, Any], temperatures: dict[int, float], seed: int, op: str,
               payload: Any) -> dict[int, Any]:
    """One request. Per-replica failures come back as {k: ("error", text)} so that the parent
    can say which replica failed; the others' results are still returned."""
    import openmm
    import openmm.unit as u

    out: dict[int, Any] = {}
    if op == "set":
        for k, (pos, vel) in payload.items():
            contexts[k].setPositions(pos)
            if vel is None:
                contexts[k].setVelocitiesToTemperature(temperatures[k] * u.kelvin, seed + 104729 * k + 3)
            else:
                contexts[k].setVelocities(vel)
    elif op == "minimize":
        for k, ctx in contexts.items():
            try:
                openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 500)
                st = ctx.getState(getPositions=True, getEnergy=True)
                out[k] = ("state", st.getPositions(asNumpy=True)._value, None, st.getPotentialEnergy()._value)
            except Exception as exc:
                out[k] = ("error", _first_line(exc))
    elif op == "run":
        for k, ctx in contexts.items():
            try:
                ctx.getIntegrator().step(payload)
                st = ctx.getState(getPositions=True, getVelocities=True, getEnergy=True)
                out[k] = ("state", st.getPositions(asNumpy=True)._value, st.getVelocities(asNumpy=True)._value,
                          st.getPotentialEnergy()._value)
            except Exception as exc:  # OpenMM raises on NaN coordinates on some platforms
                out[k] = ("error", _first_line(exc))
    else:
        raise ValueError(f"unknown MD worker request {op!r}")
    return out


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class WorkerDied(UserError):
    """An MD worker process ended without being asked to (killed, crashed)."""


class _ReplicaPool:
    def __init__(self, s: MDSettings):
        self.procs: list[BaseProcess] = []
        self.conns: list[Connection] = []
        self.owner: dict[int, int] = {}
        self.ladder = s.ladder
        n_procs = max(1, min(s.n_procs, len(s.ladder)))
        groups = [list(range(len(s.ladder)))[i::n_procs] for i in range(n_procs)]
        try:
            for group in groups:
                temps = {k: s.ladder[k] for k in group}
                proc, parent = start_worker(_md_worker, s.system_xml, temps, s.timestep_fs, s.friction_per_ps,
                                            s.platform, s.seed)
                self.procs.append(proc)
                self.conns.append(parent)
                for k in group:
                    self.owner[k] = len(self.conns) - 1
            for i in range(len(self.conns)):
                status, detail = self._recv(i)
                if status != "ready":
                    raise UserError(f"data.platform = {s.platform}: OpenMM cannot run MD on it here ({detail}); "
                                    "choose another data.platform (Reference always works)")
        except BaseException:
            self.close()
            raise

    def _recv(self, i: int) -> tuple[str, Any]:
        try:
            reply: tuple[str, Any] = self.conns[i].recv()
            return reply
        except (EOFError, OSError):
            proc = self.procs[i]
            proc.join(timeout=2.0)
            temps = ", ".join(f"{self.ladder[k]:g}" for k, owner in self.owner.items() if owner == i)
            hint = ("it was killed (out of memory?); use fewer --processes" if proc.exitcode == -9 else
                    "its error is above; check data.platform and the structure")
            raise WorkerDied(f"the MD worker for {temps} K died unexpectedly (exit code {proc.exitcode}); "
                            f"{hint}") from None

    def _all(self, op: str, payloads: list[Any]) -> dict[int, Any]:
        for conn, payload in zip(self.conns, payloads):
            conn.send((op, payload))
        out: dict[int, Any] = {}
        errors = []
        # Every reply is read even after an error, so the pipes stay in step for close().
        for i in range(len(self.conns)):
            status, result = self._recv(i)
            if status != "ok":
                errors.append(str(result))
            elif result:
                out.update(result)
        if errors:
            raise UserError(f"OpenMM failed during MD ({errors[0]}); check data.platform and the structure")
        return out

    def set_states(self, states: dict[int, tuple[np.ndarray, np.ndarray | None]]) -> None:
        payloads: list[dict[int, Any]] = [{} for _ in self.conns]
        for k, st in states.items():
            payloads[self.owner[k]][k] = st
        self._all("set", payloads)

    def minimize(self) -> dict[int, Any]:
        return self._all("minimize", [None] * len(self.conns))

    def run(self, n_steps: int) -> dict[int, Any]:
        return self._all("run", [n_steps] * len(self.conns))

    def close(self) -> None:
        stop_workers(self.procs, self.conns)
        self.procs, self.conns = [], []


# --- the exchange loop -------------------------------------------------------------------------

def swap_log_acceptance(beta_i: Any, beta_j: Any, u_i: Any, u_j: Any) -> Any:
    """log of the Metropolis ratio for exchanging configurations between two temperatures
    (scalars or numpy arrays)."""
    return (beta_i - beta_j) * (u_i - u_j)


def _states_or_raise(raw: dict[int, Any], s: MDSettings, ns: float, when: str
                     ) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """Replica states of one chunk, each checked: a NaN here would otherwise be saved (and
    swapped into the other temperatures) silently."""
    states: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
    for k in sorted(raw):
        item = raw[k]
        temp = s.ladder[k]
        if item[0] == "error":
            raise UserError(f"replica {k} ({temp:g} K): OpenMM failed {when} at {md_time(ns)} ({item[1]}): "
                            f"{_likely_cause(s)}")
        _, pos, vel, energy = item
        pos = np.asarray(pos)
        if not np.all(np.isfinite(pos)):
            raise UserError(f"replica {k} ({temp:g} K) produced non-finite positions {when} at {md_time(ns)}: "
                            f"{_likely_cause(s)}")
        if np.max(np.abs(pos)) > MAX_COORDINATE_NM:
            raise UserError(f"replica {k} ({temp:g} K) blew up {when} at {md_time(ns)} (coordinates beyond "
                            f"{MAX_COORDINATE_NM:g} nm): {_likely_cause(s)}")
        if not math.isfinite(energy):
            raise UserError(f"replica {k} ({temp:g} K) produced a non-finite energy ({energy}) {when} at "
                            f"{md_time(ns)}: {_likely_cause(s)}")
        states[k] = (pos, np.asarray(vel) if vel is not None else pos * 0.0, float(energy))
    return states


def _likely_cause(s: MDSettings) -> str:
    return (f"the structure ({s.source}) may have overlapping atoms or the timestep "
            f"(data.timestep_fs = {s.timestep_fs:g}) is too large; fix the structure or lower data.timestep_fs")


class ProgressReporter:
    """Sends SimulationProgress at phase changes and at most every `interval_s` in between."""

    def __init__(self, s: MDSettings, callback: ProgressCallback | None, interval_s: float = 2.0):
        self.s, self.callback, self.interval_s = s, callback, interval_s
        self.t0 = time.perf_counter()
        self.phase: Phase | None = None
        self.last = -math.inf
        self.t_md: float | None = None   # when the first MD chunk started (rate excludes start-up)
        self.rounds_at_md = 0

    def report(self, phase: Phase, rounds: int, samples: int, acc: np.ndarray, force: bool = False) -> None:
        if self.callback is None:
            return
        now = time.perf_counter()
        if not (force or phase != self.phase or now - self.last >= self.interval_s):
            return
        self.phase, self.last = phase, now
        s = self.s
        planned = s.ns_after(s.total_rounds)
        done = s.ns_after(rounds)
        rate = math.nan
        eta: float | None = None
        if self.t_md is not None and rounds > self.rounds_at_md and now > self.t_md:
            per_s = s.ns_after(rounds - self.rounds_at_md) / (now - self.t_md)
            rate = per_s * 86400.0
            eta = max(0.0, planned - done) / per_s
        elif rounds >= s.total_rounds:
            eta = 0.0
        self.callback(SimulationProgress(
            phase=phase, simulated_ns=done, planned_ns=planned, temperatures=s.ladder, samples=samples,
            planned_samples=s.n_samples, ns_per_day=rate, swap_acceptance=tuple(float(a) for a in acc),
            elapsed_s=now - self.t0, eta_s=eta))


def _check_stop(should_stop: StopCheck | None, s: MDSettings, rounds: int) -> None:
    if should_stop is None:
        return
    answer = should_stop()
    if answer:
        reason = answer if isinstance(answer, str) else "stop requested"
        raise SimulationInterrupted(reason, s.ns_after(rounds), s.ns_after(s.total_rounds))


def run_replica_exchange(s: MDSettings, reporter: ProgressReporter | None = None,
                         should_stop: StopCheck | None = None) -> MDResult:
    """Run the MD of `s` and return the samples. The worker processes are always closed.

    `should_stop` is polled between MD chunks (each `gcd(stride, swap_every)` steps) and around
    minimisation; a truthy answer raises SimulationInterrupted (a string answer is its reason,
    e.g. "SIGTERM"). KeyboardInterrupt becomes SimulationInterrupted("SIGINT"). Non-finite
    positions or energies raise UserError naming the replica and its temperature."""
    n_temps = len(s.ladder)
    betas = np.array([beta(t) for t in s.ladder])
    rng = np.random.default_rng(s.seed)
    eq_rounds, total_rounds, round_steps = s.eq_rounds, s.total_rounds, s.round_steps
    positions = np.empty((n_temps, s.n_samples, s.positions.shape[0], 3), dtype=np.float32)
    energies = np.empty((n_temps, s.n_samples), dtype=np.float64)
    attempts = np.zeros(n_temps - 1, dtype=np.int64)
    accepted = np.zeros(n_temps - 1, dtype=np.int64)

    def acceptance() -> np.ndarray:
        return np.where(attempts > 0, accepted / np.maximum(attempts, 1), np.nan)

    reporter = reporter or ProgressReporter(s, None)
    t_start = time.perf_counter()
    r = 0
    pool: _ReplicaPool | None = None
    try:
        reporter.report("minimising", 0, 0, acceptance())
        _check_stop(should_stop, s, 0)
        pool = _ReplicaPool(s)
        pool.set_states({k: (s.positions, None) for k in range(n_temps)})
        _check_stop(should_stop, s, 0)
        _states_or_raise(pool.minimize(), s, 0.0, "in energy minimisation")
        _check_stop(should_stop, s, 0)
        reporter.t_md = time.perf_counter()
        sample = 0
        swap_parity = 0
        for r in range(total_rounds):
            reporter.report("equilibrating" if r < eq_rounds else "sampling", r, sample, acceptance())
            _check_stop(should_stop, s, r)
            ns = s.ns_after(r + 1)
            states = _states_or_raise(pool.run(round_steps), s, ns,
                                      "in equilibration" if r < eq_rounds else "in sampling")
            step = (r + 1) * round_steps
            if step % s.swap_every == 0 and n_temps > 1:
                changed: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
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
                        states[i] = (pj, vj * math.sqrt(s.ladder[i] / s.ladder[j]), uj)
                        states[j] = (pi, vi * math.sqrt(s.ladder[j] / s.ladder[i]), ui)
                        changed[i], changed[j] = states[i][:2], states[j][:2]
                swap_parity ^= 1
                if changed:
                    pool.set_states(changed)
            if r >= eq_rounds and (step - eq_rounds * round_steps) % s.stride == 0 and sample < s.n_samples:
                for k in range(n_temps):
                    positions[k, sample] = states[k][0]
                    energies[k, sample] = states[k][2]
                sample += 1
        r = total_rounds
    except KeyboardInterrupt:
        raise SimulationInterrupted("SIGINT", s.ns_after(r), s.ns_after(total_rounds)) from None
    except WorkerDied:
        # A job signal sent to the whole process group (scancel) may end a worker as it starts;
        # when the parent was asked to stop too, that is the stop, not a crash.
        _check_stop(should_stop, s, r)
        raise
    finally:
        if pool is not None:
            pool.close()
    elapsed = time.perf_counter() - t_start
    md_seconds = max(time.perf_counter() - (reporter.t_md or t_start), 1e-9)
    return MDResult(positions=positions, energies=energies, swap_acceptance=acceptance(), swap_attempts=attempts,
                    wall_seconds=elapsed, ns_per_day=s.ns_after(total_rounds) / md_seconds * 86400.0)
