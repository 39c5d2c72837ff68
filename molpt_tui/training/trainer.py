"""The training loop: UI-agnostic, it emits events to sinks and polls a TrainingControl.

One epoch is one pass over the training pairs (cold and hot samples, each shuffled) unless
`training.steps_per_epoch` fixes the number of steps. Each step evaluates

    forward:  E_x~cold [ linlogcut(beta_hot U(T x)) - log|det J_T(x)| ]
    inverse:  E_y~hot  [ linlogcut(beta_cold U(T^-1 y)) - log|det J_T^-1(y)| ]

with the float32 flow and float64 energies. Non-finite losses or gradients never reach the
weights: the step is skipped and, by policy, the model rolls back to the last good state
with a lower learning rate.
"""
from __future__ import annotations

import copy
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import UserError
from ..physics.units import beta
from . import losses
from .alerts import AlertThresholds, AlertTracker
from .checkpoint import check_compatible, load_checkpoint, save_checkpoint
from .control import TrainingControl
from .events import Alert, CheckpointSaved, EpochMetrics, Event, Finished, LogBlock, Message, RunStarted
from .history import History, improvement_pct
from .schedule import LRSchedule, is_log_epoch


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {requested}: CUDA is not available here (use --device cpu or auto)")
    try:
        return torch.device(requested)
    except RuntimeError:
        raise UserError(f"--device {requested}: not a device (use auto, cpu, cuda or cuda:N)") from None


def final_model_name(t_cold: float, t_hot: float) -> str:
    return f"molecular_pt_{t_cold:g}_{t_hot:g}.pt"


@dataclass
class Setup:
    """Everything a run needs that is not training state."""

    ms: object
    engine: object
    engine_reason: str
    cold_train: torch.Tensor
    hot_train: torch.Tensor
    cold_val: torch.Tensor
    hot_val: torch.Tensor
    u_cold_val: torch.Tensor
    u_hot_val: torch.Tensor
    u_cold_train: torch.Tensor
    u_hot_train: torch.Tensor


def build_transport(cfg, ms, cold: torch.Tensor, hot: torch.Tensor):
    """Representation fitted on the data, harmonic start map, learned flow at the identity."""
    from ..flows.harmonic import HarmonicTemperatureMap
    from ..flows.model import FlowModel
    from ..flows.transport import Transport

    m = cfg.model
    fixed = ms.hydrogen_bonds() if cfg.data.constraints == "hbonds" else []
    if m.representation == "internal":
        from ..flows.internal import ICRepresentation as Rep
    else:
        from ..flows.cartesian import AlignedCartesian as Rep
    rep = Rep.from_topology(ms.n_atoms, ms.bonds, ms.elements, fixed_bonds=fixed).double()
    rep.fit(torch.cat([cold, hot]))
    harmonic = None
    if m.harmonic_init:
        with torch.no_grad():
            z_cold, _ = rep(cold)
        harmonic = HarmonicTemperatureMap(rep.layout, z_cold.float(), cfg.temperatures.cold, cfg.temperatures.hot,
                                          narrow_torsion_std=m.narrow_torsion_std)
    flow = FlowModel(rep.layout, conditioner=m.conditioner, transform=m.transform, n_layers=m.n_layers,
                     hidden=m.hidden, n_heads=m.n_heads, n_blocks=m.n_blocks, n_bins=m.n_bins,
                     tail_bound=m.tail_bound, max_log_scale=m.max_log_scale)
    return Transport(rep, harmonic, flow)


def model_label(cfg) -> str:
    m = cfg.model
    kind = "transformer flow" if m.conditioner == "transformer" else "MLP coupling flow"
    rep = "internal coordinates" if m.representation == "internal" else "aligned Cartesian"
    start = ", harmonic start" if m.harmonic_init else ""
    return f"{kind} ({m.transform}, {m.n_layers} layers, {rep}{start})"


class Trainer:
    def __init__(self, cfg, run_dir: Path, sinks: list, control: TrainingControl | None = None,
                 resume: bool = False):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.sinks = list(sinks)
        self.control = control or TrainingControl()
        self.resume = resume
        self.history = History()
        self.beta_c = beta(cfg.temperatures.cold)
        self.beta_h = beta(cfg.temperatures.hot)
        self.device = resolve_device(cfg.training.device)
        self.files: list[str] = []

    # --- events ------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        self.history.add(event)
        for sink in self.sinks:
            sink.emit(event)

    def message(self, text: str, level: str = "info") -> None:
        self.emit(Message(text=text, level=level))

    # --- setup -------------------------------------------------------------------------------
    def _setup(self) -> Setup:
        from ..physics.data import load_data
        from ..physics.engines import make_engine
        from ..physics.systems import system_from_config

        cfg = self.cfg
        ms = system_from_config(cfg)
        data = load_data(cfg.data_path, ms)
        cold = torch.from_numpy(data.at(cfg.temperatures.cold))
        hot = torch.from_numpy(data.at(cfg.temperatures.hot))
        n = min(len(cold), len(hot))
        n_val = max(2, int(round(n * cfg.data.validation_fraction)))
        if n - n_val < 2:
            raise UserError(f"{cfg.data_path}: only {n} samples per temperature; need more (data.n_samples)")
        # Held-out = the end of each trajectory: less correlated with training than a random split.
        cold_train, cold_val = cold[: n - n_val], cold[n - n_val:n]
        hot_train, hot_val = hot[: n - n_val], hot[n - n_val:n]
        n_eval = min(cfg.logging.eval_samples, n_val)
        cold_val, hot_val = cold_val[-n_eval:], hot_val[-n_eval:]
        engine_device = str(self.device) if self.device.type == "cuda" else "cpu"
        choice = make_engine(ms, cfg.energy.engine, cfg.energy.platform, cfg.energy.n_workers,
                             cfg.training.batch_size, engine_device, cfg.energy.compile, cfg.energy.precision)
        def energies(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([choice.engine.energy(x[i:i + 1024].to(engine_device)).double().cpu()
                                  for i in range(0, len(x), 1024)])

        if getattr(choice.engine, "compiled", False):
            # Both kernels (with and without forces) compile now, so that the wait is announced
            # and the first epoch's timing and ETA are not inflated by it.
            self.message("torch energy kernels: compiling for this system, or loading them from torch's "
                         "cache (20-40 s the first time)")
            started = time.perf_counter()
            probe = cold_train[: cfg.training.batch_size].to(engine_device).requires_grad_(True)
            choice.engine.energy(probe).sum().backward()
            energies(cold_val[:2])
            state = "compiled" if choice.engine.compiled else "not compiled"
            self.message(f"torch energy kernels {state} in {time.perf_counter() - started:.1f} s")

        # Energies of the data themselves: the acceptance needs U(x), U(y); the KL estimate
        # subtracts beta U of the very batch samples, which cancels most of the noise.
        u_cold_val, u_hot_val = energies(cold_val), energies(hot_val)
        u_cold_train, u_hot_train = energies(cold_train), energies(hot_train)
        return Setup(ms, choice.engine, choice.reason, cold_train, hot_train, cold_val, hot_val,
                     u_cold_val, u_hot_val, u_cold_train, u_hot_train)

    # --- energies ----------------------------------------------------------------------------
    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        engine = self.setup.engine
        dev = getattr(engine, "device", None)
        target = torch.device(dev) if dev is not None else torch.device("cpu")
        return engine.energy(x.to(device=target, dtype=torch.float64)).to(self.device)

    # --- one step ----------------------------------------------------------------------------
    def _step_losses(self, xb: torch.Tensor, yb: torch.Tensor):
        thr = self.cfg.training.energy_reg_kt
        y, ld_f = self.transport(xb)
        e_f = self.beta_h * self._energy(y)
        x2, ld_i = self.transport.inverse(yb)
        e_i = self.beta_c * self._energy(x2)
        fwd = losses.direction_term(e_f, ld_f, thr)
        inv = losses.direction_term(e_i, ld_i, thr)
        return fwd, inv

    def _train_epoch(self, epoch: int) -> EpochMetrics | None:
        """Returns None when the run must stop (stop requested or NaN policy exhausted)."""
        cfg = self.cfg.training
        n_c, n_h = len(self.setup.cold_train), len(self.setup.hot_train)
        n_pairs = min(n_c, n_h)
        steps = cfg.steps_per_epoch or max(1, n_pairs // cfg.batch_size)
        perm_c = torch.randperm(n_c, generator=self.gen)
        perm_h = torch.randperm(n_h, generator=self.gen)
        sums = {k: 0.0 for k in ("loss", "fwd_e", "fwd_ld", "inv_e", "inv_ld", "grad", "kl")}
        counts = {"reg": 0, "nonfinite": 0, "ok": 0}
        t0 = time.perf_counter()
        for step in range(steps):
            self.control.wait_if_paused()
            if self.control.stop_requested:
                return None
            self._service_requests()
            lr = self.schedule.lr_at(epoch - 1 + step / steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            lo = (step * cfg.batch_size) % max(1, n_pairs - cfg.batch_size + 1)
            idx_c = perm_c[(torch.arange(cfg.batch_size) + lo) % n_c]
            idx_h = perm_h[(torch.arange(cfg.batch_size) + lo) % n_h]
            xb = self.setup.cold_train[idx_c].to(self.device)
            yb = self.setup.hot_train[idx_h].to(self.device)
            fwd, inv = self._step_losses(xb, yb)
            loss = fwd[0] + inv[0]
            loss_value = float(loss.detach())
            counts["reg"] += fwd[3] + inv[3]
            counts["nonfinite"] += fwd[4] + inv[4]
            self.optimizer.zero_grad(set_to_none=True)
            grad_norm = math.nan
            if math.isfinite(loss_value):
                loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.transport.flow.parameters(), cfg.grad_clip))
            if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
                if not self._handle_nonfinite(epoch, loss_value, grad_norm):
                    return None
                continue
            self.optimizer.step()
            self.nan_failures = 0
            counts["ok"] += 1
            sums["loss"] += loss_value
            sums["fwd_e"] += fwd[1]
            sums["fwd_ld"] += fwd[2]
            sums["inv_e"] += inv[1]
            sums["inv_ld"] += inv[2]
            sums["grad"] += grad_norm
            sums["kl"] += self._kl(fwd, inv, idx_c, idx_h)
        ok = max(counts["ok"], 1)
        nan = math.nan
        return EpochMetrics(
            epoch=epoch,
            loss=sums["loss"] / ok if counts["ok"] else nan,
            fwd_energy=sums["fwd_e"] / ok if counts["ok"] else nan,
            fwd_logdet=sums["fwd_ld"] / ok if counts["ok"] else nan,
            inv_energy=sums["inv_e"] / ok if counts["ok"] else nan,
            inv_logdet=sums["inv_ld"] / ok if counts["ok"] else nan,
            lr=self.optimizer.param_groups[0]["lr"],
            grad_norm=sums["grad"] / ok if counts["ok"] else nan,
            n_regularised=counts["reg"],
            n_nonfinite=counts["nonfinite"],
            seconds=time.perf_counter() - t0,
            kl=sums["kl"] / ok if counts["ok"] else nan,
        )

    def _kl(self, fwd, inv, idx_c: torch.Tensor, idx_h: torch.Tensor) -> float:
        """KL_fwd + KL_inv estimated on this batch: the unregularised loss minus the batch's own
        beta_c U(x) + beta_h U(y). Paired per sample, so its noise is far below that of the loss."""
        floor = self.beta_c * float(self.setup.u_cold_train[idx_c].mean()) + \
            self.beta_h * float(self.setup.u_hot_train[idx_h].mean())
        return fwd[1] - fwd[2] + inv[1] - inv[2] - floor

    def _handle_nonfinite(self, epoch: int, loss: float, grad_norm: float) -> bool:
        """NaN/Inf guard. Returns False when training must stop."""
        cfg = self.cfg.training
        self.nan_failures += 1
        self.optimizer.zero_grad(set_to_none=True)
        what = "loss" if not math.isfinite(loss) else "gradient"
        if cfg.nan_policy == "stop":
            self.emit(Alert(epoch=epoch, rule="nan_guard", severity="error",
                            message=f"non-finite {what}; stopping (training.nan_policy = 'stop')",
                            hint="lower the LR to 1e-4, or set training.nan_policy = 'rollback'"))
            self.failed_reason = f"non-finite {what} at epoch {epoch}"
            return False
        if cfg.nan_policy == "rollback" and self.boundary is not None:
            self.transport.load_state_dict(self.boundary["model"])
            self.optimizer.load_state_dict(self.boundary["optimizer"])
            self.schedule.scale *= cfg.nan_lr_factor
            action = f"rolled back to the end of epoch {self.boundary['epoch']}, LR scaled by {cfg.nan_lr_factor}"
        else:
            action = "step skipped"
        self.emit(Alert(epoch=epoch, rule="nan_guard", severity="warning",
                        message=f"non-finite {what} ({self.nan_failures} in a row): {action}",
                        hint="lower the LR to 1e-4; lower training.energy_reg_kt; check the structure"))
        if self.nan_failures >= cfg.max_nan_failures:
            self.failed_reason = (f"{self.nan_failures} consecutive non-finite steps at epoch {epoch} "
                                  f"(training.max_nan_failures = {cfg.max_nan_failures})")
            return False
        return True

    def _capture_boundary(self, epoch: int) -> None:
        """Complete training state at the end of `epoch`.

        Checkpoints are always written from this snapshot, so a checkpoint taken mid-epoch
        (stop, signal, key press) is the state of the last finished epoch, and resuming from it
        reproduces an uninterrupted run exactly. NaN rollbacks also return here.
        """
        self.boundary = {
            "epoch": epoch,
            "model": copy.deepcopy(self.transport.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "schedule": self.schedule.state_dict(),
            "best_loss": self.best_loss,
            "best_score": self.best_score,
            "first_loss": self.first_loss,
            "first_kl": self.first_kl,
            "nan_failures": self.nan_failures,
            "alerts": copy.deepcopy(self.tracker.state_dict()),
            "rng": {
                "shuffle": self.gen.get_state(),
                "torch": torch.get_rng_state(),
            },
        }

    # --- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        s = self.setup
        bs = max(64, self.cfg.training.batch_size * 4)
        parts = {k: [] for k in ("u_tx", "u_tiy", "ld_f", "ld_i", "rt")}
        for lo in range(0, len(s.cold_val), bs):
            x = s.cold_val[lo:lo + bs].to(self.device)
            y = s.hot_val[lo:lo + bs].to(self.device)
            tx, ld_f = self.transport(x)
            tiy, ld_i = self.transport.inverse(y)
            back, _ = self.transport.inverse(tx)
            canon = self.transport.canonical(x)
            parts["u_tx"].append(self._energy(tx).double().cpu())
            parts["u_tiy"].append(self._energy(tiy).double().cpu())
            parts["ld_f"].append(ld_f.double().cpu())
            parts["ld_i"].append(ld_i.double().cpu())
            parts["rt"].append((back - canon).abs().amax(dim=(1, 2)).double().cpu())
        u_tx, u_tiy, ld_f, ld_i, rt = (torch.cat(parts[k]) for k in ("u_tx", "u_tiy", "ld_f", "ld_i", "rt"))
        bc, bh = self.beta_c, self.beta_h
        delta = losses.flow_swap_log_acceptance(bc, bh, s.u_cold_val, s.u_hot_val, u_tx, u_tiy, ld_f, ld_i)
        delta0 = losses.naive_swap_log_acceptance(bc, bh, s.u_cold_val, s.u_hot_val)
        return {
            "acc_flow": losses.mean_acceptance(delta),
            "acc_naive": losses.mean_acceptance(delta0),
            "ess_fwd": losses.ess_percent(-bh * u_tx + ld_f + bc * s.u_cold_val),
            "ess_inv": losses.ess_percent(-bc * u_tiy + ld_i + bh * s.u_hot_val),
            "roundtrip_err": float(torch.nan_to_num(rt, nan=math.inf).max()),
            # paired held-out KL_fwd + KL_inv: -mean log w in both directions
            "kl_val": float((bh * u_tx - ld_f - bc * s.u_cold_val).mean() + (bc * u_tiy - ld_i - bh * s.u_hot_val).mean()),
        }

    # --- checkpoints ---------------------------------------------------------------------------
    def _payload(self) -> dict:
        import openmm

        return dict(
            self.boundary,
            config=self.cfg.to_dict(),
            system={"n_atoms": self.setup.ms.n_atoms, "atom_names": list(self.setup.ms.atom_names),
                    "pdb": self.setup.ms.pdb_path.name, "forcefield": list(self.cfg.system.forcefield)},
            versions={"molpt_tui": __version__, "torch": str(torch.__version__), "openmm": str(openmm.__version__),
                      "python": platform.python_version()},
        )

    def save(self, label: str) -> Path:
        """Write the last epoch-boundary state as last.pt / best.pt / the final model."""
        name = {"last": "last.pt", "best": "best.pt", "manual": "last.pt"}.get(
            label, final_model_name(self.cfg.temperatures.cold, self.cfg.temperatures.hot))
        path = save_checkpoint(self.run_dir / name, self._payload())
        self.emit(CheckpointSaved(epoch=self.boundary["epoch"], path=str(path), label=label))
        if str(path) not in self.files:
            self.files.append(str(path))
        return path

    def write_png(self) -> Path | None:
        from ..report.plotting import png_name, save_loss_curves

        path = self.run_dir / png_name(self.cfg.temperatures.cold, self.cfg.temperatures.hot)
        try:
            save_loss_curves(self.history, path, title=f"{self.cfg.system_name}: "
                             f"{self.cfg.temperatures.cold:.1f}K → {self.cfg.temperatures.hot:.1f}K")
        except Exception as exc:  # a plotting failure must never cost the run
            self.message(f"could not write the loss-curve PNG: {exc}", "warning")
            return None
        if str(path) not in self.files:
            self.files.append(str(path))
        return path

    def _service_requests(self) -> None:
        if self.control.take_checkpoint_request():
            self.save("manual")
        if self.control.take_png_request():
            path = self.write_png()
            if path:
                self.message(f"wrote {path}")

    def _restore(self, ckpt: dict) -> int:
        path = self.run_dir / "last.pt"
        check_compatible(ckpt, path, self.setup.ms, self.cfg)
        try:
            self.transport.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"{path}: checkpoint does not fit this model ({str(exc).splitlines()[0][:160]})") from None
        self.schedule.load_state_dict(ckpt["schedule"])
        self.best_loss = float(ckpt["best_loss"])
        self.best_score = float(ckpt["best_score"])
        self.first_loss = float(ckpt["first_loss"])
        self.first_kl = float(ckpt.get("first_kl", math.nan))
        self.nan_failures = int(ckpt.get("nan_failures", 0))
        self.tracker.load_state_dict(ckpt["alerts"])
        rng = ckpt["rng"]
        self.gen.set_state(rng["shuffle"])
        torch.set_rng_state(rng["torch"])
        return int(ckpt["epoch"])

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> Finished:
        cfg = self.cfg
        self.failed_reason = ""
        self.boundary = None
        self.nan_failures = 0
        self.best_loss = math.inf
        self.best_score = math.inf
        self.first_loss = math.nan
        self.first_kl = math.nan
        # Shuffling has its own generator so its state can be checkpointed for exact resume.
        self.gen = torch.Generator().manual_seed(cfg.training.seed)
        resume_ckpt = None
        if self.resume:
            resume_ckpt = load_checkpoint(self.run_dir / "last.pt")
            from .metrics_log import METRICS_FILE, read_events

            log = self.run_dir / METRICS_FILE
            if log.is_file():
                for event in read_events(log, warn=lambda m: None):
                    if getattr(event, "epoch", 0) <= int(resume_ckpt["epoch"]):
                        self.history.add(event)
        self.setup = self._setup()
        try:
            return self._run(resume_ckpt)
        finally:
            self.setup.engine.close()

    def _run(self, resume_ckpt) -> Finished:
        cfg = self.cfg
        tc = cfg.training
        torch.manual_seed(tc.seed)  # the model's initial weights do not depend on data loading
        self.transport = build_transport(cfg, self.setup.ms, self.setup.cold_train, self.setup.hot_train).to(self.device)
        self.optimizer = torch.optim.AdamW(self.transport.flow.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.schedule = LRSchedule(tc.lr, tc.epochs, tc.warmup_epochs, tc.schedule, tc.min_lr_factor)
        self.tracker = AlertTracker(AlertThresholds.from_mapping(cfg.alerts))
        start_epoch = self._restore(resume_ckpt) if resume_ckpt is not None else 0
        n_params = sum(p.numel() for p in self.transport.flow.parameters() if p.requires_grad)
        self.loss_floor = float(self.beta_c * self.setup.u_cold_train.mean() + self.beta_h * self.setup.u_hot_train.mean())
        self.emit(RunStarted(
            run_dir=str(self.run_dir), preset=cfg.preset_name, model=model_label(cfg),
            t_cold=cfg.temperatures.cold, t_hot=cfg.temperatures.hot, epochs=tc.epochs,
            batch_size=tc.batch_size, lr=tc.lr, device=str(self.device), n_params=n_params,
            engine=self.setup.engine.description, engine_reason=self.setup.engine_reason,
            steps_per_epoch=tc.steps_per_epoch or max(1, min(len(self.setup.cold_train), len(self.setup.hot_train)) // tc.batch_size),
            start_epoch=start_epoch, resumed=resume_ckpt is not None, loss_floor=self.loss_floor,
        ))
        if resume_ckpt is not None:
            self.boundary = {k: resume_ckpt[k] for k in ("epoch", "model", "optimizer", "schedule", "best_loss", "best_score",
                                                          "first_loss", "first_kl", "nan_failures", "alerts", "rng")}
            self.message(f"resumed from {self.run_dir / 'last.pt'} at epoch {start_epoch}")
        else:
            self._initial_eval()
        epoch = start_epoch
        status = "completed"
        try:
            for epoch in range(start_epoch + 1, tc.epochs + 1):
                metrics = self._train_epoch(epoch)
                if metrics is None:
                    status = "failed" if self.failed_reason else "stopped"
                    break
                self._end_epoch(metrics)
        except KeyboardInterrupt:
            status = "stopped"
            self.control.request_stop("interrupted")
        except Exception as exc:
            status = "failed"
            self.failed_reason = f"{type(exc).__name__}: {exc}"
            try:
                self._finish_files(status)
            finally:
                self._emit_finished(status)
            raise
        try:
            self._finish_files(status)
        except BaseException as exc:
            # e.g. the disk filled while writing the final model: the log must still say so
            self.failed_reason = self.failed_reason or f"could not write results: {exc}"
            self._emit_finished("failed")
            raise
        return self._emit_finished(status)

    def _end_epoch(self, metrics: EpochMetrics) -> None:
        cfg, epoch = self.cfg, metrics.epoch
        if not math.isfinite(self.first_loss) and math.isfinite(metrics.loss):
            self.first_loss = metrics.loss
        self.emit(metrics)
        self.schedule.end_epoch(metrics.loss)
        for alert in self.tracker.check(self.history):
            self.emit(alert)
        is_best = False
        if is_log_epoch(epoch, cfg.training.epochs, cfg.logging.eval_interval):
            is_best = self._log_block(metrics)
        self._capture_boundary(epoch)
        if is_best:
            self.save("best")
        if epoch % cfg.training.checkpoint_every == 0 or epoch == cfg.training.epochs:
            self.save("last")

    def _emit_finished(self, status: str) -> Finished:
        epoch = self.boundary["epoch"] if self.boundary else 0
        message = self.failed_reason or (self.control.stop_reason if status == "stopped" else "Training completed")
        event = Finished(status=status, epoch=epoch, files=list(self.files), message=message, best_loss=self.best_loss,
                         improvement_pct=self.history.blocks[-1].improvement_pct if self.history.blocks else math.nan)
        self.emit(event)
        return event

    def _finish_files(self, status: str) -> None:
        """Whatever happened, leave a loadable checkpoint and the loss curves."""
        if self.boundary is None:
            return
        try:
            self.save("final" if status == "completed" else "last")
        finally:
            self.write_png()

    @torch.no_grad()
    def initial_metrics(self, n_batches: int = 4) -> EpochMetrics:
        """The loss of the untrained map (epoch 0), on a few training batches: the reference
        for "improvement from start" and the first point of every curve."""
        bs = self.cfg.training.batch_size
        n = min(len(self.setup.cold_train), len(self.setup.hot_train))
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(12345))[: n_batches * bs]
        parts, kls = [], []
        for lo in range(0, len(idx), bs):
            sel = idx[lo:lo + bs]
            fwd_b, inv_b = self._step_losses(self.setup.cold_train[sel].to(self.device),
                                             self.setup.hot_train[sel].to(self.device))
            parts.append((fwd_b, inv_b))
            kls.append(self._kl(fwd_b, inv_b, sel, sel))
        mean = lambda values: float(np.nanmean(values)) if len(values) else math.nan  # noqa: E731
        fwd = [p[0] for p in parts]
        inv = [p[1] for p in parts]
        return EpochMetrics(kl=mean(kls),
            epoch=0, loss=mean([float(f[0]) + float(i[0]) for f, i in zip(fwd, inv)]),
            fwd_energy=mean([f[1] for f in fwd]), fwd_logdet=mean([f[2] for f in fwd]),
            inv_energy=mean([i[1] for i in inv]), inv_logdet=mean([i[2] for i in inv]),
            lr=self.schedule.lr_at(0.0), n_regularised=sum(f[3] + i[3] for f, i in zip(fwd, inv)),
            n_nonfinite=sum(f[4] + i[4] for f, i in zip(fwd, inv)), seconds=0.0)

    def _initial_eval(self) -> None:
        m = self.initial_metrics()
        self.first_loss = m.loss
        self.emit(m)
        stats = self.evaluate()
        self.first_kl = stats["kl_val"]
        self.initial_stats = dict(stats, loss=m.loss)
        if math.isfinite(m.loss):
            self.best_loss = m.loss
            self.best_score = self._score(m.loss, stats)
        self.message(
            f"step 0 (untrained map): loss {m.loss:.4g} kT, flow-swap acceptance {stats['acc_flow']:.3f} vs naive "
            f"{stats['acc_naive']:.3f}, ESS {stats['ess_fwd']:.1f}% / {stats['ess_inv']:.1f}%")
        self.emit(LogBlock(epoch=0, loss=m.loss, fwd_energy=m.fwd_energy, fwd_logdet=m.fwd_logdet,
                           inv_energy=m.inv_energy, inv_logdet=m.inv_logdet, lr=m.lr, improvement_pct=0.0, kl=m.kl,
                           **stats))
        for alert in self.tracker.check(self.history):
            self.emit(alert)
        self._capture_boundary(0)
        if math.isfinite(m.loss):
            self.save("best")

    def _log_block(self, m: EpochMetrics) -> bool:
        """Held-out evaluation on the adaptive schedule; True when this is the best loss so far."""
        stats = self.evaluate()
        self.emit(LogBlock(
            epoch=m.epoch, loss=m.loss, fwd_energy=m.fwd_energy, fwd_logdet=m.fwd_logdet,
            inv_energy=m.inv_energy, inv_logdet=m.inv_logdet, lr=m.lr,
            improvement_pct=improvement_pct(self.first_kl, stats["kl_val"]), kl=m.kl, **stats,
        ))
        for alert in self.tracker.check(self.history):
            self.emit(alert)
        score = self._score(m.loss, stats)
        if math.isfinite(score) and score < self.best_score:
            self.best_score, self.best_loss = score, m.loss
            return True
        return False

    @staticmethod
    def _score(loss: float, stats: dict) -> float:
        """best.pt is chosen on held-out data (KL of the held-out pairs), not on the training
        loss, which keeps falling when the flow starts to overfit."""
        kl_val = stats.get("kl_val", math.nan)
        return kl_val if math.isfinite(kl_val) else loss
