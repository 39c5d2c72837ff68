"""The control channel: request files in the run directory, applied in order, acknowledged."""
from __future__ import annotations

import threading

from molpt_tui.training.control import TrainingControl, read_requests, send_request
from molpt_tui.training.events import RequestAcknowledged
from molpt_tui.training.run_dir import RunDirectory


def test_requests_arrive_in_order_and_are_taken_once(tmp_path):
    rd = RunDirectory(tmp_path)
    sent = [send_request(rd, a) for a in ("pause", "checkpoint", "resume", "png", "stop")]
    got = read_requests(rd)
    assert [(r.action, r.request_id) for r in got] == [(r.action, r.request_id) for r in sent]
    assert read_requests(rd) == []
    assert list(rd.control_dir.iterdir()) == []


def test_junk_in_the_channel_is_dropped_without_stopping_it(tmp_path):
    rd = RunDirectory(tmp_path)
    rd.control_dir.mkdir()
    (rd.control_dir / "req-0000-bad.json").write_text("{not json")
    (rd.control_dir / "req-0001-list.json").write_text("[1, 2]")
    (rd.control_dir / "req-0002-unknown.json").write_text('{"id": "x", "action": "format-disk"}')
    (rd.control_dir / "req-0003-deep.json").write_text("[" * 100000)
    good = send_request(rd, "stop")
    assert [r.request_id for r in read_requests(rd)] == [good.request_id]
    assert list(rd.control_dir.iterdir()) == []


def test_trainer_side_acknowledges_every_request_with_its_id(tmp_path):
    rd = RunDirectory(tmp_path)
    control = TrainingControl(rd)
    pause = send_request(rd, "pause")
    ckpt = send_request(rd, "checkpoint")
    control.epoch = 7
    control.poll()
    assert control.paused
    req = control.take_checkpoint_request()
    assert req is not None and req.request_id == ckpt.request_id
    control.acknowledge(req, "wrote last.pt")
    acks = control.take_acknowledgements()
    assert all(isinstance(a, RequestAcknowledged) for a in acks)
    assert [(a.action, a.request_id, a.epoch) for a in acks] == [
        ("pause", pause.request_id, 7), ("checkpoint", ckpt.request_id, 7)]
    assert acks[1].detail == "wrote last.pt"
    assert control.take_acknowledgements() == []


def test_a_paused_trainer_still_reads_the_channel_and_wakes_on_resume(tmp_path):
    rd = RunDirectory(tmp_path)
    control = TrainingControl(rd)
    control.pause()
    done = threading.Event()

    def trainer() -> None:
        control.wait_if_paused(poll=0.01)
        done.set()

    thread = threading.Thread(target=trainer)
    thread.start()
    assert not done.wait(0.1)
    send_request(rd, "resume")
    assert done.wait(5.0)
    thread.join()
    assert not control.paused


def test_stop_wakes_a_paused_trainer(tmp_path):
    control = TrainingControl(RunDirectory(tmp_path))
    control.pause()
    send_request(control.run_dir, "stop")
    control.wait_if_paused(poll=0.01)  # returns: the stop arrived through the channel
    assert control.stop_requested and "control channel" in control.stop_reason


def test_several_checkpoint_requests_are_answered_by_one(tmp_path):
    control = TrainingControl(RunDirectory(tmp_path))
    for _ in range(3):
        send_request(control.run_dir, "checkpoint")
    control.poll()
    first = control.take_checkpoint_request()
    assert first is not None and control.take_checkpoint_request() is None
    control.acknowledge(first, "wrote last.pt")
    assert len(control.take_acknowledgements()) == 3
