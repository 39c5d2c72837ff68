"""Pure pieces of the monitor: decimation, axis transforms, formatting, series mirror, state."""
from __future__ import annotations

import math

import numpy as np
import pytest

from molpt_tui.training.events import Alert, EpochMetrics, Finished
from molpt_tui.training.history import History
from molpt_tui.tui.decimate import (
    format_tick,
    log_ticks,
    minmax_decimate,
    nice_ticks,
    symlog_inverse,
    symlog_transform,
)
from molpt_tui.tui.formatting import fmt_duration, fmt_num, fmt_params, fmt_transport
from molpt_tui.tui.series import SeriesStore
from molpt_tui.tui.state import MonitorState
from tui_fakes import FIXTURE_DIR, T0, curves, jsonl, run_started, train_stream, watch_stream


def test_minmax_decimation_keeps_extremes_order_and_bounds():
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.standard_normal(100_003))
    y[777] = 1e9  # a single exploding epoch must survive decimation
    x = np.arange(1, y.size + 1)
    xd, yd = minmax_decimate(x, y, 150)
    assert len(xd) <= 2 * 150 + 4
    assert yd.max() == 1e9 and yd.min() == y.min()
    assert np.all(np.diff(xd) >= 0)
    assert xd[0] == x[0] and xd[-1] == x[-1]  # the curve spans the whole range


def test_decimation_drops_nonfinite_and_passes_small_series_through():
    y = np.array([1.0, np.inf, 2.0, np.nan, -np.inf, 3.0])
    x = np.arange(6)
    xd, yd = minmax_decimate(x, y, 100)
    assert list(xd) == [0, 2, 5] and list(yd) == [1.0, 2.0, 3.0]


def test_symlog_is_monotonic_through_zero_and_invertible():
    y = np.array([-1e12, -5.0, -0.5, 0.0, 0.5, 5.0, 1e12])
    t = symlog_transform(y)
    assert np.all(np.diff(t) > 0)
    for value, tv in zip(y, t):
        assert symlog_inverse(float(tv)) == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_log_ticks_are_labelled_in_data_units():
    ticks, labels = log_ticks(1.0, 12.0, symlog=False)
    assert labels[0] == "10" and labels[-1].startswith("1e") and len(ticks) <= 5
    s_ticks, s_labels = log_ticks(float(symlog_transform(np.array([-500.0]))[0]),
                                  float(symlog_transform(np.array([1e6]))[0]), symlog=True)
    assert "0" in s_labels and any(label.startswith("-") for label in s_labels)
    assert all(a < b for a, b in zip(s_ticks, s_ticks[1:]))


def test_nice_ticks_and_labels():
    assert nice_ticks(1, 120, 6, integer=True) == [20, 40, 60, 80, 100, 120]
    assert nice_ticks(111, 86403, 4) == [20000, 40000, 60000, 80000]
    assert [format_tick(v) for v in (0, 25000, 0.5, -1e-5)] == ["0", "2.5e4", "0.5", "-1e-5"]


def test_formatting():
    assert fmt_num(math.nan) == "–" and fmt_num(81930.3) == "8.193e4" and fmt_num(123.456) == "123.5"
    assert fmt_duration(3725) == "1:02:05" and fmt_duration(None) == "--:--"
    assert fmt_params(17_800_000) == "17.80 M params"
    assert fmt_transport(300, 450) == "300.0K → 450.0K"


@pytest.mark.parametrize("window", [None, 700, 5_000, 200_000])
def test_block_decimation_matches_raw_extremes(window):
    rng = np.random.default_rng(1)
    n = 300_001
    history = History()
    history.epochs = list(range(1, n + 1))
    values = np.cumsum(rng.standard_normal(n))
    values[[5, 77_777, 150_000]] = [np.inf, np.nan, -np.inf]
    values[123_456] = 1e6  # a spike that must survive in every window containing it
    for key in history.series:
        history.series[key] = values.tolist()
    store = SeriesStore()
    store.sync(history)
    x, y = store.decimated("loss", window, 150)
    xr, yr = store.view("loss", window)
    finite = yr[np.isfinite(yr)]
    assert len(x) <= 2 * 150 + 6 and np.all(np.diff(x) > 0) and np.isfinite(y).all()
    assert y.max() == finite.max() and y.min() == finite.min()
    assert x[0] == xr[0] and x[-1] == xr[-1]
    # Appending a batch keeps the summaries incremental and correct.
    history.epochs.extend(range(n + 1, n + 1001))
    for key in history.series:
        history.series[key].extend([2e6] * 1000)
    store.sync(history, n)
    x, y = store.decimated("loss", window, 150)
    assert y.max() == 2e6 and x[-1] == n + 1000


def _metrics(epoch: int, loss: float) -> EpochMetrics:
    return EpochMetrics(epoch=epoch, loss=loss, fwd_energy=loss, fwd_logdet=1.0, inv_energy=2.0,
                        inv_logdet=-1.0, lr=1e-3)


def test_series_store_follows_history_through_a_resume_rollback():
    # Resume from epoch 30: epochs 31.. are re-emitted with new values.
    state = MonitorState()
    state.store = SeriesStore(capacity=16)  # force growth on the way
    state.apply([run_started(t=T0)] + [_metrics(e, float(e)) for e in range(1, 41)])
    state.apply([run_started(t=T0 + 1, start_epoch=30, resumed=True)]
                + [_metrics(e, -float(e)) for e in range(31, 51)])
    x, y = state.store.view("loss")
    assert list(x) == list(range(1, 51))
    assert list(y[:30]) == [float(e) for e in range(1, 31)] and y[30] == -31.0
    x, y = state.store.view("fwd_term")
    assert y[0] == 1.0 - 1.0  # fwd_energy - fwd_logdet
    x, _ = state.store.view("loss", last_epochs=10)
    assert list(x) == list(range(41, 51))
    assert any(entry.text == "resumed at epoch 30" for entry in state.log)
    history = History()
    for epoch in range(1, 6):
        history.add(_metrics(epoch, 1.0))
    store = SeriesStore()
    store.sync(history)
    assert len(store) == 5


def test_state_alerts_eta_and_summary():
    state = MonitorState()
    events = train_stream(20, total=200)
    state.apply(events)
    assert [a.epoch for a in state.take_alerts()] == [3]
    assert state.take_alerts() == []
    now = events[-1].t
    rate = state.seconds_per_epoch()
    assert 1.5 < rate < 2.5
    assert state.eta(now) == pytest.approx(rate * 180)
    state.apply([Finished(status="completed", epoch=20, files=["a/last.pt", "a/x.png"], t=now + 1)])
    assert state.elapsed(now + 1000) == pytest.approx(now + 1 - T0)  # frozen at the end
    lines = state.summary_lines()
    assert lines[0].startswith("Training completed at epoch 20/200")
    assert lines[-1] == "Files: a/last.pt, a/x.png"


def test_backlog_alerts_are_not_queued_for_toasts():
    state = MonitorState()
    state.apply([Alert(epoch=1, rule="r", severity="error", message="m", hint="h")], notify=False)
    assert state.take_alerts() == [] and len(state.history.alerts) == 1


def test_fixture_matches_its_generator():
    """tests/fixtures/watch_run/metrics.jsonl is generated by tui_fakes; keep them in step."""
    assert (FIXTURE_DIR / "metrics.jsonl").read_text(encoding="utf-8") == jsonl(watch_stream())


def test_curves_are_finite():
    assert all(math.isfinite(v) for e in range(1, 201) for v in curves(e).values())


def test_tui_package_import_is_lazy(tmp_path):
    """`import molpt_tui.tui` must not pull Textual in (the CLI imports it before choosing)."""
    import subprocess
    import sys

    code = "import sys, molpt_tui.tui; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
