"""A user's folders as Twisted's ``IAccount``, over the store's ``IMailStore``.

Replaces Twisted's ``MemoryAccount``: folder names come from the store ('.' hierarchy
delimiter, ``INBOX`` first and case-insensitive), every call that touches the disk runs with
``deferToThread``, and store errors become ``MailboxException`` so the session answers ``NO``:
``NoSuchMailbox`` for a folder that does not exist, ``StoreFailed`` when the store itself failed.
Subscriptions live in Dovecot's ``subscriptions`` file (``mailgw.store.subscriptions``); a new
user gets the SPECIAL-USE folders (RFC 6154) Sent, Drafts, Trash, Junk and Archive, subscribed,
at their first login.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.mail import imap4
from zope.interface import implementer

from mailgw.imap.mailbox import SessionMailbox, append_file, folder_snapshot
from mailgw.store.interfaces import (
    FolderExists,
    InvalidFolderName,
    NoSuchFolder,
    NoSuchMessage,
    StoreBusy,
    StoreError,
)
from mailgw.store.subscriptions import change_subscriptions, read_subscriptions

DELIMITER = "."

#: The folders every new user gets, with their RFC 6154 attribute.
SPECIAL_USE = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}


class NoSuchMailbox(imap4.MailboxException):
    """The named folder does not exist (APPEND/COPY answer with [TRYCREATE])."""


class StoreFailed(imap4.MailboxException):
    """The store failed (disk, permissions, corrupt index, lock timeout), not the client.

    ``cause`` is the store's error as a Failure (with its traceback), for the log; ``user`` and
    ``folder`` (None when no one folder was concerned) say where; ``code`` is the RFC 5530
    response code to answer with: ``[UNAVAILABLE]`` for a temporary failure (``StoreBusy``),
    else ``[SERVERBUG]``."""

    def __init__(self, cause, user: str, folder: str | None) -> None:
        super().__init__("Mailbox operation failed")
        self.cause = cause
        self.user = user
        self.folder = folder
        self.temporary = cause.check(StoreBusy) is not None
        self.code = b"[UNAVAILABLE]" if self.temporary else b"[SERVERBUG]"


def folder_name(name: str) -> str:
    """The store's name for an IMAP mailbox name: ``INBOX`` in any case means the INBOX."""
    if name.upper() == "INBOX":
        return "INBOX"
    return name


@implementer(imap4.IMailboxInfo)
class FolderInfo:
    """What LIST shows of a folder."""

    def __init__(self, flags: list) -> None:
        self._flags = flags

    def getFlags(self) -> list:
        """LIST attributes, e.g. ['\\\\HasNoChildren']."""
        return self._flags

    def getHierarchicalDelimiter(self) -> str:
        """'.'."""
        return DELIMITER


@implementer(imap4.IAccount, imap4.INamespacePresenter)
class MailAccount:
    """One logged-in user's view of their folders."""

    def __init__(self, store, address: str) -> None:
        self._store = store
        self.address = address
        #: Mailboxes a session is showing (watching their folder for changes).
        self.watched: set = set()

    def _run(self, call, *args, folder: str | None = None) -> Deferred:
        """``call(*args)`` in a thread, its store errors as ``MailboxException``s (``folder``:
        the folder concerned, for the log of a ``StoreFailed``)."""

        def translate(failure):
            failure.trap(StoreError, NoSuchMailbox)
            if failure.check(NoSuchMailbox):
                raise failure.value
            if failure.check(NoSuchFolder):
                raise NoSuchMailbox("No such mailbox")
            if failure.check(FolderExists):
                raise imap4.MailboxCollision("Mailbox already exists")
            if failure.check(InvalidFolderName):
                raise imap4.MailboxException("Invalid mailbox name")
            raise StoreFailed(failure, self.address, folder)

        return deferToThread(call, *args).addErrback(translate)

    # -- folders --------------------------------------------------------------------------

    def prepare(self) -> Deferred:
        """At login: give a new user (no subscriptions file yet) the SPECIAL-USE folders."""
        store, address = self._store, self.address

        def work():
            user_dir = store.user_dir(address)
            if read_subscriptions(user_dir) is not None:
                return
            existing = set(store.list_folders(address))
            for name in SPECIAL_USE:
                if name not in existing:
                    try:
                        store.create_folder(address, name)
                    except FolderExists:
                        pass
            change_subscriptions(user_dir, add=["INBOX", *SPECIAL_USE])

        return self._run(work)

    def listMailboxes(self, ref: str, wildcard: str, subscribed: bool = False) -> Deferred:
        """``[(name, FolderInfo)]`` for the folders matching ``ref`` + ``wildcard`` (only the
        subscribed ones, LSUB, if ``subscribed``)."""
        pattern = imap4.wildcardToRegexp(ref + wildcard, DELIMITER)
        store, address = self._store, self.address

        def work():
            names = store.list_folders(address)
            subs = read_subscriptions(store.user_dir(address)) if subscribed else None
            return names, subs

        def matching(result):
            names, subs = result
            shown = names if subs is None else subs
            existing = set(names)
            found = []
            for name in shown:
                if not pattern.match(name) and not (name == "INBOX" and pattern.match("inbox")):
                    continue
                children = any(other.startswith(name + DELIMITER) for other in names)
                flags = ["\\HasChildren" if children else "\\HasNoChildren"]
                if name in SPECIAL_USE:
                    flags.append(SPECIAL_USE[name])
                if name not in existing:
                    flags = ["\\Noselect"]
                found.append((name, FolderInfo(flags)))
            return found

        return self._run(work).addCallback(matching)

    def target(self, name: str) -> Deferred:
        """The store folder ``name`` (for COPY/MOVE); fails with NoSuchMailbox."""
        name = folder_name(name)
        return self._run(self._store.folder, self.address, name, folder=name)

    def select(self, name: str, rw: bool = True) -> Deferred:
        """Open a folder for this session: a SessionMailbox, or None if there is none; fails
        with ``StoreFailed`` if the store cannot open it."""
        store, address = self._store, self.address

        def work():
            folder = store.folder(address, folder_name(name))
            return folder, folder_snapshot(folder)

        def opened(result):
            folder, infos = result
            return SessionMailbox(store, folder, infos, bool(rw), self.watched)

        def missing(failure):
            if failure.check(StoreFailed):
                return failure
            failure.trap(imap4.MailboxException)  # no such folder, or a name none can have
            return None

        # A folder already open and unchanged on disk is selected without a thread hop.
        folder = store.open_folder(address, folder_name(name))
        infos = folder.messages_if_fresh() if folder is not None else None
        if infos is not None:
            return succeed(opened((folder, folder_snapshot(folder, infos))))
        return self._run(work, folder=folder_name(name)).addCallbacks(opened, missing)

    def create(self, pathspec: str) -> Deferred:
        """Create a folder (a trailing '.' only says it will hold children)."""
        name = folder_name(pathspec.rstrip(DELIMITER))
        if name == "INBOX":
            raise imap4.MailboxCollision("INBOX always exists")
        return self._run(self._store.create_folder, self.address, name).addCallback(lambda _: True)

    def delete(self, name: str) -> Deferred:
        """Delete a folder and its messages."""
        return self._run(self._store.delete_folder, self.address, folder_name(name)).addCallback(
            lambda _: True
        )

    def rename(self, oldname: str, newname: str) -> Deferred:
        """Rename a folder and its children; renaming INBOX moves its messages to a new
        folder and leaves INBOX empty (RFC 3501 6.3.5)."""
        old, new = folder_name(oldname), folder_name(newname)
        store, address = self._store, self.address
        if old != "INBOX":
            return self._run(store.rename_folder, address, old, new).addCallback(lambda _: True)

        def move_inbox():
            inbox = store.folder(address)
            target = store.create_folder(address, new)
            moved = []
            for info in inbox.messages():
                try:
                    with inbox.open_message(info.uid) as fp:
                        data = fp.read()
                except NoSuchMessage:
                    continue
                target.append(data, info.flags, info.internal_date)
                moved.append(info.uid)
            inbox.expunge(moved)
            return True

        return self._run(move_inbox)

    def subscribe(self, name: str) -> Deferred:
        """Add a folder name (existing or not) to the subscriptions file."""
        user_dir = self._store.user_dir(self.address)
        return self._run(change_subscriptions, user_dir, [folder_name(name)], ())

    def unsubscribe(self, name: str) -> Deferred:
        """Remove a folder name from the subscriptions file (NO if it was not there)."""
        user_dir = self._store.user_dir(self.address)
        name = folder_name(name)

        def work():
            if name not in (read_subscriptions(user_dir) or []):
                raise NoSuchMailbox("Not subscribed")
            change_subscriptions(user_dir, (), [name])

        return self._run(work)

    def addMailbox(self, name: str, mbox=None) -> Deferred:
        """Create a folder (Twisted's older spelling of create)."""
        return self.create(name)

    # -- messages -------------------------------------------------------------------------

    def append(self, name: str, message, flags, date: float | None) -> Deferred:
        """Store a message read from the file ``message`` into a folder; return (UIDVALIDITY,
        UID)."""
        store, address = self._store, self.address

        def work():
            folder = store.folder(address, folder_name(name))
            uid = append_file(folder, message, flags, date)
            return folder.uid_validity, uid

        return self._run(work, folder=folder_name(name))

    def status(self, name: str, names: list) -> Deferred:
        """STATUS items of a folder, without selecting it: {name: int}."""
        return self.select(name, False).addCallback(self._status, names)

    def _status(self, mailbox: SessionMailbox | None, names: list) -> dict:
        if mailbox is None:
            raise NoSuchMailbox("No such mailbox")
        return imap4.statusRequestHelper(mailbox, names)

    def logout(self) -> None:
        """The session ended: stop watching every folder it showed."""
        for mailbox in list(self.watched):
            mailbox.close()

    # -- INamespacePresenter --------------------------------------------------------------

    def getPersonalNamespaces(self) -> list:
        """One personal namespace: no prefix, '.' delimiter."""
        return [["", DELIMITER]]

    def getSharedNamespaces(self) -> None:
        """No shared namespaces."""
        return None

    def getUserNamespaces(self) -> None:
        """No other users' namespaces."""
        return None


def make_avatar(store, address: str) -> tuple:
    """The realm's factory for IMAP: ``(IAccount provider, logout callable)``."""
    account = MailAccount(store, address)
    return account, account.logout
