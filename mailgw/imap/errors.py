"""What can go wrong below an IMAP command, and the ``NO`` each failure is answered with.

Store calls run in threads through ``in_thread``, which turns the store's errors into the ones
here: ``NoSuchMailbox`` for a folder that does not exist, ``MailboxExists``, ``MailboxError``
for a name no folder can have, and ``StoreFailed`` when the store itself failed (logged with the
user and folder, answered ``[UNAVAILABLE]`` or ``[SERVERBUG]``, RFC 5530).  ``refusal`` is the
one place that maps a failure to the text of the tagged NO.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailgw.store.interfaces import (
    FolderExists,
    InvalidFolderName,
    NoSuchFolder,
    StoreBusy,
    StoreError,
)

_log = Logger()


class MailboxError(Exception):
    """A command cannot be carried out on a mailbox; the text is the NO's."""


class NoSuchMailbox(MailboxError):
    """The named folder does not exist (APPEND/COPY answer with [TRYCREATE])."""


class MailboxExists(MailboxError):
    """The folder to create already exists."""


class ReadOnly(MailboxError):
    """The mailbox was selected with EXAMINE: nothing in it may change."""


class StoreFailed(MailboxError):
    """The store failed (disk, permissions, corrupt index, lock timeout), not the client.

    ``cause`` is the store's error as a Failure (with its traceback), for the log; ``user`` and
    ``folder`` (None when no one folder was concerned) say where; ``code`` is the RFC 5530
    response code to answer with: ``[UNAVAILABLE]`` for a temporary failure (``StoreBusy``),
    else ``[SERVERBUG]``."""

    def __init__(self, cause: Failure, user: str, folder: str | None) -> None:
        super().__init__("Mailbox operation failed")
        self.cause = cause
        self.user = user
        self.folder = folder
        self.temporary = cause.check(StoreBusy) is not None
        self.code = b"[UNAVAILABLE]" if self.temporary else b"[SERVERBUG]"


def in_thread(user: str, folder: str | None, call, *args) -> Deferred:
    """``call(*args)`` in a thread, its store errors translated (``folder``: the folder
    concerned, for the log of a ``StoreFailed``)."""

    def translate(failure: Failure):
        failure.trap(StoreError, MailboxError)
        if failure.check(MailboxError):
            return failure
        if failure.check(NoSuchFolder):
            raise NoSuchMailbox("No such mailbox")
        if failure.check(FolderExists):
            raise MailboxExists("[ALREADYEXISTS] Mailbox already exists")
        if failure.check(InvalidFolderName):
            raise MailboxError("[CANNOT] Invalid mailbox name")
        raise StoreFailed(failure, user, folder)

    return deferToThread(call, *args).addErrback(translate)


def store_failed(error: StoreFailed, command: bytes) -> bytes:
    """Log the store's failure (with the user and folder) and return the text of the NO reply:
    ``[UNAVAILABLE]`` (try again) or ``[SERVERBUG]`` (RFC 5530)."""
    _log.failure(
        "IMAP {command} for {user}, folder {folder!r}: the store failed",
        error.cause,
        command=command.decode("ascii", "replace"),
        user=error.user,
        folder=error.folder,
    )
    if error.temporary:
        return error.code + b" " + command + b" failed: mailbox busy, try again later"
    return error.code + b" " + command + b" failed: internal error"


def refusal(failure: Failure, command: bytes, missing: bytes = b"[NONEXISTENT]") -> bytes:
    """The text of the NO that answers ``command`` failing with ``failure``: ``missing`` for a
    folder that does not exist, the store's code (logged) when it failed, ``[READ-ONLY]``, the
    error's own text for other mailbox errors, and ``[SERVERBUG]`` (logged) for anything else."""
    error = failure.value
    if isinstance(error, NoSuchMailbox):
        return missing + b" No such mailbox"
    if isinstance(error, StoreFailed):
        return store_failed(error, command)
    if isinstance(error, ReadOnly):
        return b"[READ-ONLY] Mailbox is read-only"
    if isinstance(error, MailboxError):
        return str(error).encode("ascii", "replace") or command + b" failed"
    _log.failure("IMAP {command} failed", failure, command=command.decode("ascii", "replace"))
    return b"[SERVERBUG] " + command + b" failed: internal error"
