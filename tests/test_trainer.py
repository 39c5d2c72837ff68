"""The trainer end to end on tiny runs: outputs, sane start, exact resume, NaN guard, requests;
and the setup it is built from (device, representation, split)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from molpt_testdata import TINY_DATA

from molpt_tui.config import load_config
from molpt_tui.errors import UserError
from molpt_tui.report.plotting import save_loss_curves
from molpt_tui.training.checkpoint import load_checkpoint, save_checkpoint
from molpt_tui.training.control import TrainingControl
from molpt_tui.training.events import (
    CheckpointSaved,
    EpochMetrics,
    LogBlock,
    Message,
    RequestAcknowledged,
    RunStarted,
)
from molpt_tui.training.metrics_log import MetricsLogSink, read_events
from molpt_tui.training.setup import (
    build_setup,
    build_transport,
    check_representation,
    resolve_device,
    split_data,
)
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


class DirArtifacts:
    """RunArtifacts in a plain directory, with the names the app gives them."""

    def __init__(self, run_dir: Path, cfg):
        self.run_dir, self.cfg = run_dir, cfg

    @property
    def location(self) -> str:
        return str(self.run_dir)

    def save_checkpoint(self, label, payload):
        t = self.cfg.temperatures
        name = {"last": "last.pt", "best": "best.pt", "final": f"molecular_pt_{t.cold:g}_{t.hot:g}.pt"}[label]
        return save_checkpoint(self.run_dir / name, payload)

    def write_png(self, history, status):
        t = self.cfg.temperatures
        return save_loss_curves(history, self.run_dir / f"loss_curves_{t.cold:g}_{t.hot:g}.png", title=status)

    def write_validation(self, samples):
        return None  # tests/test_validation_figure.py draws it


def make_setup(cfg, log=None, test_path=None):
    """`test_path`: a data file to use as the independent test run."""
    from molpt_tui.physics.data import load_data
    from molpt_tui.physics.systems import system_from_config

    ms = system_from_config(cfg)
    test = load_data(test_path, ms) if test_path is not None else None
    split = split_data(cfg, load_data(cfg.data_path, ms), test, test_path)
    return build_setup(cfg, ms, split, resolve_device(cfg.training.device), log=log or (lambda text: None))


def _train(cfg, run_dir, control=None, resume=False, on_event=None, test_path=None):
    sink = Collect(on_event)
    resume_from, earlier, best = None, [], None
    if resume:
        resume_from = load_checkpoint(run_dir / "last.pt")
        best = load_checkpoint(run_dir / "best.pt")
        earlier = list(read_events(run_dir / "metrics.jsonl"))
    log = MetricsLogSink(run_dir / "metrics.jsonl")
    try:
        with make_setup(cfg, test_path=test_path) as setup:
            trainer = Trainer(cfg, setup, [sink, log], control or TrainingControl(), DirArtifacts(run_dir, cfg),
                              resume_from, resume_path=run_dir / "last.pt", history_events=earlier, best_state=best)
            finished = trainer.run()
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
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 12 and last["config"]["training"]["epochs"] == 12
    # The final model loads into a freshly built map of the same run (every key, every shape);
    # last.pt is not the untrained map.
    final = load_checkpoint(tmp_path / "molecular_pt_300_450.pt")
    with make_setup(cfg) as setup:
        torch.manual_seed(cfg.training.seed)
        fresh = build_transport(cfg, setup.ms, setup.split.cold_train, setup.split.hot_train)
    untrained = {k: v.clone() for k, v in fresh.state_dict().items()}
    fresh.load_state_dict(final["model"], strict=True)
    assert any(k.startswith("representation.") for k in final["model"])
    changed = [k for k, v in untrained.items() if v.is_floating_point() and not torch.equal(v, last["model"][k])]
    assert changed, "training left every weight as it was"
    blocks = sink.of(LogBlock)
    assert all(0 <= b.acc_flow <= 1 and 0 <= b.acc_naive <= 1 for b in blocks)
    assert all(b.roundtrip_err < 1e-4 for b in blocks)
    assert finished.files and all(str(tmp_path) in f for f in finished.files)
    # best.pt is the snapshot of the epoch with the lowest held-out KL
    best = load_checkpoint(tmp_path / "best.pt")
    best_block = min(blocks, key=lambda b: b.kl_val)
    assert best["epoch"] == best["best_epoch"] == best_block.epoch
    assert best["best_score"] == best_block.kl_val
    # The final model is the best model, and says so; the summary names the same epoch and score.
    assert final["epoch"] == best_block.epoch
    assert all(torch.equal(final["model"][k], best["model"][k]) for k in best["model"])
    assert final["selection"] == {"epoch": best_block.epoch, "score": best_block.kl_val, "metric": "validation KL",
                                  "split": "validation", "unit": "kT", "last_epoch": 12,
                                  "weights": "as trained"}
    assert (finished.best_epoch, finished.best_score, finished.best_metric) == \
        (best_block.epoch, best_block.kl_val, "validation KL")
    assert finished.start_score == blocks[0].kl_val
    assert finished.final_model == str(tmp_path / "molecular_pt_300_450.pt")
    # every acceptance and ESS carries a standard error
    assert all(b.acc_flow_se > 0 and b.ess_fwd_se >= 0 and math.isfinite(b.acc_naive_se) for b in blocks)
    # cost in target energy evaluations: 2 x batch per step, plus epoch 0 and the validation pairs
    per_epoch = 2 * cfg.training.batch_size * cfg.training.steps_per_epoch
    epochs = sink.of(EpochMetrics)
    assert all(m.energy_evals == per_epoch for m in epochs[1:])
    totals = [m.energy_evals_total for m in epochs]
    n_val = min(64, round(600 * cfg.data.validation_fraction))
    assert totals == sorted(totals) and finished.energy_evals == totals[-1] + 2 * n_val   # the last validation
    assert finished.elapsed_s >= sum(m.seconds for m in epochs[1:])


def test_start_is_sane_on_quickstart(tiny_data, tmp_path):
    """The old prototype started at 1e12-1e14; the harmonic start must beat naive swaps."""
    from molpt_testdata import TINY_DATA

    from molpt_tui.config import load_config

    cfg = load_config("quickstart", TINY_DATA + [f"data.path={tiny_data}", "training.epochs=1",
                                                  "training.steps_per_epoch=1", "energy.engine=openmm"])
    with make_setup(cfg) as setup:
        trainer = Trainer(cfg, setup, [], TrainingControl(), DirArtifacts(tmp_path, cfg))
        initial = trainer.initial_metrics()
        stats = trainer.evaluate()
    assert math.isfinite(initial.loss) and abs(initial.loss) < 1e4
    assert stats.acc_flow >= stats.acc_naive
    assert stats.acc_flow > 0.3  # measured 0.56-0.66 for the internal-coordinate harmonic map
    assert list(tmp_path.iterdir()) == []  # evaluating writes nothing


@pytest.mark.parametrize("average", [(), ("training.ema_decay=0.7",)], ids=["as-trained", "moving-average"])
def test_resume_is_exact(tiny_config, tmp_path, average):
    # One OpenMM platform for every segment: "auto" picks the fastest measured one, and on a
    # loaded machine two segments can measure differently (float32 CPU vs float64 Reference).
    settings = ("training.epochs=6", "training.checkpoint_every=1", "energy.platform=Reference", *average)
    cfg = tiny_config(*settings)
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full_dir.mkdir()
    cut_dir.mkdir()
    _, full = _train(cfg, full_dir)

    control = TrainingControl()

    def stop_after_3(event):
        if isinstance(event, EpochMetrics) and event.epoch == 3:
            control.request_stop("test")

    finished, _first = _train(tiny_config(*settings), cut_dir, control, on_event=stop_after_3)
    assert finished.status == "stopped" and finished.epoch == 3
    assert load_checkpoint(cut_dir / "last.pt")["epoch"] == 3
    finished, second = _train(tiny_config(*settings), cut_dir, resume=True)
    assert finished.status == "completed"
    starts = second.of(RunStarted)
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
    # the NaN guard running out despite rollbacks is a divergence, not a crash
    assert finished.status == "diverged" and "consecutive non-finite steps despite rollbacks" in finished.message
    # 3 steps per epoch: epoch 1 is clean, the last two steps of epoch 2 fail (it ends on them),
    # the first step of epoch 3 is the third failure in a row: last.pt is the end of epoch 2.
    assert finished.epoch == 2
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["nan_failures"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    saved = [e for e in sink.of(CheckpointSaved) if e.path.endswith("last.pt")]
    assert [e.epoch for e in saved] == [2]
    assert (tmp_path / "loss_curves_300_450.png").is_file()


def test_requests_are_answered_while_paused(tiny_config, tmp_path):
    """Pause after epoch 1; a checkpoint and a PNG request are served while paused, each
    acknowledged with the file it wrote; no step runs until the resume."""
    cfg = tiny_config("training.epochs=3")
    control = TrainingControl()

    def steer(event):
        if isinstance(event, EpochMetrics) and event.epoch == 1:
            control.pause()
            control.request_checkpoint("c1")
            control.request_png("p1")
        if isinstance(event, RequestAcknowledged) and event.action == "png":
            control.resume("r1")

    finished, sink = _train(cfg, tmp_path, control, on_event=steer)
    assert finished.status == "completed"
    acks = {e.action: e for e in sink.of(RequestAcknowledged)}
    assert set(acks) == {"pause", "checkpoint", "png", "resume"}
    assert acks["checkpoint"].request_id == "c1" and acks["checkpoint"].detail == str(tmp_path / "last.pt")
    assert acks["png"].detail == str(tmp_path / "loss_curves_300_450.png")
    assert all(e.epoch == 1 for e in acks.values())
    (manual,) = [e for e in sink.of(CheckpointSaved) if e.label == "manual"]
    assert manual.epoch == 1
    kinds = [(type(e).__name__, getattr(e, "epoch", None), getattr(e, "action", None)) for e in sink.events]
    assert kinds.index(("RequestAcknowledged", 1, "resume")) < kinds.index(("EpochMetrics", 2, None))


def test_a_failing_png_is_reported_and_costs_nothing(tiny_config, tmp_path):
    cfg = tiny_config("training.epochs=1")

    class BrokenPlots(DirArtifacts):
        def write_png(self, history, status):
            raise RuntimeError("no fonts")

    sink = Collect()
    with make_setup(cfg) as setup:
        finished = Trainer(cfg, setup, [sink], TrainingControl(), BrokenPlots(tmp_path, cfg)).run()
    assert finished.status == "completed"
    assert any("could not write the loss-curve PNG: no fonts" in m.text for m in sink.of(Message))
    assert (tmp_path / "molecular_pt_300_450.pt").is_file()


def test_headless_paths_do_not_import_textual(tiny_data, tmp_path):
    from molpt_testdata import TINY_DATA, TINY_TRAIN

    args = ["train", "--no-ui", "--epochs", "1", "--out", str(tmp_path / "run")]
    for item in TINY_DATA + TINY_TRAIN + [f"data.path={tiny_data}"]:
        args += ["--set", item]
    code = ("import sys\nfrom molpt_tui.cli import main\n"
            f"rc = main({args!r})\n"
            f"rc2 = main(['plot', {str(tmp_path / 'run')!r}])\n"
            "ui = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'textual_plotext')"
            " or m.startswith('molpt_tui.tui'))\n"
            "print('RC', rc, rc2, 'UI', ui)")
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
    cfg = tiny_config("training.epochs=2", "energy.engine=torch", "energy.precision=single", "energy.compile=off")
    finished, sink = _train(cfg, tmp_path)
    assert finished.status == "completed"
    (header,) = sink.of(RunStarted)
    assert header.engine == "torch (cpu, float32, eager)"
    assert header.engine_reason == "requested"
    # 600 samples a temperature: 10 % held out as 5 blocks, all 60 evaluated (eval_samples 64)
    assert (header.train_pairs, header.val_held, header.val_blocks, header.val_evaluated) == (540, 60, 5, 60)
    assert header.test_pairs == 0  # the tiny fixture has no test run
    assert all(math.isfinite(m.loss) for m in sink.of(EpochMetrics))


def test_compiled_torch_engine_is_announced_while_the_setup_is_built(tiny_config, tmp_path):
    # The compile wait happens in build_setup, said through its log, so epoch 1 is not charged for it.
    from molpt_tui.physics.torch_energy import compiler_available

    if not compiler_available("cpu")[0]:
        pytest.skip("no C++ compiler for torch.compile")
    cfg = tiny_config("training.epochs=1", "energy.engine=torch", "energy.compile=on")
    said: list[str] = []
    with make_setup(cfg, log=said.append) as setup:
        assert said[0].startswith("torch energy kernels: compiling")
        assert said[1].startswith("torch energy kernels compiled in ")
        sink = Collect()
        finished = Trainer(cfg, setup, [sink], TrainingControl(), DirArtifacts(tmp_path, cfg)).run()
    assert finished.status == "completed"
    assert sink.of(RunStarted)[0].engine == "torch (cpu, float64, compiled)"


# --- setup ------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["meta", "mps", "xla", "nonsense", "cuda:99"])
def test_unusable_devices_are_one_line_naming_the_key(device):
    with pytest.raises(UserError) as info:
        resolve_device(device)
    text = str(info.value)
    assert "training.device" in text and device in text and "\n" not in text


def test_cpu_and_auto_devices_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def _molecule(n_atoms, bonds, elements):
    return SimpleNamespace(n_atoms=n_atoms, bonds=bonds, elements=elements, pdb_path=Path("/structures/tiny.pdb"),
                           hydrogen_bonds=lambda: [b for b in bonds if "H" in (elements[b[0]], elements[b[1]])])


@pytest.mark.parametrize("representation", ["internal", "cartesian"])
@pytest.mark.parametrize("molecule", [
    (2, [(0, 1)], ["H", "H"]),                         # too few atoms for a Z-matrix
    (4, [(0, 1), (2, 3)], ["C", "H", "C", "H"]),       # no atom with two bonded neighbours
])
def test_a_molecule_too_small_is_refused_from_its_topology(tiny_config, representation, molecule):
    cfg = tiny_config(f"model.representation={representation}")
    with pytest.raises(UserError) as info:
        check_representation(cfg, _molecule(*molecule))
    text = str(info.value)
    assert text.startswith(f"{cfg.pdb_path}: ") and "\n" not in text
    assert f'model.representation = "{representation}"' in text and "larger molecule" in text


def test_a_bonded_chain_of_three_atoms_is_enough(tiny_config):
    check_representation(tiny_config(), _molecule(3, [(0, 1), (1, 2)], ["H", "O", "H"]))


def test_cartesian_with_constrained_bonds_is_refused_naming_both_keys(tiny_config):
    cfg = tiny_config("model.representation=cartesian", "data.constraints=hbonds")
    with pytest.raises(UserError, match=r"data\.constraints.*model\.representation = \"internal\""):
        check_representation(cfg, _molecule(3, [(0, 1), (1, 2)], ["H", "O", "H"]))


class _Data:
    def __init__(self, n, temperatures=(300.0, 450.0)):
        self.temperatures = np.array(temperatures)
        self.positions = np.zeros((len(temperatures), n, 3, 3))

    def at(self, t):
        hits = np.flatnonzero(np.isclose(self.temperatures, t))
        if not hits.size:
            raise UserError(f"data file has no samples at {t:g} K")
        return self.positions[hits[0]]


def test_too_little_data_is_refused_naming_the_file_and_the_key(tiny_config):
    cfg = tiny_config()
    with pytest.raises(UserError) as info:
        split_data(cfg, _Data(3))
    assert str(info.value) == f"{cfg.data_path}: only 3 samples per temperature; need more (data.n_samples)"
    with pytest.raises(UserError, match=rf"^{cfg.data_path}: data file has no samples at 450 K"):
        split_data(cfg, _Data(100, temperatures=(300.0, 400.0)))


def test_one_validation_block_is_the_end_of_each_trajectory(tiny_config):
    cfg = tiny_config("data.validation_fraction=0.2", "logging.eval_samples=5", "data.validation_blocks=1")
    data = _Data(50)
    data.positions[:, :, 0, 0] = np.arange(50)  # sample index in the first coordinate
    split = split_data(cfg, data)
    assert split.cold_train[:, 0, 0].tolist() == list(range(40))
    assert split.cold_val[:, 0, 0].tolist() == list(range(45, 50))  # the last eval_samples of the 10 held out
    assert split.n_train_pairs == 40


def test_validation_blocks_end_each_segment_and_keep_the_pairs(tiny_config):
    cfg = tiny_config("data.validation_fraction=0.2", "logging.eval_samples=5", "data.validation_blocks=5")
    data = _Data(50)
    data.positions[0, :, 0, 0] = np.arange(50)
    data.positions[1, :, 0, 0] = np.arange(50) + 1000  # the hot replica, same frames
    split = split_data(cfg, data)
    held = {8, 9, 18, 19, 28, 29, 38, 39, 48, 49}
    assert split.cold_train[:, 0, 0].tolist() == [i for i in range(50) if i not in held]
    assert split.cold_val[:, 0, 0].tolist() == [9, 19, 29, 39, 49]  # one evaluated per block, its last
    assert (split.hot_val[:, 0, 0] - 1000).tolist() == [9, 19, 29, 39, 49]
    assert (split.hot_train[:, 0, 0] - 1000).tolist() == split.cold_train[:, 0, 0].tolist()


def test_blocks_see_a_state_the_tail_misses(tiny_config):
    """The defect behind the blocks: a run whose last tenth sits in another state of a slow
    torsion. The tail validates on that state alone; five blocks see it in proportion."""
    data = _Data(1000)
    data.positions[:, 900:, 0, 0] = 1.0  # state 1 only at the end
    tail = split_data(tiny_config("data.validation_blocks=1", "logging.eval_samples=100"), data)
    blocks = split_data(tiny_config("data.validation_blocks=5", "logging.eval_samples=100"), data)
    assert float(tail.cold_val[:, 0, 0].mean()) == 1.0
    assert float(blocks.cold_val[:, 0, 0].mean()) == pytest.approx(0.2)


def test_validation_blocks_shorter_than_the_slowest_torsion_are_said_to_share_its_states(tiny_config):
    import dataclasses

    from molpt_tui.training.events import DataReport

    report = DataReport(path="d.npz", split="training data", n_samples=5000, n_independent=17.0,
                        slowest="phi ALA2 @ 450 K")

    def notes(blocks, reports=(report,)):
        split = split_data(tiny_config(f"data.validation_blocks={blocks}"), _Data(5000))
        said = []
        trainer = SimpleNamespace(setup=SimpleNamespace(split=dataclasses.replace(split, reports=reports)),
                                  message=lambda text, level="info": said.append(text))
        Trainer._note_validation_blocks(trainer)
        return said

    (line,) = notes(5)  # 500 held out: blocks of 100 against tau ~294
    assert line.startswith("validation blocks of 100 samples (5 blocks) are shorter than the autocorrelation "
                           "time of phi ALA2 @ 450 K (~294 samples)")
    assert notes(1) == []  # one block of 500
    assert notes(5, ()) == []  # no report (a molecule without backbone torsions)
    assert notes(5, (dataclasses.replace(report, n_independent=math.nan),)) == []


@given(n=st.integers(4, 3000), frac=st.floats(0.01, 0.5), blocks=st.integers(1, 1000), cap=st.integers(1, 5000))
@settings(max_examples=300, deadline=None)
def test_validation_indices_partition_the_run_into_spread_blocks(n, frac, blocks, cap):
    from molpt_tui.training.setup import validation_indices

    n_val = max(2, round(n * frac))
    assume(n - n_val >= 2)
    n_eval = min(cap, n_val)
    train, val = validation_indices(n, n_val, blocks, n_eval)
    held = sorted(set(range(n)) - set(train))
    assert train == sorted(train) and val == sorted(val)
    assert len(train) == n - n_val and len(held) == n_val and len(val) == n_eval
    assert set(val) <= set(held)
    runs = [[held[0]]]
    for i in held[1:]:
        if i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    k = min(blocks, n_val)
    ends = [round((b + 1) * n / k) - 1 for b in range(k)]
    # Adjacent blocks can touch (segments shorter than their block) and then read as one run.
    assert all(run[-1] in ends for run in runs) and held[-1] == n - 1
    assert max(len(run) for run in runs) <= n_val
    if -(-n_val // k) < n // k:  # each block shorter than any segment: training between, a run each
        assert len(runs) == k


def _cli(args, tiny_data_copy):
    from molpt_testdata import TINY_DATA, TINY_TRAIN

    from molpt_tui.cli import main

    full = list(args)
    for item in TINY_DATA + TINY_TRAIN + [f"data.path={tiny_data_copy}"]:
        full += ["--set", item]
    return main(full)


def _events(run_dir):
    return list(read_events(run_dir / "metrics.jsonl"))


def test_divergence_ends_the_run_diverged_exit_3_and_best_continues_it(tiny_data, tmp_path, monkeypatch, capsys):
    """The reported case, made certain: from the third training step on, every configuration is
    blown up threefold, so Fwd_E and Inv_E explode. The run must end `diverged` (exit 3) once the
    verdict holds, keep the best weights as its final model, say so, and `--resume RUN --from
    best --lr X` must continue from best.pt."""
    import shutil

    data = tmp_path / "data" / "tiny.npz"
    data.parent.mkdir()
    shutil.copy(tiny_data, data)
    run = tmp_path / "run"
    calls = {"n": 0}
    original = Trainer._step_losses

    def exploding(self, xb, yb):
        calls["n"] += torch.is_grad_enabled()
        if calls["n"] > 2 and torch.is_grad_enabled():
            xb, yb = xb * 3.0, yb * 3.0
        return original(self, xb, yb)

    monkeypatch.setattr(Trainer, "_step_losses", exploding)
    # the run's own LR, not the preset's, so the suggested lower LR below is this test's to know
    rc = _cli(["train", "--no-ui", "--epochs", "20", "--lr", "2e-4", "--out", str(run),
               "--set", "logging.step_progress_s=0.000001"], data)
    out = capsys.readouterr().out
    assert rc == 3, out[-3000:]
    events = _events(run)
    (finished,) = [e for e in events if e.kind == "finished"]
    assert finished.status == "diverged" and finished.epoch < 10
    assert finished.verdict.startswith("diverged at epoch") and "Fwd_E and Inv_E (both directions)" in finished.verdict
    verdicts = [e for e in events if e.kind == "alert" and e.rule == "diverged"]
    assert len(verdicts) == 1 and verdicts[0].command.startswith(f"molpt-tui train --resume {run} --from best --lr ")
    assert not [e for e in events if e.kind == "alert" and e.rule in ("inverse_diverging", "forward_diverging")]
    # the final model holds the best validated weights, last.pt the last (diverged) state
    final, best, last = (load_checkpoint(run / name) for name in ("molecular_pt_300_450.pt", "best.pt", "last.pt"))
    assert final["epoch"] == best["epoch"] == finished.best_epoch < last["epoch"] == finished.epoch
    assert all(torch.equal(final["model"][k], best["model"][k]) for k in best["model"])
    assert final["selection"]["epoch"] == finished.best_epoch and final["selection"]["metric"] == "validation KL"
    # the summary and the PNG say so
    assert f"Training DIVERGED at epoch {finished.epoch}/20" in out
    assert f"Final model: best validation KL {finished.best_score:.2f} kT at epoch {finished.best_epoch}" in out
    assert f"molpt-tui train --resume {run} --from best --lr 2e-5" in out
    assert (run / "loss_curves_300_450.png").is_file()
    # the independent test set was made beside the data, and evaluated untrained and at the end
    assert (data.parent / "tiny.test.npz").is_file()
    tests = [e for e in events if e.kind == "test"]
    assert [(t.label, t.epoch) for t in tests] == [("untrained", 0), ("final", finished.best_epoch)]
    n_test = load_config("quickstart", TINY_DATA).test_n_samples  # the preset's test_fraction of the tiny run
    assert all(0 <= t.acc_flow <= 1 and t.acc_flow_se > 0 and t.n_pairs == n_test for t in tests)
    # progress within epochs: every step here, with running means and the ETA inputs
    steps = [e for e in events if e.kind == "step"]
    assert [(s.epoch, s.step) for s in steps[:3]] == [(1, 1), (1, 2), (1, 3)]
    assert all(s.steps_per_epoch == 3 and s.epochs == 20 and s.segment_steps == 3 * (s.epoch - 1) + s.step
               for s in steps)

    monkeypatch.setattr(Trainer, "_step_losses", original)
    rc = _cli(["train", "--no-ui", "--resume", str(run), "--from", "best", "--lr", "2e-5"], data)
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    events = _events(run)
    started = [e for e in events if e.kind == "run_started"]
    assert started[-1].resumed and started[-1].start_epoch == finished.best_epoch and started[-1].lr == 2e-5
    assert f"resumed from {run / 'best.pt'} at epoch {finished.best_epoch}" in out
    assert [e for e in events if e.kind == "finished"][-1].status == "completed"


def test_patience_ends_a_run_whose_validation_stopped_improving(tiny_config, tmp_path, monkeypatch):
    """training.patience: with the validation KL best at epoch 2 and rising after it, a run of
    12 epochs with patience 3 ends `completed` at the evaluation of epoch 5 (every epoch is
    evaluated up to 10), says why and keeps epoch 2 as its final model; without patience the
    same run trains all 12 epochs."""
    import dataclasses

    original = Trainer.evaluate

    def rising_after_epoch_2(self):
        ev = original(self)
        epoch = len(self.history.blocks)  # one block per epoch so far: this is epoch 0, 1, ...
        return dataclasses.replace(ev, kl_val=float(abs(epoch - 2) + 1.0))

    monkeypatch.setattr(Trainer, "evaluate", rising_after_epoch_2)
    cfg = tiny_config("training.epochs=12", "training.patience=3")
    finished, sink = _train(cfg, tmp_path)
    assert finished.status == "completed" and finished.epoch == 5 and finished.best_epoch == 2
    assert finished.message == ("ended early: the validation KL has not improved for 3 epochs, since epoch 2 "
                                "(training.patience = 3)")
    assert [b.epoch for b in sink.of(LogBlock)] == [0, 1, 2, 3, 4, 5]
    final = load_checkpoint(tmp_path / "molecular_pt_300_450.pt")
    assert final["selection"]["epoch"] == 2 and load_checkpoint(tmp_path / "last.pt")["epoch"] == 5

    (tmp_path / "all").mkdir()
    finished, _ = _train(tiny_config("training.epochs=12"), tmp_path / "all")
    assert finished.status == "completed" and finished.epoch == 12 and finished.message == "Training completed"
