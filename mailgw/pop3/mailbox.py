"""The POP3 maildrop: a user's INBOX in the store, seen as ``twisted.mail.pop3.IMailbox``.

Implements Twisted's ``IMailbox`` (0-based indexes, deletion marks, ``sync``) over an
``IFolder`` of mailgw's store, replacing ``twisted.mail.maildir.MaildirMailbox``, which scans the
directory on the reactor, counts sizes with LF line ends and deletes by renaming into a trash
folder.  Here ``load`` (run in a thread) takes the exclusive maildrop lock (``lock``) and then a
snapshot of the list of messages, kept for the session: mail delivered meanwhile shows at the next
login, and a message expunged meanwhile (over IMAP) is reported gone when asked for.  Sizes are
the store's exact CRLF sizes, UIDL is ``<uidvalidity>.<uid>`` (the store's identity of the
message: stable across sessions and restarts, never reused), ``sync`` expunges the marked messages
durably, and ``close`` releases the lock.  Methods that may scan or fsync (``load``,
``getMessage``, ``sync``) block: the session runs them with ``deferToThread``.  ``read_whole``
reads a small message as the snapshot lists it (the folder's ``IListedReader``: one open and
one read, without the store's lock): the session calls it on the reactor thread and falls back
to ``getMessage`` when it fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from twisted.mail.pop3 import IMailbox
from zope.interface import implementer


class NoSuchMessageNumber(ValueError):
    """The message number is not in the maildrop."""


class MessageDeleted(ValueError):
    """The message is marked as deleted in this session."""


@implementer(IMailbox)
class Maildrop:
    """One session's view of a user's INBOX: a fixed list of messages and deletion marks."""

    #: IMailbox: no per-user login delay or expiry policy.
    loginDelay = 0
    messageExpiration = None

    def __init__(self, store: object, address: str) -> None:
        self.address = address
        self._store = store
        self._folder = None
        self._lock = None
        #: The INBOX's IListedReader, for ``read_whole`` on the reactor thread.
        self._reader = None
        self._infos: list = []
        self._deleted: set[int] = set()

    def load(self) -> None:
        """Lock the maildrop, then take the snapshot of the INBOX (blocking: scans the directory).

        Raise ``MaildropLocked`` if another POP3 session holds it, or StoreError."""
        folder = self._store.folder(self.address)
        lock = folder.lock_maildrop()
        try:
            infos = list(folder.messages())
        except BaseException:
            lock.release()
            raise
        self._folder, self._lock, self._infos = folder, lock, infos
        self._reader = folder.reader()
        self._deleted.clear()

    def info(self, index: int) -> object:
        """Return the IMessageInfo at 0-based ``index``.

        Raise NoSuchMessageNumber if there is none, MessageDeleted if it is marked deleted."""
        if not 0 <= index < len(self._infos):
            raise NoSuchMessageNumber(index)
        if index in self._deleted:
            raise MessageDeleted(index)
        return self._infos[index]

    def undeleted(self) -> list[tuple[int, object]]:
        """Return (0-based index, IMessageInfo) of every message not marked deleted."""
        return [(i, info) for i, info in enumerate(self._infos) if i not in self._deleted]

    def stat(self) -> tuple[int, int]:
        """Return the number and total size in octets of the messages not marked deleted."""
        sizes = [info.size for _, info in self.undeleted()]
        return len(sizes), sum(sizes)

    def uidl(self, info: object) -> bytes:
        """Return the unique-id listing of a message: ``<uidvalidity>.<uid>``."""
        return b"%d.%d" % (self._folder.uid_validity, info.uid)

    def listMessages(self, i: int | None = None) -> int | list[int]:
        """IMailbox: the size of message ``i``, or of every message; 0 for deleted ones."""
        if i is None:
            return [0 if n in self._deleted else info.size for n, info in enumerate(self._infos)]
        try:
            return self.info(i).size
        except MessageDeleted:
            return 0

    def getMessage(self, i: int) -> BinaryIO:
        """IMailbox: open message ``i`` for reading (blocking).

        Raise NoSuchMessageNumber, MessageDeleted, or the store's NoSuchMessage if it has been
        expunged by another session since the snapshot."""
        return self._folder.open_message(self.info(i).uid)

    def read_whole(self, i: int) -> bytes | None:
        """Return message ``i`` as sent (CRLF line ends) if the file named in the snapshot holds
        exactly that; None if the store must be asked instead (``getMessage``): the file has
        been renamed (its flags changed over IMAP) or removed since the snapshot, or it is not
        stored with CRLF line ends.  One open and one read of at most the message's size,
        without the store's lock and without a directory scan.

        Raise NoSuchMessageNumber or MessageDeleted as ``info`` does."""
        info = self.info(i)
        return None if self._reader is None else self._reader.listed(info)

    def getUidl(self, i: int) -> bytes:
        """IMailbox: the unique id of message ``i``."""
        return self.uidl(self.info(i))

    def deleteMessage(self, i: int) -> None:
        """IMailbox: mark message ``i`` deleted (it is removed only by ``sync``)."""
        self.info(i)
        self._deleted.add(i)

    def undeleteMessages(self) -> None:
        """IMailbox: clear every deletion mark."""
        self._deleted.clear()

    def sync(self) -> None:
        """IMailbox: expunge the marked messages durably (blocking).  Raise StoreError.

        Messages already removed by another session count as removed."""
        if self._deleted:
            uids = [self._infos[i].uid for i in sorted(self._deleted)]
            self._folder.expunge(uids)
        self._infos = [info for _, info in self.undeleted()]
        self._deleted.clear()

    def close(self) -> None:
        """End the session's view without changing the store (deletion marks are dropped) and
        release the maildrop lock.  Calling it again does nothing."""
        self._infos = []
        self._deleted.clear()
        reader, self._folder, self._reader = self._reader, None, None
        if reader is not None:
            reader.close()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()


def make_avatar(store: object, address: str) -> tuple[Maildrop, Callable[[], None]]:
    """Return the POP3 avatar for ``address`` (a Maildrop, not yet loaded) and its logout."""
    maildrop = Maildrop(store, address)
    return maildrop, maildrop.close
