"""The UID index of one folder, in Dovecot's ``dovecot-uidlist`` format (version 3).

The file starts with ``3 V<uidvalidity> N<uidnext> G<guid>`` and then has one line per message,
``<uid> [<ext> ...] :<key>``, where the key is the Maildir base name (the file name before
``:2,``) and ``W<size>`` is the one extension used: the message's size with CRLF line endings.
Lines are appended, never rewritten per delivery, and fsync'd; the file is rewritten (compacted)
only when lines of expunged messages outnumber the live ones.  Writers take the dot lock
``dovecot-uidlist.lock`` (as Dovecot does, ``<pid>:<host>`` in it).  A crash never holds mail
up: the lock is linked into place whole, and one left by a writer that died (its process gone,
made before the last boot, empty for a few seconds, or two minutes old) is stale and broken by
the next writer, which waits longer than that.  Callers serialise threads with their own lock:
an ``UidList`` is not thread-safe by itself.

A torn last line (a crash in the middle of an append) is ignored and cut away before the next
append.  ``uid_next`` is the larger of the header's N and the highest UID + 1, so no UID is ever
given twice, even for a message whose file never arrived.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mailgw.durable import append_whole, replace_file
from mailgw.store.files import FILE_MODE, fsync_dir, store_error, write_all
from mailgw.store.interfaces import StoreBusy

UIDLIST = "dovecot-uidlist"
#: A lock whose holder cannot be checked (another host, or an alive pid: perhaps reused) is stale
#: once it is this old (seconds), as Dovecot's uidlist lock is.
STALE_LOCK_SECONDS = 120.0
#: An empty or unparsable lock (Dovecot writes its pid just after an O_EXCL create) is stale once
#: it is this old (seconds).
UNREADABLE_LOCK_SECONDS = 5.0
#: How long a writer waits for the lock before giving up (seconds): longer than a stale lock can
#: stand, so a crashed writer's lock never makes a delivery fail.
LOCK_TIMEOUT = STALE_LOCK_SECONDS + 30.0
#: Compaction happens when dead lines outnumber live ones and exceed this.
COMPACT_MIN_DEAD = 1000


def _boot_time() -> float:
    """When this host booted (a lock older than that was left before a reboot); 0 if unknown."""
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


_BOOT_TIME = _boot_time()


@contextmanager
def dotlock(path: Path, timeout: float) -> Iterator[None]:
    """Hold the lock file ``path`` for the duration of the block; raise StoreBusy on timeout.

    The lock is made whole, then linked onto its name, so it is never seen empty: its content
    ``<pid>:<host>`` (Dovecot's) goes into a temporary file in the folder's ``tmp/``, which is
    then hard-linked to ``path`` (``link`` fails if the name exists, as ``O_EXCL`` would) and
    removed on release; a crash leaves it in ``tmp/``, which the stale-file sweep empties.  A lock
    found stale (see ``lock_is_stale``) is removed under a ``flock`` of the directory after a
    second look, so two writers that both find one stale cannot remove each other's new lock.
    """
    temp = _lock_content_file(path)
    try:
        held = _acquire(path, temp, timeout)
        try:
            yield
        finally:
            # Remove the lock only if it is still ours, not broken as stale and retaken; the
            # temporary link keeps its inode number from being reused until then.
            try:
                if os.stat(path).st_ino == held:
                    os.unlink(path)
            except FileNotFoundError:
                pass
    finally:
        try:
            os.unlink(temp)
        except OSError:
            pass


def _lock_content_file(path: Path) -> Path:
    """Write ``<pid>:<host>`` into a new file beside the folder's messages in ``tmp/``."""
    temp_dir = path.parent / "tmp"
    if not temp_dir.is_dir():
        temp_dir = path.parent
    temp = temp_dir / f"{path.name}.{os.getpid()}.{uuid.uuid4().hex}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            write_all(fd, f"{os.getpid()}:{socket.gethostname()}\n".encode())
        finally:
            os.close(fd)
    except OSError as e:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise store_error(f"cannot create lock {path}", e) from e
    return temp


def _acquire(path: Path, temp: Path, timeout: float) -> int:
    """Link ``temp`` onto ``path`` once the lock is free; return the lock's inode number."""
    deadline = time.monotonic() + timeout
    pause = 0.002
    while True:
        try:
            os.link(temp, path)
            return os.stat(temp).st_ino
        except FileExistsError:
            pass
        except OSError as e:
            raise store_error(f"cannot create lock {path}", e) from e
        if _break_if_stale(path):
            continue
        if time.monotonic() > deadline:
            raise StoreBusy(f"timed out waiting for lock {path}")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _break_if_stale(path: Path) -> bool:
    """Remove the lock ``path`` if it is stale; True when it is gone (try to take it again)."""
    if not lock_is_stale(path):
        return False
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise store_error(f"cannot open {path.parent}", e) from e
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        # Another writer may have broken it and taken a new lock since the first look.
        if lock_is_stale(path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    finally:
        os.close(dir_fd)  # releases the flock
    return True


def lock_is_stale(path: Path) -> bool:
    """Is the lock ``path`` gone, or left by a writer that no longer holds it?

    Stale: made before this host last booted; older than ``STALE_LOCK_SECONDS``; empty or
    unparsable and older than ``UNREADABLE_LOCK_SECONDS``; or naming a process of this host that
    no longer runs.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        mtime = os.fstat(fd).st_mtime
        content = os.read(fd, 512)
    except OSError:
        return False
    finally:
        os.close(fd)
    age = time.time() - mtime
    if mtime < _BOOT_TIME or age > STALE_LOCK_SECONDS:
        return True
    pid_text, sep, host = content.decode("ascii", "replace").strip().partition(":")
    if not sep or not pid_text.isdigit() or not host:
        return age > UNREADABLE_LOCK_SECONDS
    pid = int(pid_text)
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


class UidList:
    """The UID index of the folder directory ``directory``; created when missing."""

    def __init__(self, directory: Path, new_uid_validity: Callable[[], int]) -> None:
        """Open (or create, with UIDVALIDITY ``new_uid_validity()``) the index."""
        self.directory = directory
        self.path = directory / UIDLIST
        self.lock_path = directory / (UIDLIST + ".lock")
        #: key -> UID of every line in the file (live or dead).
        self.uids: dict[str, int] = {}
        #: key -> size with CRLF line endings, for lines that carry ``W<size>``.
        self.sizes: dict[str, int] = {}
        self.uid_validity = 0
        self._header_next = 1
        self._max_uid = 0
        self._guid = ""
        self._ino = -1
        self._offset = 0
        if not self.path.exists():
            self._create(new_uid_validity())
        self.refresh()
        if self.uid_validity == 0:
            self._set_aside_broken(new_uid_validity())

    @property
    def uid_next(self) -> int:
        """The UID the next message will get."""
        return max(self._header_next, self._max_uid + 1)

    def locked(self) -> Iterator[None]:
        """The writers' dot lock, as a context manager."""
        return dotlock(self.lock_path, LOCK_TIMEOUT)

    def refresh(self) -> None:
        """Read lines appended since the last look (by anyone); reload after a compaction."""
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise store_error(f"cannot read {self.path}", e) from e
        if st.st_ino != self._ino or st.st_size < self._offset:
            self._reset()
            self._ino = st.st_ino
        if st.st_size == self._offset:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError as e:
            raise store_error(f"cannot read {self.path}", e) from e
        end = data.rfind(b"\n") + 1
        if end == 0:
            return
        lines = data[:end].decode("utf-8", "surrogateescape").split("\n")
        lines.pop()
        if self._offset == 0:
            self._parse_header(lines[0])
            del lines[0]
        self._offset += end
        self._parse_lines(lines)

    def add(self, entries: Iterable[tuple[str, int | None]]) -> list[int]:
        """Give each ``(key, crlf_size or None)`` a new UID and append its line durably.

        Call with ``locked()`` held and after ``refresh()``.  A key already listed keeps its UID.
        Return the UIDs in the order of ``entries``.
        """
        result = []
        lines = []
        next_uid = self.uid_next
        for key, size in entries:
            uid = self.uids.get(key)
            if uid is None:
                uid = next_uid
                next_uid += 1
                ext = f" W{size}" if size is not None else ""
                lines.append(f"{uid}{ext} :{key}\n")
                self.uids[key] = uid
                if size is not None:
                    self.sizes[key] = size
            result.append(uid)
        if lines:
            self._append("".join(lines).encode("utf-8", "surrogateescape"))
            self._max_uid = max(self._max_uid, next_uid - 1)
        return result

    def needs_compaction(self, live: int) -> bool:
        """Do dead lines (messages gone) outnumber the ``live`` ones enough to rewrite?"""
        dead = len(self.uids) - live
        return dead > live and dead > COMPACT_MIN_DEAD

    def compact(self, live_keys: Iterable[str]) -> None:
        """Rewrite the file with only ``live_keys``, keeping UIDs and UIDNEXT.  Hold the lock."""
        keep = {key: self.uids[key] for key in live_keys if key in self.uids}
        header = f"3 V{self.uid_validity} N{self.uid_next} G{self._guid}\n"
        body = []
        for key, uid in sorted(keep.items(), key=lambda item: item[1]):
            size = self.sizes.get(key)
            ext = f" W{size}" if size is not None else ""
            body.append(f"{uid}{ext} :{key}\n")
        next_uid = self.uid_next
        self._write_new((header + "".join(body)).encode("utf-8", "surrogateescape"))
        self.uids = keep
        self.sizes = {key: self.sizes[key] for key in keep if key in self.sizes}
        self._header_next = next_uid

    def _create(self, uid_validity: int) -> None:
        header = f"3 V{uid_validity} N1 G{uuid.uuid4().hex}\n".encode()
        tmp = self.directory / f"{UIDLIST}.{os.getpid()}.{uuid.uuid4().hex}.new"
        try:
            self._write_file(tmp, header)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return
            finally:
                os.unlink(tmp)
            fsync_dir(self.directory)
        except OSError as e:
            raise store_error(f"cannot create {self.path}", e) from e

    def _set_aside_broken(self, uid_validity: int) -> None:
        """The header is unreadable: keep the file for inspection, start a new index."""
        with self.locked():
            try:
                os.replace(self.path, self.path.with_name(UIDLIST + ".broken"))
            except OSError as e:
                raise store_error(f"cannot set aside {self.path}", e) from e
            self._create(uid_validity)
            self._reset()
            self.refresh()

    def _reset(self) -> None:
        self.uids = {}
        self.sizes = {}
        self.uid_validity = 0
        self._header_next = 1
        self._max_uid = 0
        self._offset = 0

    def _parse_header(self, line: str) -> None:
        fields = line.split()
        if not fields or fields[0] != "3":
            return
        values = {f[0]: f[1:] for f in fields[1:] if f}
        try:
            validity = int(values.get("V", ""))
            self._header_next = max(1, int(values.get("N", "1")))
        except ValueError:
            return
        if validity > 0:
            self.uid_validity = validity
        self._guid = values.get("G", "") or uuid.uuid4().hex

    def _parse_lines(self, lines: list[str]) -> None:
        uids = self.uids
        highest = self._max_uid
        for line in lines:
            head, sep, key = line.partition(" :")
            if not sep or not key:
                continue
            uid_text, _, ext = head.partition(" ")
            try:
                uid = int(uid_text)
            except ValueError:
                continue
            if uid <= 0:
                continue
            if uid > highest:
                highest = uid
            if key in uids:
                continue
            uids[key] = uid
            if ext:
                for field in ext.split():
                    if field[:1] == "W" and field[1:].isdigit():
                        self.sizes[key] = int(field[1:])
        self._max_uid = highest

    def _append(self, data: bytes) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                append_whole(fd, self._offset, data)  # a torn line is cut away first
            finally:
                os.close(fd)
        except OSError as e:
            raise store_error(f"cannot append to {self.path}", e) from e
        self._offset += len(data)

    def _write_new(self, data: bytes) -> None:
        try:
            replace_file(
                self.path, data, FILE_MODE, crash_steps=("compact.written", "compact.renamed")
            )
            self._ino = os.stat(self.path).st_ino
        except OSError as e:
            raise store_error(f"cannot rewrite {self.path}", e) from e
        self._offset = len(data)

    @staticmethod
    def _write_file(path: Path, data: bytes, exclusive: bool = True) -> None:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        fd = os.open(path, flags, FILE_MODE)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
