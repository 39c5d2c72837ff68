"""Command line: parses arguments and hands over; no logic of its own.

Imports of torch, openmm and textual happen inside the commands, so `--help` and
`--version` answer at once.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .errors import UserError

EPILOG = "Presets: `molpt-tui presets`. Docs: README.md."


class _Parser(argparse.ArgumentParser):
    """Usage mistakes read like every other bad input: one line on stderr, exit 2."""

    def error(self, message: str):
        self.exit(2, f"molpt-tui: error: {message} (see `{self.prog} --help`)\n")


def _add_preset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, metavar="NAME|FILE",
                   help="preset name (see `molpt-tui presets`) or path to a .toml file (default: quickstart)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any preset key, typed by the schema (repeatable), e.g. --set training.lr=1e-4")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="molpt-tui",
        description="Train normalizing flows between temperatures for flow-enhanced parallel tempering, "
                    "and watch them train in the terminal.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"molpt-tui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a flow (live TUI on a terminal, headless otherwise)",
                       description="Train the cross-temperature flow. Creates the replica-exchange data first "
                                   "if the data file is missing.")
    _add_preset_args(t)
    t.add_argument("--no-ui", action="store_true", help="headless: progress bar and epoch blocks on stdout")
    t.add_argument("--epochs", type=int, help="override training.epochs")
    t.add_argument("--lr", type=float, help="override training.lr")
    t.add_argument("--batch-size", type=int, help="override training.batch_size")
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N (override training.device)")
    t.add_argument("--out", help="run directory (default: checkpoints/molecular_pt_<preset>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    t.add_argument("--force", action="store_true", help="start a new run in a non-empty run directory")
    t.add_argument("--no-mouse", action="store_true", help="TUI: do not capture the mouse (tmux/SSH friendly)")

    s = sub.add_parser("simulate", help="generate replica-exchange MD data for a preset",
                       description="Run replica-exchange Langevin MD over the preset's temperature ladder "
                                   "and save samples to the preset's data file.")
    _add_preset_args(s)
    s.add_argument("--out", help="data file to write (default: the preset's data.path)")
    s.add_argument("--force", action="store_true", help="overwrite an existing data file")
    s.add_argument("--processes", type=int, default=None, help="worker processes (default: one per core)")

    c = sub.add_parser("check-energy", help="check an energy engine against OpenMM for a structure",
                       description="Evaluate perturbed configurations with the chosen engine and with OpenMM "
                                   "directly; exit 0 within tolerance, 1 outside, 2 on bad input.")
    c.add_argument("--pdb", required=True, help="structure (PDB)")
    c.add_argument("--forcefield", nargs="+", default=["amber99sbildn.xml"], metavar="XML",
                   help="OpenMM force-field XML files (default: amber99sbildn.xml)")
    c.add_argument("--engine", choices=["openmm", "torch", "auto"], default="auto")
    c.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="torch engine: compile its kernels with torch.compile (default: auto, when a "
                        "compiler is present)")
    c.add_argument("--precision", choices=["double", "single"], default="double",
                   help="torch engine: float64 (default) or float32 arithmetic")
    c.add_argument("--samples", type=int, default=16, help="perturbed configurations (default 16)")
    c.add_argument("--noise", type=float, default=0.01, help="perturbation (nm, default 0.01)")
    c.add_argument("--json", action="store_true", help="print the result as JSON")

    sub.add_parser("presets", help="list the presets", description="List presets with one-line descriptions.")

    pl = sub.add_parser("plot", help="redraw the loss-curve PNG of a run from its metrics.jsonl",
                        description="Rebuild loss_curves_<Tc>_<Th>.png from RUN_DIR/metrics.jsonl.")
    pl.add_argument("run_dir")

    w = sub.add_parser("watch", help="attach the TUI (read-only) to a run started elsewhere",
                       description="Follow RUN_DIR/metrics.jsonl of a running or finished run in the TUI.")
    w.add_argument("run_dir")
    w.add_argument("--no-mouse", action="store_true", help="do not capture the mouse")
    return parser


def _train(args) -> int:
    from .training.runner import train_command

    return train_command(args)


def _simulate(args) -> int:
    from .config import load_config
    from .physics.data import simulate

    cfg = load_config(args.preset, args.overrides)
    simulate(cfg, out_path=args.out, force=args.force, n_procs=args.processes)
    return 0


def _check_energy(args) -> int:
    from .physics.check import check_energy_command

    return check_energy_command(args)


def _presets(args) -> int:
    from .config import DEFAULT_PRESET, list_presets

    rows = list_presets()
    width = max((len(name) for name, _, _ in rows), default=10)
    for name, desc, _ in rows:
        mark = " (default)" if name == DEFAULT_PRESET else ""
        print(f"{name:<{width}}  {desc}{mark}")
    return 0


def _plot(args) -> int:
    from pathlib import Path

    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise UserError(f"{run_dir}: no metrics.jsonl here (give the run directory of a `molpt-tui train` run)")
    from .report.plotting import plot_run_dir

    def warn(message: str) -> None:
        print(f"molpt-tui: warning: {message}", file=sys.stderr)

    try:
        path = plot_run_dir(run_dir, warn=warn)
    except OSError as exc:
        raise UserError(f"{exc.filename or run_dir}: cannot write the PNG ({exc.strerror or exc})") from None
    print(f"Wrote {path}")
    return 0


def _watch(args) -> int:
    from pathlib import Path

    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise UserError(f"{run_dir}: no metrics.jsonl here (give the run directory of a `molpt-tui train` run)")
    if not sys.stdout.isatty():
        raise UserError("watch needs a terminal (stdout is not a TTY); use `molpt-tui plot RUN_DIR` for a PNG instead")
    from .tui.app import run_watch_app

    return run_watch_app(run_dir, no_mouse=args.no_mouse)


COMMANDS = {"train": _train, "simulate": _simulate, "check-energy": _check_energy, "presets": _presets,
            "plot": _plot, "watch": _watch}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"molpt-tui: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("molpt-tui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `molpt-tui presets | head`
        if not _stdout_closed():
            raise  # another pipe (a worker process died): not ours to hide
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _stdout_closed() -> bool:
    """Whether the reader of stdout has gone (poll reports an error on the pipe's write end)."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return True


if __name__ == "__main__":
    sys.exit(main())
