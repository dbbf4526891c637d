"""The exclusive POP3 maildrop lock (RFC 1939 section 4): one POP3 session per maildrop at once.

Twisted's POP3 takes no lock, so two sessions of one user can both mark, and both expunge, the
same messages.  Here a session holds its maildrop's lock from login until UPDATE ends or the
connection goes away; a second login meanwhile is refused with ``[IN-USE]``.

Two layers, both released by the operating system when the process dies, so a crash never
leaves a maildrop locked (there is no dotlock file to go stale):

- an in-process registry of locked maildrops, which is what excludes sessions of one server;
- ``flock`` on a lock file in the maildrop's directory, which also excludes a second mailgw
  process on the same store.  The file stays behind; without an open descriptor holding the
  ``flock`` it locks nothing.

The lock is only about POP3: SMTP delivery and IMAP never look at it.  It belongs to the store
(``IFolder.lock_maildrop``): how a maildrop is locked depends on how it is kept.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from mailgw.store.interfaces import MaildropLocked, StoreError

#: The lock file's name inside the maildrop directory (next to ``cur``, ``new``, ``tmp``).
LOCK_FILE_NAME = "mailgw-pop3.lock"

_registry_lock = threading.Lock()
_held: set[str] = set()


class MaildropLock:
    """The hold on one maildrop; ``release`` gives it back (calling it again does nothing)."""

    def __init__(self, key: str, fd: int | None) -> None:
        self._key = key
        self._fd = fd
        self._held = True

    def release(self) -> None:
        """Unlock the maildrop."""
        with _registry_lock:
            if not self._held:
                return
            self._held = False
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            _held.discard(self._key)


def acquire(address: str, directory: Path | None) -> MaildropLock:
    """Lock the maildrop of ``address`` whose files are in ``directory`` (None for a store
    without one: the in-process lock only, by address).  Blocking (opens a file).

    Raise MaildropLocked if a session holds it, StoreError if the lock file cannot be opened."""
    key = address if directory is None else str(directory)
    with _registry_lock:
        if key in _held:
            raise MaildropLocked(key)
        _held.add(key)
    try:
        fd = None if directory is None else _flock(directory / LOCK_FILE_NAME)
    except BaseException:
        with _registry_lock:
            _held.discard(key)
        raise
    return MaildropLock(key, fd)


def _flock(path: Path) -> int:
    """Open ``path`` and take its exclusive flock without waiting; return the descriptor."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise StoreError(f"cannot open the POP3 lock file {path}: {error.strerror}") from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MaildropLocked(str(path)) from None
    except OSError as error:
        os.close(fd)
        raise StoreError(f"cannot lock {path}: {error.strerror}") from error
    return fd
