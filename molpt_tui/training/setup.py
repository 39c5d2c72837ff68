"""What a training run is built from, shared by preflight and the trainer.

Preflight calls the cheap checks (`resolve_device`, `check_representation`, `split_data`) before
anything is written, then `build_setup` (the energy engine and the energies of the data); the
trainer is handed the resulting `TrainingSetup` and builds nothing that can fail on input. Each
rule (the split, its error, the device check) therefore exists once.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import torch

from ..errors import UserError
from ..physics.engines import EngineChoice, check_device, make_engine
from ..physics.units import beta
from .events import DataReport

if TYPE_CHECKING:
    from ..config import Config
    from ..flows.base import Transform
    from ..flows.cartesian import AlignedCartesian
    from ..flows.internal import ICRepresentation
    from ..flows.transport import Transport
    from ..physics.data import ReplicaData
    from ..physics.engine_protocol import EnergyEngine
    from ..physics.systems import MolecularSystem

# Energies of the data are evaluated in chunks of this many configurations (memory, not speed).
_ENERGY_CHUNK = 1024


def resolve_device(requested: str, key: str = "training.device") -> torch.device:
    """`training.device` as a torch device; one UserError line naming ``key`` (or the flag that
    set it) when it cannot be used here (meta, mps, CUDA without a GPU, cuda:N beyond the GPUs)."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(requested, key)
    return torch.device(requested)


# --- data ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataSplit:
    """The three splits, configurations per temperature, [M, N, 3] float64 nm.

    training (gradients) and validation (selects best.pt, drives alerts) are disjoint parts of
    the same trajectories, validation in blocks spread over them (`validation_indices`); test is
    an independent replica-exchange run with another seed (`data.test_path`), never used to train
    or select; None where there is no test file.
    """

    cold_train: torch.Tensor
    hot_train: torch.Tensor
    cold_val: torch.Tensor
    hot_val: torch.Tensor
    cold_test: torch.Tensor | None = None
    hot_test: torch.Tensor | None = None
    test_path: str = ""
    val_held: int = 0      # pairs held out for validation (cold_val/hot_val: the evaluated ones)
    val_blocks: int = 0    # the blocks they are held out as
    # What preflight found about the data files (independent samples); the trainer emits them.
    reports: tuple[DataReport, ...] = ()

    @property
    def n_train_pairs(self) -> int:
        return min(len(self.cold_train), len(self.hot_train))

    @property
    def has_test(self) -> bool:
        return self.cold_test is not None and self.hot_test is not None


@dataclass(frozen=True)
class Pairs:
    """Configurations of one split paired by index (x_i cold, y_i hot, both in MD time order)
    with their own energies U(x), U(y) (kJ/mol)."""

    cold: torch.Tensor
    hot: torch.Tensor
    u_cold: torch.Tensor
    u_hot: torch.Tensor

    def __len__(self) -> int:
        return min(len(self.cold), len(self.hot))


def _at(data: ReplicaData, cfg: Config, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        return torch.from_numpy(data.at(cfg.temperatures.cold)), torch.from_numpy(data.at(cfg.temperatures.hot))
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def n_validation_blocks(n_val: int, wanted: int) -> int:
    """The blocks `n_val` held-out samples are split into: at most one per sample."""
    return max(1, min(wanted, n_val))


def validation_indices(n: int, n_val: int, n_blocks: int, n_eval: int) -> tuple[list[int], list[int]]:
    """Which of `n` time-ordered samples train and which validate, in time order.

    The `n_val` held out are `n_blocks` contiguous blocks, each the end of one of as many equal
    segments of the trajectory, so that validation sees every stretch of the run: the end of a
    trajectory alone can sit in one state of a slow torsion and misjudge every epoch. Blocks stay
    contiguous (not a random split) so that they share states with training only at their edges.
    Of each block its last samples are evaluated, `n_eval` in all, spread over the blocks.
    """
    blocks = n_validation_blocks(n_val, n_blocks)
    sizes = [n_val // blocks + (1 if b < n_val % blocks else 0) for b in range(blocks)]
    evals = [n_eval // blocks + (1 if b < n_eval % blocks else 0) for b in range(blocks)]
    held: list[int] = []
    val: list[int] = []
    for b in range(blocks):
        end = round((b + 1) * n / blocks)
        block = list(range(end - sizes[b], end))
        held += block
        val += block[len(block) - min(evals[b], len(block)):]
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], val


def split_data(cfg: Config, data: ReplicaData, test: ReplicaData | None = None,
               test_path: Path | None = None) -> DataSplit:
    """Training and validation from the same trajectories (`validation_indices`); at most
    `logging.eval_samples` validation pairs are evaluated. `test`, the independent run, is used
    whole."""
    cold, hot = _at(data, cfg, cfg.data_path)
    n = min(len(cold), len(hot))
    n_val = max(2, round(n * cfg.data.validation_fraction))
    if n - n_val < 2:
        raise UserError(f"{cfg.data_path}: only {n} samples per temperature; need more (data.n_samples)")
    n_eval = min(cfg.logging.eval_samples, n_val)
    train, val = validation_indices(n, n_val, cfg.data.validation_blocks, n_eval)
    blocks = n_validation_blocks(n_val, cfg.data.validation_blocks)
    cold_test = hot_test = None
    where = test_path or cfg.test_data_path
    if test is not None:
        cold_test, hot_test = _at(test, cfg, where)
        m = min(len(cold_test), len(hot_test))
        if m < 2:
            raise UserError(f"{where}: only {m} test samples per temperature; need more (data.test_fraction)")
        cold_test, hot_test = cold_test[:m], hot_test[:m]
    t, v = torch.tensor(train), torch.tensor(val)
    return DataSplit(cold_train=cold[t], hot_train=hot[t], cold_val=cold[v], hot_val=hot[v],
                     cold_test=cold_test, hot_test=hot_test, test_path=str(where) if test is not None else "",
                     val_held=n_val, val_blocks=blocks)


# Rule of thumb for "too few samples for the flow's size": independent samples (of the slowest
# backbone torsion) per trainable parameter. Calibrated on issue 13's ala2 300<->1000 K runs, where
# a 0.54 M-parameter flow overfitted 10,000 samples and had equal training and held-out KL on
# 20,000; below it, expect the validation KL to rise while the training KL falls.
PARAMS_PER_INDEPENDENT_SAMPLE = 100.0


def sized_report(report: DataReport, n_params: int) -> DataReport:
    """`report` with the independent samples a flow of `n_params` wants, and (when the file
    holds fewer) the data.n_samples that would give them at the file's autocorrelation."""
    needed = math.ceil(n_params / PARAMS_PER_INDEPENDENT_SAMPLE)
    suggested = 0
    if math.isfinite(report.n_independent) and 0 < report.n_independent < needed:
        per_sample = report.n_independent / max(1, report.n_samples)
        suggested = int(math.ceil(needed / per_sample / 1000.0) * 1000)
    return dataclasses.replace(report, needed=needed, suggested_n_samples=suggested)


# --- the map --------------------------------------------------------------------------------------

def _representation(cfg: Config, ms: MolecularSystem, kind: str | None = None) -> ICRepresentation | AlignedCartesian:
    """The coordinate representation from the topology alone (not fitted)."""
    fixed = ms.hydrogen_bonds() if cfg.data.constraints == "hbonds" else []
    if (kind or cfg.model.representation) == "internal":
        from ..flows.internal import ICRepresentation

        return ICRepresentation.from_topology(ms.n_atoms, ms.bonds, ms.elements, fixed_bonds=fixed)
    from ..flows.cartesian import AlignedCartesian

    return AlignedCartesian.from_topology(ms.n_atoms, ms.bonds, ms.elements, fixed_bonds=fixed)


def check_representation(cfg: Config, ms: MolecularSystem) -> None:
    """Whether the representation can be built for this molecule, from its topology alone, so a
    molecule too small (or not bonded enough) is refused before any data are simulated."""
    try:
        _representation(cfg, ms)
    except UserError as exc:  # TopologyError, FixedBondsUnsupported
        wanted = cfg.model.representation
        if wanted == "cartesian" and cfg.data.constraints == "hbonds":
            raise UserError(f"{cfg.pdb_path}: model.representation = \"cartesian\" cannot hold the constrained X-H "
                            f"bonds of data.constraints = \"hbonds\" ({exc}); use model.representation = "
                            "\"internal\" or data.constraints = \"none\"") from None
        other = "cartesian" if wanted == "internal" else "internal"
        try:
            _representation(cfg, ms, other)
            fix = f'use model.representation = "{other}", or a larger molecule'
        except UserError:
            fix = "use a larger molecule: both representations need a bonded chain of at least 3 atoms"
        raise UserError(f"{cfg.pdb_path}: model.representation = \"{wanted}\" cannot be built for this "
                        f"molecule ({exc}); {fix}") from None


def check_flow_compile(cfg: Config, device: torch.device) -> None:
    """`training.compile_flow = true` needs spline transforms to compile and a compiler for the
    device; refused here, before anything is written, rather than discovered mid-run."""
    if not cfg.training.compile_flow:
        return
    if cfg.model.transform != "spline":
        raise UserError(f'training.compile_flow = true compiles the spline kernels, and model.transform = '
                        f'"{cfg.model.transform}" has none; set training.compile_flow = false')
    from ..physics.torch_energy import compiler_available

    usable, why_not = compiler_available(device)
    if not usable:
        raise UserError(f"training.compile_flow = true but {why_not}; install one or set training.compile_flow = false")


def build_transport(cfg: Config, ms: MolecularSystem, cold: torch.Tensor, hot: torch.Tensor) -> Transport:
    """Representation fitted on the data, harmonic start map, learned flow at the identity."""
    from ..flows.harmonic import HarmonicTemperatureMap
    from ..flows.model import FlowModel
    from ..flows.transport import Transport

    m = cfg.model
    rep = _representation(cfg, ms).double()
    rep.fit(torch.cat([cold, hot]))
    harmonic: Transform | None = None
    with torch.no_grad():
        z_cold, _ = rep(cold)
    if m.harmonic_init:
        harmonic = HarmonicTemperatureMap(rep.layout, z_cold.float(), cfg.temperatures.cold, cfg.temperatures.hot,
                                          narrow_torsion_std=m.narrow_torsion_std)
    if m.two_state_min_mass > 0:
        from ..flows.base import Composite
        from ..flows.torsion_marginals import MarginalTorsionMap

        with torch.no_grad():
            z_hot, _ = rep(hot)
            source = harmonic(z_cold.float())[0].double() if harmonic is not None else z_cold
        marginals = MarginalTorsionMap(rep.layout, source, z_hot, m.two_state_min_mass)
        if marginals.n_dims:
            harmonic = marginals if harmonic is None else Composite(harmonic=harmonic, marginals=marginals)
    flow = FlowModel(rep.layout, conditioner=m.conditioner, transform=m.transform, n_layers=m.n_layers,
                     hidden=m.hidden, n_heads=m.n_heads, n_blocks=m.n_blocks, n_bins=m.n_bins,
                     tail_bound=m.tail_bound, max_log_scale=m.max_log_scale)
    return Transport(rep, harmonic, flow)


# --- energies -------------------------------------------------------------------------------------

@dataclass
class TrainingSetup:
    """Everything a run needs that is not training state. Owns the engine: `close()` it (or use
    `with`), whoever built it."""

    ms: MolecularSystem
    choice: EngineChoice
    device: torch.device          # where the flow trains
    split: DataSplit
    beta_cold: float              # 1/kT, mol/kJ
    beta_hot: float
    # U of the data themselves (kJ/mol, float64, CPU): the acceptance needs U(x), U(y); the KL
    # estimate subtracts beta U of the very batch samples, which cancels most of its noise.
    u_cold_train: torch.Tensor
    u_hot_train: torch.Tensor
    u_cold_val: torch.Tensor
    u_hot_val: torch.Tensor
    u_cold_test: torch.Tensor | None = None
    u_hot_test: torch.Tensor | None = None

    @property
    def validation(self) -> Pairs:
        s = self.split
        return Pairs(s.cold_val, s.hot_val, self.u_cold_val, self.u_hot_val)

    @property
    def test(self) -> Pairs | None:
        """The independent test pairs; None without a test file."""
        s = self.split
        if s.cold_test is None or s.hot_test is None or self.u_cold_test is None or self.u_hot_test is None:
            return None
        return Pairs(s.cold_test, s.hot_test, self.u_cold_test, self.u_hot_test)

    @property
    def engine(self) -> EnergyEngine:
        return self.choice.engine

    @property
    def engine_reason(self) -> str:
        """Read when asked: a torch engine whose compiler fails on first use says so here."""
        return self.choice.reason

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """U(x) [B] in kJ/mol on the training device, differentiable."""
        engine = self.engine
        return engine.energy(x.to(device=engine.device, dtype=torch.float64)).to(self.device)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> TrainingSetup:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def build_setup(cfg: Config, ms: MolecularSystem, split: DataSplit, device: torch.device,
                log: Callable[[str], None], *, worker_cpus: int | None = None) -> TrainingSetup:
    """The energy engine (compiled now, announced through `log`, so the first epoch's time and
    ETA do not include the wait) and the energies of the data. Closes the engine on failure.
    `worker_cpus`: the CPUs an OpenMM bridge may give worker processes (the app's thread plan)."""
    engine_device = str(device) if device.type == "cuda" else "cpu"
    choice = make_engine(ms, cfg.energy.engine, cfg.energy.platform, cfg.energy.n_workers,
                         cfg.training.batch_size, engine_device, cfg.energy.compile,
                         cfg.energy.precision, log=log, worker_cpus=worker_cpus)
    engine = choice.engine
    try:
        engine.warm_up(split.cold_train[: cfg.training.batch_size], log)

        def energies(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([engine.energy(x[i:i + _ENERGY_CHUNK].to(engine.device)).double().cpu()
                                  for i in range(0, len(x), _ENERGY_CHUNK)])

        has_test = split.cold_test is not None and split.hot_test is not None
        return TrainingSetup(
            ms=ms, choice=choice, device=device, split=split,
            beta_cold=beta(cfg.temperatures.cold), beta_hot=beta(cfg.temperatures.hot),
            u_cold_train=energies(split.cold_train), u_hot_train=energies(split.hot_train),
            u_cold_val=energies(split.cold_val), u_hot_val=energies(split.hot_val),
            u_cold_test=energies(split.cold_test) if has_test and split.cold_test is not None else None,
            u_hot_test=energies(split.hot_test) if has_test and split.hot_test is not None else None,
        )
    except BaseException:
        engine.close()
        raise
