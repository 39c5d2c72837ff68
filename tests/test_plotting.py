"""Loss-curve PNG: written atomically, valid, and robust to the histories real runs produce."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from molpt_tui.report import plotting
from molpt_tui.training.events import EpochMetrics, LogBlock, RunStarted
from molpt_tui.training.history import History
from molpt_tui.training.metrics_log import MetricsLogSink
from molpt_tui.training.run_dir import METRICS_FILE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_started(**kw) -> RunStarted:
    base = dict(run_dir="r", preset="small", model="flow (internal coordinates)", t_cold=300.0,
                t_hot=450.0, epochs=100, batch_size=64, lr=1e-3, device="cpu", n_params=1000,
                engine="openmm")
    base.update(kw)
    return RunStarted(**base)


def epoch(e: int, loss: float, **kw) -> EpochMetrics:
    vals = dict(fwd_energy=loss / 2, fwd_logdet=5.0, inv_energy=loss / 2, inv_logdet=-5.0, lr=1e-3)
    vals.update(kw)
    return EpochMetrics(epoch=e, loss=loss, **vals)


def history(n: int = 50, start: float = 1e13) -> History:
    # The prototype's shape: 1e13 at the start, negative kT at the end.
    h = History()
    h.add(run_started())
    for e, loss in enumerate(np.geomspace(start, 1.0, n) - 20.0, start=1):
        h.add(epoch(e, float(loss)))
    return h


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_MAGIC
    assert data.rstrip()[-8:-4] == b"IEND"   # complete, not a truncated write
    temps = [p.name for p in path.parent.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert temps == []


def test_png_name():
    assert plotting.png_name(300, 450) == "loss_curves_300_450.png"
    assert plotting.png_name(300.0, 448.6) == "loss_curves_300_448.6.png"


def test_save_loss_curves_writes_a_png(tmp_path):
    out = plotting.save_loss_curves(history(), tmp_path / "loss_curves_300_450.png", title="t")
    assert out == tmp_path / "loss_curves_300_450.png"
    assert_png(out)


def test_directory_target_uses_the_naming_convention(tmp_path):
    out = plotting.save_loss_curves(history(), tmp_path)
    assert out.name == "loss_curves_300_450.png"
    assert_png(out)


def test_nonfinite_values_are_dropped(tmp_path):
    h = history()
    h.add(epoch(51, math.nan, fwd_energy=math.inf, inv_logdet=-math.inf))
    h.add(epoch(52, math.inf))
    h.add(epoch(53, -10.0))
    assert_png(plotting.save_loss_curves(h, tmp_path / "a.png"))


def test_all_nonfinite_and_empty_histories(tmp_path):
    h = History()
    assert_png(plotting.save_loss_curves(h, tmp_path / "empty.png"))
    h.add(epoch(1, math.nan, fwd_energy=math.nan, inv_energy=math.nan, fwd_logdet=math.nan,
                inv_logdet=math.nan))
    assert_png(plotting.save_loss_curves(h, tmp_path / "nan.png"))


def test_single_epoch(tmp_path):
    h = History()
    h.add(epoch(1, 123.0))
    assert_png(plotting.save_loss_curves(h, tmp_path / "one.png"))


def test_acceptance_overlay_and_long_history(tmp_path):
    h = History()
    n = 20_000
    for e in range(1, n + 1):
        h.add(epoch(e, 100.0 * math.exp(-e / 3000) + (500.0 if e == 12_345 else 0.0)))
    for e in range(100, n + 1, 1000):
        h.add(LogBlock(epoch=e, loss=1.0, fwd_energy=0, fwd_logdet=0, inv_energy=0, inv_logdet=0,
                       lr=1e-3, improvement_pct=0, acc_flow=min(0.4, 1e-9 * e ** 2), acc_naive=4e-10))
    fig = plotting.build_figure(h)
    assert "validation acceptance (epoch 19100): flow 0.365 vs naive 4e-10" in fig._suptitle.get_text()
    assert_png(plotting.save_loss_curves(h, tmp_path / "long.png"))


def test_decimate_keeps_spikes_and_order():
    x = np.arange(100_000, dtype=float)
    y = np.zeros_like(x)
    y[54_321] = 1e9
    y[77_777] = -1e9
    xd, yd = plotting.decimate(x, y, 1000)
    assert len(xd) <= 1000
    assert yd.max() == 1e9 and yd.min() == -1e9
    assert np.all(np.diff(xd) > 0)


def test_yscale_choice():
    fig = plotting.build_figure(history())
    ax_loss, ax_logdet = fig.axes[0], fig.axes[3]
    assert ax_loss.get_yscale() == "symlog"   # 1e13 down to -19
    assert ax_logdet.get_yscale() == "linear"  # constant +-5


def test_failed_write_leaves_no_temp_and_keeps_old_png(tmp_path, monkeypatch):
    target = tmp_path / "x.png"
    plotting.save_loss_curves(history(), target)
    before = target.read_bytes()

    def boom(self, fh, **kw):
        fh.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(plotting.Figure, "savefig", boom)
    with pytest.raises(OSError):
        plotting.save_loss_curves(history(), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_plot_run_dir_tolerates_bad_lines(tmp_path):
    sink = MetricsLogSink(tmp_path / METRICS_FILE)
    sink.emit(run_started(t_hot=448.6))
    for e in range(1, 11):
        sink.emit(epoch(e, 100.0 / e))
    sink.close()
    with open(tmp_path / METRICS_FILE, "a") as fh:
        fh.write("{not json}\n")
        fh.write('{"kind": "epoch", "epoch": 11, "loss": 1')   # partial last line
    seen = []
    out = plotting.plot_run_dir(tmp_path, warn=seen.append)
    assert out == tmp_path / "loss_curves_300_448.6.png"
    assert_png(out)
    assert len(seen) == 2


@pytest.mark.parametrize("stage", ["data phase", "started", "failed at start"])
def test_plot_of_a_run_without_epochs_is_one_line_and_writes_nothing(tmp_path, capsys, stage):
    """A run still simulating its data (or stopped then), or one that has not logged an epoch,
    gives nothing to plot: one line saying why, exit 2, no empty PNG."""
    from molpt_tui.cli import main
    from molpt_tui.training.events import DataProgress, Finished

    sink = MetricsLogSink(tmp_path / METRICS_FILE)
    if stage == "data phase":
        sink.emit(DataProgress(split="data", path="d.npz", phase="sampling", simulated_ns=0.1, planned_ns=1.0,
                               samples=10, planned_samples=100, ns_per_day=4000.0, elapsed_s=3.0))
    else:
        sink.emit(run_started())
        if stage == "failed at start":
            sink.emit(Finished(status="failed", epoch=0))
    sink.close()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    why = {"data phase": "generating its data", "started": "training has not started",
           "failed at start": "stopped before its first evaluation"}[stage]
    assert len(err) == 1 and err[0].startswith("molpt-tui: error: ") and why in err[0] and "no epoch" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_plot_run_dir_without_log(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metrics\.jsonl"):
        plotting.plot_run_dir(tmp_path)


def test_plotting_needs_no_display_and_no_pyplot():
    code = ("import os, sys; os.environ.pop('DISPLAY', None); os.environ['MPLBACKEND'] = 'TkAgg';"
            "import molpt_tui.report.plotting as p, tempfile, pathlib;"
            "from molpt_tui.training.history import History;"
            "d = pathlib.Path(tempfile.mkdtemp()); p.save_loss_curves(History(), d / 'a.png');"
            "assert 'matplotlib.pyplot' not in sys.modules;"
            "assert not any(m.startswith(('textual', 'rich')) for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_figure_shows_what_decides_and_never_puts_acceptance_on_the_loss_panel(tmp_path):
    from molpt_tui.training.events import Finished, TestEvaluation

    h = history(30, start=50.0)
    for e in (0, 10, 20, 30):
        h.add(LogBlock(epoch=e, loss=1.0, fwd_energy=0, fwd_logdet=0, inv_energy=0, inv_logdet=0, lr=1e-3,
                       improvement_pct=0, acc_flow=0.5 + e / 100, acc_flow_se=0.02, acc_naive=0.13,
                       acc_naive_se=0.01, ess_fwd=40.0, ess_fwd_se=3.0, ess_inv=35.0, ess_inv_se=4.0, kl=0.3,
                       kl_val=0.4 - e / 100, kl_val_se=0.02))
    h.add(TestEvaluation(epoch=30, label="final", n_pairs=500, acc_flow=0.77, acc_flow_se=0.03, acc_naive=0.12,
                         acc_naive_se=0.01, ess_fwd=38.0, ess_fwd_se=4.0, ess_inv=33.0, ess_inv_se=5.0, kl=0.12))
    h.add(Finished(status="completed", epoch=30, best_epoch=30, best_score=0.1, best_metric="validation KL"))
    fig = plotting.build_figure(h)
    axes = fig.axes
    assert len(axes) == 8                                  # no twin axis on the loss panel
    loss_ax, kl_ax, acc_ax, ess_ax = axes[0], axes[4], axes[5], axes[6]
    assert [line.get_label() for line in loss_ax.get_lines()] == ["training loss (epoch mean)"]
    assert acc_ax.get_ylabel() == "swap acceptance" and ess_ax.get_ylabel() == "ESS [% of samples]"
    assert kl_ax.get_ylabel() == "KL fwd+inv [kT]"
    assert all(ax.get_xlabel() == "epoch" for ax in axes[:7])
    labels = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert labels[:2] == ["flow swap (validation)", "naive swap (validation)"]
    assert "test, final model (epoch 30)" in labels
    # legends below their axes, never over the data
    for ax in axes[:7]:
        legend = ax.get_legend()
        if legend is not None:
            assert legend.get_bbox_to_anchor().transformed(ax.transAxes.inverted()).y1 < 0
    # the final claim is on the test set, with its error bar
    assert "test set (final model): flow-swap acceptance 0.77 \u00b1 0.03 vs naive 0.12" in fig._suptitle.get_text()
    assert_png(plotting.save_loss_curves(h, tmp_path / "full.png"))


def test_a_diverged_or_stopped_figure_says_so():
    from molpt_tui.training.events import Finished

    h = history(10, start=50.0)
    h.add(Finished(status="diverged", epoch=10, verdict="diverged at epoch 10: Fwd_E exploded"))
    fig = plotting.build_figure(h)
    assert "(DIVERGED)" in fig._suptitle.get_text()
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("diverged at epoch 10: Fwd_E exploded" in t for t in texts)
    assert any(t.strip() == "diverged" for t in texts)       # the end marked on the panels
    fig = plotting.build_figure(history(10, start=50.0), title="run", status="stopped")
    assert "(STOPPED)" in fig._suptitle.get_text()


def test_symlog_ticks_reach_the_data_and_do_not_crowd_zero():
    ticks = plotting.symlog_ticks([np.array([1e13, 5.0, -6e6])], linthresh=1.0)
    assert 0.0 in ticks and max(ticks) == 1e13 and min(ticks) == -1e6
    assert len([t for t in ticks if t > 0]) <= 7
    assert plotting.symlog_ticks([np.array([0.5, -0.5])], linthresh=1.0) == [0.0]


def test_comparison_of_runs_overlays_each_metric_by_run_name(tmp_path):
    runs = []
    for name, start in (("lr_1e-3", 1e3), ("lr_1e-4", 1e2)):
        d = tmp_path / name
        d.mkdir()
        sink = MetricsLogSink(d / METRICS_FILE)
        sink.emit(run_started())
        for e in range(0, 11):
            sink.emit(epoch(e, start / (e + 1)))
            sink.emit(LogBlock(epoch=e, loss=1.0, fwd_energy=0, fwd_logdet=0, inv_energy=0, inv_logdet=0, lr=1e-3,
                               improvement_pct=0, acc_flow=0.5, acc_naive=0.1, ess_fwd=10.0, ess_inv=9.0,
                               kl_val=0.3))
        sink.close()
        runs.append(d)
    out = plotting.plot_comparison(runs, tmp_path / "cmp.png")
    assert_png(out)
    _, histories = zip(*[plotting._history_of(d, None) for d in runs])
    fig = plotting.build_comparison_figure(list(zip(["lr_1e-3", "lr_1e-4"], histories)))
    with_data = [ax for ax in fig.axes if ax.get_legend() is not None]
    assert len(with_data) == 7      # every metric but the training KL, which these runs did not log
    for ax in with_data:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lr_1e-3", "lr_1e-4"]
    assert all(ax.get_xlabel() == "epoch" and ax.get_ylabel() for ax in fig.axes)


def test_plot_command_compares_runs(tmp_path, capsys):
    from molpt_tui.cli import main

    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        sink = MetricsLogSink(d / METRICS_FILE)
        sink.emit(run_started())
        sink.emit(epoch(1, 10.0))
        sink.close()
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "ab.png")]) == 0
    assert_png(tmp_path / "ab.png")
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "nope")]) == 2
    assert "nope: no metrics.jsonl here" in capsys.readouterr().err
