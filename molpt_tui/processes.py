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
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

# Signals a batch system, a terminal or a dropped SSH session delivers to the whole process group.
JOB_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1")


def ignore_job_signals() -> None:
    """For a worker: Ctrl-C, scancel/systemd (SIGTERM), a dropped SSH session (SIGHUP) and SIGUSR1
    reach the whole process group, but the parent decides when workers stop, and a dead parent
    is noticed as EOF on the pipe."""
    for name in JOB_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)


def start_worker(target: Callable[..., None], *args: Any) -> tuple[BaseProcess, Connection]:
    """Start ``target(conn, *args)`` in a fresh interpreter; returns the process and our end of its pipe.

    spawn, not fork: forking a process that holds torch or OpenMM threads can deadlock. daemon,
    so that a parent killed outright does not leave the worker to multiprocessing's exit wait.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args), daemon=True)
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


def usable_cpus() -> int:
    """CPUs this process may use: the affinity mask, narrowed by a cgroup CPU quota and by
    ``SLURM_CPUS_PER_TASK``; at least 1.

    ``os.cpu_count()`` counts the whole node, so a job given 2 of 64 cores would start 64 workers.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, quota)
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cpus = min(cpus, int(slurm))
    return max(1, cpus)


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
