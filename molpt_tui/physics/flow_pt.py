"""The physics of a parallel-tempering run in this process: Langevin replicas, the energies of
proposed configurations, Maxwell-Boltzmann velocities and replica round trips.

`pt` runs few, small replicas (two for a flow swap, a handful for the naive ladder), so each is
an OpenMM Context here rather than in a worker process (`replica_md`): a swap needs the state
of every replica anyway, and a Context in this process can be checkpointed with its integrator's
random state (OpenMM's `createCheckpoint`), so a resumed run continues the very same chain.
Nothing here knows about flows; the swap rules live in `training.pt`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError
from .units import KB_KJ_PER_MOL_K


@dataclass(frozen=True)
class ReplicaState:
    """Positions and energy after an MD chunk. Velocities are read only when wanted
    (`LangevinReplica.velocities`): a flow swap redraws them, so most rounds never need them."""

    positions: np.ndarray      # [N, 3] nm, float64
    energy: float              # potential energy, kJ/mol


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _platform_properties(platform: str) -> dict[str, str]:
    # One thread per Context: the replicas run one after another and the flow runs in between,
    # so more threads would only fight over the cores this process may use.
    return {"Threads": "1"} if platform == "CPU" else {}


class LangevinReplica:
    """Langevin MD (OpenMM's LangevinMiddleIntegrator) of `system_xml` at one temperature."""

    def __init__(self, system_xml: str, temperature: float, timestep_fs: float, friction_per_ps: float,
                 platform: str, seed: int) -> None:
        import openmm
        import openmm.unit as u

        self.temperature = float(temperature)
        self.platform = platform
        try:
            system = openmm.XmlSerializer.deserialize(system_xml)
            self.integrator = openmm.LangevinMiddleIntegrator(temperature * u.kelvin, friction_per_ps / u.picosecond,
                                                              timestep_fs * u.femtosecond)
            # OpenMM treats seed 0 as "pick one at random"; every seed here is >= 1 and reproducible.
            self.integrator.setRandomNumberSeed(int(seed) % (2**31 - 1) + 1)
            self.context = openmm.Context(system, self.integrator, openmm.Platform.getPlatformByName(platform),
                                          _platform_properties(platform))
        except Exception as exc:  # a registered platform without a usable device, a bad System
            raise UserError(f"data.platform = {platform}: OpenMM cannot run MD on it here ({_first_line(exc)}); "
                            "choose another data.platform (Reference always works)") from None
        self.masses = np.array([system.getParticleMass(i).value_in_unit(u.dalton)
                                for i in range(system.getNumParticles())])

    def set_state(self, positions: np.ndarray, velocities: np.ndarray) -> None:
        self.context.setPositions(np.asarray(positions, dtype=np.float64))
        self.context.setVelocities(np.asarray(velocities, dtype=np.float64))

    def step(self, n_steps: int) -> None:
        self.integrator.step(int(n_steps))

    def read(self) -> ReplicaState:
        st = self.context.getState(getPositions=True, getEnergy=True)
        return ReplicaState(positions=np.array(st.getPositions(asNumpy=True)._value, dtype=np.float64),
                            energy=float(st.getPotentialEnergy()._value))

    def velocities(self) -> np.ndarray:
        st = self.context.getState(getVelocities=True)
        return np.array(st.getVelocities(asNumpy=True)._value, dtype=np.float64)

    def checkpoint(self) -> bytes:
        """Positions, velocities and the integrator's random state, in OpenMM's platform format."""
        data: bytes = self.context.createCheckpoint()
        return data

    def restore(self, checkpoint: bytes) -> bool:
        """Continue from `checkpoint`; False when this platform cannot read it (another platform
        wrote it), in which case the caller sets positions and velocities instead."""
        try:
            self.context.loadCheckpoint(checkpoint)
        except Exception:  # OpenMM raises a plain Exception for a foreign checkpoint
            return False
        return True


class EnergyEvaluator:
    """U(x) in kJ/mol of configurations, from the same System and platform as the MD.

    A configuration OpenMM cannot evaluate (non-finite coordinates or energy) is +inf: a proposal
    there is rejected, never accepted on a NaN."""

    def __init__(self, system_xml: str, platform: str) -> None:
        from .openmm_platforms import make_context

        self.context = make_context(system_xml, platform)
        self.n_evaluations = 0

    def energies(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        out = np.empty(len(x))
        for i, conf in enumerate(x):
            self.n_evaluations += 1
            if not np.all(np.isfinite(conf)):
                out[i] = math.inf
                continue
            try:
                self.context.setPositions(conf)
                u = float(self.context.getState(getEnergy=True).getPotentialEnergy()._value)
            except Exception:  # OpenMM refuses some coordinates outright
                u = math.inf
            out[i] = u if math.isfinite(u) else math.inf
        return out


def maxwell_boltzmann(masses: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """Velocities [N, 3] (nm/ps) drawn at `temperature`; massless particles (virtual sites) stay at 0.

    kJ/mol per dalton is nm^2/ps^2 (OpenMM's unit system), so sigma = sqrt(k_B T / m) directly.
    """
    m = np.asarray(masses, dtype=np.float64)
    sigma = np.sqrt(np.where(m > 0, KB_KJ_PER_MOL_K * float(temperature) / np.where(m > 0, m, 1.0), 0.0))
    v: np.ndarray = rng.standard_normal((len(m), 3)) * sigma[:, None]
    return v


class RoundTrips:
    """Which walker (configuration lineage) sits at which temperature, and its trips.

    A walker makes a half trip when it reaches the end of the ladder opposite to the one it last
    visited; a round trip is two half trips (coldest -> hottest -> coldest, or the reverse).
    With two replicas every accepted swap is a half trip of both walkers."""

    def __init__(self, n_temps: int) -> None:
        self.n = n_temps
        self.walker_at = np.arange(n_temps)                      # slot -> walker
        self.last_end = np.full(n_temps, -1)                     # walker -> 0, n-1 or -1 (none yet)
        self.half_trips = np.zeros(n_temps, dtype=np.int64)      # walker -> count
        self._mark_ends()

    def _mark_ends(self) -> None:
        for end in (0, self.n - 1):
            w = self.walker_at[end]
            if self.last_end[w] != end:
                if self.last_end[w] >= 0:
                    self.half_trips[w] += 1
                self.last_end[w] = end

    def swap(self, i: int, j: int) -> None:
        self.walker_at[[i, j]] = self.walker_at[[j, i]]
        self._mark_ends()

    @property
    def round_trips(self) -> int:
        return int((self.half_trips // 2).sum())

    def state_dict(self) -> dict[str, Any]:
        return {"walker_at": self.walker_at.tolist(), "last_end": self.last_end.tolist(),
                "half_trips": self.half_trips.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        walker_at = np.asarray(state["walker_at"], dtype=np.int64)
        if sorted(walker_at.tolist()) != list(range(self.n)):
            raise ValueError(f"walker_at must be a permutation of 0..{self.n - 1}")
        last_end = np.asarray(state["last_end"], dtype=np.int64)
        half = np.asarray(state["half_trips"], dtype=np.int64)
        if last_end.shape != (self.n,) or half.shape != (self.n,):
            raise ValueError(f"last_end and half_trips must have {self.n} entries")
        self.walker_at, self.last_end, self.half_trips = walker_at, last_end, half
