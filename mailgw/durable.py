"""Small durable-file primitives shared by the store and the user database.

A write is durable once the file is fsync'd and, for a new or renamed name, its directory too.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mailgw.crashpoint import crash_point


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(
    path: Path,
    data: bytes,
    mode: int = 0o600,
    prepare=None,
    crash_steps: tuple[str, str] = ("", ""),
) -> None:
    """Atomically and durably make ``path`` hold ``data``: temp file, fsync, rename, fsync dir.

    ``prepare(fd)``, if given, runs on the temp file before it is written (e.g. to fchown it).
    ``crash_steps`` names the caller's crash points (``mailgw.crashpoint``) reached once the
    temp file is fsync'd and once it is renamed into place (before the directory's fsync).
    Raise OSError; a failure leaves ``path`` as it was and no temp file behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)
            if prepare is not None:
                prepare(fd)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        crash_point(crash_steps[0])
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    crash_point(crash_steps[1])
    fsync_dir(path.parent)
