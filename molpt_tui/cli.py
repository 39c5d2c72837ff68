"""Command line: parses arguments and hands over; no logic of its own.

Imports of torch, openmm and textual happen inside the commands, so `--help` and
`--version` answer at once.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from . import __version__
from .errors import UserError

EPILOG = "Presets: `molpt-tui presets`. Docs: README.md."


class _Parser(argparse.ArgumentParser):
    """Usage mistakes read like every other bad input: one line on stderr, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"molpt-tui: error: {message} (see `{self.prog} --help`)\n")


def _add_preset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, metavar="NAME|FILE",
                   help="preset name (see `molpt-tui presets`) or path to a .toml file (default: quickstart)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any preset key, typed by the schema (repeatable), e.g. --set training.lr=1e-4")


def _add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPUs to use in all: torch threads plus OpenMM worker processes (default: the CPUs this "
                        "process may use: affinity mask, cgroup quota, SLURM_CPUS_PER_TASK; see README)")


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
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (from its last.pt)")
    t.add_argument("--from", dest="resume_from", choices=["last", "best"], default="last",
                   help="with --resume: continue from last.pt (default) or from best.pt")
    t.add_argument("--force", action="store_true",
                   help="start a new run in a non-empty run directory, removing the earlier run's files")
    t.add_argument("--no-mouse", action="store_true", help="TUI: do not capture the mouse (tmux/SSH friendly)")
    t.add_argument("--ascii", action="store_true", help="TUI: ASCII only, no braille or box drawing (automatic on "
                   "TERM=linux, vt100, and non-UTF-8 terminals)")
    t.add_argument("--tensorboard", action="store_true",
                   help="also write every epoch's and evaluation's scalars live to RUN_DIR/tensorboard/ "
                        "(needs: pip install 'molpt-tui[tensorboard]')")
    _add_threads_arg(t)

    s = sub.add_parser("simulate", help="generate replica-exchange MD data for a preset",
                       description="Run replica-exchange Langevin MD over the preset's temperature ladder "
                                   "and save samples to the preset's data file.")
    _add_preset_args(s)
    s.add_argument("--out", help="data file to write (default: the preset's data.path)")
    s.add_argument("--force", action="store_true", help="overwrite an existing data file")
    s.add_argument("--processes", type=int, default=None, help="worker processes (default: one per core)")
    _add_threads_arg(s)

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
    c.add_argument("--platform", default="auto",
                   help="openmm engine: OpenMM platform (auto, Reference, CPU, CUDA, OpenCL; default auto)")
    c.add_argument("--device", default="cpu", help="torch engine: cpu or cuda[:N] (default cpu)")
    c.add_argument("--samples", type=int, default=16, help="perturbed configurations (default 16)")
    c.add_argument("--noise", type=float, default=0.01, help="perturbation (nm, default 0.01)")
    c.add_argument("--json", action="store_true", help="print the result as JSON")

    sub.add_parser("presets", help="list the presets", description="List presets with one-line descriptions.")

    pl = sub.add_parser("plot", help="redraw the loss-curve PNG of a run, or compare runs, from metrics.jsonl",
                        description="Rebuild loss_curves_<Tc>_<Th>.png from RUN_DIR/metrics.jsonl; with several "
                                    "run directories, one figure with the same metric of each run overlaid.")
    pl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    pl.add_argument("--out", metavar="FILE.png",
                    help="where to write the PNG (default: in the run directory; runs_comparison.png for several)")

    e = sub.add_parser("export", help="write every scalar of a run's epochs and evaluations as CSV, Parquet or "
                                      "TensorBoard files",
                       description="Rebuild from RUN_DIR/metrics.jsonl one table, one row per (kind, epoch): train "
                                   "(training figures), val (held-out validation), test (independent test run); "
                                   "columns named split/field, e.g. val/acc_flow. CSV needs nothing more; Parquet "
                                   "needs molpt-tui[export], TensorBoard molpt-tui[tensorboard].")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--format", dest="fmt", choices=["csv", "parquet", "tensorboard"], required=True)
    e.add_argument("--out", metavar="PATH", help="file (csv, parquet) or directory (tensorboard) to write "
                                                  "(default: RUN_DIR/metrics.csv, RUN_DIR/metrics.parquet, "
                                                  "RUN_DIR/tensorboard/)")
    e.add_argument("--force", action="store_true", help="replace an existing export")
    e.add_argument("--system", action="store_true",
                   help="also the system samples (CPU, memory, GPU): kind system, one row per sample")

    w = sub.add_parser("watch", help="attach the TUI to a run started elsewhere (and steer it), or compare runs",
                       description="Follow RUN_DIR/metrics.jsonl of a running, pending or finished run (a directory "
                                   "that does not exist yet is waited for). The keys pause, checkpoint, PNG and stop "
                                   "act on the run's live trainer through the run directory, also from another "
                                   "machine sharing the file system. With several RUN_DIRs: the same metrics of "
                                   "each run overlaid, and a table of their latest values (read-only).")
    w.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    w.add_argument("--read-only", action="store_true", help="follow only: disable the keys that steer the run")
    w.add_argument("--no-mouse", action="store_true", help="do not capture the mouse")
    w.add_argument("--ascii", action="store_true", help="ASCII only, no braille or box drawing (automatic on "
                   "TERM=linux, vt100, and non-UTF-8 terminals)")

    k = sub.add_parser("control", help="pause, resume, checkpoint, write the PNG of, or stop a running trainer",
                       description="Send one request to the live trainer of RUN_DIR through its control channel "
                                   "and wait for its acknowledgement: exit 0 when acknowledged, 1 when not "
                                   "within --timeout, 2 on bad input.")
    k.add_argument("run_dir")
    k.add_argument("action", choices=["pause", "resume", "checkpoint", "png", "stop"])
    k.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the acknowledgement (60)")
    f = sub.add_parser("pt", help="flow-enhanced parallel tempering with a trained map (and the naive ladder)",
                       description="Langevin MD of a cold and a hot replica at the run's two temperatures; every K "
                                   "steps the flow swap (x, y) -> (T^-1 y, T x) is accepted with min(1, exp Delta). "
                                   "Writes RUN_DIR/pt (or --out): settings, metrics.jsonl, the cold replica's "
                                   "samples, a checkpoint, a summary and validation figures.")
    f.add_argument("run_dir", metavar="RUN_DIR", help="the directory of a `molpt-tui train` run")
    f.add_argument("--model", default=None, metavar="best|final|PATH",
                   help="the map: best.pt (default), the final model, or a checkpoint file")
    f.add_argument("--ns", type=float, default=None, help="MD time per replica in ns (default 1; with --resume: "
                                                          "raise it to sample on)")
    f.add_argument("--swap-every", type=int, default=None, metavar="K",
                   help="MD steps between swap attempts (default: the run's data.swap_every)")
    f.add_argument("--seed", type=int, default=None, help="random seed (default: the run's data.seed + 1)")
    f.add_argument("--out", default=None, metavar="DIR", help="pt directory (default RUN_DIR/pt)")
    f.add_argument("--baseline", choices=["none", "ladder"], default=None,
                   help="ladder: also run the run's full temperature ladder with naive neighbour swaps, side by "
                        "side, with the same total MD time")
    f.add_argument("--resume", action="store_true", help="continue the pt run in its directory from its checkpoint")
    f.add_argument("--force", action="store_true", help="start over in a non-empty pt directory")
    f.add_argument("--no-ui", action="store_true", help="headless: plain progress lines on stdout")
    f.add_argument("--no-mouse", action="store_true", help="TUI: do not capture the mouse (tmux/SSH friendly)")
    f.add_argument("--ascii", action="store_true", help="TUI: ASCII only, no braille or box drawing (automatic on "
                   "TERM=linux/vt100 and non-UTF-8 terminals)")
    return parser


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .app.train import TrainOptions, train

    return train(TrainOptions(
        preset=args.preset, overrides=tuple(args.overrides), epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, device=args.device, out=Path(args.out) if args.out else None,
        resume=Path(args.resume) if args.resume else None, resume_from=args.resume_from, force=args.force,
        ui=not args.no_ui, no_mouse=args.no_mouse, threads=args.threads, ascii=args.ascii,
        tensorboard=args.tensorboard))


def _simulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .app.commands import simulate

    return simulate(args.preset, tuple(args.overrides), Path(args.out) if args.out else None, args.force,
                    args.processes, threads=args.threads)


def _check_energy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .app.check_energy import check_energy

    return check_energy(Path(args.pdb), tuple(args.forcefield), engine=args.engine, compile=args.compile,
                        precision=args.precision, samples=args.samples, noise=args.noise, platform=args.platform,
                        device=args.device, as_json=args.json)


def _presets(args: argparse.Namespace) -> int:
    from .app.commands import presets

    return presets()


def _plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .app.commands import plot

    return plot([Path(p) for p in args.run_dirs], Path(args.out) if args.out else None)


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .app.export import export

    return export(Path(args.run_dir), args.fmt, Path(args.out) if args.out else None, force=args.force,
                  system=args.system)


def _watch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .app.watch import watch

    return watch([Path(p) for p in args.run_dirs], read_only=args.read_only, no_mouse=args.no_mouse,
                 ascii_only=args.ascii)


def _control(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .app.control import control

    return control(Path(args.run_dir), args.action, timeout=args.timeout)


def _pt(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .app.pt import PTOptions, pt

    return pt(PTOptions(run_dir=Path(args.run_dir), model=args.model, ns=args.ns, swap_every=args.swap_every,
                        seed=args.seed, out=Path(args.out) if args.out else None, baseline=args.baseline,
                        resume=args.resume, force=args.force, ui=not args.no_ui, no_mouse=args.no_mouse,
                        ascii_only=args.ascii))


COMMANDS = {"train": _train, "simulate": _simulate, "check-energy": _check_energy, "presets": _presets,
            "plot": _plot, "export": _export, "watch": _watch, "control": _control, "pt": _pt}


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
