"""The validation figure of training: drawn from the held-out pairs of each log-block
evaluation (never the training batches), for the final model at the end and on a PNG request,
off the training thread; a figure that cannot be written is a warning, never a failed run."""
from __future__ import annotations

import errno
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from molpt_tui.app.artifacts import RunFiles
from molpt_tui.training.artifacts import BackgroundWriter
from molpt_tui.training.control import TrainingControl
from molpt_tui.training.evaluation import MappedSamples
from molpt_tui.training.events import (
    EpochMetrics,
    Finished,
    LogBlock,
    Message,
    RequestAcknowledged,
    ValidationHistograms,
)
from molpt_tui.training.run_dir import RunDirectory
from molpt_tui.training.trainer import Trainer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


class Recording(RunFiles):
    """The run directory's artifacts, keeping every set of samples the trainer hands over."""

    def __init__(self, path: Path, cfg, draw: bool = True):
        super().__init__(RunDirectory(path), cfg)
        self.received: list[MappedSamples] = []
        self.draw = draw

    def write_validation(self, samples):
        self.received.append(samples)
        return super().write_validation(samples) if self.draw else None


class InlineWriter:
    """BackgroundWriter's interface, run at once: which figures are asked for, deterministically
    (the real writer drops a figure superseded before it was drawn)."""

    def __init__(self):
        self.done = []

    def submit(self, job):
        try:
            self.done.append(job())
        except Exception as exc:
            self.done.append(exc)

    def take(self):
        done, self.done = self.done, []
        return done

    def wait(self, timeout):
        return True

    def close(self):
        pass


def make_setup(cfg):
    from molpt_tui.physics.data import load_data
    from molpt_tui.physics.systems import system_from_config
    from molpt_tui.training.setup import build_setup, resolve_device, split_data

    ms = system_from_config(cfg)
    split = split_data(cfg, load_data(cfg.data_path, ms))
    return build_setup(cfg, ms, split, resolve_device(cfg.training.device), log=lambda text: None)


def _run(cfg, artifacts, control=None, on_event=None, inline=False):
    sink = Collect(on_event)
    with make_setup(cfg) as setup:
        trainer = Trainer(cfg, setup, [sink], control or TrainingControl(), artifacts)
        if inline:
            trainer._figures = InlineWriter()
        finished = trainer.run()
        validation = setup.validation
        # what the final model (loaded at the end) does to the first held-out pairs
        with torch.no_grad():
            mapped = trainer.transport(validation.cold[:4].to(setup.device))[0].double().cpu().numpy()
        facts = {"validation": validation, "train_cold": setup.split.cold_train, "mapped": mapped,
                 "beta_cold": setup.beta_cold, "beta_hot": setup.beta_hot}
        if getattr(artifacts, "received", None):
            images = torch.from_numpy(artifacts.received[-1].cold_to_hot[:4])
            facts["u_final"] = setup.energy(images).detach().double().cpu().numpy()
    return finished, sink, facts


def _leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def steered(tiny_data, tmp_path_factory):
    """One tiny run of 3 epochs with a PNG request after epoch 2, every figure asked for
    recorded (inline, not drawn)."""
    from molpt_testdata import TINY_DATA, TINY_TRAIN

    from molpt_tui.config import load_config

    cfg = load_config("quickstart", TINY_DATA + TINY_TRAIN + [f"data.path={tiny_data}", "training.epochs=3"])
    control = TrainingControl()
    artifacts = Recording(tmp_path_factory.mktemp("steered"), cfg, draw=False)

    def steer(event):
        if isinstance(event, EpochMetrics) and event.epoch == 2:
            control.request_png("p1")

    finished, sink, facts = _run(cfg, artifacts, control, on_event=steer, inline=True)
    assert finished.status == "completed"
    return finished, sink, facts, artifacts.received


def test_the_figure_is_drawn_at_each_log_block_on_request_and_for_the_final_model(steered):
    finished, sink, _, drawn = steered
    blocks = [b.epoch for b in sink.of(LogBlock)]
    assert blocks == [0, 1, 2, 3]
    assert any(e.action == "png" and e.request_id == "p1" for e in sink.of(RequestAcknowledged))
    # blocks 0, 1, 2, the request (served early in epoch 3: the latest evaluation, epoch 2's), 3, the end
    assert [s.epoch for s in drawn] == [0, 1, 2, 2, 3, finished.best_epoch]
    assert [s.model for s in drawn[:5]] == ["untrained map (epoch 0)", "map at epoch 1", "map at epoch 2",
                                            "map at epoch 2", "map at epoch 3"]
    final = drawn[-1]
    assert final.model.startswith(f"final model = epoch {finished.best_epoch} (selected on validation KL")
    # the monitor's pane gets the same pairs, binned, at each evaluation
    hists = sink.of(ValidationHistograms)
    assert [h.epoch for h in hists] == blocks
    for h, s in zip(hists, drawn):
        assert h.split == "validation" and h.n_pairs == len(s) == 60
        assert sum(h.hot_mapped) + h.hot_mapped_below + h.hot_mapped_above == 60
        assert h.rama_label == "ALA2" and sum(h.rama_cold) == sum(h.rama_cold_to_hot) == 60
    # the selected epoch's images are reused, not computed again
    assert final.cold_to_hot is next(s for s in drawn[:-1] if s.epoch == finished.best_epoch).cold_to_hot


def test_the_samples_are_the_validation_pairs_and_their_images(steered):
    _, _, facts, drawn = steered
    val = facts["validation"]
    n = len(val)
    for s in drawn:
        assert s.split == "validation" and s.n_split == n == len(s)  # 60 held-out pairs, all shown
        assert s.cold.dtype == np.float64 and s.cold.shape == tuple(val.cold[:n].shape)
        np.testing.assert_array_equal(s.cold, val.cold[:n].double().numpy())
        np.testing.assert_array_equal(s.hot, val.hot[:n].double().numpy())
        np.testing.assert_allclose(s.reduced_cold, facts["beta_cold"] * val.u_cold[:n].numpy(), rtol=1e-12)
        np.testing.assert_allclose(s.reduced_hot, facts["beta_hot"] * val.u_hot[:n].numpy(), rtol=1e-12)
        assert s.backbone is not None and s.backbone.is_peptide  # alanine dipeptide: phi/psi found
    # none of the shown configurations is a training sample
    train = facts["train_cold"].double().numpy().reshape(len(facts["train_cold"]), -1)
    shown = drawn[-1].cold.reshape(n, -1)
    assert not (np.abs(shown[:, None, :] - train[None, :, :]).max(axis=2) < 1e-9).any()
    # the images are those of the final model, in nm, and their beta*U in kT
    final = drawn[-1]
    np.testing.assert_allclose(final.cold_to_hot[:4], facts["mapped"], atol=1e-5)
    np.testing.assert_allclose(final.reduced_cold_to_hot[:4], facts["beta_hot"] * facts["u_final"], rtol=1e-4,
                               atol=1e-3)
    size = np.linalg.norm(np.ptp(final.cold_to_hot, axis=1), axis=1)
    assert (size > 0.3).all() and (size < 2.0).all()  # nm: a dipeptide is ~1 nm across, not 10 (Å)


def test_a_tiny_run_leaves_the_figure_among_its_files(tiny_config, tmp_path):
    """The real writer thread and the real figure: a PNG, named in the Finished event."""
    cfg = tiny_config("training.epochs=1")
    artifacts = Recording(tmp_path, cfg)
    finished, sink, _ = _run(cfg, artifacts)
    assert finished.status == "completed"
    png = tmp_path / "validation_300_450.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 10_000
    assert str(png) in finished.files
    assert [e for e in sink.events if isinstance(e, Finished)][-1].files == finished.files
    assert artifacts.received[-1].model.startswith("final model")
    assert not [m for m in sink.of(Message) if m.level == "warning" and "validation" in m.text]
    assert _leftovers(tmp_path) == []


def test_the_title_names_the_split_the_weights_and_the_epoch(tiny_config, tmp_path, monkeypatch):
    import molpt_tui.app.artifacts as app_artifacts

    seen = {}

    def capture(path, **kwargs):
        seen.update(kwargs, path=path)
        return Path(path)

    monkeypatch.setattr(app_artifacts, "write_validation_figure", capture)
    cfg = tiny_config()
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(5, 22, 3))
    samples = MappedSamples(cold=pos, hot=pos, cold_to_hot=pos, hot_to_cold=pos, reduced_cold=np.zeros(5),
                            reduced_hot=np.ones(5), reduced_cold_to_hot=np.full(5, 2.0),
                            reduced_hot_to_cold=np.full(5, 3.0), n_split=60, epoch=7, model="map at epoch 7")
    path = RunFiles(RunDirectory(tmp_path), cfg).write_validation(samples)
    assert path == tmp_path / "validation_300_450.png" == seen["path"]
    assert "map at epoch 7" in seen["title"] and "validation split" in seen["title"]
    assert "5 of 60 pairs" in seen["title"]
    e = seen["energies"]
    assert (e.cold, e.hot, e.cold_to_hot, e.hot_to_cold) == (samples.reduced_cold, samples.reduced_hot,
                                                             samples.reduced_cold_to_hot, samples.reduced_hot_to_cold)
    assert seen["backbone"] is None and (seen["t_cold"], seen["t_hot"]) == (300.0, 450.0)


def test_a_figure_that_cannot_be_written_is_a_warning_and_the_run_completes(tiny_config, tmp_path, monkeypatch):
    """A disk that fills while the PNG is written: a warning, no temporary left, every other
    result still there."""
    import molpt_tui.report.validation_plots as plots
    from molpt_tui.fileio import atomic_write_bytes

    def disk_full(path, write):
        def half(fh):
            fh.write(b"\x89PNG half a figure")
            raise OSError(errno.ENOSPC, "No space left on device")

        return atomic_write_bytes(path, half)

    monkeypatch.setattr(plots, "atomic_write_bytes", disk_full)
    cfg = tiny_config("training.epochs=1")
    finished, sink, _ = _run(cfg, Recording(tmp_path, cfg))
    assert finished.status == "completed"
    warnings = [m.text for m in sink.of(Message) if m.level == "warning" and "validation figure" in m.text]
    assert warnings and all(w.startswith("could not write the validation figure: OSError:") and
                            "No space left on device" in w for w in warnings)
    assert not (tmp_path / "validation_300_450.png").exists()
    assert not any("validation" in f for f in finished.files)
    assert (tmp_path / "molecular_pt_300_450.pt").is_file() and (tmp_path / "loss_curves_300_450.png").is_file()
    assert _leftovers(tmp_path) == []


# --- the writer thread -----------------------------------------------------------------------------

def test_the_writer_runs_one_job_at_a_time_and_the_latest_waiting_one_wins():
    writer = BackgroundWriter()
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def job(name, block=False):
        def run():
            if block:
                started.set()
                assert release.wait(10)
            ran.append(name)
            return Path(name)
        return run

    writer.submit(job("first", block=True))
    assert started.wait(10)
    writer.submit(job("second"))  # superseded before it could start
    writer.submit(job("third"))
    assert not writer.wait(0.05)  # "first" still runs
    release.set()
    assert writer.wait(10)
    assert ran == ["first", "third"] and writer.take() == [Path("first"), Path("third")]
    assert writer.take() == []


def test_the_writer_hands_failures_back_and_lives_on():
    writer = BackgroundWriter()

    def fail():
        raise OSError(errno.ENOSPC, "No space left on device")

    writer.submit(fail)
    assert writer.wait(10)
    (outcome,) = writer.take()
    assert isinstance(outcome, OSError) and outcome.errno == errno.ENOSPC
    writer.submit(lambda: None)
    assert writer.wait(10) and writer.take() == [None]
    writer.close()
    writer.submit(lambda: Path("late"))  # after close: dropped
    assert writer.wait(1) and writer.take() == []


def test_evaluate_keeps_what_it_is_asked_to(tiny_config):
    from molpt_tui.training.evaluation import evaluate
    from molpt_tui.training.setup import build_transport

    cfg = tiny_config()
    with make_setup(cfg) as setup:
        transport = build_transport(cfg, setup.ms, setup.split.cold_train, setup.split.hot_train)
        plain = evaluate(transport, setup, 16)
        ev = evaluate(transport, setup, 16, keep=3)
        n = len(setup.validation)
        assert plain.samples is None
        np.testing.assert_equal(ev.fields(), plain.fields())  # keeping changes no number
        s = ev.samples
        assert s is not None and len(s) == 3 and s.n_split == n
        # evenly spaced over the split's MD time: the first, the middle and the last pair
        rows = [0, round((n - 1) / 2), n - 1]
        np.testing.assert_array_equal(s.hot, setup.validation.hot[rows].double().numpy())
        with torch.no_grad():
            back = transport.inverse(setup.validation.hot[rows].to(setup.device))[0].double().cpu().numpy()
        np.testing.assert_allclose(s.hot_to_cold, back, atol=1e-6)
