"""Every scalar of a run's epochs and evaluations as one table: CSV, Parquet, TensorBoard.

Layout: one wide table, one row per (kind, epoch). The key columns come first:

    kind    "train" (EpochMetrics), "val" (LogBlock: the held-out validation split), "test"
            (TestEvaluation: the independent test run), "system" (SystemStats, only when asked)
    epoch   the epoch (train, val), the epoch of the weights evaluated (test: 0 for the
            untrained map), the last epoch trained when the sample was taken (system)
    label   test only: "untrained" or "final"
    time    Unix time the trainer emitted the event (s)

then one column per scalar, named `<kind>/<field>`: `train/loss`, `val/acc_flow`,
`test/acc_flow`, `system/cpu_pct`. Validation and test figures share their names after the
slash (`val/kl` is LogBlock.kl_val, the held-out KL, as `test/kl` is the test KL), so the two
splits compare column by column. A row fills only its own kind's columns; the others are empty
(CSV) or null (Parquet). A figure the trainer could not compute is NaN, written `nan`, never a
sentinel number. Wide rather than long because it loads in one line and plots without a pivot:

    df = pandas.read_csv("metrics.csv"); df[df.kind == "val"].plot(x="epoch", y="val/acc_flow")

LogBlock repeats its epoch's training figures (loss, energies, lr, ...); they are in that
epoch's train row and are not repeated in the val row.

A resumed run rolled back to an earlier epoch re-trains the epochs after it: as in
`training.history`, a later event for an epoch replaces what the abandoned branch logged for it
and every epoch after, so each (kind, epoch) has one row.

TensorBoard gets the same scalars: the column name is the tag, the epoch the step (system
samples: their number), the event's time the wall time.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
import threading
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from ..errors import UserError
from ..training.events import EpochMetrics, Event, Finished, LogBlock, RunStarted, Sink, SystemStats, TestEvaluation

TRAIN, VAL, TEST, SYSTEM = "train", "val", "test", "system"
KINDS = (TRAIN, VAL, TEST, SYSTEM)
KEY_COLUMNS = ("kind", "epoch", "label", "time")
# Where `train --tensorboard` writes and `export --format tensorboard` writes by default.
TENSORBOARD_FILE_PREFIX = "events.out.tfevents."
EXPORT_EXTRA = "export"
TENSORBOARD_EXTRA = "tensorboard"

ColumnType = Literal["str", "int", "float"]
Value = str | int | float


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType


# LogBlock's copies of its epoch's training figures (the train row of that epoch has them).
_LOGBLOCK_TRAINING_COPIES = frozenset({"loss", "fwd_energy", "fwd_logdet", "inv_energy", "inv_logdet", "lr", "kl",
                                       "n_regularised", "n_nonfinite"})
# The held-out KL is `kl` in the test split: one name for the same figure in both.
_LOGBLOCK_RENAMES = {"kl_val": "kl", "kl_val_se": "kl_se"}
_NOT_SCALARS = frozenset({"epoch", "t"})


def _scalar_fields(cls: type[Event], skip: frozenset[str] = frozenset(),
                   renames: dict[str, str] | None = None) -> tuple[tuple[str, str, ColumnType], ...]:
    """(event field, column suffix, type) of every int and float field: read off the dataclass,
    so a figure added to an event is exported without a change here."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, str, ColumnType]] = []
    for f in dataclasses.fields(cls):
        if f.name in _NOT_SCALARS or f.name in skip:
            continue
        tp = hints[f.name]
        if tp is float or tp is int:
            out.append((f.name, (renames or {}).get(f.name, f.name), "float" if tp is float else "int"))
    return tuple(out)


_FIELDS: dict[str, tuple[tuple[str, str, ColumnType], ...]] = {
    TRAIN: _scalar_fields(EpochMetrics),
    VAL: _scalar_fields(LogBlock, _LOGBLOCK_TRAINING_COPIES, _LOGBLOCK_RENAMES),
    TEST: _scalar_fields(TestEvaluation),
    SYSTEM: _scalar_fields(SystemStats),
}
_KIND_OF: dict[type[Event], str] = {EpochMetrics: TRAIN, LogBlock: VAL, TestEvaluation: TEST, SystemStats: SYSTEM}


def columns(system: bool = False) -> list[Column]:
    """The table's columns: the same for every run (a kind without rows keeps its columns), so
    scripts reading exports of several runs see one schema."""
    cols = [Column("kind", "str"), Column("epoch", "int"), Column("label", "str"), Column("time", "float")]
    for kind in KINDS:
        if kind == SYSTEM and not system:
            continue
        cols.extend(Column(f"{kind}/{suffix}", tp) for _, suffix, tp in _FIELDS[kind])
    return cols


def row_of(event: Event, epoch: int | None = None) -> dict[str, Value] | None:
    """The row of one event (None for an event that is not exported). `epoch`: for a system
    sample, the last epoch trained when it was taken."""
    kind = _KIND_OF.get(type(event))
    if kind is None:
        return None
    row: dict[str, Value] = {"kind": kind, "time": float(event.t)}
    ep = getattr(event, "epoch", epoch)
    if ep is not None:
        row["epoch"] = int(ep)
    if isinstance(event, TestEvaluation):
        row["label"] = event.label
    for name, suffix, tp in _FIELDS[kind]:
        value = getattr(event, name)
        row[f"{kind}/{suffix}"] = float(value) if tp == "float" else int(value)
    return row


@dataclass
class ExportTable:
    columns: list[Column]
    rows: list[dict[str, Value]] = field(default_factory=list)   # a missing key: not this row's kind

    def count(self, kind: str) -> int:
        return sum(1 for row in self.rows if row["kind"] == kind)


def rows_from_events(events: Iterable[Event], system: bool = False) -> ExportTable:
    """The table of a run's events in the order they were emitted, rolled-back epochs replaced."""
    rows: list[dict[str, Value]] = []
    last_epoch: int | None = None
    for event in events:
        if isinstance(event, SystemStats) and not system:
            continue
        row = row_of(event, last_epoch)
        if row is None:
            continue
        if isinstance(event, EpochMetrics):
            # A resumed run re-trains from here: the abandoned branch's epochs from here on go.
            rows = [r for r in rows if r["kind"] not in (TRAIN, VAL) or _epoch(r) < event.epoch]
            last_epoch = event.epoch
        elif isinstance(event, LogBlock):
            rows = [r for r in rows if r["kind"] != VAL or _epoch(r) < event.epoch]
        elif isinstance(event, TestEvaluation):
            rows = [r for r in rows if r["kind"] != TEST or r.get("label") != event.label]
        rows.append(row)
    return ExportTable(columns(system), rows)


def _epoch(row: dict[str, Value]) -> int:
    value = row.get("epoch", -1)
    return value if isinstance(value, int) else -1


# --- CSV --------------------------------------------------------------------------------------

def _csv_text(value: Value) -> str:
    # repr round-trips every float exactly, and writes nan, inf, -inf as float(), pandas and
    # polars read them back
    return repr(value) if isinstance(value, float) else str(value)


def write_csv(table: ExportTable, fh: IO[str]) -> None:
    """Stdlib csv: a header line of column names, then one line per row; a column not of the
    row's kind is empty."""
    names = [c.name for c in table.columns]
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(names)
    for row in table.rows:
        writer.writerow(["" if name not in row else _csv_text(row[name]) for name in names])


def csv_bytes(table: ExportTable) -> bytes:
    buf = io.StringIO()
    write_csv(table, buf)
    return buf.getvalue().encode("utf-8")


# --- optional dependencies --------------------------------------------------------------------

def missing_extra(flag: str, package: str, extra: str) -> UserError:
    return UserError(f"{flag} needs {package}: pip install 'molpt-tui[{extra}]'")


def load_pyarrow(flag: str = "--format parquet") -> tuple[Any, Any]:
    """(pyarrow, pyarrow.parquet), or the one-line error that says how to get them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise missing_extra(flag, "pyarrow", EXPORT_EXTRA) from None
    return pyarrow, pyarrow.parquet


def load_summary_writer(flag: str = "--format tensorboard") -> Callable[..., Any]:
    """torch's SummaryWriter class, or the one-line error that says how to get the package it
    needs. `tensorboard` is imported first: torch.utils.tensorboard may already be imported
    while the package it wraps is gone, and it is that package that writes the files."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise missing_extra(flag, "tensorboard", TENSORBOARD_EXTRA) from None
    return typing.cast(Callable[..., Any], SummaryWriter)


# --- Parquet ----------------------------------------------------------------------------------

def parquet_bytes(table: ExportTable) -> bytes:
    """Typed columns (int64, float64, string); null where a column is not the row's kind, so a
    NaN in a file always means a figure the trainer could not compute."""
    pa, pq = load_pyarrow()
    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}
    arrays = {c.name: pa.array([row.get(c.name) for row in table.rows], type=types[c.type]) for c in table.columns}
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(arrays), sink)
    return bytes(sink.getvalue().to_pybytes())


# --- TensorBoard ------------------------------------------------------------------------------

def _scalars(row: dict[str, Value]) -> Iterable[tuple[str, float]]:
    for name, value in row.items():
        if name not in KEY_COLUMNS and isinstance(value, (int, float)):
            yield name, float(value)


def _step(row: dict[str, Value], system_sample: int) -> int:
    return system_sample if row["kind"] == SYSTEM else _epoch(row)


def write_tensorboard(table: ExportTable, directory: str | os.PathLike[str]) -> list[Path]:
    """The table as TensorBoard event files in `directory` (created); their paths."""
    summary_writer = load_summary_writer()
    directory = Path(directory)
    writer = summary_writer(log_dir=str(directory))
    try:
        samples = 0
        for row in table.rows:
            if row["kind"] == SYSTEM:
                samples += 1
            step, walltime = _step(row, samples), float(row["time"])
            for tag, value in _scalars(row):
                writer.add_scalar(tag, value, step, walltime=walltime)
    finally:
        writer.close()
    return sorted(p for p in directory.iterdir() if p.name.startswith(TENSORBOARD_FILE_PREFIX))


class TensorBoardSink(Sink):
    """`train --tensorboard`: the scalars of each epoch and evaluation, live, into `directory`.

    Nothing is written until the run's RunStarted arrives, so a start refused by preflight
    leaves no files. A fresh run removes the event files an earlier run left there (train only
    starts fresh in a used directory with --force, which replaces the earlier run's files); a
    resumed one asks TensorBoard to drop the steps from its first epoch on, which a rolled-back
    run re-trains. System samples are left out: their steps would restart with each segment.
    """

    FLUSH_S = 10

    def __init__(self, directory: str | os.PathLike[str], summary_writer: Callable[..., Any] | None = None) -> None:
        self.directory = Path(directory)
        self._summary_writer = summary_writer or load_summary_writer("--tensorboard")
        self._writer: Any = None
        self._lock = threading.Lock()   # the system sampler emits from its own thread
        self._closed = False

    def emit(self, event: Event) -> None:
        if isinstance(event, SystemStats):
            return
        with self._lock:
            if self._closed:
                return
            if isinstance(event, RunStarted):
                self._open(event)
                return
            row = row_of(event)
            if row is not None:
                writer = self._writer if self._writer is not None else self._open(None)
                for tag, value in _scalars(row):
                    writer.add_scalar(tag, value, _epoch(row), walltime=float(event.t))
                if isinstance(event, EpochMetrics):
                    writer.flush()
            elif isinstance(event, Finished) and self._writer is not None:
                self._writer.flush()

    def _open(self, started: RunStarted | None) -> Any:
        if self._writer is not None:   # a second segment in one process: start its own file
            self._writer.close()
            self._writer = None
        purge_step = None
        if started is not None and started.resumed:
            purge_step = started.start_epoch + 1
        elif started is not None:
            self._remove_earlier_files()
        self._writer = self._summary_writer(log_dir=str(self.directory), purge_step=purge_step,
                                            flush_secs=self.FLUSH_S)
        return self._writer

    def _remove_earlier_files(self) -> None:
        if not self.directory.is_dir():
            return
        for entry in self.directory.iterdir():
            if entry.name.startswith(TENSORBOARD_FILE_PREFIX) and entry.is_file():
                entry.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._writer is not None:
                self._writer.close()
                self._writer = None
