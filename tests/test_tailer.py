"""The one reader of metrics.jsonl and the tailer built on it: bad lines never stop a reader."""
from __future__ import annotations

import json
import os
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from molpt_tui.training.events import EpochMetrics, Message, RunStarted, header_line
from molpt_tui.training.metrics_log import CorruptLine, MetricsLogSink, decode_line, read_events
from molpt_tui.training.tailer import MetricsTailer, TailThread

START = {"kind": "run_started", "run_dir": "r", "preset": "p", "model": "m", "t_cold": 300.0, "t_hot": 450.0,
         "epochs": 10, "batch_size": 8, "lr": 1e-3, "device": "cpu", "n_params": 3, "engine": "e"}
EPOCH = {"kind": "epoch", "epoch": 1, "loss": 1.0, "fwd_energy": 2.0, "fwd_logdet": 0.1, "inv_energy": 3.0,
         "inv_logdet": -0.1, "lr": 1e-4}


def _lines(*objs: object) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


def test_wrong_field_types_are_corrupt_lines_not_crashes():
    bad = [dict(EPOCH, epoch="3"), dict(EPOCH, epoch=None), dict(EPOCH, loss=[1, 2]), dict(START, t_cold=None),
           dict(EPOCH, epoch=True), dict(EPOCH, loss=10 ** 400), {"kind": "finished", "status": "exploded",
                                                                  "epoch": 1}, {"kind": "nope"}, dict(EPOCH, loss={})]
    for obj in bad:
        try:
            decode_line(json.dumps(obj))
        except CorruptLine:
            continue
        raise AssertionError(f"accepted {obj}")
    missing = dict(EPOCH)
    del missing["loss"]
    try:
        decode_line(json.dumps(missing))
    except CorruptLine as exc:
        assert "loss" in str(exc)
    else:
        raise AssertionError("a missing field was accepted")


def test_deep_nesting_and_huge_numbers_are_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_lines(header_line(), START) + "[" * 200000 + "]" * 200000 + "\n" + "1" * 5000 + "\n"
                    + _lines(EPOCH))
    warnings: list[str] = []
    events = list(read_events(path, warn=warnings.append))
    assert [type(e) for e in events] == [RunStarted, EpochMetrics]
    assert len(warnings) == 2 and "nested too deeply" in warnings[0]


def test_non_finite_floats_round_trip_through_the_sink(tmp_path):
    path = tmp_path / "metrics.jsonl"
    sink = MetricsLogSink(path)
    sink.emit(EpochMetrics(epoch=1, loss=float("nan"), fwd_energy=float("inf"), fwd_logdet=0.0,
                           inv_energy=float("-inf"), inv_logdet=0.0, lr=1e-3))
    sink.close()
    (event,) = read_events(path)
    assert event.fwd_energy == float("inf") and event.inv_energy == float("-inf") and event.loss != event.loss


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids), max_leaves=20))
def test_random_json_decodes_or_is_corrupt(value):
    for obj in (value, {"kind": "epoch", **(value if isinstance(value, dict) else {"x": value})},
                dict(EPOCH, loss=value), dict(START, epochs=value)):
        try:
            decode_line(json.dumps(obj))
        except CorruptLine:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_decode_or_are_corrupt(raw):
    try:
        decode_line(raw)
    except CorruptLine:
        pass


def test_tailer_keeps_a_partial_line_until_its_newline(tmp_path):
    path = tmp_path / "metrics.jsonl"
    full = _lines(header_line(), START, EPOCH)
    cut = len(full) - 10
    path.write_text(full[:cut])
    tailer = MetricsTailer(path)
    first = tailer.poll()
    assert [type(e) for e in first.events] == [RunStarted] and first.backlog and tailer.pending_bytes > 0
    with open(path, "a") as fh:
        fh.write(full[cut:])
    second = tailer.poll()
    assert [type(e) for e in second.events] == [EpochMetrics] and not second.backlog and second.warnings == []


def test_tailer_reports_a_missing_file_then_follows_it_when_it_appears(tmp_path):
    path = tmp_path / "not-yet" / "metrics.jsonl"
    tailer = MetricsTailer(path)
    update = tailer.poll()
    assert not update.exists and update.status_changed
    assert not tailer.poll().status_changed  # said once
    path.parent.mkdir()
    path.write_text(_lines(header_line(), START))
    update = tailer.poll()
    assert update.exists and [type(e) for e in update.events] == [RunStarted]


def test_tailer_resets_when_the_file_is_replaced(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_lines(header_line(), START, EPOCH))
    tailer = MetricsTailer(path)
    assert len(tailer.poll().events) == 2
    os.replace(_write(tmp_path / "new", _lines(header_line(), START)), path)
    update = tailer.poll()
    assert "replaced" in update.reset and len(update.events) == 1


def _write(path, text):
    path.write_text(text)
    return path


def test_tail_thread_reports_a_failing_poll_and_keeps_going(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_lines(header_line(), START))
    tailer = MetricsTailer(path)
    calls = {"n": 0}
    real = tailer.poll

    def flaky(on_chunk=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("NFS went away")
        return real(on_chunk)

    tailer.poll = flaky  # type: ignore[method-assign]
    errors: list[str] = []
    got = threading.Event()
    events: list = []

    def on_update(update):
        events.extend(update.events)
        if events:
            got.set()

    thread = TailThread(tailer, on_update, lambda line, tb: errors.append(line), interval=0.01)
    thread.start()
    assert got.wait(5.0)
    thread.stop()
    assert errors and "NFS went away" in errors[0]
    assert isinstance(events[0], RunStarted)


def test_messages_of_any_level_decode():
    for level in ("info", "warning", "error"):
        event = decode_line(json.dumps({"kind": "message", "text": "x", "level": level}))
        assert isinstance(event, Message) and event.level == level
