"""`molpt-tui export RUN_DIR --format csv|parquet|tensorboard`, and the sink of `train --tensorboard`.

Every check (the run directory, its log, the output, the optional package) comes before the
first byte is written; each file is written whole or not at all (fileio's atomic write), so a
refused or interrupted export leaves what was there before.
"""
from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Literal, get_args

from ..errors import UserError
from ..fileio import atomic_write_bytes
from ..report.export import (
    TENSORBOARD_FILE_PREFIX,
    TensorBoardSink,
    csv_bytes,
    load_pyarrow,
    load_summary_writer,
    parquet_bytes,
    rows_from_events,
    write_tensorboard,
)
from ..training.events import Event, Sink
from ..training.metrics_log import read_events
from ..training.run_dir import EXPORT_CSV, EXPORT_PARQUET, TENSORBOARD_DIR, RunDirectory

ExportFormat = Literal["csv", "parquet", "tensorboard"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
DEFAULT_NAMES: dict[str, str] = {"csv": EXPORT_CSV, "parquet": EXPORT_PARQUET, "tensorboard": TENSORBOARD_DIR}


def _warn(message: str) -> None:
    print(f"molpt-tui: warning: {message}", file=sys.stderr)


def export(run_dir: Path, fmt: str, out: Path | None = None, *, force: bool = False, system: bool = False) -> int:
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: not one of {', '.join(FORMATS)}")
    rd = _check_run_dir(run_dir)
    target = out if out is not None else rd.path / DEFAULT_NAMES[fmt]
    _check_target(target, fmt, force, given=out is not None)
    if fmt == "parquet":
        load_pyarrow()
    elif fmt == "tensorboard":
        load_summary_writer()
    events = _read(rd)
    table = rows_from_events(events, system=system)
    n_train, n_val, n_test = table.count("train"), table.count("val"), table.count("test")
    if n_train == 0:
        raise UserError(f"{rd.metrics}: no epoch logged yet; export once the run has logged its first epoch "
                        "(watch it with `molpt-tui watch`)")
    try:
        if fmt == "csv":
            atomic_write_bytes(target, lambda fh: fh.write(csv_bytes(table)))
        elif fmt == "parquet":
            atomic_write_bytes(target, lambda fh: fh.write(parquet_bytes(table)))
        else:
            _write_tensorboard_dir(lambda d: write_tensorboard(table, d), target)
    except OSError as exc:
        raise UserError(f"{exc.filename or target}: cannot write the export ({exc.strerror or exc}); "
                        "free some space or give another --out") from None
    extra = f", {table.count('system')} system samples" if system else ""
    print(f"Wrote {target} ({n_train} epochs, {n_val} validation and {n_test} test evaluations{extra})")
    return 0


def _check_run_dir(run_dir: Path) -> RunDirectory:
    rd = RunDirectory(run_dir)
    if not rd.path.exists():
        raise UserError(f"{run_dir}: no such run directory (give the directory of a `molpt-tui train` run)")
    if not rd.path.is_dir():
        raise UserError(f"{run_dir}: not a directory (give the directory of a `molpt-tui train` run)")
    rd.check_entries()
    if not rd.metrics.is_file():
        raise UserError(f"{run_dir}: no metrics.jsonl here (give the run directory of a `molpt-tui train` run)")
    return rd


def _check_target(target: Path, fmt: str, force: bool, *, given: bool) -> None:
    flag = f"--out {target}" if given else str(target)
    if fmt == "tensorboard":
        if target.exists() and not target.is_dir():
            raise UserError(f"{flag}: exists and is not a directory; TensorBoard writes a directory "
                            "(give another --out)")
        if not force and _event_files(target):
            raise UserError(f"{flag}: holds TensorBoard event files already (from `train --tensorboard` or an "
                            "earlier export); add --force to replace them, or give another --out")
        return
    if target.is_dir():
        raise UserError(f"{flag}: is a directory; give a file name such as {target / DEFAULT_NAMES[fmt]}")
    if target.exists() and not force:
        raise UserError(f"{flag}: exists; add --force to replace it, or give another --out")


def _event_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return [p for p in directory.iterdir() if p.name.startswith(TENSORBOARD_FILE_PREFIX) and p.is_file()]


def _read(rd: RunDirectory) -> list[Event]:
    """Corrupt lines are skipped as `plot` skips them, but told once with their count: a long
    log with a torn stretch must not scroll the terminal away."""
    skipped: list[str] = []
    try:
        events = list(read_events(rd.metrics, warn=skipped.append))
    except OSError as exc:
        raise UserError(f"{rd.metrics}: cannot read ({exc.strerror or exc})") from None
    if skipped:
        _warn(_skipped_summary(rd.metrics, skipped))
    return events


def _skipped_summary(path: Path, skipped: list[str]) -> str:
    """read_events' "PATH:LINE: skipped a corrupt line (WHY)" for the first of them, with a count."""
    found = re.match(rf"{re.escape(str(path))}:(\d+): skipped (.*)", skipped[0], re.DOTALL)
    first = skipped[0]
    if found:
        why = found.group(2)
        if why.startswith("a corrupt line (") and why.endswith(")"):
            why = why[len("a corrupt line ("):-1]
        first = f"line {found.group(1)}: {why}"
    n = len(skipped)
    more = f"; {n - 1} more" if n > 1 else ""
    return f"{path}: skipped {n} corrupt line{'s' if n > 1 else ''} ({first}{more}); exported the others"


def _write_tensorboard_dir(table_writer: Callable[[Path], list[Path]], target: Path) -> None:
    """Event files are written in a temporary directory beside `target`, then each is moved in
    with the atomic write; only then are the event files it replaces (--force) removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent)))
    try:
        written = table_writer(tmp)
        old = _event_files(target)
        new = []
        for path in written:
            new.append(atomic_write_bytes(target / path.name, _bytes_writer(path.read_bytes())))
        for path in old:
            if path not in new:
                path.unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _bytes_writer(data: bytes) -> Callable[[BinaryIO], object]:
    return lambda fh: fh.write(data)


def tensorboard_sinks(run_dir: RunDirectory, enabled: bool) -> list[Sink]:
    """`train --tensorboard`: the sink that writes RUN/tensorboard/ live, or none.

    Call it in preflight: a missing `tensorboard` package is refused (UserError) before
    anything is written, and the sink itself writes nothing until the run's RunStarted."""
    if not enabled:
        return []
    summary_writer = load_summary_writer("--tensorboard")
    directory = run_dir.path / TENSORBOARD_DIR
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory}: exists and is not a directory; move it away, or train without --tensorboard")
    return [TensorBoardSink(directory, summary_writer)]


def close_sinks(sinks: Sequence[Sink]) -> None:
    """Close what `tensorboard_sinks` returned; one failing to close does not keep the others open."""
    for sink in sinks:
        try:
            sink.close()
        except OSError as exc:
            print(f"molpt-tui: warning: could not close {type(sink).__name__}: {exc}", file=sys.stderr)
