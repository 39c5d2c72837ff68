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
    assert "epoch 19100): flow 0.365 vs naive 4e-10" in fig._suptitle.get_text()
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


def test_plot_run_dir_without_log(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plotting.plot_run_dir(tmp_path)


def test_plotting_needs_no_display_and_no_pyplot():
    code = ("import os, sys; os.environ.pop('DISPLAY', None); os.environ['MPLBACKEND'] = 'TkAgg';"
            "import molpt_tui.report.plotting as p, tempfile, pathlib;"
            "from molpt_tui.training.history import History;"
            "d = pathlib.Path(tempfile.mkdtemp()); p.save_loss_curves(History(), d / 'a.png');"
            "assert 'matplotlib.pyplot' not in sys.modules;"
            "assert not any(m.startswith(('textual', 'rich')) for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
