"""Umbrella sampling over one or more coordinates, unbiased with MBAR: the population of a region
of them (φ > 0 of a peptide at 300 K) by a route that shares nothing with a flow or a ladder.

A population that MD visits rarely (φ > 0 of alanine dipeptide at 300 K: under 1 %, entered a
few times per nanosecond) is what flow PT is benchmarked on, so its reference must not come
from either sampler under test. Harmonic windows over the restrained coordinates force every
value of them to be visited; MBAR (pymbar, the field's standard implementation) reweights the
windows to the unbiased ensemble. The population is exact in the limit of sampling whenever
the region is a function of the restrained coordinates, which φ > 0 is.

The windows run at once and exchange configurations with their neighbours (replica-exchange
umbrella sampling); the error bar is a jackknife over blocks of time.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .flow_pt import LangevinReplica, maxwell_boltzmann
from .torsions import dihedrals
from .units import beta

JACKKNIFE_BLOCKS = 10
MAX_PER_WINDOW = 250
STIFFNESS = "umbrella_k"


def _centre_parameter(dim: int) -> str:
    return f"umbrella_centre_{dim}"


@dataclass(frozen=True)
class BiasCoordinate:
    """A coordinate the windows restrain: a torsion (radians, periodic) or one particle's x (nm)."""

    kind: str                        # "torsion" or "x"
    atoms: tuple[int, ...]

    @property
    def periodic(self) -> bool:
        return self.kind == "torsion"

    def values(self, positions: np.ndarray) -> np.ndarray:
        x = np.asarray(positions, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        if self.kind == "torsion":
            a, b, c, d = self.atoms
            return dihedrals(x, (a, b, c, d))
        return x[:, self.atoms[0], 0]

    def displacement(self, values: np.ndarray, centre: float) -> np.ndarray:
        """value - centre, the short way round for a torsion (what the bias force uses)."""
        d = np.asarray(values, dtype=np.float64) - centre
        if self.periodic:
            d = (d + math.pi) % (2.0 * math.pi) - math.pi
        return d

    def force(self, dim: int) -> object:
        """The OpenMM bias 0.5 k (q - q0)^2, q0 and k global parameters: one Context serves any window."""
        import openmm

        centre = _centre_parameter(dim)
        if self.kind == "torsion":
            f = openmm.CustomTorsionForce(
                f"0.5*{STIFFNESS}*dq^2; dq = min(dt, 2*pi - dt); dt = abs(theta - {centre}); pi = {math.pi!r}")
            f.addTorsion(*self.atoms, [])
        else:
            f = openmm.CustomExternalForce(f"0.5*{STIFFNESS}*(x - {centre})^2")
            f.addParticle(self.atoms[0], [])
        f.addGlobalParameter(centre, 0.0)
        f.addGlobalParameter(STIFFNESS, 0.0)
        return f


def torsion_coordinate(atoms: tuple[int, int, int, int]) -> BiasCoordinate:
    return BiasCoordinate("torsion", tuple(atoms))


def x_coordinate(particle: int) -> BiasCoordinate:
    return BiasCoordinate("x", (int(particle),))


@dataclass(frozen=True)
class Umbrella:
    """The coordinates every window restrains, each with the same stiffness."""

    coordinates: tuple[BiasCoordinate, ...]

    def values(self, positions: np.ndarray) -> np.ndarray:
        """[M, n_coordinates] of configurations [M, N, 3] (or one [N, 3])."""
        return np.stack([c.values(positions) for c in self.coordinates], axis=-1)

    def bias(self, q: np.ndarray, centre: Sequence[float], stiffness: float) -> np.ndarray:
        """kJ/mol of values [M, n_coordinates] in the window at `centre`."""
        q = np.asarray(q, dtype=np.float64).reshape(-1, len(self.coordinates))
        return sum((0.5 * stiffness * c.displacement(q[:, i], centre[i]) ** 2
                    for i, c in enumerate(self.coordinates)), np.zeros(len(q)))

    def add_to(self, system_xml: str) -> str:
        import openmm

        system = openmm.XmlSerializer.deserialize(system_xml)
        for i, c in enumerate(self.coordinates):
            system.addForce(c.force(i))
        return str(openmm.XmlSerializer.serialize(system))


@dataclass(frozen=True)
class UmbrellaPlan:
    centres: tuple[tuple[float, ...], ...]   # per window, one centre per coordinate, in staging order
    stiffness: float                  # kJ/mol per rad^2 (torsion) or per nm^2 (x)
    temperature: float                # K
    ps_per_window: float              # sampled MD per window, after its equilibration
    equilibration_ps: float           # MD per window before sampling (staged from the previous window)
    sample_every: int                 # MD steps between samples, and between exchange attempts
    timestep_fs: float
    friction_per_ps: float = 1.0
    platform: str = "Reference"
    seed: int = 1
    ring: bool = False                # the last window neighbours the first (a torsion's circle)

    @property
    def steps_per_window(self) -> int:
        return max(1, round(self.ps_per_window * 1000.0 / self.timestep_fs))

    @property
    def equilibration_steps(self) -> int:
        return max(0, round(self.equilibration_ps * 1000.0 / self.timestep_fs))


def windows_around(n: int) -> tuple[float, ...]:
    """n torsion centres spaced evenly round the circle, from -π up."""
    return tuple(-math.pi + (i + 0.5) * 2.0 * math.pi / n for i in range(n))


def snake(first: Sequence[float], second: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """A 2-D grid walked row by row, every other row backwards: consecutive windows are neighbours,
    so staging moves a short way each time and exchanges are between overlapping windows."""
    out: list[tuple[float, float]] = []
    for i, a in enumerate(first):
        row = list(second) if i % 2 == 0 else list(reversed(second))
        out += [(float(a), float(b)) for b in row]
    return tuple(out)


@dataclass
class WindowSamples:
    values: list[np.ndarray]          # per window, [rounds, n_coordinates]
    exchange_acceptance: np.ndarray   # per neighbour pair (i, i + 1; with plan.ring also (last, first))
    md_steps: int                     # all windows together, staging included


def _biased_replica(xml: str, plan: UmbrellaPlan, centre: Sequence[float], seed: int) -> LangevinReplica:
    replica = LangevinReplica(xml, plan.temperature, plan.timestep_fs, plan.friction_per_ps, plan.platform, seed)
    replica.context.setParameter(STIFFNESS, float(plan.stiffness))
    _move(replica, centre)
    return replica


def _move(replica: LangevinReplica, centre: Sequence[float]) -> None:
    for i, c in enumerate(centre):
        replica.context.setParameter(_centre_parameter(i), float(c))


def _state(replica: LangevinReplica) -> tuple[np.ndarray, np.ndarray]:
    # Positions and velocities only: asking for the energy would cost a force evaluation.
    st = replica.context.getState(getPositions=True, getVelocities=True)
    return (np.array(st.getPositions(asNumpy=True)._value, dtype=np.float64),
            np.array(st.getVelocities(asNumpy=True)._value, dtype=np.float64))


def sample_windows(system_xml: str, umbrella: Umbrella, start: np.ndarray, plan: UmbrellaPlan) -> WindowSamples:
    """Replica-exchange umbrella sampling: every window runs at once and neighbours in the plan's
    order swap configurations after each round of `sample_every` steps.

    Windows run one after another would each keep whatever slow orthogonal state they inherited
    (ψ of alanine dipeptide at φ ≈ 0 differs by the side a φ sweep came from: sweeps up and
    down φ disagreed by 6 standard errors); exchanges let configurations travel between windows.
    Exchanges do not remove a slow motion that no window restrains, though: restrain it too
    (φ and ψ both, for a peptide's backbone state). One staging walk, from `start` through the
    windows in order with `equilibration_ps` in each, gives each window its first configuration.
    The bias is the only term that differs between windows, so an exchange needs no force-field
    energy.
    """
    xml = umbrella.add_to(system_xml)
    rng = np.random.default_rng(plan.seed)
    walker = _biased_replica(xml, plan, plan.centres[0], plan.seed)
    walker.set_state(np.asarray(start, dtype=np.float64), maxwell_boltzmann(walker.masses, plan.temperature, rng))
    starts = []
    for centre in plan.centres:
        _move(walker, centre)
        walker.step(max(1, plan.equilibration_steps))
        starts.append(_state(walker))
    del walker
    replicas = []
    for k, (centre, (x, v)) in enumerate(zip(plan.centres, starts, strict=True)):
        r = _biased_replica(xml, plan, centre, plan.seed + 1 + k)
        r.set_state(x, v)
        replicas.append(r)
    n_windows = len(replicas)
    # A ring of an even number of windows splits into two sets of disjoint pairs; an odd ring
    # would need three, and runs as a chain instead.
    ring = plan.ring and n_windows > 2 and n_windows % 2 == 0
    pairs = [(i, i + 1) for i in range(n_windows - 1)] + ([(n_windows - 1, 0)] if ring else [])
    accepted = np.zeros(len(pairs))
    attempted = np.zeros(len(pairs))
    rounds = max(1, plan.steps_per_window // plan.sample_every)
    values = np.empty((n_windows, rounds, len(umbrella.coordinates)))
    b = beta(plan.temperature)

    def bias(q: np.ndarray, k: int) -> float:
        return float(umbrella.bias(q, plan.centres[k], plan.stiffness)[0])

    for t in range(rounds):
        states = []
        for r in replicas:
            r.step(plan.sample_every)
            states.append(_state(r))
        q = [umbrella.values(x)[0] for x, _ in states]
        values[:, t] = q
        # Even pairs on even rounds, odd ones on odd rounds: no window is in two attempts at once.
        for p in range(t % 2, len(pairs), 2):
            i, j = pairs[p]
            attempted[p] += 1
            log_acc = -b * (bias(q[j], i) + bias(q[i], j) - bias(q[i], i) - bias(q[j], j))
            if log_acc >= 0 or rng.random() < math.exp(log_acc):
                accepted[p] += 1
                (xi, vi), (xj, vj) = states[i], states[j]
                replicas[i].set_state(xj, vj)
                replicas[j].set_state(xi, vi)
                states[i], states[j] = states[j], states[i]
                q[i], q[j] = q[j], q[i]
    md_steps = n_windows * (max(1, plan.equilibration_steps) + rounds * plan.sample_every)
    return WindowSamples(values=list(values), exchange_acceptance=accepted / np.maximum(attempted, 1),
                         md_steps=md_steps)


def mbar_population(umbrella: Umbrella, plan: UmbrellaPlan, values: Sequence[np.ndarray],
                    region: Callable[[np.ndarray], np.ndarray], blocks: int = JACKKNIFE_BLOCKS,
                    per_window: int = MAX_PER_WINDOW) -> tuple[float, float]:
    """The unbiased population of `region` (a predicate on values [M, n_coordinates]) from the
    windows' samples [window][round, coordinate], and its standard error.

    The error is a jackknife over `blocks` contiguous stretches of rounds, every window at once:
    exchanges correlate the windows with each other, which MBAR's own error (windows taken as
    independent) misses, and a block longer than the correlation time carries all of it.
    Samples are thinned to `per_window` per window by a fixed stride first: neighbours a few
    femtoseconds apart add nothing but cost.
    """
    # pymbar logs an install hint (JAX) on import, at WARNING; it would drown the benchmark's lines.
    logging.getLogger("pymbar").setLevel(logging.ERROR)
    from pymbar import MBAR

    b = beta(plan.temperature)
    n_dim = len(umbrella.coordinates)
    stacked = np.stack([np.asarray(v, dtype=np.float64).reshape(-1, n_dim) for v in values])
    stacked = stacked[:, :: max(1, stacked.shape[1] // per_window)]

    def estimate(q_ktd: np.ndarray, f_k: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        q = q_ktd.reshape(-1, n_dim)
        u_kn = np.stack([b * umbrella.bias(q, c, plan.stiffness) for c in plan.centres])
        # pymbar's adaptive solver: its default (hybr) took 4x as long on a 576-window grid.
        mbar = MBAR(u_kn, np.full(len(plan.centres), q_ktd.shape[1]), initial_f_k=f_k,
                    solver_protocol=({"method": "adaptive"},))
        with np.errstate(divide="ignore"):   # pymbar takes the log of the indicator, 0 outside the region
            res = mbar.compute_expectations(np.asarray(region(q), dtype=np.float64), u_kn=np.zeros(len(q)),
                                            compute_uncertainty=False)
        return float(np.ravel(res["mu"])[0]), np.asarray(mbar.f_k)

    population, f_all = estimate(stacked)
    edges = np.linspace(0, stacked.shape[1], blocks + 1).astype(int)
    left_out = np.array([estimate(np.delete(stacked, np.s_[lo:hi], axis=1), f_all)[0]
                         for lo, hi in zip(edges[:-1], edges[1:], strict=True)])
    se = math.sqrt((blocks - 1) / blocks * float(np.sum((left_out - left_out.mean()) ** 2)))
    return population, se
