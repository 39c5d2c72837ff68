"""Deterministic event streams and a fake trainer for the TUI tests.

Every event carries an explicit timestamp `t` so elapsed/ETA on screen depend only on the
stream and the injected clock, never on when the test ran.

Run as a script to regenerate tests/fixtures/watch_run/metrics.jsonl.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypedDict

from textual.app import App
from textual.pilot import Pilot

from molpt_tui.training.control import TrainingControl
from molpt_tui.training.events import (
    Alert,
    CheckpointSaved,
    DataProgress,
    EpochMetrics,
    Event,
    Finished,
    LogBlock,
    Message,
    RunStarted,
    RunStatus,
    StepProgress,
    SystemStats,
    TestEvaluation,
    header_line,
)
from molpt_tui.training.history import improvement_pct
from molpt_tui.training.metrics_log import MetricsLogSink
from molpt_tui.training.run_dir import RunDirectory
from molpt_tui.tui.source import LiveRun

Wait = Callable[..., Awaitable[None]]  # the `wait` fixture: wait_until
T0 = 1_700_000_000.0  # a fixed wall-clock origin for every stream
FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "watch_run"
BLOCK_EPOCHS = (1, 2, 5, 10, 20, 50, 100, 150, 200)
# beta_c<U>_cold + beta_h<U>_hot of the fake system: the loss above it is the KL estimate.
LOSS_FLOOR = 103.0
STEPS_PER_EPOCH = 10


class Curves(TypedDict):
    loss: float
    fwd_energy: float
    fwd_logdet: float
    inv_energy: float
    inv_logdet: float
    lr: float


def curves(epoch: int) -> Curves:
    """Plausible curves: a huge start, an inverse blow-up around epoch 60, then convergence."""
    e = float(epoch)
    fwd_energy = 60.0 + 5000.0 * math.exp(-e / 8.0) + 0.8 * math.sin(e / 3.0)
    fwd_logdet = -20.0 + 30.0 * (1.0 - math.exp(-e / 30.0))
    spike = 400.0 * math.exp(-((e - 62.0) / 2.0) ** 2)
    inv_energy = 55.0 + 1.0e5 * math.exp(-e / 5.0) + spike + 0.6 * math.cos(e / 4.0)
    inv_logdet = 18.0 - 25.0 * (1.0 - math.exp(-e / 30.0))
    loss = (fwd_energy - fwd_logdet) + (inv_energy - inv_logdet)
    warmup = min(1.0, e / 5.0)  # RunStarted says warmup_epochs=5
    lr = warmup * 1e-3 * (0.5 + 0.5 * math.cos(math.pi * min(e, 200.0) / 200.0)) + 1e-5
    return Curves(loss=loss, fwd_energy=fwd_energy, fwd_logdet=fwd_logdet, inv_energy=inv_energy,
                  inv_logdet=inv_logdet, lr=lr)


def run_started(*, epochs: int = 200, run_dir: str = "runs/ala2-300-450", t: float = T0,
                start_epoch: int = 0, resumed: bool = False) -> RunStarted:
    return RunStarted(run_dir=run_dir, preset="ala2-vacuum", model="transformer flow (internal coordinates)",
                      t_cold=300.0, t_hot=450.0, epochs=epochs, batch_size=64, lr=1e-3, device="cpu",
                      n_params=442_368, engine="openmm (Reference, 2 workers)", steps_per_epoch=STEPS_PER_EPOCH,
                      start_epoch=start_epoch, resumed=resumed, warmup_epochs=5, t=t)


def kl(epoch: int) -> float:
    """Training KL: the loss above its floor (kT)."""
    return curves(epoch)["loss"] - LOSS_FLOOR


def kl_val(epoch: int) -> float:
    """Held-out KL: above the training one, and rising a little at the end (mild overfitting)."""
    e = float(epoch)
    return float(kl(epoch) * 1.15 + 0.4 + 0.002 * max(e - 150.0, 0.0) ** 1.5)


def log_block(epoch: int, t: float) -> LogBlock:
    c = curves(max(epoch, 1)) if epoch else curves(1)
    acc = 0.136 + 0.28 * (1.0 - math.exp(-epoch / 40.0))
    return LogBlock(epoch=epoch, improvement_pct=improvement_pct(kl_val(1), kl_val(max(epoch, 1))),
                    acc_flow=acc, acc_naive=0.136, ess_fwd=2.0 + 30.0 * (1 - math.exp(-epoch / 50.0)),
                    ess_inv=1.5 + 25.0 * (1 - math.exp(-epoch / 50.0)), kl=kl(max(epoch, 1)),
                    kl_val=kl_val(max(epoch, 1)), acc_flow_se=0.012 + 0.02 * math.exp(-epoch / 30.0),
                    acc_naive_se=0.006, ess_fwd_se=1.5, ess_inv_se=1.2, kl_val_se=0.05 * kl_val(max(epoch, 1)) + 0.1,
                    t=t, **c)


def step_progress(epoch: int, step: int, t: float, *, epochs: int = 200, segment_steps: int = 0) -> StepProgress:
    """Where epoch `epoch` stands after `step` of its steps (running means near the epoch's)."""
    c = curves(epoch)
    per_step = epoch_seconds(epoch) / STEPS_PER_EPOCH
    done = segment_steps or (epoch - 1) * STEPS_PER_EPOCH + step
    left = (epochs - epoch) * STEPS_PER_EPOCH + (STEPS_PER_EPOCH - step)
    return StepProgress(epoch=epoch, step=step, steps_per_epoch=STEPS_PER_EPOCH, epochs=epochs,
                        loss=c["loss"] * 1.01, fwd_energy=c["fwd_energy"] * 1.01, inv_energy=c["inv_energy"] * 1.01,
                        lr=c["lr"], n_regularised=3, n_nonfinite=1, epoch_seconds=per_step * step,
                        segment_steps=done, segment_seconds=done * per_step, eta_s=left * per_step, t=t)


def test_set_result(label: str, epoch: int, t: float) -> TestEvaluation:
    trained = label == "final"
    return TestEvaluation(epoch=epoch, label="final" if trained else "untrained", n_pairs=2000,
                          acc_flow=0.395 if trained else 0.14, acc_flow_se=0.011, acc_naive=0.134, acc_naive_se=0.005,
                          ess_fwd=27.5 if trained else 2.1, ess_fwd_se=1.4, ess_inv=22.0 if trained else 1.7,
                          ess_inv_se=1.3, kl=kl_val(epoch if trained else 1), kl_se=0.2, block=25,
                          path="data/ala2_test.npz", t=t)


def epoch_seconds(epoch: int) -> float:
    return 2.0 + 0.25 * math.sin(epoch)


def epoch_events(epoch: int, t: float, first_loss: float) -> list[Event]:
    c = curves(epoch)
    events: list[Event] = [EpochMetrics(epoch=epoch, grad_norm=1.0, seconds=epoch_seconds(epoch), t=t,
                                        kl=kl(epoch), energy_evals=2 * 64 * STEPS_PER_EPOCH,
                                        energy_evals_total=2 * 64 * STEPS_PER_EPOCH * (epoch + 1),
                                        n_regularised=2 if epoch < 4 else 0, **c)]
    if epoch in BLOCK_EPOCHS:
        events.append(log_block(epoch, t))
    if epoch == 3:
        events.append(Alert(epoch=3, rule="loss_huge", severity="warning",
                            message="Loss above 1e5 kT: mapped samples have extreme energies",
                            hint="Normal for the first epochs; if it persists, lower the LR or enable "
                                 "energy regularisation",
                            t=t))
    if epoch == 62:
        events.append(Alert(epoch=62, rule="inverse_diverging", severity="error",
                            message="Inverse energy rose 7x in 4 epochs while the forward term fell",
                            hint="Lower the learning rate (e.g. 3e-4) or tighten gradient clipping; "
                                 "resume from best.pt",
                            t=t))
    if epoch == 100:
        events.append(Alert(epoch=100, rule="ess_low", severity="info",
                            message="Held-out ESS is 22% (cold→hot)",
                            hint="Fine for flow swaps; train longer for reweighting", t=t))
    if epoch in (50, 100, 150):
        events.append(CheckpointSaved(epoch=epoch, path="runs/ala2-300-450/best.pt", label="best", t=t))
    return events


def train_stream(n_epochs: int = 120, *, total: int = 200) -> list[Event]:
    """A run in progress: RunStarted, n_epochs epochs with blocks, alerts and messages."""
    t = T0
    events: list[Event] = [run_started(epochs=total, t=t),
                    Message(text="loaded 5000 MD samples per temperature from data/ala2 (cached)", t=t),
                    Message(text="naive swap acceptance 300↔450 K on held-out pairs: 0.136", t=t),
                    log_block(0, t)]
    first = curves(1)["loss"]
    for epoch in range(1, n_epochs + 1):
        t += epoch_seconds(epoch)
        events += epoch_events(epoch, t, first)
    if n_epochs < total:
        # Caught mid-epoch: the trainer's step event moves the bar and the postfix.
        events.append(step_progress(n_epochs + 1, 4, t + 0.8, epochs=total))
    return events


def watch_stream() -> list[Event]:
    """A finished run with a resume: segment 1 stops at epoch 62 (checkpoint at 60); segment 2
    resumes at 60, re-emits 61.., and completes at 200."""
    t = T0
    events: list[Event] = [run_started(t=t), Message(text="loaded 5000 MD samples per temperature (cached)", t=t),
                           test_set_result("untrained", 0, t), log_block(0, t)]
    first = curves(1)["loss"]
    for epoch in range(1, 63):
        t += epoch_seconds(epoch)
        events += epoch_events(epoch, t, first)
        if epoch == 60:
            events.append(CheckpointSaved(epoch=60, path="runs/ala2-300-450/last.pt", label="last", t=t))
    events.append(Finished(status="stopped", epoch=62, message="stopped by user (SIGTERM from SLURM)",
                           files=["runs/ala2-300-450/last.pt"], t=t))
    t += 30.0
    events += [run_started(t=t, start_epoch=60, resumed=True),
               Message(text="resumed from runs/ala2-300-450/last.pt", t=t)]
    for epoch in range(61, 201):
        t += epoch_seconds(epoch)
        events += epoch_events(epoch, t, first)
    files = ["runs/ala2-300-450/final.pt", "runs/ala2-300-450/best.pt", "runs/ala2-300-450/training.png",
             "runs/ala2-300-450/metrics.jsonl"]
    events.append(CheckpointSaved(epoch=200, path=files[0], label="final", t=t))
    events.append(test_set_result("final", 150, t))
    events.append(Finished(status="completed", epoch=200, files=files, best_loss=curves(150)["loss"],
                           improvement_pct=improvement_pct(kl_val(1), kl_val(150)), best_epoch=150,
                           best_score=kl_val(150), best_metric="validation KL", start_score=kl_val(1),
                           final_model=files[0], energy_evals=2 * 64 * STEPS_PER_EPOCH * 201,
                           elapsed_s=t - T0 - 30.0, resume_command="molpt-tui train --resume runs/ala2-300-450",
                           t=t))
    return events


# --- the cluster workflow: data generation before the run, the system line, SLURM ----------------
LADDER = [300.0, 367.0, 450.0]
DATA_NS = 4.0          # planned MD per replica (equilibration + sampling)
DATA_SAMPLES = 5000


def data_progress(split: str, phase: str, ns: float, t: float, *, eta_s: float = math.nan,
                  ns_per_day: float = math.nan, acceptance: list[float] | None = None,
                  ladder: list[float] | None = None) -> DataProgress:
    temps = LADDER if ladder is None else ladder
    acc = [math.nan] * (len(temps) - 1) if acceptance is None else acceptance
    samples = round(DATA_SAMPLES * max(ns - 0.4, 0.0) / (DATA_NS - 0.4))
    return DataProgress(split="test" if split == "test" else "data", path=f"data/ala2_{split}.npz", phase=phase,
                        simulated_ns=ns, planned_ns=DATA_NS, samples=samples, planned_samples=DATA_SAMPLES,
                        ns_per_day=ns_per_day, elapsed_s=ns / 4900.0 * 86400.0 if ns else 0.0, eta_s=eta_s,
                        temperatures=list(temps), swap_acceptance=acc, t=t)


def data_stream(split: str = "data", t: float = T0) -> list[Event]:
    """What `train` writes while it simulates a missing data file: minimising, equilibrating,
    sampling (ns/day, ETA and swap acceptance once there is a rate), writing, written."""
    return [data_progress(split, "minimising", 0.0, t),
            data_progress(split, "equilibrating", 0.2, t + 4.0, ns_per_day=4300.0, eta_s=76.0),
            data_progress(split, "sampling", 1.23, t + 22.0, ns_per_day=4900.0, eta_s=55.0,
                          acceptance=[0.42, 0.38]),
            data_progress(split, "writing", DATA_NS, t + 71.0, ns_per_day=4870.0, eta_s=1.0,
                          acceptance=[0.41, 0.37]),
            data_progress(split, "written", DATA_NS, t + 72.0, ns_per_day=4870.0, eta_s=0.0,
                          acceptance=[0.41, 0.37])]


def system_stats(t: float, **overrides: Any) -> SystemStats:
    """A reading of a trainer on a GPU node, every figure known (overrides set any to NaN)."""
    fields: dict[str, Any] = dict(cpu_pct=183.0, threads=9, rss_mb=812.0, energy_evals=3_400_000,
                                  energy_evals_per_s=1234.0, cpus=2, interval_s=5.0, gpu_util_pct=87.0,
                                  gpu_mem_used_mb=10.2 * 1024, gpu_mem_total_mb=80.0 * 1024,
                                  gpu_torch_mem_mb=math.nan)
    fields.update(overrides)
    return SystemStats(t=t, **fields)


def slurm_run_started(t: float = T0, *, left_s: float = 3723.0, restarts: int = 1) -> RunStarted:
    """A run under SLURM with its thread plan: `left_s` of the allocation left at time `t`."""
    return dataclasses.replace(run_started(t=t), engine="openmm (Reference, 1 worker)", cpus=2,
                               cpus_source="SLURM_CPUS_PER_TASK=2", torch_threads=1, energy_workers=1,
                               threads_reason="2 CPUs from SLURM_CPUS_PER_TASK=2: torch 1 thread, "
                                              "1 OpenMM energy worker",
                               slurm_job_id="4242", slurm_end_time=t + left_s, slurm_restart_count=restarts)


def jsonl(events: list[Event]) -> str:
    out = io.StringIO()
    out.write(json.dumps(header_line()) + "\n")
    for event in events:
        out.write(json.dumps(event.to_dict(), allow_nan=False) + "\n")
    return out.getvalue()


# How a fake trainer ended -> the exit code its handle reports, as the application layer maps a
# trainer process's outcome (0 completed, 1 failed, 130 stopped, 143 SIGTERM, 128+N a signal).
EXIT_CODES = {"completed": 0, "failed": 1, "stopped": 130, "terminated": 143, "died": 139, "killed": 137}


class FakeTrainer:
    """Behaves like the real trainer towards its run directory: writes its events to
    metrics.jsonl through MetricsLogSink, polls the control channel every step, pauses in
    `wait_if_paused`, answers every request with an acknowledgement in the log, writes
    checkpoint and PNG files on request and stops cleanly, writing last.pt and a Finished event.

    `script`: events written first instead of a RunStarted (a fixed stream for snapshots); the
    fake then idles, still polling its channel, until it is stopped.
    """

    def __init__(self, run_dir: Path, *, epochs: int = 100_000, step_sleep: float = 0.01,
                 fail_at: int | None = None, die_at: int | None = None, alert_at: int | None = None,
                 hang_on_stop: float = 0.0, lock: bool = True, script: list[Event] | None = None) -> None:
        self.run_dir = RunDirectory(run_dir)
        self.epochs = epochs
        self.step_sleep = step_sleep
        self.fail_at = fail_at
        self.die_at = die_at
        self.alert_at = alert_at
        self.hang_on_stop = hang_on_stop
        self.lock = lock
        self.script = script
        self.control = TrainingControl(self.run_dir)
        self.steps = 0
        self.epoch = 0
        self.saw_stop = False
        self.checkpoint_requests = 0
        self.png_requests = 0
        self.terminated = False
        self.killed = False
        self.started = threading.Event()   # the lock is held and RunStarted is in the log
        self.returned = threading.Event()
        self.release = threading.Event()   # ends a simulated hang early (kill, test cleanup)
        self._log: MetricsLogSink | None = None

    # --- what a signal does to the real trainer --------------------------------------------------
    def terminate(self) -> None:
        self.terminated = True
        self.control.request_stop("SIGTERM")

    def kill(self) -> None:
        self.killed = True
        self.release.set()
        self.control.request_stop("SIGKILL")

    # --- the run -----------------------------------------------------------------------------
    def run(self) -> str:
        """Train until done, stopped or failed; returns how it ended (a key of EXIT_CODES)."""
        if self.lock:
            self.run_dir.acquire_lock()
        self._log = MetricsLogSink(self.run_dir.metrics)
        try:
            return self._train()
        except Exception as exc:
            # As the real trainer process does before exiting 1: the verdict goes into the log.
            self._emit(Finished(status="failed", epoch=self.epoch, message=f"the trainer crashed: "
                                f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            self._log.close()
            if self.lock:
                self.run_dir.release_lock()
            self.returned.set()

    def _emit(self, event: Event) -> None:
        assert self._log is not None
        self._log.emit(event)

    def _service(self) -> None:
        """Between steps and while paused: read the channel, answer checkpoint and PNG requests,
        and write the acknowledgement of everything applied."""
        control = self.control
        control.poll()
        request = control.take_checkpoint_request()
        if request is not None:
            self.checkpoint_requests += 1
            path = self.run_dir.path / f"manual-{self.epoch}.pt"
            path.write_bytes(b"fake checkpoint")
            self._emit(CheckpointSaved(epoch=self.epoch, path=str(path), label="manual"))
            control.acknowledge(request, str(path))
        request = control.take_png_request()
        if request is not None:
            self.png_requests += 1
            path = self.run_dir.path / "training.png"
            path.write_bytes(b"fake png")
            control.acknowledge(request, str(path))
        for ack in control.take_acknowledgements():
            self._emit(ack)

    def _train(self) -> str:
        if self.script is not None:
            for event in self.script:
                self._emit(event)
            self.started.set()
            while not self.control.stop_requested:
                self._service()
                time.sleep(0.01)
            self._service()
            return "terminated" if self.terminated else "stopped"
        self._emit(run_started(epochs=self.epochs, run_dir=str(self.run_dir.path), t=time.time()))
        self.started.set()
        control = self.control
        while self.epoch < self.epochs:
            self._service()
            control.wait_if_paused(self._service, poll=0.01)
            if control.stop_requested:
                self._service()
                self.saw_stop = True
                break
            time.sleep(self.step_sleep)
            self.epoch += 1
            self.steps += 1
            control.epoch = self.epoch
            c = curves(min(self.epoch, 200))
            self._emit(EpochMetrics(epoch=self.epoch, seconds=self.step_sleep, kl=kl(min(self.epoch, 200)), **c))
            if self.epoch % 10 == 0 or self.epoch == 1:
                self._emit(log_block(self.epoch, time.time()))
            if self.alert_at == self.epoch:
                self._emit(Alert(epoch=self.epoch, rule="inverse_diverging", severity="error",
                                 message="Inverse energy is diverging", hint="Lower the learning rate"))
            self._service()
            if self.fail_at == self.epoch:
                raise RuntimeError("CUDA error: an illegal memory access was encountered (fake)")
            if self.die_at == self.epoch:
                return "died"  # a segfault or the OOM killer: no Finished event
        if self.saw_stop and self.hang_on_stop:
            self.release.wait(self.hang_on_stop)
        if self.killed:
            return "killed"
        last = self.run_dir.last
        last.write_bytes(b"fake checkpoint")
        self._emit(CheckpointSaved(epoch=self.epoch, path=str(last), label="last"))
        status: RunStatus = "stopped" if self.saw_stop else "completed"
        self._emit(Finished(status=status, epoch=self.epoch, files=[str(last)]))
        if self.terminated:
            return "terminated"
        return status


class ThreadHandle:
    """TrainerHandle over a thread running a FakeTrainer, as the application layer's handle is
    over a trainer process. `start=False` lets a LiveRun be built before the fake writes."""

    def __init__(self, fake: FakeTrainer, *, start: bool = True) -> None:
        self.fake = fake
        self.description = "fake trainer thread"
        self.how: str | None = None
        self._code: int | None = None
        self.terminate_calls = 0
        self.kill_calls = 0
        self.thread = threading.Thread(target=self._run, name="fake-trainer", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self.how = self.fake.run()
        except Exception:
            # The real trainer's traceback ends up in train.log; so does this one.
            with open(self.fake.run_dir.trainer_log, "a", encoding="utf-8") as fh:
                fh.write(traceback.format_exc())
            self.how = "failed"
        self._code = EXIT_CODES[self.how]

    def poll(self) -> int | None:
        return self._code

    def terminate(self) -> None:
        self.terminate_calls += 1
        self.fake.terminate()

    def kill(self) -> None:
        self.kill_calls += 1
        self.fake.kill()

    def finish(self, timeout: float = 10.0) -> None:
        """Test cleanup: stop the fake whatever state it is in and wait for its thread."""
        if self.thread.is_alive():
            self.fake.kill()
            self.thread.join(timeout)


def live_run(fake: FakeTrainer) -> tuple[LiveRun, ThreadHandle]:
    """A LiveRun over a started fake, built in the order the application layer builds it."""
    handle = ThreadHandle(fake, start=False)
    source = LiveRun(fake.run_dir, handle)
    handle.start()
    return source, handle


def screen_text(app: App[Any]) -> str:
    """The current screen as plain text, to assert on what a user would read."""
    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system=None, record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


async def wait_until(pilot: Pilot[Any], predicate: Callable[[], object], timeout: float = 10.0,
                     what: str = "condition") -> None:
    """Let the app run until `predicate()` holds. The timeout only bounds a failing test; a
    passing one never depends on how fast the machine is."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURE_DIR
    target.mkdir(parents=True, exist_ok=True)
    (target / "metrics.jsonl").write_text(jsonl(watch_stream()), encoding="utf-8")
    print(f"wrote {target / 'metrics.jsonl'}")
