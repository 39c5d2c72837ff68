"""Deterministic event streams and a fake trainer for the TUI tests.

Every event carries an explicit timestamp `t` so elapsed/ETA on screen depend only on the
stream and the injected clock, never on when the test ran.

Run as a script to regenerate tests/fixtures/watch_run/metrics.jsonl.
"""
from __future__ import annotations

import io
import json
import math
import sys
import threading
import time
from pathlib import Path

from molpt_tui.training.events import (
    Alert,
    CheckpointSaved,
    EpochMetrics,
    Finished,
    LogBlock,
    Message,
    RunStarted,
    header_line,
)
from molpt_tui.training.history import improvement_pct

T0 = 1_700_000_000.0  # a fixed wall-clock origin for every stream
FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "watch_run"
BLOCK_EPOCHS = (1, 2, 5, 10, 20, 50, 100, 150, 200)


def curves(epoch: int) -> dict[str, float]:
    """Plausible curves: a huge start, an inverse blow-up around epoch 60, then convergence."""
    e = float(epoch)
    fwd_energy = 60.0 + 5000.0 * math.exp(-e / 8.0) + 0.8 * math.sin(e / 3.0)
    fwd_logdet = -20.0 + 30.0 * (1.0 - math.exp(-e / 30.0))
    spike = 400.0 * math.exp(-((e - 62.0) / 2.0) ** 2)
    inv_energy = 55.0 + 1.0e5 * math.exp(-e / 5.0) + spike + 0.6 * math.cos(e / 4.0)
    inv_logdet = 18.0 - 25.0 * (1.0 - math.exp(-e / 30.0))
    loss = (fwd_energy - fwd_logdet) + (inv_energy - inv_logdet)
    lr = 1e-3 * (0.5 + 0.5 * math.cos(math.pi * min(e, 200.0) / 200.0)) + 1e-5
    return dict(loss=loss, fwd_energy=fwd_energy, fwd_logdet=fwd_logdet, inv_energy=inv_energy,
                inv_logdet=inv_logdet, lr=lr)


def run_started(*, epochs: int = 200, run_dir: str = "runs/ala2-300-450", t: float = T0,
                start_epoch: int = 0, resumed: bool = False) -> RunStarted:
    return RunStarted(run_dir=run_dir, preset="ala2-vacuum", model="transformer flow (internal coordinates)",
                      t_cold=300.0, t_hot=450.0, epochs=epochs, batch_size=64, lr=1e-3, device="cpu",
                      n_params=442_368, engine="openmm (Reference, 2 workers)", steps_per_epoch=10,
                      start_epoch=start_epoch, resumed=resumed, t=t)


def epoch_seconds(epoch: int) -> float:
    return 2.0 + 0.25 * math.sin(epoch)


def epoch_events(epoch: int, t: float, first_loss: float) -> list:
    c = curves(epoch)
    events: list = [EpochMetrics(epoch=epoch, grad_norm=1.0, seconds=epoch_seconds(epoch), t=t, **c)]
    if epoch in BLOCK_EPOCHS:
        acc = 0.136 + 0.28 * (1.0 - math.exp(-epoch / 40.0))
        events.append(LogBlock(epoch=epoch, improvement_pct=improvement_pct(first_loss, c["loss"]),
                               acc_flow=acc, acc_naive=0.136, ess_fwd=2.0 + 30.0 * (1 - math.exp(-epoch / 50.0)),
                               ess_inv=1.5 + 25.0 * (1 - math.exp(-epoch / 50.0)), t=t, **c))
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


def train_stream(n_epochs: int = 120, *, total: int = 200) -> list:
    """A run in progress: RunStarted, n_epochs epochs with blocks, alerts and messages."""
    t = T0
    events: list = [run_started(epochs=total, t=t),
                    Message(text="loaded 5000 MD samples per temperature from data/ala2 (cached)", t=t),
                    Message(text="naive swap acceptance 300↔450 K on held-out pairs: 0.136", t=t)]
    first = curves(1)["loss"]
    for epoch in range(1, n_epochs + 1):
        t += epoch_seconds(epoch)
        events += epoch_events(epoch, t, first)
    return events


def watch_stream() -> list:
    """A finished run with a resume: segment 1 stops at epoch 62 (checkpoint at 60); segment 2
    resumes at 60, re-emits 61.., and completes at 200."""
    t = T0
    events: list = [run_started(t=t), Message(text="loaded 5000 MD samples per temperature (cached)", t=t)]
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
    events.append(Finished(status="completed", epoch=200, files=files, best_loss=curves(200)["loss"],
                           improvement_pct=improvement_pct(first, curves(200)["loss"]), t=t))
    return events


def jsonl(events: list) -> str:
    out = io.StringIO()
    out.write(json.dumps(header_line()) + "\n")
    for event in events:
        out.write(json.dumps(event.to_dict(), allow_nan=False) + "\n")
    return out.getvalue()


class FakeTrainer:
    """A train_fn that behaves like the real one towards its control: one epoch per step,
    pauses in `wait_if_paused`, honours checkpoint/PNG requests and stops cleanly, writing
    last.pt into `out_dir` as the real trainer does."""

    def __init__(self, out_dir: Path, *, epochs: int = 100_000, step_sleep: float = 0.01,
                 fail_at: int | None = None, alert_at: int | None = None,
                 hang_on_stop: float = 0.0) -> None:
        self.out_dir = Path(out_dir)
        self.epochs = epochs
        self.step_sleep = step_sleep
        self.fail_at = fail_at
        self.alert_at = alert_at
        self.hang_on_stop = hang_on_stop
        self.steps = 0
        self.saw_stop = False
        self.checkpoint_requests = 0
        self.png_requests = 0
        self.returned = threading.Event()
        self.release = threading.Event()  # ends a simulated hang early (test cleanup)

    def __call__(self, sink, control) -> None:
        try:
            self._train(sink, control)
        finally:
            self.returned.set()

    def _train(self, sink, control) -> None:
        now = time.time()
        sink.emit(run_started(epochs=self.epochs, run_dir=str(self.out_dir), t=now))
        epoch = 0
        while epoch < self.epochs:
            control.wait_if_paused()
            if control.stop_requested:
                self.saw_stop = True
                break
            time.sleep(self.step_sleep)
            epoch += 1
            self.steps += 1
            c = curves(min(epoch, 200))
            sink.emit(EpochMetrics(epoch=epoch, seconds=self.step_sleep, **c))
            if self.alert_at == epoch:
                sink.emit(Alert(epoch=epoch, rule="inverse_diverging", severity="error",
                                message="Inverse energy is diverging", hint="Lower the learning rate"))
            if control.take_checkpoint_request():
                self.checkpoint_requests += 1
                path = self.out_dir / f"manual-{epoch}.pt"
                path.write_bytes(b"fake checkpoint")
                sink.emit(CheckpointSaved(epoch=epoch, path=str(path), label="manual"))
            if control.take_png_request():
                self.png_requests += 1
                (self.out_dir / "training.png").write_bytes(b"fake png")
            if self.fail_at == epoch:
                raise RuntimeError("CUDA error: an illegal memory access was encountered (fake)")
        if self.saw_stop and self.hang_on_stop:
            self.release.wait(self.hang_on_stop)
        last = self.out_dir / "last.pt"
        last.write_bytes(b"fake checkpoint")
        sink.emit(CheckpointSaved(epoch=epoch, path=str(last), label="last"))
        status = "stopped" if self.saw_stop else "completed"
        sink.emit(Finished(status=status, epoch=epoch, files=[str(last)]))


def screen_text(app) -> str:
    """The current screen as plain text, to assert on what a user would read."""
    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system=None, record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


async def wait_until(pilot, predicate, timeout: float = 10.0, what: str = "condition") -> None:
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
