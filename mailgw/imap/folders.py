"""Folder commands for ``IMAP4Server`` that wait for the store: CREATE, DELETE, RENAME, STATUS,
APPEND (with APPENDUID, RFC 4315), NOOP and CHECK.

A mixin.  Twisted's versions call the account synchronously (CREATE/DELETE/RENAME would block the
reactor on the disk and report success before it happened), open a whole mailbox for STATUS and
APPEND, and announce EXISTS for the APPEND target even when another mailbox is selected.  These
replacements call the account's Deferred-returning methods and answer when the store is done.
"""

from __future__ import annotations

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.mail import imap4

from mailgw.imap.account import NoSuchMailbox, StoreFailed, folder_name
from mailgw.imap.parsing import parse_date_time

_log = Logger()

_Server = imap4.IMAP4Server

#: STATUS items mailgw answers.
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")


def quote(value: bytes) -> bytes:
    """An IMAP quoted string."""
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _mailbox_name(raw: bytes) -> str:
    return imap4._parseMbox(raw)


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


class FolderCommands:
    """The folder and housekeeping commands of an ``IMAP4Server`` subclass."""

    def _answer(self, tag, d, done, missing: bytes = b"[NONEXISTENT]", command=b"") -> None:
        """Answer OK ``done`` (bytes, or a function of the result) or NO when ``d`` fires.

        NO ``missing`` for a folder that does not exist, ``[SERVERBUG]`` or ``[UNAVAILABLE]``
        (logged, naming ``command``) when the store failed."""

        def failed(failure):
            if failure.check(NoSuchMailbox):
                self.sendNegativeResponse(tag, missing + b" No such mailbox")
            elif failure.check(StoreFailed):
                self.sendNegativeResponse(tag, store_failed(failure.value, command))
            elif failure.check(imap4.MailboxException):
                self.sendNegativeResponse(tag, str(failure.value).encode("ascii", "replace"))
            else:
                _log.failure("folder command failed", failure)
                self.sendNegativeResponse(tag, b"[SERVERBUG] Internal error")

        def succeeded(result):
            self.sendPositiveResponse(tag, done(result) if callable(done) else done)

        d.addCallbacks(succeeded, failed)

    def do_CREATE(self, tag, name):
        """CREATE a folder."""
        d = maybeDeferred(self.account.create, _mailbox_name(name))
        self._answer(tag, d, b"CREATE done", command=b"CREATE")

    auth_CREATE = (do_CREATE, _Server.arg_finalastring)
    select_CREATE = auth_CREATE

    def do_DELETE(self, tag, name):
        """DELETE a folder (never INBOX)."""
        name = _mailbox_name(name)
        if folder_name(name) == "INBOX":
            self.sendNegativeResponse(tag, b"INBOX cannot be deleted")
            return
        d = maybeDeferred(self.account.delete, name)
        self._answer(tag, d, b"DELETE done", command=b"DELETE")

    auth_DELETE = (do_DELETE, _Server.arg_finalastring)
    select_DELETE = auth_DELETE

    def do_RENAME(self, tag, oldname, newname):
        """RENAME a folder; RENAME INBOX moves its messages to the new folder."""
        old, new = _mailbox_name(oldname), _mailbox_name(newname)
        if folder_name(new) == "INBOX":
            self.sendNegativeResponse(tag, b"[ALREADYEXISTS] INBOX always exists")
            return
        d = maybeDeferred(self.account.rename, old, new)
        self._answer(tag, d, b"RENAME done", command=b"RENAME")

    auth_RENAME = (do_RENAME, _Server.arg_astring, _Server.arg_finalastring)
    select_RENAME = auth_RENAME

    def do_STATUS(self, tag, mailbox, names):
        """STATUS of a folder, read without selecting it."""
        items = [n.decode("ascii", "replace").upper() for n in names if isinstance(n, bytes)]
        if not items or len(items) != len(names) or not set(items) <= set(STATUS_ITEMS):
            self.sendBadResponse(tag, b"Unknown STATUS item")
            return
        name = _mailbox_name(mailbox)

        def report(status):
            line = b" ".join(b"%s %d" % (k.encode("ascii"), v) for k, v in status.items())
            encoded = quote(name.encode("imap4-utf-7"))
            self.sendUntaggedResponse(b"STATUS " + encoded + b" (" + line + b")")

        d = self.account.status(name, items).addCallback(report)
        self._answer(tag, d, b"STATUS completed", command=b"STATUS")

    auth_STATUS = (do_STATUS, _Server.arg_astring, _Server.arg_plist)
    select_STATUS = auth_STATUS

    def do_APPEND(self, tag, mailbox, flags, date, message):
        """APPEND a message to a folder; the selected one reports EXISTS through its view."""
        name = _mailbox_name(mailbox)
        try:
            when = parse_date_time(date) if date is not None else None
        except ValueError:
            self.sendBadResponse(tag, b"Invalid date-time")
            return
        flag_names = [f.decode("ascii", "replace") for f in flags or () if isinstance(f, bytes)]
        d = self.account.append(name, message, flag_names, when)

        def done(result):
            validity, uid = result
            return b"[APPENDUID %d %d] APPEND completed" % (validity, uid)

        self._answer(tag, d, done, missing=b"[TRYCREATE]", command=b"APPEND")

    auth_APPEND = (
        do_APPEND,
        _Server.arg_astring,
        _Server.opt_plist,
        _Server.opt_datetime,
        _Server.arg_literal,
    )
    select_APPEND = auth_APPEND

    def do_NOOP(self, tag):
        """NOOP; with a mailbox selected, look for changes first (reported before the OK)."""
        if self.mbox is None:
            self.sendPositiveResponse(tag, b"NOOP completed")
            return
        self._answer(tag, self.mbox.refresh(), b"NOOP completed", command=b"NOOP")

    unauth_NOOP = (do_NOOP,)
    auth_NOOP = unauth_NOOP
    select_NOOP = unauth_NOOP
    logout_NOOP = unauth_NOOP

    def checkpoint(self):
        """CHECK: rescan the selected folder (the store is always durable)."""
        return self.mbox.refresh()
