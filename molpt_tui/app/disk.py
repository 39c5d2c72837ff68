"""Disk trouble (full, read-only, quota, permissions) as one line naming the path and a fix."""
from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                         errno.ENOTDIR, errno.EISDIR})


@contextmanager
def disk_errors_as_user_errors(where: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        path = exc.filename or where
        raise UserError(f"{path}: cannot write ({exc.strerror}); free disk space, fix the permissions "
                        "or choose another --out") from None
