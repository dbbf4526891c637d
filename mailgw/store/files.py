"""Durable file operations and Maildir file names: fsync helpers, unique names, CRLF sizes."""

from __future__ import annotations

import errno
import itertools
import os
import re
import time
from pathlib import Path

from mailgw.durable import fsync_dir, write_all
from mailgw.store.interfaces import StoreError

__all__ = ["fsync_dir", "write_all"]  # re-exported for the store's modules

#: Mode of message files and of the directories the store creates.
FILE_MODE = 0o600
DIR_MODE = 0o700

#: Files in a tmp/ directory older than this are left-overs of a crash (Maildir says 36 hours).
STALE_TMP_SECONDS = 36 * 3600

_counter = itertools.count(1)
_BARE_LF = re.compile(rb"(?<!\r)\n")


def escape_hostname(hostname: str) -> str:
    """Escape '/' and ':' in a host name as the Maildir specification says."""
    return hostname.replace("/", "\\057").replace(":", "\\072")


def unique_name(hostname: str, size: int, when: float | None = None) -> str:
    """Return a new unique Maildir base name carrying its size (S=) and CRLF size (W=).

    ``when`` (default: now) becomes the name's time stamp, which the store reads back as the
    message's internal date.  Uniqueness does not depend on it: the process id, a per-process
    counter and 64 random bits make each name unique.
    """
    if when is None:
        when = time.time()
    sec = int(when)
    usec = int(round((when - sec) * 1_000_000)) % 1_000_000
    return (
        f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}R{os.urandom(8).hex()}"
        f".{escape_hostname(hostname)},S={size},W={size}"
    )


def to_crlf(data: bytes) -> bytes:
    """Return ``data`` with every bare LF turned into CRLF."""
    return _BARE_LF.sub(b"\r\n", data)


def crlf_size(path: Path) -> int:
    """Return the size ``path`` would have with CRLF line endings (reads the file once)."""
    total = 0
    lf = 0
    crlf = 0
    last = b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            total += len(chunk)
            lf += chunk.count(b"\n")
            crlf += chunk.count(b"\r\n")
            if last == b"\r" and chunk[:1] == b"\n":
                crlf += 1
            last = chunk[-1:]
    return total + lf - crlf


def write_durably(path: Path, data: bytes, mtime: float | None = None) -> None:
    """Create ``path`` (which must not exist) holding ``data``, fsync'd; raise StoreError."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except OSError as e:
        raise store_error("cannot create a message file", e) from e
    try:
        write_all(fd, data)
        if mtime is not None:
            os.utime(fd, (mtime, mtime))
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        remove_quietly(path)
        raise store_error("cannot write a message file", e) from e
    os.close(fd)


def remove_quietly(path: Path) -> None:
    """Unlink ``path`` if it exists, ignoring errors (used on the way out of a failure)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def clean_stale(directory: Path, now: float | None = None) -> None:
    """Remove files in ``directory`` not modified for 36 hours (crash left-overs)."""
    limit = (now or time.time()) - STALE_TMP_SECONDS
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < limit:
                os.unlink(entry.path)
        except OSError:
            continue


def make_dirs(path: Path) -> None:
    """Create ``path`` and its parents if missing (mode 0700)."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as e:
        raise store_error(f"cannot create directory {path}", e) from e


def store_error(what: str, error: OSError) -> StoreError:
    """Return a StoreError naming what failed and why (disk full, permission denied...)."""
    reason = errno.errorcode.get(error.errno or 0, "") if error.errno else ""
    detail = f"{reason}: {error.strerror}" if reason else str(error)
    return StoreError(f"{what}: {detail}")
