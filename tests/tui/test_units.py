"""Pure pieces of the monitor: decimation, axis transforms, formatting, series mirror, state."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tui_fakes import FIXTURE_DIR, T0, curves, jsonl, run_started, train_stream, watch_stream

from molpt_tui.training.events import Alert, ControlAction, EpochMetrics, Finished, Message, RequestAcknowledged
from molpt_tui.training.history import History
from molpt_tui.training.run_dir import RunDirectory
from molpt_tui.tui.axes import format_tick, log_ticks, nice_ticks, symlog_inverse
from molpt_tui.tui.decimate import minmax_decimate, symlog_transform
from molpt_tui.tui.formatting import fmt_duration, fmt_num, fmt_params, fmt_transport
from molpt_tui.tui.series import SeriesStore
from molpt_tui.tui.source import FeedStatus, LiveRun, StatusLine, WatchedRun
from molpt_tui.tui.state import MonitorState, ack_text


def test_minmax_decimation_keeps_extremes_order_and_bounds() -> None:
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.standard_normal(100_003))
    y[777] = 1e9  # a single exploding epoch must survive decimation
    x = np.arange(1, y.size + 1)
    xd, yd = minmax_decimate(x, y, 150)
    assert len(xd) <= 2 * 150 + 4
    assert yd.max() == 1e9 and yd.min() == y.min()
    assert np.all(np.diff(xd) >= 0)
    assert xd[0] == x[0] and xd[-1] == x[-1]  # the curve spans the whole range


def test_decimation_drops_nonfinite_and_passes_small_series_through() -> None:
    y = np.array([1.0, np.inf, 2.0, np.nan, -np.inf, 3.0])
    x = np.arange(6)
    xd, yd = minmax_decimate(x, y, 100)
    assert list(xd) == [0, 2, 5] and list(yd) == [1.0, 2.0, 3.0]


def test_symlog_is_monotonic_through_zero_and_invertible() -> None:
    y = np.array([-1e12, -5.0, -0.5, 0.0, 0.5, 5.0, 1e12])
    t = symlog_transform(y)
    assert np.all(np.diff(t) > 0)
    for value, tv in zip(y, t):
        assert symlog_inverse(float(tv)) == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_log_ticks_are_labelled_in_data_units() -> None:
    ticks = log_ticks(1.0, 12.0, symlog_axis=False)
    # Twelve decades in five ticks: every fifth decade, labelled in data units.
    assert ticks.labels == ["1e5", "1e10"] and ticks.positions == [5.0, 10.0]
    assert log_ticks(0.0, 2.0, symlog_axis=False).labels == ["1", "5", "10", "50", "100"]
    s_ticks = log_ticks(float(symlog_transform(np.array([-500.0]))[0]),
                        float(symlog_transform(np.array([1e6]))[0]), symlog_axis=True)
    assert "0" in s_ticks.labels and any(label.startswith("-") for label in s_ticks.labels)
    assert all(a < b for a, b in zip(s_ticks.positions, s_ticks.positions[1:]))


def test_nice_ticks_and_labels() -> None:
    assert nice_ticks(1, 120, 6, integer=True) == [20, 40, 60, 80, 100, 120]
    assert nice_ticks(111, 86403, 4) == [20000, 40000, 60000, 80000]
    assert [format_tick(v) for v in (0, 25000, 0.5, -1e-5)] == ["0", "2.5e4", "0.5", "-1e-5"]


def test_formatting() -> None:
    assert fmt_num(math.nan) == "–" and fmt_num(81930.3) == "8.193e4" and fmt_num(123.456) == "123.5"
    assert fmt_duration(3725) == "1:02:05" and fmt_duration(None) == "--:--"
    assert fmt_params(17_800_000) == "17.80 M params"
    assert fmt_transport(300, 450) == "300.0K → 450.0K"


@pytest.mark.parametrize("window", [None, 700, 5_000, 200_000])
def test_block_decimation_matches_raw_extremes(window: int | None) -> None:
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


def test_series_store_follows_history_through_a_resume_rollback() -> None:
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


def test_state_alerts_eta_and_summary() -> None:
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


def test_backlog_alerts_are_not_queued_for_toasts() -> None:
    state = MonitorState()
    state.apply([Alert(epoch=1, rule="r", severity="error", message="m", hint="h")], notify=False)
    assert state.take_alerts() == [] and len(state.history.alerts) == 1


def test_fixture_matches_its_generator() -> None:
    """tests/fixtures/watch_run/metrics.jsonl is generated by tui_fakes; keep them in step."""
    assert (FIXTURE_DIR / "metrics.jsonl").read_text(encoding="utf-8") == jsonl(watch_stream())


def test_curves_are_finite() -> None:
    for epoch in range(1, 201):
        c = curves(epoch)
        values = (c["loss"], c["fwd_energy"], c["fwd_logdet"], c["inv_energy"], c["inv_logdet"], c["lr"])
        assert all(math.isfinite(v) for v in values)


def test_tui_package_import_is_lazy(tmp_path: Path) -> None:
    """`import molpt_tui.tui` must not pull Textual in (the CLI imports it before choosing)."""
    import subprocess
    import sys

    code = "import sys, molpt_tui.tui; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- acknowledgements and run sources (no Textual) ------------------------------------------------
def _ack(action: ControlAction, request_id: str = "", detail: str = "", epoch: int = 7) -> RequestAcknowledged:
    return RequestAcknowledged(request_id=request_id, action=action, epoch=epoch, detail=detail, t=T0)


def test_pause_and_stop_come_from_acknowledgements_not_requests() -> None:
    state = MonitorState()
    state.apply([run_started(t=T0), _ack("pause", "a1")])
    assert state.paused and "a1" in state.acked_ids
    assert [a.action for a in state.take_acks()] == ["pause"] and state.take_acks() == []
    state.apply([_ack("checkpoint", "a2", "runs/x/manual-7.pt"), _ack("resume")], notify=False)
    assert not state.paused and state.take_acks() == []  # history: logged, not toasted
    texts = [e.text for e in state.log]
    assert "paused after epoch 7" in texts and "checkpoint written: runs/x/manual-7.pt" in texts
    assert "running again after epoch 7" in texts
    state.apply([_ack("pause"), _ack("stop", detail="stop requested through the control channel")])
    assert state.stopping and not state.paused
    assert state.log[-1].text.startswith("stopping after epoch 7: stop")
    state.apply([run_started(t=T0 + 1, start_epoch=7, resumed=True)])
    assert not state.stopping and not state.paused  # a new segment runs


def test_ack_text_for_each_action() -> None:
    assert ack_text(_ack("png", detail="a/loss.png")) == "PNG written: a/loss.png"
    assert ack_text(_ack("checkpoint")) == "checkpoint written"
    assert ack_text(_ack("stop")) == "stopping after epoch 7"


class StubHandle:
    description = "stub trainer"

    def __init__(self, code: int | None = None) -> None:
        self.code = code
        self.terminated = 0

    def poll(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        self.terminated += 1

    def kill(self) -> None:
        self.code = -9


def _ended(source: LiveRun, handle: StubHandle, code: int) -> None:
    handle.code = code
    assert source.check() and source.trainer_exit() == code
    source.settle_exit()


def test_live_run_exit_codes_come_from_the_trainer(tmp_path: Path) -> None:
    rd = RunDirectory(tmp_path)
    feed = FeedStatus(exists=True, last_write=T0)
    handle = StubHandle()
    source = LiveRun(rd, handle)
    state = MonitorState()
    assert source.status(state, feed, T0).label == "STARTING"
    state.apply(train_stream(3))
    assert source.status(state, feed, T0).label == "RUNNING"
    assert source.exit_code(state) == 130  # left while it still runs (forced quit)
    source.stop_now()
    assert handle.terminated == 1
    state.apply([Finished(status="stopped", epoch=3, t=T0)])
    assert source.status(state, feed, T0) == StatusLine("STOPPED", "waiting for the trainer to exit")
    _ended(source, handle, -15)
    assert source.exit_code(state) == 143 and source.status(state, feed, T0).label == "STOPPED"
    assert not source.can_steer() and "exited (code 143)" in source.refusal("pause", state)
    assert source.status(state, replace(feed, error="reading x: OSError"), T0).label == "READ ERROR"

    other = StubHandle()
    died = LiveRun(rd, other)
    assert died.prior_segments == 0  # no metrics.jsonl here
    fresh = MonitorState()
    fresh.apply(train_stream(2))
    _ended(died, other, 0)
    assert died.exit_code(fresh) == 1  # no Finished event: never a success
    assert died.status(fresh, feed, T0).label == "CRASHED" and "without reporting" in died.crash(fresh)


def test_live_run_ignores_the_finished_segments_before_it(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(jsonl(watch_stream()))
    source = LiveRun(RunDirectory(tmp_path), StubHandle())
    assert (source.prior_segments, source.prior_finished) == (2, 2)
    state = MonitorState()
    history, live = source.split_backlog(state, watch_stream())
    assert (history, live) == (watch_stream(), [])
    state.apply(watch_stream())
    assert source.finished(state) is None and source.allowed("pause", state)
    assert source.status(state, FeedStatus(exists=True), T0) == StatusLine("STARTING", "waiting for stub trainer")
    mine = [Message(text="resuming", t=T0), run_started(t=T0 + 1, start_epoch=200, resumed=True)]
    assert source.split_backlog(state, mine) == (mine[:1], mine[1:])
    state.apply(mine)
    assert source.status(state, FeedStatus(exists=True), T0).label == "RUNNING"
    assert source.split_backlog(state, mine) == ([], mine)


def test_live_run_trainer_that_fails_before_it_starts(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(jsonl(watch_stream()))
    handle = StubHandle()
    source = LiveRun(RunDirectory(tmp_path), handle)
    state = MonitorState()
    state.apply(watch_stream())
    # What the application layer's trainer process writes when its preflight fails.
    failure = [Message(text="no data file", level="error", t=T0),
               Finished(status="failed", epoch=0, message="no data file", t=T0)]
    assert source.split_backlog(state, failure) == (failure[:1], failure[1:])
    state.apply(failure)
    _ended(source, handle, 1)
    assert source.status(state, FeedStatus(exists=True), T0) == StatusLine("FAILED", "")
    assert source.crash(state) == "" and source.exit_code(state) == 1


def test_watched_run_steers_only_a_live_lock_holder_and_says_why_not(tmp_path: Path) -> None:
    missing = WatchedRun(RunDirectory(tmp_path / "later"))
    state = MonitorState()
    assert missing.status(state, FeedStatus(exists=False), T0) == StatusLine(
        "WAITING", "no run directory yet: checking every second")
    assert missing.refusal("pause", state) == "no live trainer holds this run's lock"
    assert missing.send("pause") is None and not (tmp_path / "later").exists()

    rd = RunDirectory(tmp_path)
    note = WatchedRun(rd).status(state, FeedStatus(exists=False), T0).note
    assert note == "no metrics.jsonl yet: job pending or preparing"
    holder = RunDirectory(tmp_path)
    holder.acquire_lock()  # this process holds it, so it is alive
    try:
        read_only = WatchedRun(rd, read_only=True)
        assert read_only.refusal("stop", state) == "read-only (--read-only)"
        watched = WatchedRun(rd, lock_check_interval=0.0)
        assert watched.can_steer() and watched.holder is not None
        request = watched.send("checkpoint")
        assert request is not None and next(p.name for p in rd.control_dir.iterdir()).endswith(".json")
        state.apply(train_stream(2))
        assert watched.status(state, FeedStatus(exists=True, last_write=T0), T0).note == \
            "checkpoint sent, waiting for the trainer"
        state.apply([_ack("checkpoint", request.request_id, "x.pt")])
        assert watched.pending(state) == []
        state.apply([_ack("stop")])
        assert watched.status(state, FeedStatus(exists=True), T0).label == "STOPPING"
        assert watched.refusal("pause", state) == "the trainer is already stopping"
        assert watched.exit_code(state) == 0
    finally:
        holder.release_lock()
    assert watched.check() and not watched.can_steer()  # the lock went away


def test_the_monitor_log_gives_the_split_sizes_when_the_run_recorded_them() -> None:
    state = MonitorState()
    state.apply([replace(run_started(), train_pairs=4_500, val_held=500, val_blocks=5, val_evaluated=500,
                         test_pairs=1_250)], notify=False)
    assert "splits: training 4,500 pairs | validation 500 in 5 blocks over the trajectories | test 1,250 " \
           "(independent MD run)" in [entry.text for entry in state.log]
    older = MonitorState()
    older.apply([run_started()], notify=False)  # a log from before the counts: no line, not zeros
    assert not any(entry.text.startswith("splits:") for entry in older.log)


@pytest.mark.parametrize(("best_epoch", "start", "best", "expected"), [
    (58, 0.41, 0.27, "best validation KL 0.27 kT at epoch 58 (start 0.41 kT, \u221234 %)"),
    # a change that rounds to nothing reads 0 %, never "-0 %"
    (12, 0.7571, 0.7570, "best validation KL 0.757 kT at epoch 12 (start 0.7571 kT, 0 %)"),
    # a run that kept its untrained map says so instead of comparing the start with itself
    (0, 0.7571, 0.7571, "best validation KL 0.7571 kT at epoch 0 (the untrained map: no later epoch did better)"),
])
def test_the_banner_says_how_the_selected_model_compares_with_the_start(best_epoch, start, best, expected) -> None:
    from molpt_tui.tui.state import best_text

    fin = Finished(status="stopped", epoch=20, best_epoch=best_epoch, best_score=best, start_score=start,
                   best_metric="validation KL", t=T0)
    assert best_text(fin) == expected
