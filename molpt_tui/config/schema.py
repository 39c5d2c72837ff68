"""The configuration schema: every TOML key, declared once (type, default, allowed values, doc)."""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .alerts import AlertThresholds
from .settings import setting

# Force fields are parametrised near room temperature; far above a few thousand kelvin MD
# breaks bonds the force field cannot break and writes exploded structures, and a typo such as
# 1e9 K would only show up hours later as NaN energies. 5000 K is far above any useful ladder.
T_MAX = 5000.0
# One replica per temperature runs in its own MD context; more than this is a typo, not a ladder.
MAX_REPLICAS = 64
# Counts of epochs, steps and samples: far beyond any real run, small enough to stay exact.
_COUNT = 10_000_000
# A test run smaller than this gives no error bar worth the name.
MIN_TEST_SAMPLES = 10
# Seeds go to OpenMM, whose random seeds are 32-bit signed integers.
_SEED_MAX = 2**31 - 1

Platform = Literal["Reference", "CPU", "CUDA", "OpenCL"]


@dataclass
class SystemConfig:
    pdb: str = field(default="structures/alanine_dipeptide.pdb", metadata=setting(
        min_len=1, doc="structure file; relative paths are relative to the preset file"))
    forcefield: list[str] = field(default_factory=lambda: ["amber96.xml"], metadata=setting(
        min_len=1, max_len=16, doc="OpenMM force-field XML files (bundled names or paths)"))
    name: str = field(default="", metadata=setting(max_len=200, doc="shown in banners; defaults to the PDB stem"))


@dataclass
class TemperatureConfig:
    cold: float = field(default=300.0, metadata=setting(gt=0, le=T_MAX, doc="K"))
    hot: float = field(default=450.0, metadata=setting(gt=0, le=T_MAX, doc="K"))
    ladder: list[float] = field(default_factory=list, metadata=setting(
        gt=0, le=T_MAX, max_len=MAX_REPLICAS, doc="replica-exchange ladder [K]; empty = geometric"))
    n_replicas: int = field(default=3, metadata=setting(ge=2, le=MAX_REPLICAS, doc="used when ladder is empty"))


@dataclass
class DataConfig:
    path: str = field(default="", metadata=setting(doc="default: data/<preset>.npz (relative to cwd)"))
    n_samples: int = field(default=5000, metadata=setting(ge=10, le=_COUNT, doc="saved samples per temperature"))
    stride: int = field(default=100, metadata=setting(ge=1, le=1_000_000, doc="MD steps between saved samples"))
    equilibration_ps: float = field(default=20.0, metadata=setting(
        ge=0, le=1e6, doc="MD before the first saved sample [ps]"))
    timestep_fs: float = field(default=1.0, metadata=setting(ge=0.01, le=5.0, doc="MD time step [fs]"))
    friction_per_ps: float = field(default=1.0, metadata=setting(gt=0, le=1e4, doc="Langevin friction [1/ps]"))
    constraints: Literal["none", "hbonds"] = field(default="none", metadata=setting(doc="bond constraints in MD"))
    swap_every: int = field(default=100, metadata=setting(
        ge=1, le=1_000_000, doc="MD steps between replica swap attempts"))
    platform: Platform = field(default="Reference", metadata=setting(doc="OpenMM platform for MD"))
    seed: int = field(default=2024, metadata=setting(ge=0, le=_SEED_MAX, doc="MD random seed"))
    validation_fraction: float = field(default=0.1, metadata=setting(
        ge=0.01, le=0.5, doc="share of the samples held out for validation"))
    validation_blocks: int = field(default=5, metadata=setting(
        ge=1, le=1000, doc="the validation share is held out as this many blocks spread evenly over "
                           "the trajectories (the end of each of as many segments); 1 = their end only"))
    test_fraction: float = field(default=0.25, metadata=setting(
        ge=0.0, le=10.0, doc="size of the independent test run (another seed) as a share of n_samples; "
                             "0 = no test set"))
    test_seed: int = field(default=0, metadata=setting(
        ge=0, le=_SEED_MAX, doc="MD random seed of the test run; 0 = data.seed + 1"))
    test_path: str = field(default="", metadata=setting(doc="default: <data.path without .npz>.test.npz"))


@dataclass
class EnergyConfig:
    engine: Literal["auto", "openmm", "torch"] = field(default="auto", metadata=setting(
        doc="energy engine for training"))
    platform: Literal["auto", Platform] = field(default="auto", metadata=setting(doc="OpenMM platform of the bridge"))
    n_workers: int = field(default=0, metadata=setting(ge=0, le=256, doc="0 = one per core (capped by batch)"))
    compile: Literal["auto", "on", "off"] = field(default="auto", metadata=setting(doc="torch engine kernels"))
    precision: Literal["double", "single"] = field(default="double", metadata=setting(
        doc="torch engine floating-point precision"))


@dataclass
class ModelConfig:
    representation: Literal["internal", "cartesian"] = field(default="internal", metadata=setting(
        doc="coordinates the flow acts on"))
    conditioner: Literal["transformer", "mlp"] = field(default="transformer", metadata=setting(
        doc="network of the coupling layers"))
    transform: Literal["spline", "affine"] = field(default="spline", metadata=setting(doc="elementwise transform"))
    n_layers: int = field(default=6, metadata=setting(ge=1, le=64, doc="coupling layers"))
    hidden: int = field(default=64, metadata=setting(ge=1, le=8192, doc="network width"))
    n_heads: int = field(default=4, metadata=setting(ge=1, le=64, doc="attention heads; must divide hidden"))
    n_blocks: int = field(default=2, metadata=setting(ge=1, le=32, doc="blocks per conditioner"))
    n_bins: int = field(default=8, metadata=setting(ge=2, le=128, doc="spline bins"))
    tail_bound: float = field(default=5.0, metadata=setting(gt=0, le=1e3, doc="spline interval half-width"))
    max_log_scale: float = field(default=2.0, metadata=setting(gt=0, le=50.0, doc="bound on affine log-scales"))
    harmonic_init: bool = field(default=True, metadata=setting(doc="start from the harmonic temperature map"))
    narrow_torsion_std: float = field(default=0.5, metadata=setting(
        ge=0.0, le=3.2, doc="rad; wider torsions are left alone at init"))
    two_state_min_mass: float = field(default=0.0, metadata=setting(
        ge=0.0, le=1.0, doc="a torsion whose hot ensemble puts more than this probability in states the cold one "
                            "hardly visits (a peptide omega that turns cis) gets a population-matching circle map "
                            "at init; 0 = off"))


@dataclass
class TrainingConfig:
    epochs: int = field(default=200, metadata=setting(ge=1, le=_COUNT))
    batch_size: int = field(default=64, metadata=setting(ge=1, le=1_000_000))
    lr: float = field(default=5e-4, metadata=setting(ge=1e-12, le=1.0, doc="peak learning rate"))
    warmup_epochs: int = field(default=50, metadata=setting(ge=0, le=_COUNT, doc="linear warmup; capped at epochs"))
    schedule: Literal["cosine", "plateau", "constant"] = field(default="cosine", metadata=setting(
        doc="learning-rate schedule"))
    min_lr_factor: float = field(default=0.01, metadata=setting(ge=0.0, le=1.0, doc="final lr / peak lr"))
    weight_decay: float = field(default=1e-5, metadata=setting(ge=0, le=10.0))
    grad_clip: float = field(default=10.0, metadata=setting(gt=0, le=1e12, doc="max gradient norm"))
    steps_per_epoch: int = field(default=0, metadata=setting(
        ge=0, le=_COUNT, doc="0 = one pass over the training pairs"))
    energy_reg_kt: float = field(default=1000.0, metadata=setting(
        gt=0, le=1e15, doc="linear below, logarithmic above [kT]"))
    device: str = field(default="auto", metadata=setting(
        pattern=r"auto|cpu|cuda(:[0-9]{1,4})?", kind="a device", allowed="auto, cpu, cuda or cuda:N",
        doc="where the flow trains"))
    seed: int = field(default=0, metadata=setting(ge=0, le=_SEED_MAX))
    checkpoint_every: int = field(default=50, metadata=setting(ge=1, le=_COUNT, doc="epochs between checkpoints"))
    patience: int = field(default=0, metadata=setting(
        ge=0, le=_COUNT, doc="end the run when the validation score has not improved for this many epochs "
                             "(checked at each evaluation); 0 = train all epochs"))
    ema_decay: float = field(default=0.0, metadata=setting(
        ge=0.0, lt=1.0, doc="validation, test and the saved models use an exponential moving average of the "
                            "weights over about 1/(1 - decay) steps; 0 = the weights as trained"))
    compile_flow: bool = field(default=False, metadata=setting(
        doc="training steps run the flow's spline kernels through torch.compile (a C++ compiler on CPU, triton on "
            "a GPU): 1.5x faster steps for the quickstart's MLP flow on CPU, 1.1-1.2x for a transformer; the first "
            "run compiles for minutes, later ones read torch's cache"))
    nan_policy: Literal["rollback", "skip", "stop"] = field(default="rollback", metadata=setting(
        doc="what a non-finite loss does"))
    max_nan_failures: int = field(default=5, metadata=setting(ge=1, le=1000))
    # 0 would set the learning rate to 0 after the first NaN: a run that never moves again.
    nan_lr_factor: float = field(default=0.5, metadata=setting(gt=0.0, le=1.0, doc="lr factor after a rollback"))


@dataclass
class LoggingConfig:
    eval_interval: int = field(default=100, metadata=setting(
        ge=1, le=_COUNT, doc="log every N epochs after epoch 100"))
    eval_samples: int = field(default=1000, metadata=setting(
        ge=2, le=_COUNT, doc="held-out pairs for acceptance / ESS"))
    progress_every_s: float = field(default=30.0, metadata=setting(
        gt=0, le=86400.0, doc="plain progress line when not a TTY [s]"))
    step_progress_s: float = field(default=0.5, metadata=setting(
        gt=0, le=3600.0, doc="wall time between progress events within an epoch [s]"))


@dataclass
class OutputConfig:
    dir: str = field(default="", metadata=setting(doc="default: checkpoints/molecular_pt_<preset>"))


def _internal(default: Any) -> Any:
    return field(default=default, metadata={"internal": True})


@dataclass
class Config:
    description: str = field(default="", metadata=setting(max_len=500, doc="one line, shown by `molpt-tui presets`"))
    system: SystemConfig = field(default_factory=SystemConfig)
    temperatures: TemperatureConfig = field(default_factory=TemperatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    alerts: AlertThresholds = field(default_factory=AlertThresholds)
    output: OutputConfig = field(default_factory=OutputConfig)
    # Not TOML sections: where the preset came from, for messages, relative paths and default
    # names (a saved config records `preset_name` as its top-level `preset` key).
    preset_name: str = _internal("")
    source: str = _internal("<defaults>")
    base_dir: str = _internal(".")
    origins: dict[str, str] = field(default_factory=dict, metadata={"internal": True})  # key -> file or flag

    def named(self, key: str) -> str:
        """`key` as messages should call it: the typed flag that set it (`--device`), else the key."""
        origin = self.origins.get(key, "")
        return origin if origin.startswith("--") and origin != "--set" else key

    # --- derived paths -------------------------------------------------------
    def resolve(self, path: str) -> Path:
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def pdb_path(self) -> Path:
        return self.resolve(self.system.pdb)

    @property
    def data_path(self) -> Path:
        if self.data.path:
            return Path(os.path.expanduser(self.data.path))
        return Path("data") / f"{self.preset_name or 'custom'}.npz"

    @property
    def test_data_path(self) -> Path:
        """The independent test run, beside the data file unless `data.test_path` says otherwise."""
        if self.data.test_path:
            return Path(os.path.expanduser(self.data.test_path))
        data = self.data_path
        stem = data.name[:-4] if data.name.endswith(".npz") else data.name
        return data.with_name(f"{stem}.test.npz")

    @property
    def test_n_samples(self) -> int:
        """Samples per temperature of the test run (0: no test set; at least MIN_TEST_SAMPLES)."""
        if self.data.test_fraction <= 0:
            return 0
        return max(MIN_TEST_SAMPLES, round(self.data.n_samples * self.data.test_fraction))

    @property
    def test_seed(self) -> int:
        return self.data.test_seed or self.data.seed + 1

    def for_test_run(self, data_path: Path | None = None) -> Config:
        """The config of the independent test run: the same MD settings with the test seed and
        size, written to the test path (beside `data_path` when given)."""
        out = copy.deepcopy(self)
        if data_path is not None and not self.data.test_path:
            out.data.path = str(data_path)
            path = out.test_data_path
        else:
            path = self.test_data_path
        out.data.path = str(path)
        out.data.test_path = ""
        out.data.n_samples = self.test_n_samples
        out.data.seed = self.test_seed
        out.data.test_fraction = 0.0
        return out

    @property
    def run_dir(self) -> Path:
        if self.output.dir:
            return Path(os.path.expanduser(self.output.dir))
        return Path("checkpoints") / f"molecular_pt_{self.preset_name or 'custom'}"

    @property
    def ladder(self) -> list[float]:
        t = self.temperatures
        if t.ladder:
            return [float(v) for v in t.ladder]
        n = max(2, t.n_replicas)
        return [t.cold * (t.hot / t.cold) ** (i / (n - 1)) for i in range(n)]

    @property
    def system_name(self) -> str:
        return self.system.name or Path(self.system.pdb).stem

    def to_dict(self) -> dict[str, Any]:
        """The TOML keys as plain data (what checkpoints and saved configs store)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("internal"):
                continue
            value = getattr(self, f.name)
            is_section = dataclasses.is_dataclass(value) and not isinstance(value, type)
            out[f.name] = dataclasses.asdict(value) if is_section else value
        return out

