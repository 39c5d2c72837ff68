"""Typed events the trainer emits; every sink (console, JSONL log, TUI) consumes these.

The JSONL metrics log is these events, one per line, so ``watch RUN_DIR`` and ``plot RUN_DIR``
rebuild exactly what a live sink saw. Keep fields JSON-native (str, int, float, bool, None,
lists and dicts of those). Non-finite floats are written as the strings "nan", "inf", "-inf"
so the log stays strict JSON.
"""
from __future__ import annotations

import dataclasses
import math
import time
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

SCHEMA_NAME = "molpt-tui.metrics"
SCHEMA_VERSION = 1

# How a run segment ended. "ui-crashed": the monitor died and took the trainer down with it,
# which must never read as a user stop.
EARLY_END = "ended early"   # how a Finished message of a training.patience stop begins
RunStatus = Literal["completed", "stopped", "failed", "diverged", "ui-crashed"]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
Severity = Literal["info", "warning", "error"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
CheckpointLabel = Literal["last", "best", "final", "manual"]
# Requests a viewer can send a trainer through the run directory's control channel.
ControlAction = Literal["pause", "resume", "checkpoint", "png", "stop"]
CONTROL_ACTIONS: tuple[str, ...] = get_args(ControlAction)


class EventDecodeError(ValueError):
    """A metrics line that is valid JSON but not a valid event (wrong kind or field types)."""


@dataclass
class Event:
    kind: ClassVar[str] = "event"
    t: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind}
        for f in dataclasses.fields(self):
            out[f.name] = _encode(getattr(self, f.name))
        return out


@dataclass
class RunStarted(Event):
    """First event of a run (and of every resumed segment)."""

    kind: ClassVar[str] = "run_started"
    run_dir: str
    preset: str
    model: str                 # e.g. "transformer flow (internal coordinates)"
    t_cold: float              # K
    t_hot: float               # K
    epochs: int                # total epochs planned
    batch_size: int
    lr: float
    device: str
    n_params: int
    engine: str                # energy engine actually used, e.g. "openmm (Reference, 2 workers)"
    engine_reason: str = ""
    steps_per_epoch: int = 1
    start_epoch: int = 0       # >0 when resumed: the epochs before it are already in the log
    resumed: bool = False
    # How the trainer uses its CPUs (app.resources): the budget, where it came from, its split.
    cpus: int = 0                  # CPUs this process may use (0: not recorded)
    cpus_source: str = ""          # e.g. "SLURM_CPUS_PER_TASK=4", "--threads 2", "affinity mask"
    torch_threads: int = 0         # torch intra-op threads
    torch_interop_threads: int = 0
    energy_workers: int = 0        # OpenMM worker processes (0: energies in the trainer process)
    threads_reason: str = ""       # e.g. "2 CPUs from --threads 2; torch 2 threads, OpenMM energies in-process"
    # Under SLURM ("" / NaN / 0 otherwise): the job, when its allocation ends, its requeues so far.
    slurm_job_id: str = ""
    slurm_end_time: float = math.nan   # Unix time the allocation ends (squeue %e, else start + time limit)
    slurm_restart_count: int = 0       # SLURM_RESTART_COUNT
    # Data-parallel training (training.distributed): each rank trains batch_size pairs a step.
    world_size: int = 1
    dist_backend: str = ""         # "gloo" or "nccl"; "" for one process
    warmup_epochs: int = 0     # training.warmup_epochs
    data_samples: int = 0      # samples per temperature in the training data file (data.n_samples)
    # The three splits, pairs per temperature (0: not recorded): validation is held out as
    # val_blocks blocks over the trajectories, of which val_evaluated pairs are evaluated.
    train_pairs: int = 0
    val_held: int = 0
    val_blocks: int = 0
    val_evaluated: int = 0
    test_pairs: int = 0
    # The run's [alerts] thresholds (config.AlertThresholds fields, by name): the checklist and
    # any reader of the log judge the run by its own limits, not the defaults.
    alert_keys: list[str] = field(default_factory=list)
    alert_values: list[float] = field(default_factory=list)


@dataclass
class EpochMetrics(Event):
    """Training metrics of one epoch (means over its steps). Energies are beta*U in kT."""

    kind: ClassVar[str] = "epoch"
    epoch: int                 # 1-based
    loss: float
    fwd_energy: float          # E_x~cold[ beta_hot U(T x) ]
    fwd_logdet: float          # E_x~cold[ log|det J_T(x)| ]
    inv_energy: float          # E_y~hot[ beta_cold U(T^-1 y) ]
    inv_logdet: float          # E_y~hot[ log|det J_T^-1(y)| ]
    lr: float
    grad_norm: float = math.nan
    n_regularised: int = 0     # energies above the regularisation threshold this epoch
    n_nonfinite: int = 0       # non-finite energies this epoch
    seconds: float = math.nan  # wall time of the epoch
    kl: float = math.nan       # KL_fwd + KL_inv estimate (kT): the loss above its floor, paired per sample
    # Training cost in the field's unit: target energy evaluations U(T x), U(T^-1 y).
    energy_evals: int = 0          # by this epoch's training steps (2 x batch per step)
    energy_evals_total: int = 0    # by the run so far: every step, evaluation and epoch-0 batch
    elapsed_s: float = math.nan    # training wall time of the run so far (all segments)


@dataclass
class LogBlock(Event):
    """An epoch on the adaptive logging schedule, with held-out evaluation."""

    kind: ClassVar[str] = "log_block"
    epoch: int
    loss: float
    fwd_energy: float
    fwd_logdet: float
    inv_energy: float
    inv_logdet: float
    lr: float
    improvement_pct: float     # reduction of the held-out KL (loss above its floor) since epoch 0, in %
    acc_flow: float = math.nan     # flow-swap acceptance on held-out pairs
    acc_naive: float = math.nan    # naive swap acceptance on the same pairs
    ess_fwd: float = math.nan      # % ESS of importance weights, cold -> hot
    ess_inv: float = math.nan      # % ESS, hot -> cold
    roundtrip_err: float = math.nan  # max |T^-1(T(x)) - x| on held-out data
    kl: float = math.nan           # KL_fwd + KL_inv estimate of the epoch (kT)
    kl_val: float = math.nan       # the same on the held-out pairs: rises when the flow overfits
    # Standard errors by block bootstrap over the validation time series (samples are
    # consecutive MD frames, so treating them as independent would understate them).
    acc_flow_se: float = math.nan
    acc_naive_se: float = math.nan
    ess_fwd_se: float = math.nan
    ess_inv_se: float = math.nan
    kl_val_se: float = math.nan
    n_regularised: int = 0         # energies above training.energy_reg_kt in this epoch's steps
    n_nonfinite: int = 0           # energies left out of this epoch's loss as non-finite
    energy_evals_total: int = 0    # target energy evaluations of the run so far


@dataclass
class Alert(Event):
    kind: ClassVar[str] = "alert"
    epoch: int
    rule: str                  # stable identifier, e.g. "inverse_diverging"
    severity: Severity
    message: str
    hint: str
    command: str = ""          # the command that does what the hint says, for this run ("" when none)


@dataclass
class Message(Event):
    """Free text for the log pane: data generated, resumed, engine chosen, ..."""

    kind: ClassVar[str] = "message"
    text: str
    level: Severity = "info"


@dataclass
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint"
    epoch: int
    path: str
    label: CheckpointLabel = "last"


@dataclass
class Finished(Event):
    """Last event of a run segment."""

    kind: ClassVar[str] = "finished"
    status: RunStatus
    epoch: int
    files: list[str] = field(default_factory=list)
    message: str = ""
    best_loss: float = math.nan        # training loss of the selected epoch (not a "best" of the loss)
    improvement_pct: float = math.nan  # best_score against start_score in %; NaN where a % means nothing
    # The final model (molecular_pt_<Tc>_<Th>.pt) holds the weights of best_epoch, selected on
    # best_metric ("validation KL"; "training loss" only when no KL was finite).
    best_epoch: int = -1
    best_score: float = math.nan       # kT
    best_metric: str = ""
    start_score: float = math.nan      # the same metric for the untrained map (epoch 0)
    final_model: str = ""              # path of the final model file ("" when none was written)
    verdict: str = ""                  # why the run diverged ("" unless status is "diverged")
    energy_evals: int = 0              # target energy evaluations of the whole run
    elapsed_s: float = math.nan        # training wall time of the whole run
    resume_command: str = ""           # how to continue this run, with its directory filled in


@dataclass
class RequestAcknowledged(Event):
    """The trainer acted on a control request; every viewer of the run sees it in the log."""

    kind: ClassVar[str] = "ack"
    request_id: str            # as written by the sender ("" for in-process requests: keys, signals)
    action: ControlAction
    epoch: int                 # last completed epoch when the request was handled
    detail: str = ""           # e.g. the checkpoint path written


@dataclass
class SystemStats(Event):
    """The trainer process as the system sees it, every few seconds (training.system_stats).
    NaN where a figure cannot be read here (no psutil; GPU figures without a CUDA device or
    without nvidia-ml-py)."""

    kind: ClassVar[str] = "system"
    cpu_pct: float = math.nan          # the trainer and its worker processes, 100 = one CPU busy
    threads: int = 0                   # threads of the trainer process
    rss_mb: float = math.nan           # resident memory of the trainer and its workers (MiB)
    energy_evals: int = 0              # target energy evaluations by this trainer process so far
    energy_evals_per_s: float = math.nan   # over the last interval
    cpus: int = 0                      # CPUs the trainer may use (RunStarted.cpus): cpu_pct / cpus is its share
    interval_s: float = math.nan       # since the previous sample
    gpu_util_pct: float = math.nan     # of the training device (NVML)
    gpu_mem_used_mb: float = math.nan  # on the device, by every process (NVML)
    gpu_mem_total_mb: float = math.nan
    gpu_torch_mem_mb: float = math.nan  # reserved by this trainer's torch allocator


# --- flow-enhanced parallel tempering (`molpt-tui pt`) ----------------------------------------

# "flow": two replicas exchanged through the trained map; "ladder": the preset's full
# temperature ladder with naive neighbour swaps (the baseline, run side by side).
PTSampler = Literal["flow", "ladder"]


@dataclass
class PTStarted(Event):
    """First event of a `pt` run (and of every resumed segment)."""

    kind: ClassVar[str] = "pt_started"
    run_dir: str               # the pt directory
    source_run: str            # the training run whose map is used
    model_path: str            # the checkpoint the map was loaded from
    model_epoch: int           # its training epoch
    system: str
    t_cold: float              # K
    t_hot: float               # K
    swap_every: int            # MD steps between swap attempts
    timestep_fs: float
    planned_ns: float          # MD time per replica of the flow sampler
    platform: str              # OpenMM platform of the MD
    seed: int
    ladder: list[float] = field(default_factory=list)  # the baseline's temperatures (K); empty: no baseline
    ladder_planned_ns: float = math.nan  # MD time per replica of the ladder (same total MD time)
    states: list[str] = field(default_factory=list)    # backbone states of PTProgress.populations; empty: no peptide
    rama_label: str = ""       # the (phi, psi) pair the states are of, e.g. "ALA2"
    # The map checked before sampling: held-out acceptance as training logged it at the model's
    # epoch, and the same pairs recomputed here with the loaded map and the MD force field.
    train_acc_flow: float = math.nan
    check_acc_flow: float = math.nan
    check_acc_flow_se: float = math.nan
    start_ns: float = 0.0      # > 0 when resumed
    resumed: bool = False


@dataclass
class PTProgress(Event):
    """Where one sampler stands. Acceptances are mean(min(1, exp Delta)) over the swap attempts
    so far, with standard errors from batch means (consecutive attempts are correlated);
    populations are fractions of the cold replica's samples, with batch-means errors."""

    kind: ClassVar[str] = "pt_progress"
    sampler: PTSampler
    ns: float                  # MD time per replica so far
    planned_ns: float          # per replica
    total_ns: float            # MD time of all replicas together
    ns_per_day: float          # per replica, wall time of this segment
    energy_evals: int          # every energy/force evaluation so far: MD steps, state reads, proposals
    attempts: int              # swap attempts (ladder: all neighbour pairs)
    accepted: int
    acc: float                 # flow: flow-swap acceptance; ladder: over all neighbour pairs
    acc_se: float
    acc_naive: float = math.nan     # flow only: the naive swap of the same pairs
    acc_naive_se: float = math.nan
    pair_acc: list[float] = field(default_factory=list)  # ladder: per neighbour pair, coldest first
    round_trips: int = 0
    round_trips_per_ns: float = math.nan  # per ns of MD per replica
    samples: int = 0           # cold samples so far
    populations: list[float] = field(default_factory=list)     # PTStarted.states, in order
    populations_se: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0     # wall time of this segment
    eta_s: float = math.nan
    map_share: float = math.nan  # flow: share of the sampler's wall time spent in T and T^-1


@dataclass
class StepProgress(Event):
    """Where the current epoch stands, emitted about every `logging.step_progress_s` of wall
    time (not every step). Loss, Fwd_E and Inv_E are running means over the epoch's good steps
    so far (kT); the ETA is the segment's mean time per step times the steps left."""

    kind: ClassVar[str] = "step"
    epoch: int                 # the epoch being trained (1-based)
    step: int                  # steps of it done
    steps_per_epoch: int
    epochs: int                # planned
    loss: float
    fwd_energy: float
    inv_energy: float
    lr: float
    n_regularised: int = 0     # this epoch so far
    n_nonfinite: int = 0
    epoch_seconds: float = 0.0     # wall time of this epoch so far
    segment_steps: int = 0         # steps done since this segment (start or resume) began
    segment_seconds: float = 0.0   # their wall time
    eta_s: float = math.nan        # seconds to the last planned epoch


@dataclass
class TestEvaluation(Event):
    """The map on the independent test set: a separate replica-exchange run with another seed,
    never used to train or select. Errors are block-bootstrap standard errors."""

    kind: ClassVar[str] = "test"
    epoch: int                 # epoch of the weights evaluated (0: the untrained map)
    label: Literal["untrained", "final"]
    n_pairs: int
    acc_flow: float
    acc_flow_se: float
    acc_naive: float
    acc_naive_se: float
    ess_fwd: float             # %
    ess_fwd_se: float
    ess_inv: float             # %
    ess_inv_se: float
    kl: float                  # KL_fwd + KL_inv on the test pairs (kT)
    kl_se: float = math.nan
    roundtrip_err: float = math.nan
    block: int = 1             # bootstrap block length (samples)
    path: str = ""             # the test data file


@dataclass
class DataReport(Event):
    """How much a data file holds of its slowest motions: integrated autocorrelation times of
    the backbone torsions (phi, psi, omega) at the cold and hot temperature, in samples, and the
    independent samples n / tau that follow; the smallest is what limits what a flow can learn."""

    kind: ClassVar[str] = "data_report"
    path: str
    split: str                 # "training data" or "test data"
    n_samples: int             # per temperature
    coordinates: list[str] = field(default_factory=list)   # e.g. "phi ALA2 @ 300 K"
    tau: list[float] = field(default_factory=list)         # samples, same order
    transitions: list[int] = field(default_factory=list)   # state changes of two-state torsions (-1: n/a)
    n_independent: float = math.nan    # min over coordinates of n / tau
    slowest: str = ""
    needed: int = 0                    # independent samples wanted for the flow's size
    suggested_n_samples: int = 0       # data.n_samples that would give them (0: enough already)


@dataclass
class DataProgress(Event):
    """Replica-exchange MD that `train` runs before training because its data file (or the
    independent test run) is missing: sent at each phase change and every few seconds, so that
    `watch` shows the data-generation phase. MD time is per replica (all advance in lockstep)."""

    kind: ClassVar[str] = "data_progress"
    split: Literal["data", "test"]   # the training data file, or the independent test run
    path: str                  # the file being made
    phase: str                 # "minimising", "equilibrating", "sampling", "writing", "written"
    simulated_ns: float        # per replica so far
    planned_ns: float          # equilibration + sampling, per replica
    samples: int               # saved per temperature so far
    planned_samples: int
    ns_per_day: float          # per replica since MD began; NaN before the first chunk
    elapsed_s: float
    eta_s: float = math.nan    # until the file is written; NaN until there is a rate
    temperatures: list[float] = field(default_factory=list)     # K, the ladder
    swap_acceptance: list[float] = field(default_factory=list)  # neighbour pairs (i, i+1); NaN before an attempt


@dataclass
class ValidationHistograms(Event):
    """What the map does to held-out samples, coarse enough for a terminal pane: histograms of
    beta*U (kT) of the samples of each temperature against the mapped samples of the other,
    and, for peptides, (phi, psi) densities. Sent at each evaluation beside the validation figure
    (RUN/validation_<Tc>_<Th>.png), so mode collapse shows while training. Counts are per bin;
    mapped values outside the reference's range are counted in `*_below` / `*_above` (an
    exploded energy is not a bin)."""

    kind: ClassVar[str] = "validation_hist"
    epoch: int
    split: str                 # the pairs the histograms are of: "validation"
    n_pairs: int
    # beta_hot U at t_hot: hot data y against T(x) of the cold data
    hot_edges: list[float] = field(default_factory=list)       # kT, len(bins) + 1
    hot_data: list[int] = field(default_factory=list)
    hot_mapped: list[int] = field(default_factory=list)
    hot_mapped_below: int = 0
    hot_mapped_above: int = 0  # includes non-finite energies
    # beta_cold U at t_cold: cold data x against T^-1(y) of the hot data
    cold_edges: list[float] = field(default_factory=list)
    cold_data: list[int] = field(default_factory=list)
    cold_mapped: list[int] = field(default_factory=list)
    cold_mapped_below: int = 0
    cold_mapped_above: int = 0
    # (phi, psi) densities on a rama_bins x rama_bins grid over [-180, 180) degrees, row-major
    # with phi along rows; empty without a peptide backbone
    rama_label: str = ""       # the residue of the (phi, psi) pair, e.g. "ALA2"
    rama_bins: int = 0
    rama_cold: list[int] = field(default_factory=list)         # cold data
    rama_hot_to_cold: list[int] = field(default_factory=list)  # T^-1(hot data)
    rama_hot: list[int] = field(default_factory=list)          # hot data
    rama_cold_to_hot: list[int] = field(default_factory=list)  # T(cold data)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls for cls in (RunStarted, EpochMetrics, LogBlock, Alert, Message, CheckpointSaved, Finished,
                              RequestAcknowledged, PTStarted, PTProgress, StepProgress, TestEvaluation, DataReport,
                              DataProgress, ValidationHistograms)
}

# Sampled beside the trainer's own events (training.system_stats).
EVENT_TYPES[SystemStats.kind] = SystemStats


def header_line() -> dict[str, Any]:
    return {"schema": SCHEMA_NAME, "version": SCHEMA_VERSION}


def _encode(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode_value(value: Any, tp: Any, name: str) -> Any:
    """Check one JSON value against the field's annotation; raise EventDecodeError if it is not."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise EventDecodeError(f"{name}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin is list:
        (inner,) = get_args(tp)
        if not isinstance(value, list):
            raise EventDecodeError(f"{name}: expected a list, got {type(value).__name__}")
        return [_decode_value(v, inner, name) for v in value]
    if tp is float:
        if isinstance(value, str) and value in ("nan", "inf", "-inf"):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EventDecodeError(f"{name}: expected a number, got {type(value).__name__}")
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise EventDecodeError(f"{name}: number out of range") from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EventDecodeError(f"{name}: expected an integer, got {type(value).__name__}")
        return value
    if tp is bool or tp is str:
        if not isinstance(value, tp):
            raise EventDecodeError(f"{name}: expected {tp.__name__}, got {type(value).__name__}")
        return value
    raise EventDecodeError(f"{name}: field type {tp!r} cannot be decoded")  # pragma: no cover - schema bug


_HINTS: dict[type[Event], dict[str, Any]] = {}


def _hints(cls: type[Event]) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from its JSON form, checking every field's type against the schema.

    Unknown keys are ignored (forward compatible); a missing field without a default, or a value
    of the wrong type, raises EventDecodeError.
    """
    kind = data.get("kind")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventDecodeError(f"unknown event kind {kind!r}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _decode_value(data[f.name], hints[f.name], f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise EventDecodeError(f"{kind}: missing field {f.name!r}")
    return cls(**kwargs)


class Sink:
    """Anything that consumes events: console reporter, JSONL log."""

    def emit(self, event: Event) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release what the sink holds; the default holds nothing."""
