"""The small commands: presets, plot, simulate."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from ..training.run_dir import RunDirectory


def warn(message: str) -> None:
    print(f"molpt-tui: warning: {message}", file=sys.stderr)


def presets() -> int:
    from ..config import DEFAULT_PRESET, list_presets

    rows = list_presets(warn=warn)
    width = max((len(row.name) for row in rows), default=10)
    for row in rows:
        mark = " (default)" if row.name == DEFAULT_PRESET else ""
        print(f"{row.name:<{width}}  {row.description}{mark}")
    return 0


def plot(run_dirs: list[Path], out: Path | None = None) -> int:
    """One run: its PNG (in the run directory unless `out`). Several: one comparison figure."""
    dirs = []
    for run_dir in run_dirs:
        rd = RunDirectory(run_dir)
        if rd.path.is_dir():
            rd.check_entries()
        if not rd.metrics.is_file():
            raise UserError(f"{run_dir}: no metrics.jsonl here (give the run directory of a `molpt-tui train` run)")
        dirs.append(rd)
    if out is not None and out.is_dir():
        raise UserError(f"--out {out}: is a directory; give a file name such as {out / 'comparison.png'}")
    from ..report.plotting import COMPARISON_PNG, plot_comparison, plot_run_dir

    try:
        if len(dirs) == 1:
            path = plot_run_dir(dirs[0], out, warn=warn)
        else:
            path = plot_comparison(dirs, out or Path(COMPARISON_PNG), warn=warn)
    except OSError as exc:
        raise UserError(f"{exc.filename or out or run_dirs[0]}: cannot write the PNG ({exc.strerror or exc})") from None
    print(f"Wrote {path}")
    return 0


def simulate(preset: str | None, overrides: tuple[str, ...], out: Path | None, force: bool,
             processes: int | None, *, threads: int | None = None) -> int:
    """`--threads N` caps the MD worker processes at N (`--processes` still sets them exactly)."""
    from ..config import load_config
    from .data_generation import generate_data
    from .disk import disk_errors_as_user_errors
    from .resources import check_threads

    if processes is not None and processes < 1:
        raise UserError(f"--processes {processes}: must be at least 1 (or leave it out: one per core)")
    check_threads(threads)
    if processes is None:
        processes = threads
    cfg = load_config(preset, overrides)
    with disk_errors_as_user_errors(out or cfg.data_path):
        return generate_data(cfg, announce=lambda text: print(text, file=sys.stderr, flush=True),
                             out_path=out, force=force, n_procs=processes)
