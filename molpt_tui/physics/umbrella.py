"""Umbrella sampling along one coordinate, unbiased with MBAR: the population of a region of that
coordinate (φ > 0 of a peptide at 300 K) by a route that shares nothing with a flow or a ladder.

A population that MD visits rarely (φ > 0 of alanine dipeptide at 300 K: ~1 %, entered a few
times per nanosecond) is what flow PT is benchmarked on, so its reference must not come from
either sampler under test. Harmonic windows along the coordinate force every value of it to be
visited; MBAR (pymbar, the field's standard implementation) reweights the windows to the
unbiased ensemble. The population is exact in the limit of sampling whenever the region is
a function of the biased coordinate alone, which φ > 0 is.

The windows run at once and exchange configurations (replica-exchange umbrella sampling), so
slow motions orthogonal to the coordinate mix; the error bar is a jackknife over blocks of time.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .flow_pt import LangevinReplica, maxwell_boltzmann
from .torsions import dihedrals
from .units import beta

JACKKNIFE_BLOCKS = 10
MAX_PER_WINDOW = 250
CENTRE = "umbrella_centre"
STIFFNESS = "umbrella_k"


@dataclass(frozen=True)
class BiasCoordinate:
    """The coordinate the windows restrain: a torsion (radians, periodic) or one particle's x (nm)."""

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

    def force(self) -> object:
        """The OpenMM bias 0.5 k (q - q0)^2 with q0 and k as global parameters, so one Context
        serves every window."""
        import openmm

        if self.kind == "torsion":
            f = openmm.CustomTorsionForce(
                f"0.5*{STIFFNESS}*dq^2; dq = min(dt, 2*pi - dt); dt = abs(theta - {CENTRE}); pi = {math.pi!r}")
            f.addTorsion(*self.atoms, [])
        else:
            f = openmm.CustomExternalForce(f"0.5*{STIFFNESS}*(x - {CENTRE})^2")
            f.addParticle(self.atoms[0], [])
        f.addGlobalParameter(CENTRE, 0.0)
        f.addGlobalParameter(STIFFNESS, 0.0)
        return f


def torsion_coordinate(atoms: tuple[int, int, int, int]) -> BiasCoordinate:
    return BiasCoordinate("torsion", tuple(atoms))


def x_coordinate(particle: int) -> BiasCoordinate:
    return BiasCoordinate("x", (int(particle),))


@dataclass(frozen=True)
class UmbrellaPlan:
    centres: tuple[float, ...]        # window centres (radians for a torsion, nm for x), in sweep order
    stiffness: float                  # kJ/mol per rad^2 (torsion) or per nm^2 (x)
    temperature: float                # K
    ps_per_window: float              # sampled MD per window, after its equilibration
    equilibration_ps: float           # MD per window before sampling (from the previous window's end)
    sample_every: int                 # MD steps between samples, and between exchange attempts
    timestep_fs: float
    friction_per_ps: float = 1.0
    platform: str = "Reference"
    seed: int = 1

    @property
    def steps_per_window(self) -> int:
        return max(1, round(self.ps_per_window * 1000.0 / self.timestep_fs))

    @property
    def equilibration_steps(self) -> int:
        return max(0, round(self.equilibration_ps * 1000.0 / self.timestep_fs))


@dataclass
class UmbrellaResult:
    population: float                 # of the region, unbiased, at plan.temperature
    se: float                         # jackknife over blocks of time (mbar_population)
    samples: list[int]                # per window, what was recorded
    total_ns: float                   # all MD, equilibration included
    energy_evals: int                 # one force evaluation per MD step
    exchange_acceptance: np.ndarray   # per neighbour pair of windows
    values: list[np.ndarray] = field(default_factory=list)   # per window, the recorded coordinate


def windows_around(n: int) -> tuple[float, ...]:
    """n torsion centres spaced evenly round the circle, in sweep order from -π."""
    return tuple(-math.pi + (i + 0.5) * 2.0 * math.pi / n for i in range(n))


@dataclass
class WindowSamples:
    values: list[np.ndarray]          # per window, the coordinate after every round
    exchange_acceptance: np.ndarray   # per neighbour pair (window i, i + 1; the last pair closes a torsion's ring)
    md_steps: int                     # all windows together, staging included


def _biased_replica(xml: str, plan: UmbrellaPlan, seed: int) -> LangevinReplica:
    replica = LangevinReplica(xml, plan.temperature, plan.timestep_fs, plan.friction_per_ps, plan.platform, seed)
    replica.context.setParameter(STIFFNESS, float(plan.stiffness))
    return replica


def _state(replica: LangevinReplica) -> tuple[np.ndarray, np.ndarray]:
    # Positions and velocities only: asking for the energy would cost a force evaluation.
    st = replica.context.getState(getPositions=True, getVelocities=True)
    return (np.array(st.getPositions(asNumpy=True)._value, dtype=np.float64),
            np.array(st.getVelocities(asNumpy=True)._value, dtype=np.float64))


def sample_windows(system_xml: str, coordinate: BiasCoordinate, start: np.ndarray, plan: UmbrellaPlan
                   ) -> WindowSamples:
    """Replica-exchange umbrella sampling: every window runs at once and neighbours swap
    configurations after each round of `sample_every` steps.

    Windows run one after another would each keep whatever slow orthogonal state they inherited
    (ψ of alanine dipeptide at φ ≈ 0 differs by the side the sweep came from, and sweeps up and
    down φ then disagreed by 6 standard errors); with exchanges a configuration travels along
    the windows, round the ring for a torsion, and those states mix. One staging sweep, from
    `start` through the windows in order with `equilibration_ps` in each, gives each window its
    first configuration. The bias is the only term that differs between windows, so an exchange
    needs no force-field energy.
    """
    import openmm

    system = openmm.XmlSerializer.deserialize(system_xml)
    system.addForce(coordinate.force())
    xml = openmm.XmlSerializer.serialize(system)
    rng = np.random.default_rng(plan.seed)
    walker = _biased_replica(xml, plan, plan.seed)
    walker.set_state(np.asarray(start, dtype=np.float64), maxwell_boltzmann(walker.masses, plan.temperature, rng))
    starts = []
    for centre in plan.centres:
        walker.context.setParameter(CENTRE, float(centre))
        walker.step(max(1, plan.equilibration_steps))
        starts.append(_state(walker))
    del walker
    replicas = []
    for k, (centre, (x, v)) in enumerate(zip(plan.centres, starts, strict=True)):
        r = _biased_replica(xml, plan, plan.seed + 1 + k)
        r.context.setParameter(CENTRE, float(centre))
        r.set_state(x, v)
        replicas.append(r)
    n_windows = len(replicas)
    ring = coordinate.periodic and n_windows > 2
    pairs = [(i, i + 1) for i in range(n_windows - 1)] + ([(n_windows - 1, 0)] if ring else [])
    accepted = np.zeros(len(pairs))
    attempted = np.zeros(len(pairs))
    rounds = max(1, plan.steps_per_window // plan.sample_every)
    values = np.empty((n_windows, rounds))
    centres = np.asarray(plan.centres, dtype=np.float64)
    b = beta(plan.temperature)

    def bias(q: float, k: int) -> float:
        return float(0.5 * plan.stiffness * coordinate.displacement(np.array([q]), centres[k])[0] ** 2)

    for t in range(rounds):
        states = []
        for r in replicas:
            r.step(plan.sample_every)
            states.append(_state(r))
        q = [float(coordinate.values(x)[0]) for x, _ in states]
        values[:, t] = q
        # Even pairs on even rounds, odd ones on odd rounds: no window is in two attempts at once.
        for p in range(t % 2, len(pairs), 2):
            i, j = pairs[p]
            if p == len(pairs) - 1 and ring and len(pairs) % 2 == 1:
                continue   # an odd ring's closing pair shares a window with the first pair
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


def mbar_population(coordinate: BiasCoordinate, plan: UmbrellaPlan, values: Sequence[np.ndarray],
                    region: Callable[[np.ndarray], np.ndarray], blocks: int = JACKKNIFE_BLOCKS,
                    per_window: int = MAX_PER_WINDOW) -> tuple[float, float]:
    """The unbiased population of `region` (a predicate on coordinate values) from the windows'
    samples [window][round], and its standard error.

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
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in values])
    stacked = stacked[:, :: max(1, stacked.shape[1] // per_window)]
    centres = np.asarray(plan.centres, dtype=np.float64)

    def estimate(q_kt: np.ndarray, f_k: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        q = q_kt.ravel()
        u_kn = np.stack([b * 0.5 * plan.stiffness * coordinate.displacement(q, c) ** 2 for c in centres])
        mbar = MBAR(u_kn, np.full(len(centres), q_kt.shape[1]), initial_f_k=f_k)
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


def umbrella_population(system_xml: str, coordinate: BiasCoordinate, start: np.ndarray, plan: UmbrellaPlan,
                        region: Callable[[np.ndarray], np.ndarray]) -> UmbrellaResult:
    windows = sample_windows(system_xml, coordinate, start, plan)
    population, se = mbar_population(coordinate, plan, windows.values, region)
    return UmbrellaResult(population=population, se=se,
                          samples=[len(v) for v in windows.values], total_ns=windows.md_steps * plan.timestep_fs * 1e-6,
                          energy_evals=windows.md_steps, exchange_acceptance=windows.exchange_acceptance,
                          values=windows.values)
