"""`molpt-tui export` and `train --tensorboard`: the table of a run's scalars, its three formats,
the optional packages, and the bad inputs. Events are built here; no run is trained."""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import sys
import typing

import pytest

from molpt_tui.cli import build_parser, main
from molpt_tui.errors import UserError
from molpt_tui.report import export as ex
from molpt_tui.training.events import (
    Alert,
    EpochMetrics,
    Finished,
    LogBlock,
    Message,
    RunStarted,
    StepProgress,
    SystemStats,
)
from molpt_tui.training.events import (
    TestEvaluation as EvaluationOnTest,
)
from molpt_tui.training.metrics_log import MetricsLogSink
from molpt_tui.training.run_dir import RunDirectory

T0 = 1_800_000_000.0


def run_started(resumed: bool = False, start_epoch: int = 0) -> RunStarted:
    return RunStarted(run_dir="run", preset="quickstart", model="flow", t_cold=300.0, t_hot=450.0, epochs=4,
                      batch_size=8, lr=1e-3, device="cpu", n_params=10, engine="openmm", resumed=resumed,
                      start_epoch=start_epoch, t=T0)


def epoch(n: int, loss: float | None = None, **kw: typing.Any) -> EpochMetrics:
    loss = 10.0 / (n + 1) if loss is None else loss
    fields: dict[str, typing.Any] = dict(
        epoch=n, loss=loss, fwd_energy=1.5 + n, fwd_logdet=-0.25, inv_energy=2.5, inv_logdet=0.125, lr=1e-3,
        grad_norm=0.5, n_regularised=n, n_nonfinite=0, seconds=1.0, kl=loss - 1.0, energy_evals=16,
        energy_evals_total=16 * (n + 1), elapsed_s=float(n), t=T0 + 10 * n)
    fields.update(kw)
    return EpochMetrics(**fields)


def block(n: int, **kw: typing.Any) -> LogBlock:
    fields: dict[str, typing.Any] = dict(
        epoch=n, loss=10.0 / (n + 1), fwd_energy=1.5 + n, fwd_logdet=-0.25, inv_energy=2.5, inv_logdet=0.125,
        lr=1e-3, improvement_pct=5.0 * n, acc_flow=0.1 + 0.1 * n, acc_naive=0.05, ess_fwd=40.0, ess_inv=30.0,
        roundtrip_err=1e-6, kl=9.0, kl_val=3.0 - 0.5 * n, acc_flow_se=0.01, acc_naive_se=0.005, ess_fwd_se=2.0,
        ess_inv_se=3.0, kl_val_se=0.25, energy_evals_total=100 + n, t=T0 + 10 * n + 1)
    fields.update(kw)
    return LogBlock(**fields)


def on_test_set(label: typing.Literal["untrained", "final"], n: int, acc: float) -> EvaluationOnTest:
    return EvaluationOnTest(epoch=n, label=label, n_pairs=64, acc_flow=acc, acc_flow_se=0.02, acc_naive=0.05,
                          acc_naive_se=0.01, ess_fwd=20.0, ess_fwd_se=1.0, ess_inv=25.0, ess_inv_se=1.5, kl=2.0,
                          kl_se=0.1, roundtrip_err=2e-6, block=4, path="test.npz", t=T0 + 10 * n + 2)


def stream() -> list[typing.Any]:
    """A run as the trainer emits it: epoch 0 with its evaluations, two epochs, a validation
    epoch with a NaN, the final test; and events that are not exported among them."""
    return [
        run_started(),
        Message(text="hello"),
        epoch(0), block(0), on_test_set("untrained", 0, 0.02),
        StepProgress(epoch=1, step=1, steps_per_epoch=2, epochs=2, loss=4.0, fwd_energy=1.0, inv_energy=1.0, lr=1e-3),
        SystemStats(cpu_pct=150.0, threads=4, rss_mb=512.0, energy_evals=40, t=T0 + 5),
        epoch(1),
        Alert(epoch=1, rule="r", severity="warning", message="m", hint="h"),
        epoch(2, grad_norm=math.nan), block(2, ess_inv=math.nan, acc_flow=math.inf),
        on_test_set("final", 2, 0.3),
        Finished(status="completed", epoch=2),
    ]


def write_log(run: typing.Any, events: list[typing.Any]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    sink = MetricsLogSink(run / "metrics.jsonl")
    for event in events:
        sink.emit(event)
    sink.close()


def pick(rows: list[dict[str, typing.Any]], kind: str, epoch: typing.Any) -> dict[str, typing.Any]:
    """The one row of (kind, epoch), whether its epoch is an int, a CSV cell or null."""
    text = lambda value: "" if value is None else str(value)
    (row,) = [r for r in rows if r["kind"] == kind and text(r.get("epoch")) == text(epoch)]
    return row


def entries(path: typing.Any) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# --- the table ----------------------------------------------------------------------------------

def test_rows_from_a_fixed_event_stream_one_row_per_kind_and_epoch():
    table = ex.rows_from_events(stream())
    assert [(r["kind"], r.get("epoch"), r.get("label")) for r in table.rows] == [
        ("train", 0, None), ("val", 0, None), ("test", 0, "untrained"), ("train", 1, None), ("train", 2, None),
        ("val", 2, None), ("test", 2, "final")]
    train0, val0, test0 = table.rows[:3]
    assert train0["train/loss"] == 10.0 and train0["train/energy_evals_total"] == 16 and train0["time"] == T0
    # the held-out KL is val/kl, as the test KL is test/kl; LogBlock.kl (training) is not a val column
    assert val0["val/kl"] == 3.0 and val0["val/kl_se"] == 0.25 and val0["val/acc_flow_se"] == 0.01
    assert test0["test/acc_flow"] == 0.02 and test0["test/n_pairs"] == 64 and test0["test/block"] == 4
    names = [c.name for c in table.columns]
    assert names[:4] == ["kind", "epoch", "label", "time"]
    assert "val/loss" not in names and "val/lr" not in names and "val/kl_val" not in names
    assert not any(n.startswith("system/") for n in names)
    # a row holds only its own kind's columns
    assert not any(k.startswith(("val/", "test/")) for k in train0)


def test_each_split_is_named_in_its_columns():
    names = {c.name for c in ex.columns(system=True)}
    for split in ("val", "test"):
        for figure in ("acc_flow", "acc_flow_se", "acc_naive", "ess_fwd", "ess_fwd_se", "ess_inv", "ess_inv_se",
                       "kl", "kl_se", "roundtrip_err"):
            assert f"{split}/{figure}" in names
    assert {"train/loss", "train/kl", "train/grad_norm", "system/cpu_pct", "system/gpu_util_pct"} <= names
    assert all(n in ex.KEY_COLUMNS or n.split("/")[0] in ex.KINDS for n in names)


@pytest.mark.parametrize("cls, kind, skipped", [
    (EpochMetrics, "train", set()),
    (LogBlock, "val", set(ex._LOGBLOCK_TRAINING_COPIES)),
    (EvaluationOnTest, "test", set()),
    (SystemStats, "system", set()),
])
def test_every_numeric_field_is_a_column_or_deliberately_left_to_the_train_row(cls, kind, skipped):
    hints = typing.get_type_hints(cls)
    numeric = {f.name for f in dataclasses.fields(cls) if hints[f.name] in (int, float)} - {"epoch", "t"}
    exported = {name for name, _, _ in ex._FIELDS[kind]}
    assert exported == numeric - skipped
    assert skipped <= {f.name for f in dataclasses.fields(EpochMetrics)}


def test_system_samples_only_when_asked_with_the_epoch_trained_so_far():
    events = [SystemStats(cpu_pct=10.0, t=T0), epoch(0), epoch(1), SystemStats(cpu_pct=20.0, t=T0 + 20)]
    assert ex.rows_from_events(events).count("system") == 0
    rows = [r for r in ex.rows_from_events(events, system=True).rows if r["kind"] == "system"]
    assert [r.get("epoch") for r in rows] == [None, 1]
    assert rows[1]["system/cpu_pct"] == 20.0 and math.isnan(float(rows[1]["system/rss_mb"]))


def test_a_rolled_back_resume_replaces_the_abandoned_epochs():
    events = [run_started(), epoch(0), block(0), epoch(1), epoch(2), block(2), epoch(3),
              run_started(resumed=True, start_epoch=1), epoch(2, loss=0.5), epoch(3, loss=0.25), block(3)]
    rows = ex.rows_from_events(events).rows
    assert [(r["kind"], r["epoch"]) for r in rows] == [
        ("train", 0), ("val", 0), ("train", 1), ("train", 2), ("train", 3), ("val", 3)]
    assert [r["train/loss"] for r in rows if r["kind"] == "train"][2:] == [0.5, 0.25]


def test_a_later_test_evaluation_replaces_the_earlier_one_of_its_label():
    events = [epoch(0), on_test_set("untrained", 0, 0.01), on_test_set("final", 3, 0.2), on_test_set("final", 5, 0.4)]
    tests = [r for r in ex.rows_from_events(events).rows if r["kind"] == "test"]
    assert [(r["label"], r["epoch"], r["test/acc_flow"]) for r in tests] == [("untrained", 0, 0.01), ("final", 5, 0.4)]


# --- CSV ----------------------------------------------------------------------------------------

def test_csv_round_trips_every_number_and_keeps_nan_and_inf():
    table = ex.rows_from_events(stream(), system=True)
    text = ex.csv_bytes(table).decode("utf-8")
    back = list(csv.DictReader(io.StringIO(text)))
    assert len(back) == len(table.rows) and list(back[0]) == [c.name for c in table.columns]
    for row, read in zip(table.rows, back):
        for col in table.columns:
            cell = read[col.name]
            if col.name not in row:
                assert cell == ""   # not this row's kind
                continue
            value = row[col.name]
            if isinstance(value, str):
                assert cell == value
            elif isinstance(value, float) and math.isnan(value):
                assert cell == "nan"
            else:
                assert float(cell) == value and (col.type != "int" or cell == str(value))
    val2 = pick(back, "val", 2)
    assert val2["val/ess_inv"] == "nan" and val2["val/acc_flow"] == "inf"
    assert pick(back, "train", 2)["train/grad_norm"] == "nan"
    # no sentinel numbers anywhere: every number is finite and small, or spelled nan/inf
    numbers = [c for r in back for k, c in r.items() if c and k not in ("kind", "label")]
    assert all(c in ("nan", "inf", "-inf") or abs(float(c)) < 1e10 for c in numbers)


def test_csv_loads_in_one_line_with_pandas_where_installed(tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "m.csv"
    path.write_bytes(ex.csv_bytes(ex.rows_from_events(stream())))
    df = pd.read_csv(path)
    val = df[df.kind == "val"]
    assert list(val["epoch"]) == [0, 2] and math.isnan(val["val/ess_inv"].iloc[1])


# --- Parquet ------------------------------------------------------------------------------------

def test_parquet_has_typed_columns_null_for_other_kinds_and_nan_kept():
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = ex.rows_from_events(stream(), system=True)
    back = pq.read_table(pa.BufferReader(ex.parquet_bytes(table)))
    assert back.column_names == [c.name for c in table.columns]
    assert back.schema.field("epoch").type == pa.int64() and back.schema.field("train/loss").type == pa.float64()
    assert back.schema.field("test/n_pairs").type == pa.int64() and back.schema.field("kind").type == pa.string()
    rows = back.to_pylist()
    assert [r["kind"] for r in rows] == [r["kind"] for r in table.rows]
    assert rows[0]["val/acc_flow"] is None and rows[0]["train/loss"] == 10.0
    val2 = pick(rows, "val", 2)
    assert math.isnan(val2["val/ess_inv"]) and val2["val/acc_flow"] == math.inf
    assert pick(rows, "test", 0)["label"] == "untrained" and rows[0]["label"] is None
    assert pick(rows, "system", 0)["system/cpu_pct"] == 150.0


# --- TensorBoard --------------------------------------------------------------------------------

def _accumulate(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory))
    acc.Reload()
    return acc


def _series(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_files_read_back_with_event_accumulator(tmp_path):
    pytest.importorskip("tensorboard")
    table = ex.rows_from_events(stream(), system=True)
    files = ex.write_tensorboard(table, tmp_path / "tb")
    assert files and all(f.name.startswith(ex.TENSORBOARD_FILE_PREFIX) for f in files)
    acc = _accumulate(tmp_path / "tb")
    assert _series(acc, "train/loss") == [(0, 10.0), (1, 5.0), (2, pytest.approx(10 / 3))]
    assert [s for s, _ in _series(acc, "val/acc_flow")] == [0, 2]
    assert _series(acc, "test/acc_flow") == [(0, pytest.approx(0.02)), (2, pytest.approx(0.3))]
    assert math.isnan(_series(acc, "val/ess_inv")[1][1])
    assert _series(acc, "system/cpu_pct") == [(1, 150.0)]
    assert acc.Scalars("train/loss")[0].wall_time == T0


def test_live_sink_writes_nothing_before_the_run_starts_and_the_scalars_after(tmp_path):
    pytest.importorskip("tensorboard")
    from molpt_tui.app.export import tensorboard_sinks

    assert tensorboard_sinks(RunDirectory(tmp_path), False) == []
    (sink,) = tensorboard_sinks(RunDirectory(tmp_path), True)
    assert not (tmp_path / "tensorboard").exists()
    for event in stream():
        sink.emit(event)
    sink.emit(SystemStats(cpu_pct=1.0))
    sink.close()
    sink.emit(epoch(9))   # after close: dropped, not an error
    acc = _accumulate(tmp_path / "tensorboard")
    assert [s for s, _ in _series(acc, "train/loss")] == [0, 1, 2]
    assert "system/cpu_pct" not in acc.Tags()["scalars"]
    assert [s for s, _ in _series(acc, "test/kl")] == [0, 2]


def test_live_sink_fresh_run_replaces_earlier_files_and_resume_drops_retrained_steps(tmp_path):
    pytest.importorskip("tensorboard")
    summary_writer = ex.load_summary_writer()
    tb = tmp_path / "tensorboard"

    def segment(events):
        sink = ex.TensorBoardSink(tb, summary_writer)
        for event in events:
            sink.emit(event)
        sink.close()

    segment([run_started(), *[epoch(n, loss=100.0) for n in range(4)]])   # an earlier run (train --force)
    segment([run_started(), *[epoch(n) for n in range(4)]])
    assert len(list(tb.iterdir())) == 1
    assert _series(_accumulate(tb), "train/loss")[0] == (0, 10.0)
    segment([run_started(resumed=True, start_epoch=1), epoch(2, loss=0.5)])   # resumed from best at epoch 1
    assert _series(_accumulate(tb), "train/loss") == [(0, 10.0), (1, 5.0), (2, 0.5)]


# --- optional packages missing ------------------------------------------------------------------

def _without(monkeypatch, *modules):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)   # `import name` now raises ImportError


def test_parquet_without_pyarrow_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    write_log(tmp_path / "run", stream())
    before = entries(tmp_path)
    _without(monkeypatch, "pyarrow", "pyarrow.parquet")
    assert main(["export", str(tmp_path / "run"), "--format", "parquet"]) == 2
    err = capsys.readouterr().err
    assert err == "molpt-tui: error: --format parquet needs pyarrow: pip install 'molpt-tui[export]'\n"
    assert entries(tmp_path) == before


def test_tensorboard_without_the_package_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    write_log(tmp_path / "run", stream())
    before = entries(tmp_path)
    _without(monkeypatch, "tensorboard", "torch.utils.tensorboard")
    assert main(["export", str(tmp_path / "run"), "--format", "tensorboard"]) == 2
    err = capsys.readouterr().err
    assert err == "molpt-tui: error: --format tensorboard needs tensorboard: pip install 'molpt-tui[tensorboard]'\n"
    assert entries(tmp_path) == before
    from molpt_tui.app.export import tensorboard_sinks

    with pytest.raises(UserError, match=r"^--tensorboard needs tensorboard: pip install 'molpt-tui\[tensorboard\]'$"):
        tensorboard_sinks(RunDirectory(tmp_path / "run"), True)
    assert tensorboard_sinks(RunDirectory(tmp_path / "run"), False) == []


def test_csv_needs_no_optional_package(tmp_path, capsys, monkeypatch):
    write_log(tmp_path / "run", stream())
    _without(monkeypatch, "pyarrow", "pyarrow.parquet", "tensorboard", "torch.utils.tensorboard")
    assert main(["export", str(tmp_path / "run"), "--format", "csv"]) == 0
    assert "Wrote" in capsys.readouterr().out and (tmp_path / "run" / "metrics.csv").is_file()


# --- the command --------------------------------------------------------------------------------

def test_export_csv_default_path_and_force(tmp_path, capsys):
    run = tmp_path / "run"
    write_log(run, stream())
    assert main(["export", str(run), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out == f"Wrote {run / 'metrics.csv'} (3 epochs, 2 validation and 2 test evaluations)\n"
    rows = list(csv.DictReader(open(run / "metrics.csv", encoding="utf-8")))
    assert [r["kind"] for r in rows] == ["train", "val", "test", "train", "train", "val", "test"]
    (run / "metrics.csv").write_text("mine\n")
    assert main(["export", str(run), "--format", "csv"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; add --force" in err and str(run / "metrics.csv") in err
    assert (run / "metrics.csv").read_text() == "mine\n"
    assert main(["export", str(run), "--format", "csv", "--force"]) == 0
    assert (run / "metrics.csv").read_text().startswith("kind,epoch,label,time,train/loss,")
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_export_with_system_samples(tmp_path, capsys):
    run = tmp_path / "run"
    write_log(run, stream())
    assert main(["export", str(run), "--format", "csv", "--out", str(tmp_path / "all.csv"), "--system"]) == 0
    assert "1 system samples" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "all.csv", encoding="utf-8")))
    assert [r["system/cpu_pct"] for r in rows if r["kind"] == "system"] == ["150.0"]


def test_export_parquet_where_installed(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    run = tmp_path / "run"
    write_log(run, stream())
    assert main(["export", str(run), "--format", "parquet"]) == 0
    assert pq.read_table(run / "metrics.parquet").num_rows == 7


def test_export_tensorboard_refuses_existing_event_files_without_force(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    write_log(run, stream())
    assert main(["export", str(run), "--format", "tensorboard"]) == 0
    first = sorted(p.name for p in (run / "tensorboard").iterdir())
    (run / "tensorboard" / "notes.txt").write_text("mine")
    assert main(["export", str(run), "--format", "tensorboard"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "holds TensorBoard event files already" in err and "--force" in err
    assert sorted(p.name for p in (run / "tensorboard").iterdir()) == sorted([*first, "notes.txt"])
    write_log(run, [epoch(3)])
    assert main(["export", str(run), "--format", "tensorboard", "--force"]) == 0
    names = sorted(p.name for p in (run / "tensorboard").iterdir())
    assert "notes.txt" in names and len(names) == 2 and names != sorted([*first, "notes.txt"])
    assert [s for s, _ in _series(_accumulate(run / "tensorboard"), "train/loss")] == [0, 1, 2, 3]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def _bad(tmp_path, capsys, args, *needles):
    before = entries(tmp_path)
    try:
        code = main(["export", *args])
    except SystemExit as exc:   # argparse's own refusals (an unknown format, a missing flag)
        code = exc.code
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("molpt-tui: error: "), captured.err
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0]
    assert entries(tmp_path) == before


def test_bad_inputs_are_one_line_exit_2_and_write_nothing(tmp_path, capsys):
    _bad(tmp_path, capsys, [str(tmp_path / "nope"), "--format", "csv"], "nope: no such run directory")
    (tmp_path / "file").write_text("x")
    _bad(tmp_path, capsys, [str(tmp_path / "file"), "--format", "csv"], "not a directory")
    (tmp_path / "empty").mkdir()
    _bad(tmp_path, capsys, [str(tmp_path / "empty"), "--format", "csv"], "no metrics.jsonl here")
    (tmp_path / "dirlog" / "metrics.jsonl").mkdir(parents=True)
    _bad(tmp_path, capsys, [str(tmp_path / "dirlog"), "--format", "csv"], "not a regular file")
    write_log(tmp_path / "young", [run_started(), Message(text="data")])
    _bad(tmp_path, capsys, [str(tmp_path / "young"), "--format", "csv"],
         str(tmp_path / "young" / "metrics.jsonl"), "no epoch logged yet")
    write_log(tmp_path / "run", stream())
    (tmp_path / "outdir").mkdir()
    _bad(tmp_path, capsys, [str(tmp_path / "run"), "--format", "csv", "--out", str(tmp_path / "outdir")],
         "is a directory; give a file name such as")
    _bad(tmp_path, capsys, [str(tmp_path / "run"), "--format", "tensorboard", "--out", str(tmp_path / "file")],
         "is not a directory")
    _bad(tmp_path, capsys, [str(tmp_path / "run"), "--format", "xlsx"], "invalid choice")
    _bad(tmp_path, capsys, [str(tmp_path / "run")], "--format")


def test_corrupt_lines_are_skipped_with_a_count(tmp_path, capsys):
    run = tmp_path / "run"
    write_log(run, stream())
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write("{not json}\n[1, 2]\n")
        fh.write('{"kind": "epoch", "epoch": 3, "loss": 1')   # a partial last line
    assert main(["export", str(run), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    (warning,) = captured.err.splitlines()
    assert warning.startswith(f"molpt-tui: warning: {run / 'metrics.jsonl'}: skipped 3 corrupt lines (line ")
    assert "not JSON" in warning and "2 more" in warning
    assert "(3 epochs," in captured.out


def test_a_log_of_nothing_but_corrupt_lines_has_no_epoch(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("garbage\n")
    assert main(["export", str(tmp_path / "run"), "--format", "csv"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "skipped 1 corrupt line " in err[0] and "no epoch logged yet" in err[1]
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_train_tensorboard_flag_reaches_train_options(monkeypatch):
    assert build_parser().parse_args(["train"]).tensorboard is False
    import molpt_tui.app.train as app_train

    seen = []
    monkeypatch.setattr(app_train, "train", lambda opts: seen.append(opts) or 0)
    assert main(["train", "--tensorboard", "--no-ui"]) == 0
    assert seen[0].tensorboard is True
    assert app_train.TrainOptions().tensorboard is False


# --- train --tensorboard, end to end ----------------------------------------------------------------

@pytest.mark.integration
def test_train_tensorboard_writes_every_epoch_live_and_a_missing_package_refuses_before_writing(
        tiny_data, tmp_path, capsys, monkeypatch):
    pytest.importorskip("tensorboard")
    from molpt_testdata import TINY_TRAIN

    run = tmp_path / "run"
    args = ["train", "--no-ui", "--epochs", "3", "--out", str(run), "--tensorboard",
            *[a for s in TINY_TRAIN + [f"data.path={tiny_data}"] for a in ("--set", s)]]
    with monkeypatch.context() as m:
        _without(m, "tensorboard", "torch.utils.tensorboard")
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["molpt-tui: error: --tensorboard needs tensorboard: pip install 'molpt-tui[tensorboard]'"]
        assert not run.exists()
    assert main(args) == 0
    acc = _accumulate(run / "tensorboard")
    assert [step for step, _ in _series(acc, "train/loss")] == [0, 1, 2, 3]
    assert {step for step, _ in _series(acc, "val/acc_flow")} >= {0, 3}
