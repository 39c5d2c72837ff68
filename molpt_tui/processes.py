"""Worker processes we own: starting them, shielding them from job signals, ending them, and
how many CPUs this process may really use.

Shared by the OpenMM energy bridge, the replica-exchange MD pool and the training child. Nothing
here knows about physics; it imports only the standard library so that any layer may use it.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

# Signals a batch system, a terminal or a dropped SSH session delivers to the whole process group.
JOB_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1")


def _job_signals() -> set[signal.Signals]:
    return {getattr(signal, name) for name in JOB_SIGNALS if hasattr(signal, name)}


def ignore_job_signals() -> None:
    """For a worker: Ctrl-C, scancel/systemd (SIGTERM), a dropped SSH session (SIGHUP) and SIGUSR1
    reach the whole process group, but the parent decides when workers stop, and a dead parent
    is noticed as EOF on the pipe.

    The worker started with these signals blocked (`start_worker`); once they are ignored, a
    pending one is discarded and the mask can be cleared for anything the worker starts."""
    sigs = _job_signals()
    for sig in sigs:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)


@contextmanager
def job_signals_blocked() -> Iterator[None]:
    """Block the job signals in this thread while a worker starts: the mask survives fork and
    exec, so a Ctrl-C to the process group while the worker's interpreter is still importing
    waits until the worker ignores it, instead of killing it with a traceback on the shared
    stderr. A signal meant for us meanwhile is delivered as soon as the mask is restored."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _job_signals())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _ensure_resource_tracker() -> None:
    """Start multiprocessing's resource tracker now, outside `job_signals_blocked`: launching it
    unblocks SIGINT and SIGTERM when done, which would undo our mask for the worker that follows."""
    try:
        from multiprocessing import resource_tracker
    except ImportError:  # not on POSIX
        return
    resource_tracker.ensure_running()


def start_worker(target: Callable[..., None], *args: Any) -> tuple[BaseProcess, Connection]:
    """Start ``target(conn, *args)`` in a fresh interpreter; returns the process and our end of its pipe.
    ``target`` must call `ignore_job_signals` first: it starts with the job signals blocked.

    spawn, not fork: forking a process that holds torch or OpenMM threads can deadlock. daemon,
    so that a parent killed outright does not leave the worker to multiprocessing's exit wait.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args), daemon=True)
    _ensure_resource_tracker()
    with job_signals_blocked():
        proc.start()
    child.close()  # the worker's end: only the worker may hold it, or EOF never arrives
    return proc, parent


def serve_requests(conn: Connection, handle: Callable[[Any], Any],
                   describe: Callable[[BaseException], str] = lambda exc: f"{type(exc).__name__}: {exc}") -> None:
    """A worker's loop: answer each request with ("ok", handle(msg)) or ("error", text) until the
    parent sends None or goes away (then leave rather than become an orphan)."""
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        try:
            conn.send(("ok", handle(msg)))
        except Exception as exc:  # report and keep the protocol in step
            conn.send(("error", describe(exc)))


def stop_workers(procs: Sequence[BaseProcess], conns: Sequence[Connection], timeout: float = 5.0) -> None:
    """Ask workers to leave (None on the pipe), then SIGKILL stragglers: they ignore SIGTERM,
    so ``Process.terminate`` would not end them."""
    for conn in conns:
        try:
            conn.send(None)
        except (OSError, EOFError):
            pass
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=2.0)
    for conn in conns:
        conn.close()


def run_before_multiprocessing_exit(hook: Callable[[], None]) -> None:
    """Register ``hook`` to run at interpreter exit before multiprocessing's own exit handler.

    atexit runs last-registered first, and multiprocessing registers its handler when the first
    process starts; that handler SIGTERMs daemon workers (which ignore it) and then waits on them
    forever. Call this after starting workers so that the hook, which ends them, runs first.
    """
    atexit.unregister(hook)
    atexit.register(hook)


@dataclass(frozen=True)
class CpuCount:
    """How many CPUs this process may use, where that number came from, and whether someone gave
    them to us (a scheduler, a cgroup, a narrowed affinity mask) or we merely see the machine."""

    cpus: int
    source: str        # e.g. "SLURM_CPUS_PER_TASK=4", "the cgroup CPU quota", "the affinity mask"
    dedicated: bool    # False: the affinity mask is the whole machine, which others may be using


def usable_cpus() -> int:
    """CPUs this process may use: the affinity mask, narrowed by a cgroup CPU quota and by
    ``SLURM_CPUS_PER_TASK``; at least 1.

    ``os.cpu_count()`` counts the whole node, so a job given 2 of 64 cores would start 64 workers.
    """
    return count_cpus().cpus


def count_cpus(env: Mapping[str, str] | None = None, affinity: int | None = None, machine: int | None = None,
               read_quota: Callable[[], int | None] | None = None) -> CpuCount:
    """`usable_cpus` with its reason. The arguments replace what would be read from this
    process (environment, affinity mask, ``os.cpu_count()``, cgroup quota), for tests."""
    env = os.environ if env is None else env
    machine = machine if machine is not None else (os.cpu_count() or 1)
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            affinity = machine
    cpus, dedicated = affinity, affinity < machine
    source = "the affinity mask" if dedicated else "the affinity mask (the whole machine)"
    limit = (read_quota or cgroup_cpu_quota)()
    if limit is not None and limit < cpus:
        cpus, source, dedicated = limit, "the cgroup CPU quota", True
    slurm = env.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and 0 < int(slurm) <= cpus:
        # equal to the mask still counts: the scheduler has said these CPUs are ours
        cpus, source, dedicated = int(slurm), f"SLURM_CPUS_PER_TASK={slurm}", True
    return CpuCount(max(1, cpus), source, dedicated)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """Whole CPUs allowed by the tightest CPU quota on this process's cgroup path (v2
    ``cpu.max``, v1 ``cpu.cfs_quota_us``), rounded up; None when there is none.

    A quota is set on the job's own cgroup (``/slurm/uid_1000/job_42``), not on the root, and a
    parent's quota binds its children, so every level from the process's cgroup up is read.
    """
    try:
        lines = self_cgroup.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        lines = []
    v2, v1 = "/", None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "cpu" in parts[1].split(","):
            v1 = parts[2]
    best: int | None = None
    for folder in _up_from(root, v2):
        best = _tighter(best, _cgroup_cpu_quota(folder / "cpu.max"))
    if v1 is not None:
        for mount in (root / "cpu", root / "cpu,cpuacct"):
            for folder in _up_from(mount, v1):
                best = _tighter(best, _cgroup_v1_quota(folder))
    return best


def _up_from(root: Path, cgroup: str) -> list[Path]:
    """``root/a/b``, ``root/a``, ``root``: a cgroup's folder and its ancestors'."""
    parts = [p for p in cgroup.strip().split("/") if p and p != ".."]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _tighter(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _cgroup_cpu_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """Whole CPUs allowed by a cgroup v2 quota ("max 100000" means none), rounded up."""
    try:
        quota, period = path.read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, -(-int(quota) // int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def _cgroup_v1_quota(folder: Path) -> int | None:
    """Whole CPUs allowed by a cgroup v1 CFS quota (-1 means none), rounded up."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text(encoding="ascii"))
        period = int((folder / "cpu.cfs_period_us").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, -(-quota // period))
