"""Atomic file writes: the one way this package replaces a file.

A file is written to a temporary file in the same directory, fsynced and renamed over the old
one, so a kill (or a full disk) at any moment leaves either the old or the new complete file,
never a torn one. Readers on another machine (a login node watching a compute node's run over
a shared file system) therefore never see half a checkpoint, config or PNG.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write_bytes(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """`write(fh)` fills a temp file that replaces `path` only once complete and synced.

    The temporary is `.NAME.XXXX.tmp` next to `path` (the run directory's cleanup knows that
    pattern); it is removed again if `write` raises.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make results unreadable to the group
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """`text` as the whole new content of `path`, written atomically."""
    data = text.encode(encoding)
    return atomic_write_bytes(path, lambda fh: fh.write(data))


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; some file systems (and Windows) refuse, which is fine."""
    try:
        dfd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
