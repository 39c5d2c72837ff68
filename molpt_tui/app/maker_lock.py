"""One maker per data file: runs started together on missing data (a SLURM job array, several
trainers sharing one test run) wait for the first one's MD and use its file, instead of each
repeating the same hours of MD.

The lock is an flock on a hidden file beside the data file (in the nearest existing directory
when the data's directory is still to be made), removed when released. Locking is a saving,
never a condition: where the file system cannot lock, runs proceed as they would without it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path


def lock_path(target: Path) -> Path:
    """`.<name>.making` beside `target`, or in its nearest existing ancestor (named after the
    part of the path still to be made, so that two targets never share a lock)."""
    parent, missing = target.parent, [target.name]
    while not parent.is_dir() and parent != parent.parent:
        missing.insert(0, parent.name)
        parent = parent.parent
    return parent / f".{'_'.join(missing)}.making"


class MakerLock:
    """An exclusive, non-blocking lock on making `target`."""

    def __init__(self, target: Path) -> None:
        self.path = lock_path(target)
        self._fd: int | None = None
        self.unavailable = ""   # why locking is off for this file (then every acquire succeeds)

    def acquire(self) -> bool:
        """True when this process may make the file now; False while another one holds it."""
        if self._fd is not None or self.unavailable:
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self.unavailable = f"cannot create {self.path}: {exc.strerror}"
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            self.unavailable = f"cannot lock {self.path}: {exc.strerror}"
            return True
        # the holder before us may have removed the file after we opened it: our lock would then
        # be on a file nobody else can find; start again on the file at the path
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            same = False
        if not same:
            os.close(fd)
            return self.acquire()
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """"pid 123 on node7" of the process holding the lock, as it wrote it; "" if unknown."""
        try:
            pid, _, host = self.path.read_text().strip().partition(" ")
        except OSError:
            return ""
        return f"pid {pid} on {host}" if pid else ""

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)   # closing drops the flock
        self._fd = None
