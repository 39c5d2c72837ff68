"""The run directory: the only interface between processes, and the one owner of its names.

Every file a run writes is named here and nowhere else: the resolved config, the append-only
metrics log, checkpoints, the final model, PNGs, the trainer's text log, the lock, the control
channel and the temporaries of atomic writes. `--force` clears exactly these (`clear`), and a
viewer on another machine (a login node watching a compute node's run over a shared file
system) finds the same names.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .events import DataProgress, Message
from .metrics_log import read_events

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
TRAINER_LOG = "train.log"
LOCK_FILE = ".lock"
CONTROL_DIR = "control"
# `molpt-tui export` and `train --tensorboard` (the folder is cleared of event files by the sink)
EXPORT_CSV = "metrics.csv"
EXPORT_PARQUET = "metrics.parquet"
TENSORBOARD_DIR = "tensorboard"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
# `train --force` that must first make its data: the earlier run's files wait here until every
# check has passed (then they go) or the start is refused (then they come back).
SET_ASIDE_DIR = ".replaced"
# A lock whose holder runs on another host cannot be probed by PID; the holder refreshes the
# lock's mtime at least this often (from the control poll) and a lock older than STALE_AFTER_S
# is taken over, so a job requeued onto another node is not locked out by its dead self.
HEARTBEAT_S = 20.0
STALE_AFTER_S = 180.0


# The names below with their temperatures as `:g` writes them, and nothing else: a user's own
# `validation_notes.png` beside a run must survive --force.
_T = r"[0-9]+(?:\.[0-9]+)?(?:e[+-][0-9]+)?"
_TEMPERATURE_NAMED = re.compile(rf"(?:molecular_pt_{_T}_{_T}\.pt|(?:loss_curves|validation)_{_T}_{_T}\.png)")


def final_model_name(t_cold: float, t_hot: float) -> str:
    return f"molecular_pt_{t_cold:g}_{t_hot:g}.pt"


def png_name(t_cold: float, t_hot: float) -> str:
    return f"loss_curves_{t_cold:g}_{t_hot:g}.png"


def validation_png_name(t_cold: float, t_hot: float) -> str:
    return f"validation_{t_cold:g}_{t_hot:g}.png"


def _is_run_output(name: str) -> bool:
    """Whether a file name is one that some run writes (for --force and stale temporaries)."""
    fixed = {CONFIG_FILE, METRICS_FILE, TRAINER_LOG, LAST_CHECKPOINT, BEST_CHECKPOINT, SET_ASIDE_DIR, EXPORT_CSV,
             EXPORT_PARQUET}
    if name in fixed:
        return True
    return _TEMPERATURE_NAMED.fullmatch(name) is not None


def _is_temporary(name: str) -> bool:
    """`.NAME.XXXX.tmp` left by an atomic write of one of our files (kill -9 mid-write)."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    inner = name[1:].rsplit(".", 2)[0]
    return _is_run_output(inner) or inner == LOCK_FILE.lstrip(".") or name.startswith(f"{LOCK_FILE}.")


@dataclass(frozen=True)
class LockOwner:
    pid: int
    host: str
    age_s: float  # seconds since the holder last refreshed the lock

    @property
    def here(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self) -> bool:
        if self.here:
            return _pid_alive(self.pid)
        return self.age_s < STALE_AFTER_S

    def describe(self) -> str:
        where = "" if self.here else f" on {self.host}"
        return f"PID {self.pid}{where}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


class RunDirectory:
    """Names, lock and clearing of one run directory. Creating it is explicit (`create`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_held = False
        self._last_heartbeat = 0.0

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    # --- names -----------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def trainer_log(self) -> Path:
        return self.path / TRAINER_LOG

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def control_dir(self) -> Path:
        return self.path / CONTROL_DIR

    @property
    def last(self) -> Path:
        return self.path / LAST_CHECKPOINT

    @property
    def best(self) -> Path:
        return self.path / BEST_CHECKPOINT

    def final_model(self, t_cold: float, t_hot: float) -> Path:
        return self.path / final_model_name(t_cold, t_hot)

    def png(self, t_cold: float, t_hot: float) -> Path:
        return self.path / png_name(t_cold, t_hot)

    def validation_png(self, t_cold: float, t_hot: float) -> Path:
        """What the map does to samples it never trained on: Ramachandran maps and energy histograms."""
        return self.path / validation_png_name(t_cold, t_hot)

    @property
    def set_aside_dir(self) -> Path:
        return self.path / SET_ASIDE_DIR

    def outputs(self) -> Iterator[Path]:
        """Every entry here that some run wrote (nothing of the user's)."""
        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            if _is_run_output(entry.name) or _is_temporary(entry.name) or entry.name == CONTROL_DIR:
                yield entry

    # --- checks that touch nothing ------------------------------------------------------------
    def check_entries(self) -> None:
        """Entries of ours that are of the wrong kind (a directory named metrics.jsonl, ...)."""
        for name in (CONFIG_FILE, METRICS_FILE, TRAINER_LOG, LOCK_FILE, LAST_CHECKPOINT, BEST_CHECKPOINT):
            p = self.path / name
            if p.exists() and not p.is_file():
                raise UserError(f"{p}: exists but is not a regular file; move it away or use another run directory")
        if self.control_dir.exists() and not self.control_dir.is_dir():
            raise UserError(f"{self.control_dir}: exists but is not a directory; move it away or use another "
                            "run directory")

    def check_new(self, force: bool) -> None:
        """May a new run start here? (`--force` replaces an earlier run's files.)"""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path}: exists and is not a directory (choose another --out)")
        if not self.path.is_dir():
            return
        self.check_entries()
        if force:
            return
        if any(p.name != LOCK_FILE for p in self.path.iterdir()) and not self.holds_only_a_data_phase():
            raise UserError(f"{self.path}: run directory is not empty; continue it with --resume {self.path}, "
                            "replace it with --force, or pick another --out")

    def holds_only_a_data_phase(self) -> bool:
        """Whether all that is here is what a `train` killed during its data phase left (kill -9,
        a lost node): a metrics log of MD progress and nothing of a run, its control channel, a
        lock, temporaries. That is no run to resume and nothing of the user's, so a new start
        replaces it without --force (the same command rerun on a requeue is not refused)."""
        if not self.path.is_dir():
            return False
        found = False
        for entry in self.path.iterdir():
            if entry.name == LOCK_FILE or _is_temporary(entry.name) or (entry.name == CONTROL_DIR and entry.is_dir()):
                continue
            if entry.name != METRICS_FILE or not entry.is_file():
                return False
            found = True
        if not found:
            return False
        try:
            # `all` stops at a run's first event: a long log of a real run is not read through
            return all(isinstance(event, (DataProgress, Message))
                       for event in read_events(self.metrics, warn=lambda _message: None))
        except OSError:
            return False

    def check_resumable(self, checkpoint: Path | None = None) -> None:
        if not self.path.is_dir():
            raise UserError(f"{self.path}: no such run directory (give the directory of an earlier run)")
        self.check_entries()
        if not self.config.is_file():
            raise UserError(f"{self.path}: no {CONFIG_FILE} here; --resume needs the directory of an earlier run")
        target = checkpoint or self.last
        if not target.is_file():
            raise UserError(f"{self.path}: no {target.name} to resume from (start a new run without --resume)")

    # --- changes (only after every check passed) ------------------------------------------------
    def create(self) -> bool:
        """Make the directory if needed; True if it was created now (so a refused start can undo it)."""
        existed = self.path.is_dir()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test.{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write the run directory ({exc.strerror or exc}); "
                            "choose another --out") from None
        return not existed

    def clear(self) -> list[Path]:
        """--force: remove everything an earlier run wrote here (and nothing else). Lock held."""
        removed = []
        for entry in list(self.outputs()):
            if entry.name == SET_ASIDE_DIR and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)  # holds only what `set_aside` moved there, control/ included
            elif entry.is_dir():
                for child in entry.iterdir():
                    child.unlink(missing_ok=True)
                entry.rmdir()
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        return removed

    def set_aside(self) -> bool:
        """--force before a data phase: move the earlier run's files into `.replaced/` (a rename,
        on the same file system), so a start refused after minutes of MD can put them back.
        Lock held. True when something was moved."""
        aside = self.set_aside_dir
        if aside.exists() or aside.is_symlink():
            # left by a start killed mid-phase: --force replaces it with the rest
            if aside.is_dir() and not aside.is_symlink():
                shutil.rmtree(aside)
            else:
                aside.unlink()
        entries = [entry for entry in self.outputs() if entry.name != SET_ASIDE_DIR]
        if not entries:
            return False
        aside.mkdir()
        for entry in entries:
            os.replace(entry, aside / entry.name)
        return True

    def restore_set_aside(self) -> None:
        """Undo `set_aside`: remove what was written since, and put the earlier run back. Lock held."""
        aside = self.set_aside_dir
        for entry in list(self.outputs()):
            if entry.name == SET_ASIDE_DIR:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
        if not aside.is_dir():
            return
        for entry in list(aside.iterdir()):
            os.replace(entry, self.path / entry.name)
        aside.rmdir()

    def drop_set_aside(self) -> None:
        """The new run starts: what `set_aside` kept goes, as `--force` promised."""
        if self.set_aside_dir.is_dir():
            shutil.rmtree(self.set_aside_dir)

    def remove_stale_temps(self) -> None:
        """Half-written files of a killed trainer: never loaded, but each as large as a checkpoint."""
        if self.path.is_dir():
            for entry in self.path.iterdir():
                if _is_temporary(entry.name) and entry.is_file():
                    entry.unlink(missing_ok=True)

    # --- the lock ---------------------------------------------------------------------------
    def lock_owner(self) -> LockOwner | None:
        try:
            text = self.lock_path.read_text(encoding="utf-8", errors="replace")
            age = max(0.0, time.time() - self.lock_path.stat().st_mtime)
        except OSError:
            return None
        parts = text.split()
        try:
            pid = int(parts[0])
        except (IndexError, ValueError):
            return None
        host = parts[1] if len(parts) > 1 else socket.gethostname()
        return LockOwner(pid=pid, host=host, age_s=age)

    def acquire_lock(self) -> None:
        """One writer per run directory. A lock left by a dead process is taken over."""
        self.check_entries()
        for _ in range(3):
            if self._try_create_lock():
                self._lock_held = True
                self._last_heartbeat = time.monotonic()
                return
            owner = self.lock_owner()
            if owner is not None and owner.pid == os.getpid() and owner.here:
                self._lock_held = True
                return
            if owner is not None and owner.alive():
                raise UserError(f"{self.path}: another trainer ({owner.describe()}) is writing this run directory; "
                                "stop it first (`molpt-tui control RUN stop`) or use --out for a new directory")
            self.lock_path.unlink(missing_ok=True)  # stale: its process is gone
        raise UserError(f"{self.lock_path}: cannot take the run-directory lock")

    def _try_create_lock(self) -> bool:
        """The lock appears with its owner already in it (written aside, then hard-linked), so a
        second trainer never reads an empty lock and mistakes it for a stale one."""
        tmp = self.path / f"{LOCK_FILE}.{os.getpid()}.tmp"
        content = f"{os.getpid()} {socket.gethostname()}\n"
        try:
            tmp.write_text(content, encoding="utf-8")
            try:
                os.link(tmp, self.lock_path)
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links
                try:
                    fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w") as fh:
                    fh.write(content)
            return True
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write the run directory ({exc.strerror or exc}); "
                            "choose another --out") from None
        finally:
            tmp.unlink(missing_ok=True)

    def adopt_lock(self, from_pid: int) -> None:
        """Take over the lock from the process that started this one (the live TUI hands its
        lock to the trainer it spawns, so the lock names the process that writes the run)."""
        owner = self.lock_owner()
        if owner is None or not owner.here or owner.pid not in (from_pid, os.getpid()):
            raise UserError(f"{self.lock_path}: the run-directory lock is not held by the process that started "
                            "this trainer; start the run with `molpt-tui train`")
        tmp = self.path / f"{LOCK_FILE}.{os.getpid()}.tmp"
        tmp.write_text(f"{os.getpid()} {socket.gethostname()}\n", encoding="utf-8")
        os.replace(tmp, self.lock_path)
        self._lock_held = True
        self._last_heartbeat = time.monotonic()

    def heartbeat(self) -> None:
        """Refresh the lock's mtime now and then, so viewers on other hosts see the run alive.
        Called by the trainer, which may be a child of the lock's holder (the live TUI)."""
        now = time.monotonic()
        if now - self._last_heartbeat >= HEARTBEAT_S:
            self._last_heartbeat = now
            try:
                os.utime(self.lock_path)
            except OSError:
                pass

    def release_lock(self) -> None:
        owner = self.lock_owner()
        if self._lock_held and owner is not None and owner.pid == os.getpid() and owner.here:
            self.lock_path.unlink(missing_ok=True)
        self._lock_held = False

    @property
    def lock_held(self) -> bool:
        return self._lock_held

    def check_no_live_trainer(self) -> None:
        """Refuse to start a trainer here while another one writes the directory."""
        owner = self.live_trainer()
        if owner is not None:
            raise UserError(f"{self.path}: another trainer ({owner.describe()}) is writing this run directory; "
                            f"stop it first (`molpt-tui control {self.path} stop`) or use --out for a new directory")

    def live_trainer(self) -> LockOwner | None:
        """The trainer holding this run's lock, if one is alive."""
        owner = self.lock_owner()
        return owner if owner is not None and owner.alive() else None
