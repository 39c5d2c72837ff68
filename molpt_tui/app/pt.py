"""`molpt-tui pt RUN_DIR`: flow-enhanced parallel tempering with a trained map.

Order as in `train`: every check (the run, the map and its checkpoint, the data, the platform,
the pt directory, a resumed chain) runs and every replica is built before the pt directory is
touched; only then is it created, locked, cleared (`--force`) and given its settings. The map
is rebuilt exactly as training built it (the representation fitted on the same training split)
and then given the checkpoint's weights and fitted buffers; before sampling, its held-out
acceptance is recomputed and reported next to the one training logged at that epoch.

On a terminal the checks that need neither the map nor the MD run here, the directory is
claimed as above, and this module, run as a child process, does the rest headless while the pt
monitor follows the directory (the layout of `train` under the TUI).
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
import torch

from ..config import Config, load_saved_config
from ..errors import UserError
from ..physics.data import load_data
from ..physics.flow_pt import EnergyEvaluator
from ..physics.openmm_platforms import check_platform
from ..physics.systems import MolecularSystem, system_from_config
from ..physics.torsions import Backbone, backbone_of_topology
from ..physics.units import beta
from ..report.pt_console import PTConsole, format_summary
from ..report.validation_plots import (
    PopulationSeries,
    ReducedEnergies,
    write_populations_figure,
    write_validation_figure,
)
from ..training.checkpoint import check_compatible, load_checkpoint, refused
from ..training.control import TrainingControl
from ..training.events import Finished, LogBlock, Message, PTProgress, PTStarted, Sink
from ..training.exit_codes import exit_code
from ..training.metrics_log import MetricsLogSink, read_events
from ..training.pt import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    FlowSwapSampler,
    LadderSampler,
    MDSpec,
    PTRun,
    Sampler,
    acceptance_of,
    batch_means,
    map_samples,
    planned_rounds,
    running_estimate,
)
from ..training.pt_dir import PTDirectory, read_npz
from ..training.run_dir import RunDirectory
from ..training.setup import DataSplit, build_transport, split_data
from .disk import disk_errors_as_user_errors
from .signals import JobSignals

Baseline = Literal["none", "ladder"]
DEFAULT_NS = 1.0
MAX_NS = 1e6
MAX_SWAP_EVERY = 1_000_000
SEED_MAX = 2**31 - 1
# Samples (evenly spaced over the run) that the validation figure maps and evaluates.
FIGURE_SAMPLES = 2000
HEADLINE_STATE = "phi>0"


@dataclass(frozen=True)
class PTOptions:
    run_dir: Path
    model: str | None = None            # best | final | PATH; default best
    ns: float | None = None             # MD per replica of the flow sampler; default DEFAULT_NS
    swap_every: int | None = None       # default: the run's data.swap_every
    seed: int | None = None             # default: the run's data.seed + 1
    out: Path | None = None             # default RUN_DIR/pt
    baseline: Baseline | None = None    # default none
    resume: bool = False
    force: bool = False
    ui: bool = True
    no_mouse: bool = False              # the monitor (ui on a terminal) leaves the mouse to tmux/SSH
    ascii_only: bool = False            # the monitor draws ASCII only
    progress_every_s: float | None = None   # console lines; default the run's logging.progress_every_s
    event_every_s: float = 5.0              # PTProgress events in metrics.jsonl
    checkpoint_every_s: float = 600.0


@dataclass(frozen=True)
class PTSettings:
    """What a pt run is, resolved; saved as pt_settings.json and continued by --resume."""

    source_run: str
    model: str
    model_path: str
    ns: float
    swap_every: int
    seed: int
    baseline: Baseline

    def to_dict(self) -> dict[str, Any]:
        return {"source_run": self.source_run, "model": self.model, "model_path": self.model_path, "ns": self.ns,
                "swap_every": self.swap_every, "seed": self.seed, "baseline": self.baseline}


@dataclass
class PTPlan:
    """What preflight built; `run_pt` goes on with it."""

    cfg: Config
    settings: PTSettings
    pt_dir: PTDirectory
    ms: MolecularSystem
    backbone: Backbone
    flow: FlowSwapSampler
    ladder: LadderSampler | None
    started: PTStarted


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- settings --------------------------------------------------------------------------------------

def _check_values(ns: float, swap_every: int, seed: int, where: dict[str, str]) -> None:
    if not (math.isfinite(ns) and 0 < ns <= MAX_NS):
        raise UserError(f"{where['ns']}: {ns:g} ns is not a usable MD time (give 0 < N <= {MAX_NS:g}, e.g. --ns 1)")
    if not 1 <= swap_every <= MAX_SWAP_EVERY:
        raise UserError(f"{where['swap_every']}: {swap_every} is not a number of MD steps between swaps "
                        f"(give 1 to {MAX_SWAP_EVERY}, e.g. --swap-every 100)")
    if not 0 <= seed <= SEED_MAX:
        raise UserError(f"{where['seed']}: {seed} is not a seed (give 0 to {SEED_MAX})")


def _model_path(run: RunDirectory, cfg: Config, model: str) -> Path:
    t = cfg.temperatures
    if model == "best":
        path = run.best
    elif model == "final":
        path = run.final_model(t.cold, t.hot)
    else:
        path = Path(model)
    if not path.is_file():
        what = {"best": "best.pt", "final": path.name}.get(model, str(path))
        raise UserError(f"--model {model}: {what} not found in {run.path if model in ('best', 'final') else '.'} "
                        "(use --model best, --model final after a completed run, or --model PATH of a checkpoint)")
    return path.resolve()


def _saved_settings(pt_dir: PTDirectory) -> PTSettings:
    data = pt_dir.read_settings()
    where = str(pt_dir.settings)

    def get(key: str, kind: type) -> Any:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, kind):
            if not (kind is float and isinstance(value, int) and not isinstance(value, bool)):
                raise UserError(f"{where}: key '{key}' is missing or not a {kind.__name__}; start a new pt run "
                                "with --force")
        return value

    baseline = get("baseline", str)
    if baseline not in ("none", "ladder"):
        raise UserError(f"{where}: key 'baseline' is {baseline!r}, not none or ladder; start a new pt run with --force")
    settings = PTSettings(source_run=get("source_run", str), model=get("model", str), model_path=get("model_path", str),
                          ns=float(get("ns", float)), swap_every=get("swap_every", int), seed=get("seed", int),
                          baseline=baseline)
    _check_values(settings.ns, settings.swap_every, settings.seed,
                  {k: f"{where}: key '{k}'" for k in ("ns", "swap_every", "seed")})
    return settings


def resolve_settings(opts: PTOptions) -> tuple[Config, PTSettings, PTDirectory]:
    run = RunDirectory(opts.run_dir)
    if not run.path.is_dir():
        raise UserError(f"{run.path}: no such run directory (give the directory of a `molpt-tui train` run)")
    if not run.config.is_file():
        raise UserError(f"{run.path}: no {run.config.name} here; give the directory of a `molpt-tui train` run")
    cfg = load_saved_config(run.config, ())
    pt_dir = PTDirectory(opts.out if opts.out is not None else run.path / "pt")
    flags = {"ns": "--ns", "swap_every": "--swap-every", "seed": "--seed"}
    if opts.resume:
        pt_dir.check_resumable()
        saved = _saved_settings(pt_dir)
        given = {"--model": (opts.model, saved.model), "--swap-every": (opts.swap_every, saved.swap_every),
                 "--seed": (opts.seed, saved.seed), "--baseline": (opts.baseline, saved.baseline)}
        for flag, (value, was) in given.items():
            if value is not None and value != was:
                raise UserError(f"{flag} {value}: this pt run was started with {flag} {was}; drop the flag to "
                                "resume it, or start a new run with --force or another --out")
        if Path(saved.source_run).resolve() != run.path.resolve():
            raise UserError(f"{pt_dir.path}: this pt run samples with the map of {saved.source_run}, not {run.path}; "
                            "give that run directory")
        ns = saved.ns if opts.ns is None else float(opts.ns)
        _check_values(ns, saved.swap_every, saved.seed, flags)
        settings = PTSettings(source_run=saved.source_run, model=saved.model, model_path=saved.model_path, ns=ns,
                              swap_every=saved.swap_every, seed=saved.seed, baseline=saved.baseline)
        if not Path(settings.model_path).is_file():
            raise UserError(f"{settings.model_path}: the map this pt run sampled with is gone; "
                            "start a new pt run with --force")
        return cfg, settings, pt_dir
    pt_dir.check_new(opts.force)
    model = opts.model or "best"
    ns = DEFAULT_NS if opts.ns is None else float(opts.ns)
    swap_every = cfg.data.swap_every if opts.swap_every is None else int(opts.swap_every)
    seed = cfg.data.seed + 1 if opts.seed is None else int(opts.seed)
    _check_values(ns, swap_every, seed, flags)
    settings = PTSettings(source_run=str(run.path.resolve()), model=model,
                          model_path=str(_model_path(run, cfg, model)), ns=ns, swap_every=swap_every, seed=seed,
                          baseline=opts.baseline or "none")
    return cfg, settings, pt_dir


# --- preflight ---------------------------------------------------------------------------------------

def load_map(cfg: Config, ms: MolecularSystem, split: DataSplit, path: Path) -> tuple[Any, dict[str, Any]]:
    """The Transport training evaluated: built as the trainer builds it (representation fitted on
    the same training split), then given the checkpoint's weights and fitted buffers."""
    ckpt = load_checkpoint(path)
    check_compatible(ckpt, path, ms, cfg)
    saved_t = ckpt["config"]["temperatures"]
    t = cfg.temperatures
    if not (math.isclose(float(saved_t.get("cold", math.nan)), t.cold)
            and math.isclose(float(saved_t.get("hot", math.nan)), t.hot)):
        raise UserError(f"{path}: the map was trained for {saved_t.get('cold')} K -> {saved_t.get('hot')} K, "
                        f"this run is {t.cold:g} K -> {t.hot:g} K; give a checkpoint of this run")
    transport = build_transport(cfg, ms, split.cold_train, split.hot_train)
    try:
        transport.load_state_dict(ckpt["model"], strict=True)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise refused(path, "model", f"does not fit this model ({first})") from None
    transport.eval()
    return transport, ckpt


def _logged_acceptance(run: RunDirectory, epoch: int) -> float:
    """acc_flow of the log block training wrote at `epoch` (the last one, after a resume)."""
    if not run.metrics.is_file():
        return math.nan
    value = math.nan
    for event in read_events(run.metrics, warn=lambda _msg: None):
        if isinstance(event, LogBlock) and event.epoch == epoch:
            value = event.acc_flow
    return value


def _ladder(cfg: Config) -> list[float]:
    ladder = [float(v) for v in cfg.ladder]
    t = cfg.temperatures
    if len(ladder) < 3 or not (math.isclose(ladder[0], t.cold) and math.isclose(ladder[-1], t.hot)):
        shown = ", ".join(f"{v:g}" for v in ladder)
        raise UserError(f"--baseline ladder: the run's ladder ({shown} K) must run from temperatures.cold to "
                        "temperatures.hot with at least 3 rungs (set temperatures.ladder in the preset)")
    return ladder


def preflight(opts: PTOptions) -> tuple[Config, PTSettings, PTDirectory]:
    """The checks that need neither the map nor the MD: what the live TUI runs before it starts
    the sampler process (which then runs the rest, `build_plan`)."""
    cfg, settings, pt_dir = resolve_settings(opts)
    owner = pt_dir.run.live_trainer()
    if owner is not None:
        raise UserError(f"{pt_dir.path}: another process ({owner.describe()}) is writing this pt directory; "
                        f"stop it first (`molpt-tui control {pt_dir.path} stop`) or use --out")
    d = cfg.data
    if d.constraints != "none":
        raise UserError(f"{cfg.source}: data.constraints = \"{d.constraints}\": pt runs MD of the flexible system the "
                        "map was trained on, and a map trained with fixed X-H bonds is no bijection of it; train with "
                        "data.constraints = \"none\"")
    check_platform(d.platform, "data.platform", allow_auto=False)
    return cfg, settings, pt_dir


def prepare(opts: PTOptions) -> PTPlan:
    """Every check and every replica, nothing written."""
    return build_plan(opts, *preflight(opts))


def build_plan(opts: PTOptions, cfg: Config, settings: PTSettings, pt_dir: PTDirectory) -> PTPlan:
    """The map, its check and the replicas, for settings that passed `preflight`."""
    d, t = cfg.data, cfg.temperatures
    ms = system_from_config(cfg)
    data = load_data(cfg.data_path, ms)
    split = split_data(cfg, data)
    model_path = Path(settings.model_path)
    transport, ckpt = load_map(cfg, ms, split, model_path)
    ladder = _ladder(cfg) if settings.baseline == "ladder" else []
    starts_ladder = [data.at(temp)[-1] for temp in ladder]
    backbone = backbone_of_topology(ms.topology)
    states_fn = backbone.state_indicators if backbone.is_peptide else None
    spec = MDSpec(system_xml=ms.system_xml(), timestep_fs=d.timestep_fs, friction_per_ps=d.friction_per_ps,
                  platform=d.platform)
    rounds = planned_rounds(spec, settings.swap_every, settings.ns)
    flow = FlowSwapSampler(spec, t.cold, t.hot, transport, settings.swap_every, rounds, settings.seed, states_fn)
    ladder_sampler = None
    ladder_ns = math.nan
    if ladder:
        ladder_ns = settings.ns * 2 / len(ladder)
        ladder_sampler = LadderSampler(spec, ladder, settings.swap_every,
                                       planned_rounds(spec, settings.swap_every, ladder_ns), settings.seed, states_fn)
    # The check: the held-out pairs of training through the loaded map, energies from the MD's
    # force field. Passed as training's tensors, so the map sees exactly what evaluation saw.
    check = map_samples(transport, EnergyEvaluator(spec.system_xml, spec.platform), split.cold_val, split.hot_val)
    check_acc, check_se = batch_means(acceptance_of(check.log_acceptance(t.cold, t.hot)))
    epoch = int(ckpt["epoch"])
    if opts.resume:
        _load_chains(pt_dir, [s for s in (flow, ladder_sampler) if s is not None])
        if flow.done and (ladder_sampler is None or ladder_sampler.done):
            raise UserError(f"{pt_dir.path}: this pt run is complete at {flow.ns:g} ns per replica; raise --ns "
                            f"above {flow.ns:g} to sample on")
    else:
        flow.start([data.at(t.cold)[-1], data.at(t.hot)[-1]])
        if ladder_sampler is not None:
            ladder_sampler.start(starts_ladder)
    started = PTStarted(
        run_dir=str(pt_dir.path), source_run=settings.source_run, model_path=str(model_path), model_epoch=epoch,
        system=cfg.system_name, t_cold=t.cold, t_hot=t.hot, swap_every=settings.swap_every,
        timestep_fs=d.timestep_fs, planned_ns=flow.planned_ns, platform=d.platform, seed=settings.seed,
        ladder=ladder, ladder_planned_ns=ladder_sampler.planned_ns if ladder_sampler is not None else ladder_ns,
        states=backbone.state_names() if backbone.is_peptide else [],
        rama_label=backbone.pairs[0].label if backbone.is_peptide else "",
        train_acc_flow=_logged_acceptance(RunDirectory(settings.source_run), epoch), check_acc_flow=check_acc,
        check_acc_flow_se=check_se, start_ns=flow.ns, resumed=opts.resume)
    return PTPlan(cfg=cfg, settings=settings, pt_dir=pt_dir, ms=ms, backbone=backbone, flow=flow,
                  ladder=ladder_sampler, started=started)


def _load_chains(pt_dir: PTDirectory, samplers: list[Sampler]) -> None:
    arrays = read_npz(pt_dir.checkpoint)
    where = str(pt_dir.checkpoint)
    if str(arrays.get("format", "")) != CHECKPOINT_FORMAT:
        raise UserError(f"{where}: not a molpt-tui pt checkpoint; start a new pt run with --force")
    version = arrays.get("format_version")
    if version is None or int(version) > CHECKPOINT_VERSION:
        raise UserError(f"{where}: pt checkpoint format {version} is not one this molpt-tui reads; upgrade molpt-tui")
    for s in samplers:
        prefix = f"{s.name}."
        part = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        if not part:
            raise UserError(f"{where}: holds no {s.name} sampler; start a new pt run with --force")
        path = pt_dir.trajectory(s.name)
        trajectory = read_npz(path)
        try:
            s.load_state(part, trajectory, str(path))
        except KeyError as exc:
            raise UserError(f"{where}: key '{prefix}{exc.args[0]}' is missing; start a new pt run with "
                            "--force") from None
        except (ValueError, TypeError) as exc:
            raise UserError(f"{where}: {s.name} sampler: {exc}; start a new pt run with --force") from None


# --- results -----------------------------------------------------------------------------------------

class PTFiles:
    """PTArtifacts in a pt directory: its names, the report layer's figures."""

    def __init__(self, plan: PTPlan) -> None:
        self.plan = plan

    @property
    def location(self) -> str:
        return str(self.plan.pt_dir.path)

    def save(self, checkpoint: dict[str, np.ndarray], trajectories: dict[str, dict[str, np.ndarray]]) -> Path:
        return self.plan.pt_dir.save(checkpoint, trajectories)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return self.plan.pt_dir.write_summary(summary)

    def write_figures(self, run: PTRun, status: str) -> list[Path]:
        plan, t = self.plan, self.plan.cfg.temperatures
        flow = run.flow
        n = len(flow.cold_positions)
        if n == 0:
            return []
        idx = np.unique(np.linspace(0, n - 1, min(n, FIGURE_SAMPLES)).round().astype(np.int64))
        cold = np.stack([flow.cold_positions[i] for i in idx]).astype(np.float64)
        hot = np.stack([flow.hot_positions[i] for i in idx]).astype(np.float64)
        mapped = map_samples(flow.map, EnergyEvaluator(flow.spec.system_xml, flow.spec.platform), cold, hot)
        energies = ReducedEnergies.from_energies(beta(t.cold), beta(t.hot), mapped.u_cold, mapped.u_hot,
                                                 mapped.u_cold_to_hot, mapped.u_hot_to_cold)
        suffix = "" if status in ("completed", "") else f" ({status})"
        title = (f"{plan.cfg.system_name}: pt samples, {t.cold:g} K ↔ {t.hot:g} K, {flow.ns:.3g} ns per replica"
                 f"{suffix}")
        paths = [write_validation_figure(plan.pt_dir.validation_png(t.cold, t.hot), cold=cold, hot=hot,
                                         cold_to_hot=mapped.cold_to_hot, hot_to_cold=mapped.hot_to_cold,
                                         energies=energies, backbone=plan.backbone, t_cold=t.cold, t_hot=t.hot,
                                         title=title)]
        if plan.backbone.is_peptide:
            column = plan.backbone.state_names().index(HEADLINE_STATE) if HEADLINE_STATE in \
                plan.backbone.state_names() else 2
            series = [population_series(s, column) for s in run.samplers]
            paths.append(write_populations_figure(
                plan.pt_dir.populations_png(t.cold, t.hot), series, f"{plan.backbone.state_names()[column]} "
                f"({plan.backbone.pairs[0].label}, {t.cold:g} K)", title=f"{plan.cfg.system_name}: pt{suffix}"))
        return paths


def population_series(sampler: Sampler, column: int) -> PopulationSeries:
    """A sampler's running estimate of one state's population, against its cost so far."""
    table = np.asarray(sampler.cold_states, dtype=np.float64)
    counts, mean, se = running_estimate(table[:, column] if len(table) else np.zeros(0))
    per_round = sampler.spec.ns_per_round(sampler.swap_every) * sampler.n_replicas
    evals_per_round = sampler.n_replicas * (sampler.swap_every + 1) + (2 if isinstance(sampler, FlowSwapSampler) else 0)
    label = (f"flow PT ({sampler.n_replicas} replicas)" if isinstance(sampler, FlowSwapSampler)
             else f"naive ladder ({sampler.n_replicas} replicas)")
    return PopulationSeries(label=label, total_ns=counts * per_round, energy_evals=counts * evals_per_round,
                            mean=mean, se=se)


# --- the command ---------------------------------------------------------------------------------------

def pt(opts: PTOptions, extra_sinks: list[Sink] | None = None) -> int:
    if opts.ui and sys.stdout.isatty() and sys.stdin.isatty() and not extra_sinks:
        return pt_live(opts)
    torch.set_num_threads(1)  # the map runs on one configuration at a time, between MD chunks
    plan = prepare(opts)
    pt_dir = plan.pt_dir
    with disk_errors_as_user_errors(pt_dir.path):
        _claim(pt_dir, opts, plan.settings)
        try:
            return run_pt(plan, opts, extra_sinks or [])
        finally:
            pt_dir.run.release_lock()


def _claim(pt_dir: PTDirectory, opts: PTOptions, settings: PTSettings) -> None:
    """Create and lock the pt directory, clear it (--force) and write its settings; on failure
    leave no directory this call created."""
    created = pt_dir.create()
    try:
        pt_dir.run.acquire_lock()
        if not opts.resume and opts.force:
            pt_dir.clear()
        pt_dir.remove_stale_temps()
        pt_dir.write_settings(settings.to_dict())
    except BaseException:
        pt_dir.run.release_lock()
        if created:
            pt_dir.clear()
            try:
                pt_dir.path.rmdir()
            except OSError:
                pass
        raise


# --- the live TUI: a sampler process and the monitor following its directory ------------------------

def pt_live(opts: PTOptions) -> int:
    """The sampler runs headless in a child process (as `train`'s trainer does under the TUI): the
    monitor only reads the pt directory, so a monitor that crashes or is slow never costs samples,
    and the sampler's signals, checkpoints and exit code are exactly those of headless pt."""
    from ..tui.app import EXIT_UI_CRASHED
    from ..tui.pt_monitor import run_pt_monitor
    from ..tui.pt_source import LivePT

    cfg, settings, pt_dir = preflight(opts)
    # The map is loaded here once before anything is written: a checkpoint that does not fit the
    # run is bad input (one line, exit 2, no pt directory), not a failure shown in the monitor.
    ms = system_from_config(cfg)
    load_map(cfg, ms, split_data(cfg, load_data(cfg.data_path, ms)), Path(settings.model_path))
    with disk_errors_as_user_errors(pt_dir.path):
        _claim(pt_dir, opts, settings)
        try:
            sampler = SamplerProcess(pt_dir, resume=opts.resume)
            source = LivePT(pt_dir.run, sampler)  # counts earlier segments before the child can write
            sampler.start()
            try:
                code = run_pt_monitor(source, title=f"molpt-tui pt: {cfg.system_name}", no_mouse=opts.no_mouse,
                                      ascii_only=opts.ascii_only)
            except BaseException:
                code = EXIT_UI_CRASHED
            if code == EXIT_UI_CRASHED and sampler.poll() is None:
                # The monitor died, the run did not: it goes on headless and can be watched again.
                _say(f"molpt-tui: the monitor crashed; the {sampler.description} keeps sampling (log: "
                     f"{pt_dir.run.trainer_log}). Attach with `molpt-tui watch {pt_dir.path}`, stop it with "
                     f"`molpt-tui control {pt_dir.path} stop`.")
                return code
            if sampler.poll() is None:
                sampler.terminate()
                _say(f"molpt-tui: waiting for the {sampler.description} to finish its round and save "
                     f"(up to {GRACE_S:.0f} s)...")
                if sampler.wait(GRACE_S) is None:
                    sampler.kill()
                    sampler.wait(5.0)
            # The TUI's screen is gone: leave in the terminal what headless pt prints at its end.
            if not print_pt_summary(pt_dir, source.prior_finished):
                _say(f"molpt-tui: the sampler ended without a summary; its log is {pt_dir.run.trainer_log}")
            return code
        finally:
            pt_dir.run.release_lock()  # a no-op once the child has adopted it


# How long a sampler that outlived its monitor gets to finish its round and save.
GRACE_S = 120.0


class SamplerProcess:
    """The monitor's handle on the sampler process (tui.source.TrainerHandle)."""

    def __init__(self, pt_dir: PTDirectory, *, resume: bool) -> None:
        self.pt_dir = pt_dir
        self.resume = resume
        self.proc: subprocess.Popen[bytes] | None = None
        self.description = "pt sampler (starting)"

    def start(self) -> None:
        log = open(self.pt_dir.run.trainer_log, "a", buffering=1, encoding="utf-8")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "molpt_tui.app.pt", str(self.pt_dir.path), "--parent", str(os.getpid()),
                 *(["--resume"] if self.resume else [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        finally:
            log.close()
        self.description = f"pt sampler PID {self.proc.pid}"

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: it finishes the round and saves

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def print_pt_summary(pt_dir: PTDirectory, prior_finished: int, stream: TextIO | None = None) -> bool:
    """Print what headless pt prints at its end for the segment this command's sampler wrote:
    its start, each sampler's last progress, how it ended and its files. False when that sampler
    wrote no Finished event."""
    out = stream if stream is not None else sys.stdout
    try:
        events = list(read_events(pt_dir.metrics, warn=lambda _message: None))
    except OSError:
        return False
    ends = [i for i, event in enumerate(events) if isinstance(event, Finished)]
    if len(ends) <= prior_finished:
        return False
    segment = events[ends[prior_finished - 1] + 1 if prior_finished else 0: ends[-1] + 1]
    finished = segment[-1]
    assert isinstance(finished, Finished)
    started = [e for e in segment if isinstance(e, PTStarted)]
    last: dict[str, PTProgress] = {}
    for event in segment:
        if isinstance(event, PTProgress):
            last[event.sampler] = event
    print(format_summary(started[-1] if started else None, list(last.values()), finished), file=out, flush=True)
    return True


def _record_failure(pt_dir: PTDirectory, text: str) -> None:
    """A sampler that cannot start says so where every viewer looks, not only in its log."""
    sink = MetricsLogSink(pt_dir.metrics)
    try:
        sink.emit(Message(text=text, level="error"))
        sink.emit(Finished(status="failed", epoch=0, message=text))
    finally:
        sink.close()


def child_main(argv: list[str] | None = None) -> int:
    """The sampler process of the live TUI: a headless pt run in a directory the TUI prepared and
    locked. Its settings are the ones the TUI resolved and wrote there; its output goes to the
    directory's log, never over the monitor's screen."""
    parser = argparse.ArgumentParser(prog="molpt_tui.app.pt")
    parser.add_argument("pt_dir")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pt_dir = PTDirectory(args.pt_dir)
    try:
        pt_dir.run.adopt_lock(args.parent)
    except UserError as exc:
        print(f"molpt-tui: error: {exc}", file=sys.stderr)
        return 2
    try:
        settings = _saved_settings(pt_dir)
        cfg = load_saved_config(RunDirectory(settings.source_run).config, ())
        opts = PTOptions(run_dir=Path(settings.source_run), out=pt_dir.path, resume=args.resume, ui=False)
        plan = build_plan(opts, cfg, settings, pt_dir)
        return run_pt(plan, opts, [])
    except UserError as exc:
        print(f"molpt-tui: error: {exc}", file=sys.stderr, flush=True)
        _record_failure(pt_dir, str(exc))
        return 2
    except Exception as exc:  # noqa: BLE001 - the traceback belongs in the log, the verdict in metrics.jsonl
        traceback.print_exc()
        _record_failure(pt_dir, f"the sampler crashed: {type(exc).__name__}: {exc} (see {pt_dir.run.trainer_log})")
        return 1
    finally:
        pt_dir.run.release_lock()


def run_pt(plan: PTPlan, opts: PTOptions, extra_sinks: list[Sink]) -> int:
    every = opts.progress_every_s if opts.progress_every_s is not None else plan.cfg.logging.progress_every_s
    console = PTConsole(every_s=every)
    log = MetricsLogSink(plan.pt_dir.metrics)
    control = TrainingControl(plan.pt_dir.run)
    try:
        with JobSignals(on_stop=lambda name: control.request_stop(f"received {name}"),
                        on_checkpoint=control.request_checkpoint) as signals:
            run = PTRun(flow=plan.flow, ladder=plan.ladder, started=plan.started, sinks=[console, log, *extra_sinks],
                        control=control, artifacts=PTFiles(plan), progress_every_s=opts.event_every_s,
                        checkpoint_every_s=opts.checkpoint_every_s)
            finished = run.run()
        return exit_code(finished.status, signals.received)
    finally:
        log.close()
        for s in (plan.flow, plan.ladder):
            if s is not None:
                s.close()


if __name__ == "__main__":
    sys.exit(child_main())
