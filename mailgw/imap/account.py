"""A user's folders as Twisted's ``IAccount``, over the store's ``IMailStore``.

Replaces Twisted's ``MemoryAccount``: folder names come from the store ('.' hierarchy
delimiter, ``INBOX`` first and case-insensitive), every call that touches the disk runs with
``deferToThread``, and store errors become ``MailboxException`` so the session answers ``NO``.
The store keeps no subscription list, so every existing folder counts as subscribed.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.mail import imap4
from zope.interface import implementer

from mailgw.imap.mailbox import SessionMailbox, append_file
from mailgw.store.interfaces import (
    FolderExists,
    InvalidFolderName,
    NoSuchFolder,
    StoreError,
)

DELIMITER = "."


class NoSuchMailbox(imap4.MailboxException):
    """The named folder does not exist (APPEND/COPY answer with [TRYCREATE])."""


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

    def _run(self, call, *args) -> Deferred:
        def translate(failure):
            failure.trap(StoreError)
            if failure.check(NoSuchFolder):
                raise NoSuchMailbox("No such mailbox")
            if failure.check(FolderExists):
                raise imap4.MailboxCollision("Mailbox already exists")
            if failure.check(InvalidFolderName):
                raise imap4.MailboxException("Invalid mailbox name")
            raise imap4.MailboxException("Mailbox operation failed")

        return deferToThread(call, *args).addErrback(translate)

    # -- folders --------------------------------------------------------------------------

    def listMailboxes(self, ref: str, wildcard: str) -> Deferred:
        """``[(name, FolderInfo)]`` for the folders matching ``ref`` + ``wildcard``."""
        pattern = imap4.wildcardToRegexp(ref + wildcard, DELIMITER)

        def matching(names):
            result = []
            for name in names:
                if not pattern.match(name) and not (name == "INBOX" and pattern.match("inbox")):
                    continue
                children = any(other.startswith(name + DELIMITER) for other in names)
                flags = ["\\HasChildren" if children else "\\HasNoChildren"]
                result.append((name, FolderInfo(flags)))
            return result

        return self._run(self._store.list_folders, self.address).addCallback(matching)

    def select(self, name: str, rw: bool = True) -> Deferred:
        """Open a folder for this session: a SessionMailbox, or None if there is none."""
        store, address = self._store, self.address

        def work():
            folder = store.folder(address, folder_name(name))
            return folder, folder.messages()

        def opened(result):
            folder, infos = result
            return SessionMailbox(store, folder, infos, bool(rw), self.watched)

        def missing(failure):
            failure.trap(NoSuchMailbox, imap4.MailboxException)
            return None

        return self._run(work).addCallbacks(opened, missing)

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
        """Rename a folder and its children."""
        old, new = folder_name(oldname), folder_name(newname)
        return self._run(self._store.rename_folder, self.address, old, new).addCallback(
            lambda _: True
        )

    def isSubscribed(self, name: str) -> bool:
        """Every folder counts as subscribed (the store keeps no subscription list)."""
        return True

    def subscribe(self, name: str) -> bool:
        """Accepted: every folder counts as subscribed."""
        return True

    def unsubscribe(self, name: str) -> bool:
        """Refused: the store keeps no subscription list."""
        raise imap4.MailboxException("Subscriptions are not supported; all folders are listed")

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

        return self._run(work)

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
