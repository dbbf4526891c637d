"""Small durable-file primitives shared by the store and the user database.

A write is durable once the file is fsync'd and, for a new or renamed name, its directory too.
A writer killed between creating its temporary file and renaming it leaves that file behind
(``.<name>.<pid>.<thread>.tmp``, never read by anyone); the next ``replace_file`` of the same
name removes it (``remove_stale_temps``), so a crash costs at most one such file per name.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from mailgw.crashpoint import crash_point


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append_whole(fd: int, offset: int, data: bytes) -> None:
    """Write ``data`` to an append-only file at ``offset``, the end of its last whole record,
    cutting away first a torn record a crash left after it; then fsync the file."""
    if os.fstat(fd).st_size != offset:
        os.ftruncate(fd, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    write_all(fd, data)
    os.fsync(fd)


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
    sweep: bool = True,
) -> None:
    """Atomically and durably make ``path`` hold ``data``: temp file, fsync, rename, fsync dir.

    ``prepare(fd)``, if given, runs on the temp file before it is written (e.g. to fchown it).
    ``crash_steps`` names the caller's crash points (``mailgw.crashpoint``) reached once the
    temp file is fsync'd and once it is renamed into place (before the directory's fsync).
    ``sweep``: then remove the temp files of dead writers of ``path`` (``remove_stale_temps``);
    a caller whose directory is large and that cleans up by itself passes False.
    Raise OSError; a failure leaves ``path`` as it was and no temp file behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        try:
            fd = os.open(tmp, _TEMP_FLAGS, mode)
        except FileExistsError:
            # Only this thread of this process makes this name: it is a dead writer's whose
            # pid and thread id this one has been given again (as in a container), so stale.
            tmp.unlink()
            fd = os.open(tmp, _TEMP_FLAGS, mode)
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
    if sweep:
        remove_stale_temps(path)


_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL

#: A temporary file this old is a dead writer's whatever its pid says (the pid may have been
#: reused, or belong to another pid namespace); a live writer renames its own within moments.
STALE_TEMP_SECONDS = 3600.0

#: What follows ``.<name>.`` in a temp file's name: ``<pid>.<thread>.tmp`` (``replace_file``) or
#: ``<pid>.tmp`` (the ports file and the generated TLS files).
_TEMP_TAIL = re.compile(r"^(\d+)(?:\.\d+)?\.tmp$")


def remove_stale_temps(path: Path, now: float | None = None) -> None:
    """Remove the temp files left by writers of ``path`` that died before renaming them.

    A temp file ``.<name>.<pid>[.<thread>].tmp`` beside ``path`` is stale when its process is
    gone, or when it is older than ``STALE_TEMP_SECONDS``.  Removing a live writer's temp file
    (a stuck one) can only make its rename fail, never leave ``path`` half-written.  Errors
    are ignored: this is housekeeping, never a reason for a write to fail."""
    prefix = f".{path.name}."
    try:
        names = [name for name in os.listdir(path.parent) if name.startswith(prefix)]
    except OSError:
        return
    limit = (time.time() if now is None else now) - STALE_TEMP_SECONDS
    for name in names:
        match = _TEMP_TAIL.match(name[len(prefix) :])
        if match is None:
            continue
        temp = path.parent / name
        try:
            if process_gone(int(match.group(1))) or os.lstat(temp).st_mtime < limit:
                os.unlink(temp)
        except OSError:
            continue


def process_gone(pid: int) -> bool:
    """Is there no process ``pid`` (on this host, in this pid namespace)?  False for this one."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: alive
        return False
    return False
