"""`molpt-tui train`: config, run directory, data, signals, then the TUI or the headless sinks."""
from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path

from ..errors import UserError
from .control import TrainingControl
from .metrics_log import METRICS_FILE

LOCK_FILE = ".lock"
CONFIG_FILE = "config.toml"

# Conventional exit codes: 128 + signal number.
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}


def _flag_overrides(args) -> list[str]:
    out = list(getattr(args, "overrides", []) or [])
    for flag, key in (("epochs", "training.epochs"), ("lr", "training.lr"),
                      ("batch_size", "training.batch_size"), ("device", "training.device")):
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    return out


def load_run_config(run_dir: Path, overrides: list[str]):
    """The config saved in a run directory (for --resume), with flag overrides applied."""
    import tomllib

    from ..config import Config, _apply, apply_overrides, validate

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: no {CONFIG_FILE} here; --resume needs the directory of an earlier run")
    try:
        text = path.read_text()
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable saved config ({exc}); start a new run instead") from None
    first = text.splitlines()[0] if text else ""
    preset = first.split("preset:", 1)[1].strip(" )") if "preset:" in first else run_dir.name
    cfg = Config(preset_name=preset, source=str(path), base_dir=str(run_dir))
    _apply(cfg, data, str(path))
    apply_overrides(cfg, overrides)
    return validate(cfg)


class RunLock:
    """One writer per run directory. A lock left by a dead process is taken over."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        for _ in range(3):
            if self._try_create():
                self.held = True
                return
            pid = self._owner()
            if pid and _alive(pid) and pid != os.getpid():
                raise UserError(f"{self.path.parent}: another trainer (PID {pid}) is writing this run directory; "
                                "stop it first or use --out for a new directory")
            self.path.unlink(missing_ok=True)  # stale: its process is gone
        raise UserError(f"{self.path}: cannot take the run-directory lock")

    def _try_create(self) -> bool:
        """The lock appears with the PID already in it (written aside, then hard-linked), so a
        second trainer never reads an empty lock and mistakes it for a stale one."""
        tmp = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(f"{os.getpid()}\n")
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w") as fh:
                    fh.write(f"{os.getpid()}\n")
            return True
        except OSError as exc:
            raise UserError(f"{self.path.parent}: cannot write the run directory ({exc.strerror or exc}); "
                            "choose another --out") from None
        finally:
            tmp.unlink(missing_ok=True)

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def release(self) -> None:
        if self.held and self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """What can be said about the run directory without touching it."""
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise UserError(f"{run_dir}: no last.pt to resume from (start a new run without --resume)")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: exists and is not a directory (choose another --out)")
    if run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir()) and not force:
        raise UserError(f"{run_dir}: run directory is not empty; continue it with --resume {run_dir}, "
                        "replace it with --force, or pick another --out")


def create_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{run_dir}: cannot write the run directory ({exc.strerror or exc}); choose another --out") from None


def clear_run_dir(run_dir: Path) -> None:
    """--force: a new run must not append to another run's history (called with the lock held)."""
    for name in (METRICS_FILE, "last.pt", "best.pt"):
        (run_dir / name).unlink(missing_ok=True)


def remove_stale_temps(run_dir: Path) -> None:
    """Half-written checkpoints of a killed trainer (`.last.pt.XXXX.tmp`, kill -9 mid-write):
    never loaded, but each is as large as a checkpoint. Called with the lock held."""
    for path in run_dir.glob(".*.tmp"):
        if path.name.startswith((".last.pt.", ".best.pt.", ".molecular_pt_", f".{CONFIG_FILE}.", f"{LOCK_FILE}.")):
            path.unlink(missing_ok=True)


def preflight(cfg, run_dir: Path, resume: bool) -> None:
    """Every input problem the trainer would meet, found before anything is written: a failed
    start leaves no half-made run directory and never rewrites the config of a good run."""
    from ..physics.systems import system_from_config
    from .trainer import resolve_device

    resolve_device(cfg.training.device)
    ms = system_from_config(cfg)
    data_path = cfg.data_path
    if data_path.exists():
        from ..physics.data import load_data

        data = load_data(data_path, ms)
        try:
            n = min(len(data.at(cfg.temperatures.cold)), len(data.at(cfg.temperatures.hot)))
        except UserError as exc:
            raise UserError(f"{data_path}: {exc}") from None
        n_val = max(2, int(round(n * cfg.data.validation_fraction)))
        if n - n_val < 2:
            raise UserError(f"{data_path}: only {n} samples per temperature; need more (data.n_samples)")
    if resume:
        from .checkpoint import check_compatible, load_checkpoint

        path = run_dir / "last.pt"
        ckpt = load_checkpoint(path)
        check_compatible(ckpt, path, ms, cfg)
        epoch = int(ckpt.get("epoch", 0))
        if epoch >= cfg.training.epochs:
            raise UserError(f"{path}: the run is already at epoch {epoch} of {cfg.training.epochs}; "
                            f"raise --epochs above {epoch} to train on")


def _write_config(cfg, run_dir: Path) -> None:
    from ..config import dump_toml
    from .checkpoint import atomic_write_bytes

    cfg.data.path = str(cfg.data_path.resolve())
    cfg.output.dir = str(run_dir.resolve())
    text = dump_toml(cfg).encode()
    atomic_write_bytes(run_dir / CONFIG_FILE, lambda fh: fh.write(text))


class _Signals:
    """SIGINT/SIGTERM/SIGHUP: finish the step, save, exit 128+n. SIGUSR1: checkpoint now."""

    def __init__(self, control: TrainingControl):
        self.control = control
        self.received: str | None = None
        self.previous = {}

    def install(self) -> None:
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None:
                self.previous[sig] = signal.signal(sig, self._stop)
        if hasattr(signal, "SIGUSR1"):
            self.previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._checkpoint)

    def _stop(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None and name == "SIGINT":
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the step
        self.received = self.received or name
        self.control.request_stop(f"received {name}")

    def _checkpoint(self, signum, frame) -> None:
        self.control.request_checkpoint()

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train_command(args) -> int:
    from ..config import load_config

    overrides = _flag_overrides(args)
    if args.resume:
        run_dir = Path(args.resume)
        cfg = load_run_config(run_dir, overrides)
    else:
        cfg = load_config(args.preset, overrides)
        run_dir = Path(args.out) if args.out else cfg.run_dir
    use_tui = not args.no_ui
    if use_tui and not sys.stdout.isatty():
        print("molpt-tui: stdout is not a terminal: running headless (as with --no-ui)", file=sys.stderr)
        use_tui = False
    resume = bool(args.resume)
    check_run_dir(run_dir, resume, bool(args.force))
    lock = RunLock(run_dir)
    try:
        if resume:
            lock.acquire()  # a second trainer is told so at once
        preflight(cfg, run_dir, resume)
        if not resume:
            create_run_dir(run_dir)
            lock.acquire()
            if args.force:
                clear_run_dir(run_dir)
        remove_stale_temps(run_dir)
        if not cfg.data_path.is_file():
            from ..physics.data import simulate

            print(f"Data file {cfg.data_path} is missing: generating it with replica-exchange MD "
                  f"(`molpt-tui simulate --preset {cfg.preset_name}`)", flush=True)
            simulate(cfg)
        _write_config(cfg, run_dir)
        if use_tui:
            return _train_tui(cfg, run_dir, resume, no_mouse=args.no_mouse)
        return _train_headless(cfg, run_dir, resume)
    except OSError as exc:
        if exc.errno not in _DISK_ERRORS:
            raise
        where = exc.filename or run_dir
        raise UserError(f"{where}: cannot write ({exc.strerror}); free disk space or choose another --out") from None
    finally:
        lock.release()


_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _exit_code(finished, signals: _Signals | None) -> int:
    if finished.status == "completed":
        return 0
    if finished.status == "failed":
        return 1
    if signals is not None and signals.received in EXIT_CODES:
        return EXIT_CODES[signals.received]
    return 130


def _train_headless(cfg, run_dir: Path, resume: bool) -> int:
    from ..report.console import ConsoleReporter
    from .metrics_log import MetricsLogSink
    from .trainer import Trainer

    control = TrainingControl()
    signals = _Signals(control)
    console = ConsoleReporter(progress_every_s=cfg.logging.progress_every_s)
    log = MetricsLogSink(run_dir / METRICS_FILE)
    signals.install()
    try:
        finished = Trainer(cfg, run_dir, [console, log], control, resume=resume).run()
    finally:
        signals.restore()
        console.close()
        log.close()
    return _exit_code(finished, signals)


def _train_tui(cfg, run_dir: Path, resume: bool, no_mouse: bool) -> int:
    from ..tui.app import run_train_app
    from .child import prepare, run_in_child

    # The trainer runs in its own process (it writes metrics.jsonl and train.log there); the
    # app's worker thread only relays events and requests.
    def train_fn(sink, control):
        return run_in_child(run_dir, resume, sink, control)

    prepare()
    return run_train_app(train_fn, no_mouse=no_mouse, title=f"molpt-tui: {cfg.preset_name}")
