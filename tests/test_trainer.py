"""The trainer end to end on tiny runs: outputs, sane start, exact resume, NaN guard."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import torch

from molpt_tui.training.checkpoint import load_checkpoint
from molpt_tui.training.control import TrainingControl
from molpt_tui.training.events import EpochMetrics, LogBlock
from molpt_tui.training.metrics_log import MetricsLogSink, read_events
from molpt_tui.training.trainer import Trainer


class Collect:
    def __init__(self, on_event=None):
        self.events = []
        self.on_event = on_event

    def emit(self, event):
        self.events.append(event)
        if self.on_event:
            self.on_event(event)

    def close(self):
        pass

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]


def _train(cfg, run_dir, control=None, resume=False, on_event=None):
    sink = Collect(on_event)
    log = MetricsLogSink(run_dir / "metrics.jsonl")
    try:
        finished = Trainer(cfg, run_dir, [sink, log], control, resume=resume).run()
    finally:
        log.close()
    return finished, sink


def test_tiny_run_writes_every_output(tiny_config, tmp_path):
    cfg = tiny_config("training.epochs=12", "training.checkpoint_every=5")
    finished, sink = _train(cfg, tmp_path)
    assert finished.status == "completed" and finished.epoch == 12
    for name in ("last.pt", "best.pt", "molecular_pt_300_450.pt", "loss_curves_300_450.png", "metrics.jsonl"):
        assert (tmp_path / name).is_file(), name
    # adaptive logging: epoch 0 (untrained), every epoch to 10, then every 10, and the last
    assert [b.epoch for b in sink.of(LogBlock)] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]
    assert [m.epoch for m in sink.of(EpochMetrics)] == list(range(0, 13))
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert first == {"schema": "molpt-tui.metrics", "version": 1}
    assert len(list(read_events(tmp_path / "metrics.jsonl"))) == len(sink.events)
    final = load_checkpoint(tmp_path / "molecular_pt_300_450.pt")
    assert final["epoch"] == 12 and final["config"]["training"]["epochs"] == 12
    assert {"representation.mean", "representation.std"} & set(final["model"]) or any(
        k.startswith("representation.") for k in final["model"])
    blocks = sink.of(LogBlock)
    assert all(0 <= b.acc_flow <= 1 and 0 <= b.acc_naive <= 1 for b in blocks)
    assert all(b.roundtrip_err < 1e-4 for b in blocks)
    assert finished.files and all(str(tmp_path) in f for f in finished.files)


def test_start_is_sane_on_quickstart(tiny_data, tmp_path):
    """The old prototype started at 1e12-1e14; the harmonic start must beat naive swaps."""
    from molpt_tui.config import load_config
    from molpt_testdata import TINY_DATA

    cfg = load_config("quickstart", TINY_DATA + [f"data.path={tiny_data}", "training.epochs=1",
                                                  "training.steps_per_epoch=1", "energy.engine=openmm"])
    trainer = Trainer(cfg, tmp_path, [])
    trainer.setup = trainer._setup()
    from molpt_tui.training.schedule import LRSchedule
    from molpt_tui.training.trainer import build_transport

    trainer.transport = build_transport(cfg, trainer.setup.ms, trainer.setup.cold_train, trainer.setup.hot_train)
    trainer.schedule = LRSchedule(1e-3, 1, 0)
    initial = trainer.initial_metrics()
    stats = trainer.evaluate()
    trainer.setup.engine.close()
    assert math.isfinite(initial.loss) and abs(initial.loss) < 1e4
    assert stats["acc_flow"] >= stats["acc_naive"]
    assert stats["acc_flow"] > 0.3  # measured 0.56-0.66 for the internal-coordinate harmonic map


def test_resume_is_exact(tiny_config, tmp_path):
    cfg = tiny_config("training.epochs=6", "training.checkpoint_every=1")
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full_dir.mkdir()
    cut_dir.mkdir()
    _, full = _train(cfg, full_dir)

    control = TrainingControl()

    def stop_after_3(event):
        if isinstance(event, EpochMetrics) and event.epoch == 3:
            control.request_stop("test")

    finished, first = _train(tiny_config("training.epochs=6", "training.checkpoint_every=1"), cut_dir, control,
                             on_event=stop_after_3)
    assert finished.status == "stopped" and finished.epoch == 3
    assert load_checkpoint(cut_dir / "last.pt")["epoch"] == 3
    finished, second = _train(tiny_config("training.epochs=6", "training.checkpoint_every=1"), cut_dir, resume=True)
    assert finished.status == "completed"
    starts = [e for e in second.events if e.kind == "run_started"]
    assert starts[0].resumed and starts[0].start_epoch == 3

    def table(events, lo):
        return [(m.epoch, m.loss, m.fwd_energy, m.fwd_logdet, m.inv_energy, m.inv_logdet, m.lr, m.grad_norm)
                for m in events if isinstance(m, EpochMetrics) and m.epoch > lo]

    assert table(second.events, 3) == table(full.events, 3)  # bitwise
    assert [(b.epoch, b.acc_flow, b.ess_fwd) for b in second.of(LogBlock)] == \
           [(b.epoch, b.acc_flow, b.ess_fwd) for b in full.of(LogBlock) if b.epoch > 3]
    a = load_checkpoint(full_dir / "molecular_pt_300_450.pt")["model"]
    b = load_checkpoint(cut_dir / "molecular_pt_300_450.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_energies_roll_back_and_recover(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config("training.epochs=3", "training.max_nan_failures=4")
    calls = {"n": 0}
    original = Trainer._step_losses

    def poisoned(self, xb, yb):
        calls["n"] += torch.is_grad_enabled()  # count training steps only, not evaluations
        if 4 <= calls["n"] <= 5 and torch.is_grad_enabled():  # two bad steps in a row, then healthy
            xb = xb * float("nan")
        return original(self, xb, yb)

    monkeypatch.setattr(Trainer, "_step_losses", poisoned)
    finished, sink = _train(cfg, tmp_path)
    assert finished.status == "completed"
    guards = [a for a in sink.events if a.kind == "alert" and a.rule == "nan_guard"]
    assert len(guards) == 2 and "rolled back" in guards[0].message
    model = load_checkpoint(tmp_path / "molecular_pt_300_450.pt")["model"]
    assert all(torch.isfinite(v).all() for v in model.values() if v.is_floating_point())
    assert any(m.n_nonfinite > 0 for m in sink.of(EpochMetrics))


def test_nan_guard_stops_after_k_failures_with_a_usable_checkpoint(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config("training.epochs=3", "training.max_nan_failures=3")
    original = Trainer._step_losses
    calls = {"n": 0}

    def poisoned(self, xb, yb):
        calls["n"] += torch.is_grad_enabled()
        return original(self, xb * float("nan") if calls["n"] > 4 and torch.is_grad_enabled() else xb, yb)

    monkeypatch.setattr(Trainer, "_step_losses", poisoned)
    finished, sink = _train(cfg, tmp_path)
    assert finished.status == "failed" and "consecutive non-finite" in finished.message
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] >= 0
    assert (tmp_path / "loss_curves_300_450.png").is_file()


def test_headless_paths_do_not_import_textual(tiny_data, tmp_path):
    from molpt_testdata import TINY_DATA, TINY_TRAIN

    args = ["train", "--no-ui", "--epochs", "1", "--out", str(tmp_path / "run")]
    for item in TINY_DATA + TINY_TRAIN + [f"data.path={tiny_data}"]:
        args += ["--set", item]
    code = ("import sys\nfrom molpt_tui.cli import main\n"
            f"rc = main({args!r})\n"
            f"rc2 = main(['plot', {str(tmp_path / 'run')!r}])\n"
            "print('RC', rc, rc2, 'UI', sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'textual_plotext')"
            " or m.startswith('molpt_tui.tui')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "RC 0 0 UI []" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Results saved to" in proc.stdout
    assert "\r" not in proc.stdout  # not a TTY: log-file friendly


def test_aligned_cartesian_representation_trains_too(tiny_config, tmp_path):
    """The comparison option of the old prototype: exact log-dets, finite metrics."""
    cfg = tiny_config("training.epochs=2", "model.representation=cartesian")
    finished, sink = _train(cfg, tmp_path)
    assert finished.status == "completed"
    blocks = sink.of(LogBlock)
    assert all(math.isfinite(b.loss) and b.roundtrip_err < 1e-3 for b in blocks)
    # Cartesian scaling of a flexible molecule is far worse than internal coordinates
    assert blocks[0].acc_flow < 0.1


def test_torch_engine_settings_reach_the_run(tiny_config, tmp_path):
    # energy.precision and energy.compile are honoured, and the header says which engine ran and why.
    from molpt_tui.training.events import RunStarted

    cfg = tiny_config("training.epochs=2", "energy.engine=torch", "energy.precision=single", "energy.compile=off")
    finished, sink = _train(cfg, tmp_path)
    assert finished.status == "completed"
    (header,) = sink.of(RunStarted)
    assert header.engine == "torch (cpu, float32, eager)"
    assert header.engine_reason == "requested"
    assert all(math.isfinite(m.loss) for m in sink.of(EpochMetrics))


def test_compiled_torch_engine_is_announced_before_the_run(tiny_config, tmp_path):
    # The compile wait happens during setup, said before the header, so epoch 1 is not charged for it.
    import pytest

    from molpt_tui.physics.torch_energy import compiler_available
    from molpt_tui.training.events import Message, RunStarted

    if not compiler_available("cpu")[0]:
        pytest.skip("no C++ compiler for torch.compile")
    cfg = tiny_config("training.epochs=1", "energy.engine=torch", "energy.compile=on")
    finished, sink = _train(cfg, tmp_path)
    assert finished.status == "completed"
    kinds = [type(e).__name__ for e in sink.events]
    texts = [e.text for e in sink.of(Message)]
    assert texts[0].startswith("torch energy kernels: compiling")
    assert texts[1].startswith("torch energy kernels compiled in ")
    assert kinds.index("RunStarted") > kinds.index("Message")
    assert sink.of(RunStarted)[0].engine == "torch (cpu, float64, compiled)"
