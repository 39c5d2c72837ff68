"""The training loop: UI-agnostic, it emits events to sinks and polls a TrainingControl.

One epoch is one pass over the training pairs (cold and hot samples, each shuffled) unless
`training.steps_per_epoch` fixes the number of steps. Each step evaluates

    forward:  E_x~cold [ linlogcut(beta_hot U(T x)) - log|det J_T(x)| ]
    inverse:  E_y~hot  [ linlogcut(beta_cold U(T^-1 y)) - log|det J_T^-1(y)| ]

with the float32 flow and float64 energies. Non-finite losses or gradients never reach the
weights: the step is skipped and, by policy, the model rolls back to the last good state
with a lower learning rate.

Three splits: training batches give the gradients; the validation pairs (blocks spread over the
trajectories) select best.pt and drive the alerts; the independent test run (another MD seed)
is evaluated only for the untrained map and, at the end, for the selected weights, which the
final model file holds. A run whose energies or loss explode ends `diverged` (`verdict`).

The trainer is handed everything it does not compute: the built `TrainingSetup` (system, engine,
data and their energies), the sinks, the control channel and the `RunArtifacts` that write
checkpoints and PNGs. It names no file and draws nothing.

The validation figure (what the map does to held-out pairs: Ramachandran maps, beta*U
histograms) reuses the images of each held-out evaluation, and is drawn in a writer thread at
every log block, on a PNG request and, for the final model, at the end.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import first_error_line
from ..flows.coupling import use_training_kernels
from ..flows.spline_kernels import EAGER, compiled_kernels
from ..physics.torsions import Backbone, backbone_of_topology, dihedrals
from .alerts import resume_command
from .artifacts import ArtifactLabel, BackgroundWriter, RunArtifacts
from .checkpoint import make_payload, refused
from .control import TrainingControl
from .distributed import Distributed
from .evaluation import Evaluation, MappedSamples, batch_reference, direction_terms, evaluate
from .events import (
    EARLY_END,
    Alert,
    CheckpointLabel,
    CheckpointSaved,
    EpochMetrics,
    Event,
    Finished,
    LogBlock,
    Message,
    RunStarted,
    RunStatus,
    Severity,
    Sink,
    StepProgress,
    TestEvaluation,
)
from .history import History, improvement_pct
from .losses import DirectionTerms, paired_kl
from .schedule import is_log_epoch
from .schema import SchemaError
from .setup import PARAMS_PER_INDEPENDENT_SAMPLE, build_transport, sized_report
from .state import TrainingState
from .validation_hist import validation_histograms
from .verdict import divergence

if TYPE_CHECKING:
    from ..config import Config
    from ..flows.transport import Transport
    from .setup import TrainingSetup

# The epoch-0 loss is the mean over this many training batches, drawn with a fixed seed.
INITIAL_BATCHES = 4
_INITIAL_SEED = 12345
# Held-out pairs the validation figure shows (evenly spaced in MD time): enough for a
# Ramachandran density, few enough that copying them costs nothing next to the evaluation.
FIGURE_PAIRS = 1000
# How long the end of a run waits for the figure being drawn (seconds on a loaded CPU).
FIGURE_WAIT_S = 120.0


def _lower_lr(lr: float) -> str:
    """Ten times below `lr`, as a user would type it (5e-5)."""
    mantissa, exponent = f"{lr / 10.0:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def model_label(cfg: Config) -> str:
    m = cfg.model
    kind = "transformer flow" if m.conditioner == "transformer" else "MLP coupling flow"
    rep = "internal coordinates" if m.representation == "internal" else "aligned Cartesian"
    start = ", harmonic start" if m.harmonic_init else ""
    return f"{kind} ({m.transform}, {m.n_layers} layers, {rep}{start})"


@dataclass
class _EpochSums:
    """Running sums over an epoch's good steps (non-finite ones are counted, not averaged)."""

    loss: float = 0.0
    fwd_energy: float = 0.0
    fwd_logdet: float = 0.0
    inv_energy: float = 0.0
    inv_logdet: float = 0.0
    grad_norm: float = 0.0
    kl: float = 0.0
    n_ok: int = 0
    n_steps: int = 0
    n_regularised: int = 0
    n_nonfinite: int = 0
    energy_evals: int = 0
    started: float = field(default_factory=time.perf_counter)

    def count(self, fwd: DirectionTerms, inv: DirectionTerms, energy_evals: int) -> None:
        self.n_steps += 1
        self.n_regularised += fwd.n_regularised + inv.n_regularised
        self.n_nonfinite += fwd.n_nonfinite + inv.n_nonfinite
        self.energy_evals += energy_evals

    def mean(self, total: float) -> float:
        return total / self.n_ok if self.n_ok else math.nan

    def add(self, loss: float, fwd: DirectionTerms, inv: DirectionTerms, grad_norm: float, kl: float) -> None:
        self.n_ok += 1
        self.loss += loss
        self.fwd_energy += fwd.mean_energy
        self.fwd_logdet += fwd.mean_logdet
        self.inv_energy += inv.mean_energy
        self.inv_logdet += inv.mean_logdet
        self.grad_norm += grad_norm
        self.kl += kl

    def metrics(self, epoch: int, lr: float) -> EpochMetrics:
        mean = self.mean
        return EpochMetrics(epoch=epoch, loss=mean(self.loss), fwd_energy=mean(self.fwd_energy),
                            fwd_logdet=mean(self.fwd_logdet), inv_energy=mean(self.inv_energy),
                            inv_logdet=mean(self.inv_logdet), lr=lr, grad_norm=mean(self.grad_norm),
                            n_regularised=self.n_regularised, n_nonfinite=self.n_nonfinite,
                            seconds=time.perf_counter() - self.started, kl=mean(self.kl),
                            energy_evals=self.energy_evals)


class _Stop(Exception):
    """Raised inside an epoch when the run must end (stop request, divergence, NaN guard)."""


class Trainer:
    """Trains the map of `setup` under `cfg`.

    Construction builds the model and its optimizer and, with `resume_from` (a payload from
    `checkpoint.load_checkpoint`, already validated), loads it: a checkpoint that does not fit
    this model is refused there, with a UserError naming `resume_path`, before `run()` writes
    anything. `history_events`: the run's earlier events (its metrics log), of which those up to
    the checkpoint's epoch seed the History, so alerts and curves continue where they were.
    `best_state`: on a resume, the run's best.pt payload, which the final model holds unless a
    better epoch comes. The caller owns `setup` and closes it.
    """

    def __init__(self, cfg: Config, setup: TrainingSetup, sinks: Sequence[Sink], control: TrainingControl,
                 artifacts: RunArtifacts, resume_from: Mapping[str, Any] | None = None, *,
                 resume_path: Path | None = None, history_events: Iterable[Event] = (), dist: Distributed | None = None,
                 run_info: Mapping[str, Any] | None = None, best_state: Mapping[str, Any] | None = None) -> None:
        self.cfg = cfg
        # RunStarted fields the app knows and the trainer does not (threads, SLURM job)
        self.run_info = dict(run_info or {})
        # the other ranks of a data-parallel run (training.distributed); one process: a no-op
        self.dist = dist or Distributed()
        self.setup = setup
        self.sinks = list(sinks)
        self.control = control
        self.artifacts = artifacts
        self.history = History()
        self.files: list[str] = []
        self.failed_reason = ""
        self.diverged_reason = ""
        self.early_stop_reason = ""   # set when training.patience ends the run
        self.final_model = ""
        self._segment_steps = 0
        # energy evaluations of this rank not yet in state.energy_evals (which counts all ranks)
        self._local_evals = 0
        self._segment_t0 = time.perf_counter()
        self._last_progress = -math.inf
        self.resume_path = resume_path
        self.resumed = resume_from is not None
        self._figures = BackgroundWriter()
        self._backbone: Backbone | None = None
        self._backbone_found = False
        self._latest_samples: MappedSamples | None = None  # of the last held-out evaluation
        self._best_samples: MappedSamples | None = None    # of the selected epoch's evaluation
        self._best_loaded = False                         # the final model's weights are in the map
        tc = cfg.training
        torch.manual_seed(tc.seed)  # the model's initial weights do not depend on anything before
        split = setup.split
        transport = build_transport(cfg, setup.ms, split.cold_train, split.hot_train).to(setup.device)
        self.state = TrainingState.create(cfg, transport)
        # The last epoch-boundary snapshot: what checkpoints hold and NaN rollbacks return to.
        self.boundary: dict[str, Any] | None = None
        self._last_saved: dict[str, Any] | None = None  # the snapshot last.pt holds
        if resume_from is not None:
            try:
                self.state.load_state_dict(resume_from)
            except SchemaError as exc:
                raise refused(resume_path or "checkpoint", exc.key, exc.problem) from None
            self.boundary = self.state.state_dict()
            for event in history_events:
                if getattr(event, "epoch", 0) <= self.state.epoch:
                    self.history.add(event)
        # The snapshot of the selected epoch: what best.pt and the final model hold.
        self.best_snapshot: dict[str, Any] | None = None
        if resume_from is not None:
            if best_state is not None and best_state.get("best_epoch") == self.state.best_epoch:
                self.best_snapshot = {k: best_state[k] for k in self.boundary or {} if k in best_state}
            elif self.state.best_epoch == self.state.epoch:
                self.best_snapshot = self.boundary

    @property
    def transport(self) -> Transport:
        return self.state.transport

    @property
    def steps_per_epoch(self) -> int:
        tc = self.cfg.training
        return tc.steps_per_epoch or max(1, self.setup.split.n_train_pairs // (tc.batch_size * self.dist.world_size))

    # --- events ------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        self.history.add(event)
        for sink in self.sinks:
            sink.emit(event)

    def message(self, text: str, level: Severity = "info") -> None:
        self.emit(Message(text=text, level=level))

    def _check_alerts(self) -> None:
        for alert in self.state.tracker.check(self.history):
            self.emit(alert)

    # --- one step ----------------------------------------------------------------------------
    def _step_losses(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[DirectionTerms, DirectionTerms]:
        return direction_terms(self.state.transport, self.setup, xb, yb, self.cfg.training.energy_reg_kt)

    def _train_epoch(self, epoch: int) -> EpochMetrics:
        """Raises _Stop when the run must end before the epoch does."""
        tc = self.cfg.training
        st, split = self.state, self.setup.split
        n_c, n_h = len(split.cold_train), len(split.hot_train)
        n_pairs = split.n_train_pairs
        steps = self.steps_per_epoch
        perm_c = torch.randperm(n_c, generator=st.shuffle)
        perm_h = torch.randperm(n_h, generator=st.shuffle)
        sums = _EpochSums()
        for step in range(steps):
            # requests, pause and stop; with several ranks, agreed by all of them
            if self.dist.between_steps(self.control, self._service_requests, self._emit_acknowledgements):
                raise _Stop
            lr = st.schedule.lr_at(epoch - 1 + step / steps)
            for group in st.optimizer.param_groups:
                group["lr"] = lr
            # rank r trains on the r-th slice of the step's batch_size * world_size pairs
            width = tc.batch_size * self.dist.world_size
            lo = (step * width) % max(1, n_pairs - width + 1) + self.dist.rank * tc.batch_size
            idx_c = perm_c[(torch.arange(tc.batch_size) + lo) % n_c]
            idx_h = perm_h[(torch.arange(tc.batch_size) + lo) % n_h]
            fwd, inv = self._step_losses(split.cold_train[idx_c].to(self.setup.device),
                                         split.hot_train[idx_h].to(self.setup.device))
            fwd, inv, reference = self.dist.reduce_terms(fwd, inv, batch_reference(self.setup, idx_c, idx_h),
                                                         tc.batch_size)
            loss = fwd.loss + inv.loss
            loss_value = float(loss.detach())
            sums.count(fwd, inv, 2 * tc.batch_size)
            self._local_evals += 2 * tc.batch_size
            self._segment_steps += 1
            st.optimizer.zero_grad(set_to_none=True)
            grad_norm = math.nan
            if math.isfinite(loss_value):
                torch.autograd.backward(loss)  # typed, unlike Tensor.backward
                self.dist.all_reduce_grads(st.transport.flow.parameters())
                grad_norm = float(torch.nn.utils.clip_grad_norm_(st.transport.flow.parameters(), tc.grad_clip))
            if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
                if not self._handle_nonfinite(epoch, loss_value):
                    raise _Stop
                self._progress(epoch, step + 1, sums, lr)
                continue
            st.optimizer.step()
            st.after_step()
            st.nan_failures = 0
            kl = paired_kl(fwd, inv, reference)
            sums.add(loss_value, fwd, inv, grad_norm, kl)
            self._progress(epoch, step + 1, sums, lr)
        return sums.metrics(epoch, st.optimizer.param_groups[0]["lr"])

    def _progress(self, epoch: int, step: int, sums: _EpochSums, lr: float) -> None:
        """A StepProgress about every `logging.step_progress_s`: one clock read per step, so the
        log gets a few lines a second at most, whatever the step time."""
        now = time.perf_counter()
        if now - self._last_progress < self.cfg.logging.step_progress_s:
            return
        self._last_progress = now
        tc = self.cfg.training
        spe = self.steps_per_epoch
        seconds = now - self._segment_t0
        left = (tc.epochs - epoch) * spe + (spe - step)
        per_step = seconds / self._segment_steps if self._segment_steps else math.nan
        self.emit(StepProgress(
            epoch=epoch, step=step, steps_per_epoch=spe, epochs=tc.epochs, loss=sums.mean(sums.loss),
            fwd_energy=sums.mean(sums.fwd_energy), inv_energy=sums.mean(sums.inv_energy), lr=lr,
            n_regularised=sums.n_regularised, n_nonfinite=sums.n_nonfinite, epoch_seconds=now - sums.started,
            segment_steps=self._segment_steps, segment_seconds=seconds, eta_s=per_step * left))

    def _handle_nonfinite(self, epoch: int, loss: float) -> bool:
        """NaN/Inf guard. Returns False when training must stop."""
        tc, st = self.cfg.training, self.state
        st.nan_failures += 1
        st.optimizer.zero_grad(set_to_none=True)
        what = "loss" if not math.isfinite(loss) else "gradient"
        command = resume_command(self.history, lr=_lower_lr(tc.lr))
        if tc.nan_policy == "stop":
            self.emit(Alert(epoch=epoch, rule="nan_guard", severity="error",
                            message=f"non-finite {what}; stopping (training.nan_policy = 'stop')",
                            hint="continue from best.pt with a lower LR, or set training.nan_policy = 'rollback'",
                            command=command))
            self.diverged_reason = f"non-finite {what} at epoch {epoch} (training.nan_policy = 'stop')"
            return False
        if tc.nan_policy == "rollback" and self.boundary is not None:
            st.restore_weights(self.boundary)
            st.schedule.scale *= tc.nan_lr_factor
            action = f"rolled back to the end of epoch {self.boundary['epoch']}, LR scaled by {tc.nan_lr_factor}"
        else:
            action = "step skipped"
        self.emit(Alert(epoch=epoch, rule="nan_guard", severity="warning",
                        message=f"non-finite {what} ({st.nan_failures} in a row): {action}",
                        hint="continue from best.pt with a lower LR; lower training.energy_reg_kt; check the structure",
                        command=command))
        if st.nan_failures >= tc.max_nan_failures:
            after = " despite rollbacks" if tc.nan_policy == "rollback" else ""
            self.diverged_reason = (f"{st.nan_failures} consecutive non-finite steps{after} at epoch {epoch} "
                                    f"(training.max_nan_failures = {tc.max_nan_failures})")
            return False
        return True

    # --- requests ------------------------------------------------------------------------------
    def _service_requests(self) -> None:
        """Read the control channel and answer checkpoint and PNG requests; cheap when idle."""
        self._collect_figures()
        self.control.poll()
        request = self.control.take_checkpoint_request()
        if request is not None:
            path = self._save("last", event_label="manual")
            self.control.acknowledge(request, str(path) if path else "no finished epoch to save yet")
        request = self.control.take_png_request()
        if request is not None:
            png = self._write_png("running")
            self._draw_validation(self._latest_samples)
            self.control.acknowledge(request, str(png) if png else "could not write the PNG (see the log)")
        self._emit_acknowledgements()

    def _emit_acknowledgements(self) -> None:
        self.control.epoch = self.state.epoch
        for event in self.control.take_acknowledgements():
            self.emit(event)

    # --- evaluation ----------------------------------------------------------------------------
    @property
    def _eval_batch(self) -> int:
        return max(64, self.cfg.training.batch_size * 4)

    def evaluate(self) -> Evaluation:
        """The validation split (selects best.pt, drives alerts)."""
        ev = evaluate(self.state.evaluated, self.setup, self._eval_batch, keep=self._figure_pairs)
        self._local_evals += 2 * ev.n_pairs
        return ev

    @property
    def _figure_pairs(self) -> int:
        # only rank 0 writes files: the other ranks keep no images
        return FIGURE_PAIRS if self.dist.is_main else 0

    def _settle_evals(self, *epoch_counts: int) -> list[int]:
        """Add the energy evaluations of every rank since the last call to the run's total, and
        return `epoch_counts` (this rank's) summed over the ranks, in one reduction."""
        *summed, total = self.dist.reduce_counts([*epoch_counts, self._local_evals])
        self.state.energy_evals += total
        self._local_evals = 0
        return summed

    @property
    def _energy_evals_so_far(self) -> int:
        """The run's total including evaluations not yet settled (a partial epoch): after the
        loop no rank may wait in a collective (one may have failed alone), and every rank runs
        the same steps on equal batches, so the others' share equals this rank's."""
        return self.state.energy_evals + self._local_evals * self.dist.world_size

    def _test(self, label: str, epoch: int) -> None:
        """The map as it stands on the independent test run; nothing when there is none. Test
        energy evaluations are not training cost: they are not counted."""
        pairs = self.setup.test
        if pairs is None:
            return
        ev = evaluate(self.state.evaluated, self.setup, self._eval_batch, pairs)
        self.emit(TestEvaluation(
            epoch=epoch, label="final" if label == "final" else "untrained", n_pairs=ev.n_pairs,
            acc_flow=ev.acc_flow, acc_flow_se=ev.acc_flow_se, acc_naive=ev.acc_naive, acc_naive_se=ev.acc_naive_se,
            ess_fwd=ev.ess_fwd, ess_fwd_se=ev.ess_fwd_se, ess_inv=ev.ess_inv, ess_inv_se=ev.ess_inv_se,
            kl=ev.kl_val, kl_se=ev.kl_val_se, roundtrip_err=ev.roundtrip_err, block=ev.block,
            path=self.setup.split.test_path))

    @torch.no_grad()
    def initial_metrics(self) -> EpochMetrics:
        """The loss of the untrained map (epoch 0), on a few training batches: the first point
        of every curve."""
        bs = self.cfg.training.batch_size
        split = self.setup.split
        idx = torch.randperm(split.n_train_pairs, generator=torch.Generator().manual_seed(_INITIAL_SEED))
        idx = idx[: INITIAL_BATCHES * bs]
        batches: list[tuple[DirectionTerms, DirectionTerms]] = []
        kls: list[float] = []
        for lo in range(0, len(idx), bs):
            sel = idx[lo:lo + bs]
            fwd, inv = self._step_losses(split.cold_train[sel].to(self.setup.device),
                                         split.hot_train[sel].to(self.setup.device))
            batches.append((fwd, inv))
            kls.append(paired_kl(fwd, inv, batch_reference(self.setup, sel, sel)))
            self._local_evals += 2 * len(sel)

        def mean(values: list[float]) -> float:
            # NaN batches are left out of each mean; an all-NaN epoch 0 stays NaN
            finite = [v for v in values if not math.isnan(v)]
            return float(np.mean(finite)) if finite else math.nan

        return EpochMetrics(
            epoch=0, loss=mean([float(f.loss) + float(i.loss) for f, i in batches]),
            fwd_energy=mean([f.mean_energy for f, _ in batches]), fwd_logdet=mean([f.mean_logdet for f, _ in batches]),
            inv_energy=mean([i.mean_energy for _, i in batches]), inv_logdet=mean([i.mean_logdet for _, i in batches]),
            lr=self.state.schedule.lr_at(0.0), seconds=0.0, kl=mean(kls),
            n_regularised=sum(f.n_regularised + i.n_regularised for f, i in batches),
            n_nonfinite=sum(f.n_nonfinite + i.n_nonfinite for f, i in batches),
            energy_evals=2 * len(idx), energy_evals_total=self.state.energy_evals, elapsed_s=self.state.elapsed_s)

    def _log_block(self, m: EpochMetrics, ev: Evaluation, improvement: float) -> None:
        self.emit(LogBlock(epoch=m.epoch, loss=m.loss, fwd_energy=m.fwd_energy, fwd_logdet=m.fwd_logdet,
                           inv_energy=m.inv_energy, inv_logdet=m.inv_logdet, lr=m.lr,
                           improvement_pct=improvement, kl=m.kl, n_regularised=m.n_regularised,
                           n_nonfinite=m.n_nonfinite, energy_evals_total=self.state.energy_evals, **ev.fields()))

    def _initial_eval(self) -> None:
        st = self.state
        started = time.perf_counter()
        m = self.initial_metrics()
        ev = self.evaluate()
        (m.energy_evals,) = self._settle_evals(m.energy_evals)
        st.elapsed_s += time.perf_counter() - started
        m.energy_evals_total, m.elapsed_s = st.energy_evals, st.elapsed_s
        self.emit(m)
        st.first_kl = ev.kl_val
        if math.isfinite(m.loss):
            st.best_loss, st.best_score, st.best_epoch = m.loss, ev.score(m.loss), 0
        self.message(
            f"step 0 (untrained map), validation: loss {m.loss:.4g} kT, flow-swap acceptance "
            f"{ev.acc_flow:.3f} ± {ev.acc_flow_se:.3f} vs naive {ev.acc_naive:.3g}, ESS {ev.ess_fwd:.1f}% / "
            f"{ev.ess_inv:.1f}%")
        self._log_block(m, ev, 0.0)
        self._latest_samples = self._samples_for_figure(ev, 0, "untrained map (epoch 0)")
        self._emit_histograms(self._latest_samples)
        self._draw_validation(self._latest_samples)
        self._check_alerts()
        self._test("untrained", 0)
        st.epoch = 0
        self._capture_boundary()
        if math.isfinite(m.loss):
            self.best_snapshot = self.boundary
            self._best_samples = self._latest_samples
            self._save("best")

    def _end_epoch(self, m: EpochMetrics) -> None:
        tc, st = self.cfg.training, self.state
        st.elapsed_s += m.seconds
        (m.energy_evals,) = self._settle_evals(m.energy_evals)
        m.energy_evals_total, m.elapsed_s = st.energy_evals, st.elapsed_s
        self.emit(m)
        st.schedule.end_epoch(m.loss)
        self._check_alerts()
        is_best = False
        evaluated = is_log_epoch(m.epoch, tc.epochs, self.cfg.logging.eval_interval)
        if evaluated:
            ev = self.evaluate()
            self._settle_evals()
            self._log_block(m, ev, improvement_pct(st.first_kl, ev.kl_val))
            self._latest_samples = self._samples_for_figure(ev, m.epoch, f"map at epoch {m.epoch}")
            self._emit_histograms(self._latest_samples)
            self._draw_validation(self._latest_samples)
            self._check_alerts()
            score = ev.score(m.loss)
            if math.isfinite(score) and score < st.best_score:
                st.best_score, st.best_loss, st.best_epoch = score, m.loss, m.epoch
                self._best_samples = self._latest_samples
                is_best = True
        st.epoch = m.epoch
        self._capture_boundary()
        if is_best:
            self.best_snapshot = self.boundary
            self._save("best")
        if m.epoch % tc.checkpoint_every == 0 or m.epoch == tc.epochs:
            self._save("last")
        found = divergence(self.history, self.cfg.alerts)
        if found is not None and self.cfg.alerts.stop_on_divergence:
            self.diverged_reason = f"diverged at epoch {found.epoch}: {found.describe()}"
            raise _Stop
        best = st.best_epoch
        if evaluated and tc.patience and best is not None and m.epoch - best >= tc.patience and m.epoch < tc.epochs:
            # every rank evaluates the whole validation split, so all of them end here together
            self.early_stop_reason = (
                f"{EARLY_END}: the {self.best_metric} has not improved for "
                f"{m.epoch - best} epochs, since epoch {best} (training.patience = {tc.patience})")
            raise _Stop

    def _capture_boundary(self) -> None:
        self.boundary = self.state.state_dict()

    # --- results -------------------------------------------------------------------------------
    def _save(self, label: ArtifactLabel, event_label: CheckpointLabel | None = None) -> Path | None:
        """Write the last epoch-boundary snapshot as `label`; None before the first one."""
        if self.boundary is None:
            return None
        path = self.artifacts.save_checkpoint(label, make_payload(self.boundary, self.cfg, self.setup.ms))
        self.emit(CheckpointSaved(epoch=int(self.boundary["epoch"]), path=str(path), label=event_label or label))
        self._note_file(path)
        if label == "last":
            self._last_saved = self.boundary
        return path

    @property
    def best_metric(self) -> str:
        """What the final model was selected on: the validation KL unless no KL was finite."""
        best = self.state.best_epoch
        kl = any(b.epoch == best and math.isfinite(b.kl_val) for b in self.history.blocks)
        return "validation KL" if kl or math.isfinite(self.state.first_kl) else "training loss"

    def _save_final(self) -> Path | None:
        """The final model: the selected (best validated) weights, saying which and why."""
        snap = self.best_snapshot
        if snap is None:
            return None
        payload = make_payload(snap, self.cfg, self.setup.ms)
        payload["selection"] = {"epoch": int(snap["epoch"]), "score": float(self.state.best_score),
                                "metric": self.best_metric, "split": "validation", "unit": "kT",
                                "last_epoch": int(self.state.epoch), "weights": self._weights_label}
        path = self.artifacts.save_checkpoint("final", payload)
        self.emit(CheckpointSaved(epoch=int(snap["epoch"]), path=str(path), label="final"))
        self._note_file(path)
        self.final_model = str(path)
        return path

    @property
    def _weights_label(self) -> str:
        decay = self.cfg.training.ema_decay
        return f"moving average (training.ema_decay = {decay:g})" if decay > 0 else "as trained"

    def _note_average(self) -> None:
        """Says which weights the validation and test figures are of, when they are not the
        trained ones: the training loss is still measured on those."""
        decay = self.cfg.training.ema_decay
        if decay > 0:
            self.message(f"validation, the test run and the saved models use a moving average of the weights over "
                         f"about {1.0 / (1.0 - decay):,.0f} steps (training.ema_decay = {decay:g}); the training "
                         "loss and KL are of the weights as trained")

    def _compile_flow(self) -> None:
        """training.compile_flow: compile the spline kernels now, on one training batch in both
        directions with a backward pass (the graphs a step uses), so the wait is announced and the
        first epoch's time and ETA leave it out. A compiler failure never costs the run: it goes on
        eager and says so."""
        if not self.cfg.training.compile_flow:
            return
        transport = self.state.transport
        if not use_training_kernels(transport, compiled_kernels()):
            return
        self.message("compiling the flow's spline kernels for the training steps (training.compile_flow; minutes "
                     "on a CPU the first time, seconds once torch's on-disk cache holds them)")
        started = time.perf_counter()
        split, bs = self.setup.split, self.cfg.training.batch_size
        try:
            with torch.enable_grad():
                tx, ld_f = transport(split.cold_train[:bs].to(self.setup.device))
                ty, ld_i = transport.inverse(split.hot_train[:bs].to(self.setup.device))
                torch.autograd.backward(tx.sum() + ty.sum() + ld_f.sum() + ld_i.sum())
        except Exception as exc:  # the compiler is an external toolchain
            use_training_kernels(transport, EAGER)
            self.message(f"torch.compile of the flow's spline kernels failed ({type(exc).__name__}: "
                         f"{first_error_line(exc)}); "
                         "training goes on with the eager kernels", "warning")
            return
        finally:
            for param in transport.parameters():
                param.grad = None
        self.message(f"flow spline kernels compiled in {time.perf_counter() - started:.0f} s")

    def _write_png(self, status: str, ending: Finished | None = None) -> Path | None:
        """`ending`: the run's Finished event as it will be, so the figure of a finished run says
        how it ended, what the final model is and what it cost (it is drawn before the event)."""
        history = dataclasses.replace(self.history, finished=ending) if ending is not None else self.history
        try:
            path = self.artifacts.write_png(history, status)
        except Exception as exc:  # a plotting failure must never cost the run
            self.message(f"could not write the loss-curve PNG: {exc}", "warning")
            return None
        if path is not None:
            self._note_file(path)
        return path

    # --- the validation figure ------------------------------------------------------------------
    def _backbone_of_system(self) -> Backbone | None:
        """The peptide backbone of the topology, found once (what `pt` uses); None without one."""
        if not self._backbone_found:
            self._backbone_found = True
            topology = getattr(self.setup.ms, "topology", None)
            found = backbone_of_topology(topology) if topology is not None else None
            self._backbone = found if found is not None and found.is_peptide else None
        return self._backbone

    def _samples_for_figure(self, ev: Evaluation, epoch: int, model: str) -> MappedSamples | None:
        if ev.samples is None:
            return None
        return dataclasses.replace(ev.samples, epoch=epoch, model=model, backbone=self._backbone_of_system())

    def _emit_histograms(self, samples: MappedSamples | None) -> None:
        """The figure's coarse histograms as an event, so the monitor's validation pane (and
        watch on another machine) shows a mode collapse while training."""
        if samples is None:
            return
        try:
            rama, label = None, ""
            if samples.backbone is not None:
                pair = samples.backbone.pairs[0]
                rama = {name: (np.degrees(dihedrals(x, pair.phi.atoms)), np.degrees(dihedrals(x, pair.psi.atoms)))
                        for name, x in (("cold", samples.cold), ("hot_to_cold", samples.hot_to_cold),
                                        ("hot", samples.hot), ("cold_to_hot", samples.cold_to_hot))}
                label = pair.label
            event = validation_histograms(samples.epoch, hot=samples.reduced_hot,
                                          cold_to_hot=samples.reduced_cold_to_hot, cold=samples.reduced_cold,
                                          hot_to_cold=samples.reduced_hot_to_cold, rama=rama, rama_label=label,
                                          split=samples.split)
        except Exception as exc:  # a diagnostic must never stop training
            self.message(f"could not bin the validation histograms: {type(exc).__name__}: {exc}", "warning")
            return
        self.emit(event)

    def _draw_validation(self, samples: MappedSamples | None) -> None:
        """Hand the figure of `samples` to the writer thread; training goes on meanwhile."""
        if samples is None:
            return
        artifacts = self.artifacts
        self._figures.submit(lambda: artifacts.write_validation(samples))

    def _collect_figures(self) -> None:
        """Note the figures written since the last call; a failed one is a warning, never more."""
        for outcome in self._figures.take():
            if isinstance(outcome, Exception):
                self.message(f"could not write the validation figure: {type(outcome).__name__}: {outcome}", "warning")
            elif outcome is not None:
                self._note_file(outcome)

    def _final_samples(self) -> MappedSamples | None:
        """The final model on the held-out pairs: the selected epoch's images when this process
        evaluated that epoch, else (resumed past it) one more pass, a diagnostic, not counted as
        training cost. None when the final model's weights are not loaded (a failed run)."""
        snap = self.best_snapshot
        if not self._best_loaded or snap is None or not self.dist.is_main:
            return None
        epoch = int(snap["epoch"])
        model = f"final model = epoch {epoch} (selected on {self.best_metric})"
        samples = self._best_samples
        if samples is None or samples.epoch != epoch:
            samples = evaluate(self.state.evaluated, self.setup, self._eval_batch, keep=FIGURE_PAIRS).samples
        if samples is None:
            return None
        return dataclasses.replace(samples, epoch=epoch, model=model, backbone=self._backbone_of_system())

    def _finish_validation(self) -> None:
        """Draw the final model's figure and wait for the writer, so the Finished event lists
        what was written and no write is left half done when the process exits."""
        try:
            self._draw_validation(self._final_samples())
            if not self._figures.wait(FIGURE_WAIT_S):
                self.message(f"the validation figure was still being drawn after {FIGURE_WAIT_S:.0f} s; "
                             "it may be missing or be an earlier one", "warning")
            self._collect_figures()
        except Exception as exc:  # a figure must never cost the run its results
            self.message(f"could not write the validation figure: {type(exc).__name__}: {exc}", "warning")
        finally:
            self._figures.close()

    def _note_file(self, path: Path) -> None:
        if str(path) not in self.files:
            self.files.append(str(path))

    def _finish_files(self, status: RunStatus) -> None:
        """Whatever happened, leave the last state, the best model as the final one, its test
        figures and the loss curves."""
        try:
            if self._last_saved is not self.boundary:
                self._save("last")
            if self._save_final() is not None and status != "failed" and self.best_snapshot is not None:
                self.state.hold(self.best_snapshot["model"])
                self._best_loaded = True
                self._test("final", int(self.best_snapshot["epoch"]))
        finally:
            self._finish_validation()
            self._write_png(status, self._finished(status))

    def _emit_finished(self, status: RunStatus) -> Finished:
        event = self._finished(status)
        self.emit(event)
        return event

    def _finished(self, status: RunStatus) -> Finished:
        """The Finished event of the run as it stands (its files so far)."""
        if self.failed_reason:
            message = self.failed_reason
        elif status == "diverged":
            message = self.diverged_reason
        elif status == "stopped":
            message = self.control.stop_reason or "interrupted"
        elif self.early_stop_reason:
            message = self.early_stop_reason
        else:
            message = "Training completed"
        st = self.state
        best_epoch = st.best_epoch if self.best_snapshot is not None else None
        has_best = best_epoch is not None
        command = ""
        if status == "diverged":
            command = resume_command(self.history, lr=_lower_lr(self.cfg.training.lr))
        elif status in ("stopped", "failed"):
            command = resume_command(self.history, best=False)
        event = Finished(status=status, epoch=st.epoch, files=list(self.files), message=message,
                         best_loss=st.best_loss if has_best else math.nan,
                         improvement_pct=improvement_pct(st.first_kl, st.best_score) if has_best else math.nan,
                         best_epoch=best_epoch if best_epoch is not None else -1,
                         best_score=st.best_score if has_best else math.nan,
                         best_metric=self.best_metric if has_best else "", start_score=st.first_kl,
                         final_model=self.final_model, verdict=self.diverged_reason if status == "diverged" else "",
                         energy_evals=self._energy_evals_so_far, elapsed_s=st.elapsed_s, resume_command=command)
        return event

    def _note_validation_blocks(self) -> None:
        """Says when the validation blocks are shorter than the slowest torsion's autocorrelation
        time: on that torsion they then share states with the training samples beside them, and
        only the test run is independent of training."""
        split = self.setup.split
        report = next((r for r in split.reports if r.split == "training data"), None)
        if report is None or not split.val_blocks or not (report.n_independent > 0):
            return
        tau = report.n_samples / report.n_independent
        length = split.val_held / split.val_blocks
        if length < tau:
            self.message(f"validation blocks of {length:.0f} samples ({split.val_blocks} blocks) are shorter than the "
                         f"autocorrelation time of {report.slowest} (~{tau:.0f} samples): on it they share states "
                         "with the training samples beside them; the test run is the independent judge "
                         "(fewer data.validation_blocks: longer blocks, fewer stretches of the run)")

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> Finished:
        """Train to `training.epochs`; always ends with a Finished event (also when it raises)."""
        cfg, tc, st = self.cfg, self.cfg.training, self.state
        start_epoch = st.epoch
        split = self.setup.split
        self.emit(RunStarted(
            run_dir=self.artifacts.location, preset=cfg.preset_name, model=model_label(cfg),
            t_cold=cfg.temperatures.cold, t_hot=cfg.temperatures.hot, epochs=tc.epochs,
            batch_size=tc.batch_size, lr=tc.lr, device=str(self.setup.device),
            n_params=sum(p.numel() for p in st.transport.flow.parameters() if p.requires_grad),
            engine=self.setup.engine.description, engine_reason=self.setup.engine_reason,
            steps_per_epoch=self.steps_per_epoch, start_epoch=start_epoch, resumed=self.resumed,
            warmup_epochs=tc.warmup_epochs, data_samples=cfg.data.n_samples,
            train_pairs=split.n_train_pairs, val_held=split.val_held, val_blocks=split.val_blocks,
            val_evaluated=min(len(split.cold_val), len(split.hot_val)),
            test_pairs=min(len(split.cold_test), len(split.hot_test))
            if split.cold_test is not None and split.hot_test is not None else 0,
            alert_keys=cfg.alerts.numeric()[0], alert_values=cfg.alerts.numeric()[1],
            **self.run_info,
        ))
        n_params = sum(p.numel() for p in st.transport.flow.parameters() if p.requires_grad)
        for report in self.setup.split.reports:
            if report.split == "training data":  # what the flow learns from; the test set only judges
                report = sized_report(report, n_params)
            self.emit(report)
            if report.split == "training data" and report.suggested_n_samples:
                self.message(
                    f"{report.path} holds about {report.n_independent:.0f} independent samples of its slowest backbone "
                    f"torsion ({report.slowest}); a flow of {n_params:,} parameters wants about {report.needed:,} "
                    f"(one per {PARAMS_PER_INDEPENDENT_SAMPLE:.0f} parameters, a rule of thumb): data.n_samples = "
                    f"{report.suggested_n_samples} would give them", "warning")
        self._note_validation_blocks()
        self._note_average()
        self._compile_flow()
        if self.dist.active:
            # the summary and the PNG print one cost; say whose it is
            self.message(f"energy evaluations are counted over all {self.dist.world_size} ranks (each evaluates its "
                         "own batches, and the held-out evaluation runs whole on every rank); the system line is "
                         "this process's")
        self._segment_t0 = time.perf_counter()
        status: RunStatus = "completed"
        try:
            if self.resumed:
                where = f" {self.resume_path}" if self.resume_path else ""
                self.message(f"resumed from{where} at epoch {start_epoch}")
            else:
                self._initial_eval()
            for epoch in range(start_epoch + 1, tc.epochs + 1):
                self._end_epoch(self._train_epoch(epoch))
        except _Stop:
            status = ("failed" if self.failed_reason else "diverged" if self.diverged_reason
                      else "completed" if self.early_stop_reason else "stopped")
        except KeyboardInterrupt:
            status = "stopped"
        except Exception as exc:
            self.failed_reason = f"{type(exc).__name__}: {exc}"
            try:
                self._finish_files("failed")
            finally:
                self._emit_finished("failed")
            raise
        try:
            self._finish_files(status)
        except BaseException as exc:
            # e.g. the disk filled while writing the final model: the log must still say so
            self.failed_reason = self.failed_reason or f"could not write results: {exc}"
            self._emit_finished("failed")
            raise
        return self._emit_finished(status)
