"""Flow-enhanced parallel tempering: two Langevin replicas exchanged through the trained map, and
the naive temperature ladder it is compared with.

Every `swap_every` MD steps the flow sampler proposes (x, y) -> (T^-1 y, T x) for the cold
configuration x and the hot one y and accepts with min(1, exp Delta), Delta the formula of
the project's design (`losses.flow_swap_log_acceptance`, the one training evaluates), with the map's own
log-determinants and energies from the MD's force field. After an accepted swap both replicas
get fresh Maxwell-Boltzmann velocities at their temperatures: the hot replica's velocities
belong to a configuration that is no longer there, and carrying them into the cold replica
would heat it. The ladder baseline swaps neighbours naively (configurations move, velocities
rescaled by sqrt(T_new / T_old), as in `replica_md`).

Like the trainer, the run loop is UI-agnostic: it emits typed events to sinks, polls a
`TrainingControl`, and is handed a `PTArtifacts` that writes its files.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from ..errors import UserError
from ..physics.flow_pt import EnergyEvaluator, LangevinReplica, ReplicaState, RoundTrips, maxwell_boltzmann
from ..physics.replica_md import MAX_COORDINATE_NM, md_time, swap_log_acceptance
from ..physics.units import beta
from . import losses
from .control import TrainingControl
from .events import CheckpointSaved, Event, Finished, Message, PTProgress, PTSampler, PTStarted, RunStatus, Sink

CHECKPOINT_FORMAT = "molpt-tui.pt-checkpoint"
CHECKPOINT_VERSION = 1
# Batch means: more batches give a less noisy error bar, fewer a less biased one when samples
# are correlated over long times (a basin left once a nanosecond).
MAX_BATCHES = 30
POLL_EVERY_S = 0.25

StateFn = Callable[[np.ndarray], np.ndarray]
"""positions [M, N, 3] -> bool [M, n_states]: which backbone states configurations are in."""


# --- statistics --------------------------------------------------------------------------------

def batch_means(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean of a correlated series and its standard error by batch means: the spread of the
    means of consecutive batches, ~sqrt(n) of them but at most MAX_BATCHES, so that batches stay
    longer than the slow correlations of rare transitions. NaN SE below 4 values."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n == 0:
        return math.nan, math.nan
    mean = float(v.mean())
    if n < 4:
        return mean, math.nan
    size = max(math.isqrt(n), -(-n // MAX_BATCHES))
    n_batches = n // size
    means = v[: n_batches * size].reshape(n_batches, size).mean(axis=1)
    return mean, float(means.std(ddof=1) / math.sqrt(n_batches))


def running_estimate(indicator: np.ndarray, n_points: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample counts, mean, batch-means SE) of the prefixes of a series: a population over time."""
    v = np.asarray(indicator, dtype=np.float64)
    if len(v) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    counts = np.unique(np.linspace(1, len(v), min(n_points, len(v))).round().astype(np.int64))
    est = [batch_means(v[:c]) for c in counts]
    return counts, np.array([m for m, _ in est]), np.array([s for _, s in est])


# --- the map a flow swap uses -------------------------------------------------------------------

class SwapMap(Protocol):
    """What a flow swap needs of T: `flows.transport.Transport` is one; tests build others.

    forward(x [B, N, 3] nm) -> (T x, log|det J_T(x)|); inverse(y) -> (T^-1 y, log|det J_T^-1(y)|)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class MappedSamples:
    """Samples through the map, with the energies the acceptance needs (kJ/mol, log-dets in nats)."""

    cold_to_hot: np.ndarray    # T(x) [M, N, 3]
    hot_to_cold: np.ndarray    # T^-1(y)
    u_cold: np.ndarray         # U(x)
    u_hot: np.ndarray          # U(y)
    u_cold_to_hot: np.ndarray  # U(T x)
    u_hot_to_cold: np.ndarray  # U(T^-1 y)
    ld_fwd: np.ndarray         # log|det J_T(x)|
    ld_inv: np.ndarray         # log|det J_T^-1(y)|

    def log_acceptance(self, t_cold: float, t_hot: float) -> np.ndarray:
        bc, bh = beta(t_cold), beta(t_hot)
        delta = losses.flow_swap_log_acceptance(
            bc, bh, torch.from_numpy(self.u_cold), torch.from_numpy(self.u_hot), torch.from_numpy(self.u_cold_to_hot),
            torch.from_numpy(self.u_hot_to_cold), torch.from_numpy(self.ld_fwd), torch.from_numpy(self.ld_inv))
        out: np.ndarray = delta.numpy()
        return out


@torch.no_grad()
def map_samples(swap_map: SwapMap, evaluator: EnergyEvaluator, cold: np.ndarray | torch.Tensor,
                hot: np.ndarray | torch.Tensor, batch_size: int = 256) -> MappedSamples:
    """T(cold) and T^-1(hot) pairwise (as many pairs as the shorter set), energies by `evaluator`.

    Tensors are passed to the map as they are, so held-out data go through exactly the calls
    training's evaluation made."""
    n = min(len(cold), len(hot))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("tx", "tiy", "ldf", "ldi")}
    for lo in range(0, n, batch_size):
        x = torch.as_tensor(cold[lo:min(n, lo + batch_size)])
        y = torch.as_tensor(hot[lo:min(n, lo + batch_size)])
        tx, ld_f = swap_map.forward(x)
        tiy, ld_i = swap_map.inverse(y)
        parts["tx"].append(tx.double().cpu().numpy())
        parts["tiy"].append(tiy.double().cpu().numpy())
        parts["ldf"].append(ld_f.double().cpu().numpy())
        parts["ldi"].append(ld_i.double().cpu().numpy())
    tx_all, tiy_all = np.concatenate(parts["tx"]), np.concatenate(parts["tiy"])
    cold_np = torch.as_tensor(cold[:n]).double().cpu().numpy()
    hot_np = torch.as_tensor(hot[:n]).double().cpu().numpy()
    return MappedSamples(cold_to_hot=tx_all, hot_to_cold=tiy_all, u_cold=evaluator.energies(cold_np),
                         u_hot=evaluator.energies(hot_np), u_cold_to_hot=evaluator.energies(tx_all),
                         u_hot_to_cold=evaluator.energies(tiy_all), ld_fwd=np.concatenate(parts["ldf"]),
                         ld_inv=np.concatenate(parts["ldi"]))


def acceptance_of(log_acc: np.ndarray) -> np.ndarray:
    """min(1, exp Delta) per pair; a NaN Delta (a failed energy) is a rejection."""
    d = np.nan_to_num(np.asarray(log_acc, dtype=np.float64), nan=-np.inf)
    out: np.ndarray = np.exp(np.minimum(d, 0.0))
    return out


# --- samplers ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MDSpec:
    """The MD every replica runs: the run's flexible System and its integrator settings."""

    system_xml: str
    timestep_fs: float
    friction_per_ps: float
    platform: str

    def ns_per_round(self, swap_every: int) -> float:
        return swap_every * self.timestep_fs * 1e-6


def planned_rounds(spec: MDSpec, swap_every: int, ns: float) -> int:
    """Rounds (MD chunk + swap attempt) for `ns` of MD per replica, at least one."""
    return max(1, round(ns / spec.ns_per_round(swap_every)))


class Sampler:
    """Replicas at `temperatures` (coldest first), a swap attempt after every `swap_every` MD
    steps, and the cold replica's samples (one per round, after the swap)."""

    name: ClassVar[PTSampler]

    def __init__(self, spec: MDSpec, temperatures: Sequence[float], swap_every: int, rounds: int, seed: int,
                 states: StateFn | None = None, seed_stream: int = 0) -> None:
        self.spec = spec
        self.temperatures = tuple(float(t) for t in temperatures)
        self.betas = tuple(beta(t) for t in self.temperatures)
        self.swap_every = int(swap_every)
        self.planned_rounds = int(rounds)
        self.states_fn = states
        seq = np.random.SeedSequence([int(seed), int(seed_stream)])
        self.rng = np.random.default_rng(seq)
        md_seeds = seq.spawn(1)[0].generate_state(len(self.temperatures))
        self.replicas = [LangevinReplica(spec.system_xml, t, spec.timestep_fs, spec.friction_per_ps, spec.platform,
                                         int(md_seeds[k]) & 0x3FFFFFFF)
                         for k, t in enumerate(self.temperatures)]
        self.masses = self.replicas[0].masses
        self.trips = RoundTrips(len(self.temperatures))
        self.current: list[ReplicaState] = []
        self.rounds = 0
        self.proposal_evals = 0
        self.cold_positions: list[np.ndarray] = []
        self.cold_energies: list[float] = []
        self.cold_states: list[np.ndarray] = []
        self.segment_rounds = 0        # rounds of this process (ns/day excludes earlier segments)
        self.segment_wall_s = 0.0
        self.segment_started = time.monotonic()

    # --- state of the chain ------------------------------------------------------------------
    @property
    def n_replicas(self) -> int:
        return len(self.temperatures)

    @property
    def ns(self) -> float:
        return self.rounds * self.spec.ns_per_round(self.swap_every)

    @property
    def planned_ns(self) -> float:
        return self.planned_rounds * self.spec.ns_per_round(self.swap_every)

    @property
    def done(self) -> bool:
        return self.rounds >= self.planned_rounds

    @property
    def fraction(self) -> float:
        return self.rounds / self.planned_rounds

    @property
    def energy_evals(self) -> int:
        """Force evaluations of the MD steps, the energy read after each chunk, and proposals."""
        return self.rounds * self.n_replicas * (self.swap_every + 1) + self.proposal_evals

    def start(self, positions: Sequence[np.ndarray]) -> None:
        """Begin from one configuration per temperature, with Maxwell-Boltzmann velocities."""
        if len(positions) != self.n_replicas:
            raise ValueError(f"need {self.n_replicas} starting configurations, got {len(positions)}")
        for rep, x in zip(self.replicas, positions):
            rep.set_state(np.asarray(x, dtype=np.float64), maxwell_boltzmann(self.masses, rep.temperature, self.rng))
        self.current = [rep.read() for rep in self.replicas]

    def advance(self) -> None:
        """One round: `swap_every` MD steps of every replica, a swap attempt, a sample."""
        t0 = time.perf_counter()
        for rep in self.replicas:
            rep.step(self.swap_every)
        self.current = [rep.read() for rep in self.replicas]
        self._check_states()
        self._swap()
        self.rounds += 1
        self._record()
        self.segment_rounds += 1
        self.segment_wall_s += time.perf_counter() - t0

    def _check_states(self) -> None:
        for k, st in enumerate(self.current):
            bad = (not math.isfinite(st.energy) or not np.all(np.isfinite(st.positions))
                   or float(np.max(np.abs(st.positions))) > MAX_COORDINATE_NM)
            if bad:
                raise UserError(f"{self.name} replica at {self.temperatures[k]:g} K blew up after "
                                f"{md_time(self.ns + self.spec.ns_per_round(self.swap_every))} (energy {st.energy}); "
                                f"lower data.timestep_fs (now {self.spec.timestep_fs:g}) or check the structure")

    def _swap(self) -> None:
        raise NotImplementedError

    def _record(self) -> None:
        cold = self.current[0]
        self.cold_positions.append(cold.positions.astype(np.float32))
        self.cold_energies.append(cold.energy)
        if self.states_fn is not None:
            self.cold_states.append(self.states_fn(cold.positions[None])[0])

    # --- what it reports -----------------------------------------------------------------------
    def populations(self) -> tuple[list[float], list[float]]:
        if not self.cold_states:
            return [], []
        table = np.asarray(self.cold_states, dtype=np.float64)
        est = [batch_means(table[:, j]) for j in range(table.shape[1])]
        return [m for m, _ in est], [s for _, s in est]

    def ns_per_day(self) -> float:
        if self.segment_rounds == 0 or self.segment_wall_s <= 0:
            return math.nan
        return self.segment_rounds * self.spec.ns_per_round(self.swap_every) / self.segment_wall_s * 86400.0

    def progress(self) -> PTProgress:
        pops, pops_se = self.populations()
        rate = self.ns_per_day()
        eta = (self.planned_ns - self.ns) / rate * 86400.0 if math.isfinite(rate) and rate > 0 else math.nan
        trips = self.trips.round_trips
        return PTProgress(
            sampler=self.name, ns=self.ns, planned_ns=self.planned_ns, total_ns=self.ns * self.n_replicas,
            ns_per_day=rate, energy_evals=self.energy_evals, attempts=0, accepted=0, acc=math.nan, acc_se=math.nan,
            round_trips=trips, round_trips_per_ns=trips / self.ns if self.ns > 0 else math.nan,
            samples=len(self.cold_positions), populations=pops, populations_se=pops_se,
            elapsed_s=time.monotonic() - self.segment_started, eta_s=max(0.0, eta) if math.isfinite(eta) else eta)

    def trajectory(self) -> dict[str, np.ndarray]:
        n_atoms = len(self.masses)
        ns_round = self.spec.ns_per_round(self.swap_every)
        return {
            "positions": (np.stack(self.cold_positions) if self.cold_positions
                          else np.zeros((0, n_atoms, 3), dtype=np.float32)),
            "potential_energy": np.asarray(self.cold_energies, dtype=np.float64),
            "time_ns": np.arange(1, len(self.cold_positions) + 1, dtype=np.float64) * ns_round,
            "temperature": np.asarray(self.temperatures[0]),
        }

    # --- checkpoint ----------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The chain's whole state as plain arrays (no pickles): replicas, RNG, counters, attempts."""
        out: dict[str, np.ndarray] = {
            "positions": np.stack([s.positions for s in self.current]),
            "velocities": np.stack([rep.velocities() for rep in self.replicas]),
            "energies": np.array([s.energy for s in self.current]),
        }
        for k, rep in enumerate(self.replicas):
            out[f"openmm_{k}"] = np.frombuffer(rep.checkpoint(), dtype=np.uint8).copy()
        meta = {"rounds": self.rounds, "proposal_evals": self.proposal_evals, "rng": self.rng.bit_generator.state,
                "trips": self.trips.state_dict(), "temperatures": list(self.temperatures),
                "swap_every": self.swap_every, "samples": len(self.cold_positions), **self._meta()}
        out["meta"] = np.array(json.dumps(meta))
        out.update(self._attempt_arrays())
        return out

    def _meta(self) -> dict[str, Any]:
        return {}

    def _attempt_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def load_state(self, arrays: dict[str, np.ndarray], trajectory: dict[str, np.ndarray], where: str) -> None:
        """Continue the chain saved by `state_arrays`, with the samples of its trajectory file.
        A ValueError names the key that does not fit (the caller words it for the user)."""
        meta = json.loads(str(arrays["meta"]))
        if [float(t) for t in meta["temperatures"]] != list(self.temperatures) or meta["swap_every"] != self.swap_every:
            raise ValueError("meta: saved for other temperatures or another swap interval")
        n = len(self.temperatures)
        n_atoms = len(self.masses)
        for key in ("positions", "velocities"):
            if arrays[key].shape != (n, n_atoms, 3) or not np.all(np.isfinite(arrays[key])):
                raise ValueError(f"{key}: expected finite values of shape {(n, n_atoms, 3)}")
        samples = int(meta["samples"])
        positions = trajectory["positions"]
        if len(positions) < samples or positions.shape[1:] != (n_atoms, 3):
            raise ValueError(f"{where}: holds {len(positions)} samples, the checkpoint {samples}")
        self.rounds = int(meta["rounds"])
        self.proposal_evals = int(meta["proposal_evals"])
        self.rng.bit_generator.state = meta["rng"]
        self.trips.load_state_dict(meta["trips"])
        self._load_meta(meta)
        self._load_attempts(arrays)
        self.current = []
        for k, rep in enumerate(self.replicas):
            pos, vel = arrays["positions"][k], arrays["velocities"][k]
            if not rep.restore(arrays[f"openmm_{k}"].tobytes()):
                rep.set_state(pos, vel)
            self.current.append(ReplicaState(positions=np.array(pos, dtype=np.float64),
                                             energy=float(arrays["energies"][k])))
        self.cold_positions = [p for p in positions[:samples].astype(np.float32)]
        self.cold_energies = [float(u) for u in trajectory["potential_energy"][:samples]]
        self.cold_states = (list(self.states_fn(positions[:samples].astype(np.float64)))
                            if self.states_fn is not None and samples else [])
        self._load_trajectory(trajectory, samples)

    def _load_meta(self, meta: dict[str, Any]) -> None:
        pass

    def _load_attempts(self, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _load_trajectory(self, trajectory: dict[str, np.ndarray], samples: int) -> None:
        pass

    def close(self) -> None:
        self.replicas = []


class FlowSwapSampler(Sampler):
    """Two replicas, cold and hot, exchanged through `swap_map`."""

    name: ClassVar[PTSampler] = "flow"

    def __init__(self, spec: MDSpec, t_cold: float, t_hot: float, swap_map: SwapMap, swap_every: int, rounds: int,
                 seed: int, states: StateFn | None = None) -> None:
        super().__init__(spec, (t_cold, t_hot), swap_every, rounds, seed, states, seed_stream=0)
        self.map = swap_map
        self.evaluator = EnergyEvaluator(spec.system_xml, spec.platform)
        self.deltas: list[float] = []      # Delta of every attempt
        self.deltas0: list[float] = []     # Delta_0 of the same pairs
        self.accepted: list[bool] = []
        self.hot_positions: list[np.ndarray] = []
        self.hot_energies: list[float] = []
        self.segment_map_s = 0.0           # wall time in the map this segment (the rest: MD and energies)

    @torch.no_grad()
    def _swap(self) -> None:
        x, y = self.current
        t0 = time.perf_counter()
        tx, ld_f = self.map.forward(torch.from_numpy(x.positions[None]))
        tiy, ld_i = self.map.inverse(torch.from_numpy(y.positions[None]))
        self.segment_map_s += time.perf_counter() - t0
        tx_np = tx.detach().double().cpu().numpy()[0]
        tiy_np = tiy.detach().double().cpu().numpy()[0]
        u_tx = float(self.evaluator.energies(tx_np)[0])
        u_tiy = float(self.evaluator.energies(tiy_np)[0])
        self.proposal_evals += 2
        bc, bh = self.betas
        u_x, u_y, u_f, u_i, l_f, l_i = torch.tensor(
            [[x.energy], [y.energy], [u_tx], [u_tiy], [float(ld_f.reshape(-1)[0])], [float(ld_i.reshape(-1)[0])]],
            dtype=torch.float64)
        delta = float(losses.flow_swap_log_acceptance(bc, bh, u_x, u_y, u_f, u_i, l_f, l_i)[0])
        delta0 = float(losses.naive_swap_log_acceptance(bc, bh, u_x, u_y)[0])
        if math.isnan(delta):
            delta = -math.inf
        # One uniform per attempt, accepted or not, so the random stream does not depend on Delta.
        accept = math.log(max(self.rng.random(), 1e-300)) < delta
        self.deltas.append(delta)
        self.deltas0.append(delta0)
        self.accepted.append(accept)
        if accept:
            v_cold, v_hot = self._velocities_after_swap()
            self.replicas[0].set_state(tiy_np, v_cold)
            self.replicas[1].set_state(tx_np, v_hot)
            self.current = [ReplicaState(tiy_np, u_tiy), ReplicaState(tx_np, u_tx)]
            self.trips.swap(0, 1)

    def _velocities_after_swap(self) -> tuple[np.ndarray, np.ndarray]:
        """Fresh velocities at each replica's temperature (a Gibbs step on the velocities)."""
        return (maxwell_boltzmann(self.masses, self.temperatures[0], self.rng),
                maxwell_boltzmann(self.masses, self.temperatures[1], self.rng))

    def _record(self) -> None:
        super()._record()
        hot = self.current[1]
        self.hot_positions.append(hot.positions.astype(np.float32))
        self.hot_energies.append(hot.energy)

    def acceptance(self) -> tuple[float, float]:
        return batch_means(acceptance_of(np.asarray(self.deltas)))

    def naive_acceptance(self) -> tuple[float, float]:
        return batch_means(acceptance_of(np.asarray(self.deltas0)))

    def progress(self) -> PTProgress:
        p = super().progress()
        p.attempts, p.accepted = len(self.deltas), int(sum(self.accepted))
        p.acc, p.acc_se = self.acceptance()
        p.acc_naive, p.acc_naive_se = self.naive_acceptance()
        p.map_share = self.segment_map_s / self.segment_wall_s if self.segment_wall_s > 0 else math.nan
        return p

    def trajectory(self) -> dict[str, np.ndarray]:
        out = super().trajectory()
        n_atoms = len(self.masses)
        out["hot_positions"] = (np.stack(self.hot_positions) if self.hot_positions
                                else np.zeros((0, n_atoms, 3), dtype=np.float32))
        out["hot_potential_energy"] = np.asarray(self.hot_energies, dtype=np.float64)
        out["hot_temperature"] = np.asarray(self.temperatures[1])
        return out

    def _attempt_arrays(self) -> dict[str, np.ndarray]:
        return {"delta": np.asarray(self.deltas, dtype=np.float64),
                "delta0": np.asarray(self.deltas0, dtype=np.float64), "accepted": np.asarray(self.accepted, dtype=bool)}

    def _load_attempts(self, arrays: dict[str, np.ndarray]) -> None:
        d, d0, acc = arrays["delta"], arrays["delta0"], arrays["accepted"]
        if not (len(d) == len(d0) == len(acc) == self.rounds):
            raise ValueError(f"delta: expected {self.rounds} attempts, got {len(d)}")
        self.deltas = [float(v) for v in d]
        self.deltas0 = [float(v) for v in d0]
        self.accepted = [bool(v) for v in acc]

    def _load_trajectory(self, trajectory: dict[str, np.ndarray], samples: int) -> None:
        hot = trajectory["hot_positions"]
        if len(hot) < samples:
            raise ValueError(f"hot_positions: holds {len(hot)} samples, the checkpoint {samples}")
        self.hot_positions = [p for p in hot[:samples].astype(np.float32)]
        self.hot_energies = [float(u) for u in trajectory["hot_potential_energy"][:samples]]


class LadderSampler(Sampler):
    """The full ladder with naive neighbour swaps, even and odd pairs in turn."""

    name: ClassVar[PTSampler] = "ladder"

    def __init__(self, spec: MDSpec, ladder: Sequence[float], swap_every: int, rounds: int, seed: int,
                 states: StateFn | None = None) -> None:
        super().__init__(spec, ladder, swap_every, rounds, seed, states, seed_stream=1)
        self.parity = 0
        self.pairs: list[int] = []         # neighbour pair (i, i+1) of every attempt, by i
        self.probs: list[float] = []       # min(1, exp Delta_0) of every attempt
        self.accepted: list[bool] = []

    def _swap(self) -> None:
        for i in range(self.parity, self.n_replicas - 1, 2):
            j = i + 1
            si, sj = self.current[i], self.current[j]
            delta = float(swap_log_acceptance(self.betas[i], self.betas[j], si.energy, sj.energy))
            accept = math.log(max(self.rng.random(), 1e-300)) < delta
            self.pairs.append(i)
            self.probs.append(math.exp(min(0.0, delta)))
            self.accepted.append(accept)
            if accept:
                ti, tj = self.temperatures[i], self.temperatures[j]
                vi, vj = self.replicas[i].velocities(), self.replicas[j].velocities()
                self.replicas[i].set_state(sj.positions, vj * math.sqrt(ti / tj))
                self.replicas[j].set_state(si.positions, vi * math.sqrt(tj / ti))
                self.current[i], self.current[j] = sj, si
                self.trips.swap(i, j)
        self.parity ^= 1

    def progress(self) -> PTProgress:
        p = super().progress()
        p.attempts, p.accepted = len(self.probs), int(sum(self.accepted))
        p.acc, p.acc_se = batch_means(self.probs)
        pairs = np.asarray(self.pairs, dtype=np.int64)
        probs = np.asarray(self.probs)
        p.pair_acc = [float(probs[pairs == i].mean()) if np.any(pairs == i) else math.nan
                      for i in range(self.n_replicas - 1)]
        return p

    def _meta(self) -> dict[str, Any]:
        return {"parity": self.parity}

    def _load_meta(self, meta: dict[str, Any]) -> None:
        self.parity = int(meta["parity"]) & 1

    def _attempt_arrays(self) -> dict[str, np.ndarray]:
        return {"pair": np.asarray(self.pairs, dtype=np.int64), "prob": np.asarray(self.probs, dtype=np.float64),
                "accepted": np.asarray(self.accepted, dtype=bool)}

    def _load_attempts(self, arrays: dict[str, np.ndarray]) -> None:
        pair, prob, acc = arrays["pair"], arrays["prob"], arrays["accepted"]
        if not (len(pair) == len(prob) == len(acc)):
            raise ValueError("pair: attempts of unequal lengths")
        if len(pair) and (pair.min() < 0 or pair.max() >= self.n_replicas - 1):
            raise ValueError("pair: not a neighbour pair of this ladder")
        self.pairs = [int(v) for v in pair]
        self.probs = [float(v) for v in prob]
        self.accepted = [bool(v) for v in acc]


# --- the run ---------------------------------------------------------------------------------------

class PTArtifacts(Protocol):
    """Where a pt run's results go; the app implements it with the pt directory's names."""

    @property
    def location(self) -> str: ...

    def save(self, checkpoint: dict[str, np.ndarray], trajectories: dict[str, dict[str, np.ndarray]]) -> Path:
        """Write the trajectories, then the checkpoint that counts their samples (each atomically),
        so a kill between the two leaves a trajectory at least as long as the checkpoint says."""
        ...

    def write_figures(self, run: PTRun, status: str) -> list[Path]:
        """Validation and population figures of the samples so far. May raise: the run reports
        the failure and carries on."""
        ...

    def write_summary(self, summary: dict[str, Any]) -> Path: ...


class _Stop(Exception):
    pass


@dataclass
class PTRun:
    """The flow sampler and, optionally, the ladder, advanced side by side: the one furthest
    behind its plan goes next, so both have spent the same share of their MD at any time (with
    the ladder's MD per replica scaled to the same total MD time, the same MD time too)."""

    flow: FlowSwapSampler
    ladder: LadderSampler | None
    started: PTStarted
    sinks: Sequence[Sink]
    control: TrainingControl
    artifacts: PTArtifacts
    progress_every_s: float = 5.0
    checkpoint_every_s: float = 600.0
    files: list[str] = field(default_factory=list)
    failed_reason: str = ""
    _last_poll: float = -math.inf

    @property
    def samplers(self) -> list[Sampler]:
        return [self.flow] if self.ladder is None else [self.flow, self.ladder]

    @property
    def done(self) -> bool:
        return all(s.done for s in self.samplers)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def _next(self) -> Sampler:
        return min((s for s in self.samplers if not s.done), key=lambda s: s.fraction)

    def emit_progress(self) -> None:
        for s in self.samplers:
            self.emit(s.progress())

    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
        arrays: dict[str, np.ndarray] = {"format": np.array(CHECKPOINT_FORMAT),
                                         "format_version": np.array(CHECKPOINT_VERSION)}
        trajectories: dict[str, dict[str, np.ndarray]] = {}
        for s in self.samplers:
            for key, value in s.state_arrays().items():
                arrays[f"{s.name}.{key}"] = value
            trajectories[s.name] = s.trajectory()
        return arrays, trajectories

    def save(self, label: str = "last") -> Path:
        path = self.artifacts.save(*self.snapshot())
        self.emit(CheckpointSaved(epoch=self.flow.rounds, path=str(path),
                                  label="manual" if label == "manual" else "last"))
        self._note(path)
        return path

    def write_figures(self, status: str) -> list[Path]:
        try:
            paths = self.artifacts.write_figures(self, status)
        except Exception as exc:  # a figure must never cost the samples
            self.emit(Message(text=f"could not write the pt figures: {type(exc).__name__}: {exc}", level="warning"))
            return []
        for p in paths:
            self._note(p)
        return paths

    def _note(self, path: Path) -> None:
        if str(path) not in self.files:
            self.files.append(str(path))

    def _service(self) -> None:
        # The channel is a folder, maybe on a shared file system: read it a few times a second,
        # not every round (a ladder round takes a millisecond). Signals need no poll.
        now = time.monotonic()
        if now - self._last_poll >= POLL_EVERY_S:
            self._last_poll = now
            self.control.poll()
        request = self.control.take_checkpoint_request()
        if request is not None:
            self.control.acknowledge(request, str(self.save("manual")))
        request = self.control.take_png_request()
        if request is not None:
            paths = self.write_figures("running")
            self.control.acknowledge(request, ", ".join(str(p) for p in paths) or "could not write the figures")
        self.control.epoch = self.flow.rounds
        for event in self.control.take_acknowledgements():
            self.emit(event)

    def summary(self, status: str) -> dict[str, Any]:
        return {"status": status, "started": plain_event(self.started),
                "samplers": {s.name: plain_event(s.progress()) for s in self.samplers}, "files": list(self.files)}

    def run(self) -> Finished:
        """Sample to the planned MD time; always ends with a Finished event (also when it raises)."""
        self.emit(self.started)
        if self.started.resumed:
            self.emit(Message(text=f"resumed at {md_time(self.flow.ns)} of {md_time(self.flow.planned_ns)} "
                                   "per replica"))
        status: RunStatus = "completed"
        last_progress = last_checkpoint = time.monotonic()
        try:
            while not self.done:
                self._service()
                self.control.wait_if_paused(service=self._service)
                if self.control.stop_requested:
                    raise _Stop
                self._next().advance()
                now = time.monotonic()
                if now - last_progress >= self.progress_every_s:
                    last_progress = now
                    self.emit_progress()
                if now - last_checkpoint >= self.checkpoint_every_s:
                    last_checkpoint = now
                    self.save()
        except (_Stop, KeyboardInterrupt):
            status = "stopped"
        except UserError as exc:  # a replica blew up: the samples so far are still worth keeping
            status, self.failed_reason = "failed", str(exc)
        except Exception as exc:
            self.failed_reason = f"{type(exc).__name__}: {exc}"
            try:
                self._finish("failed")
            finally:
                self._emit_finished("failed")
            raise
        try:
            self._finish(status)
        except BaseException as exc:
            self.failed_reason = self.failed_reason or f"could not write results: {exc}"
            self._emit_finished("failed")
            raise
        return self._emit_finished(status)

    def _finish(self, status: str) -> None:
        self.emit_progress()
        self.save()
        self.write_figures(status)
        self._note(self.artifacts.write_summary(self.summary(status)))

    def _emit_finished(self, status: RunStatus) -> Finished:
        if self.failed_reason:
            message = self.failed_reason
        elif status == "stopped":
            message = self.control.stop_reason or "interrupted"
        else:
            acc, se = self.flow.acceptance()
            message = (f"{md_time(self.flow.ns)} per replica, flow-swap acceptance {acc:.3f} ± {se:.3f}, "
                       f"{self.flow.trips.round_trips} round trips")
        event = Finished(status=status, epoch=self.flow.rounds, files=list(self.files), message=message)
        self.emit(event)
        return event


def plain_event(event: Event) -> dict[str, Any]:
    """An event's fields as JSON-ready data, without its kind and timestamp."""
    d = event.to_dict()
    d.pop("t", None)
    d.pop("kind", None)
    return d
