"""A user's folders over the store's ``IMailStore``, for one logged-in IMAP session.

Folder names come from the store ('.' hierarchy delimiter, ``INBOX`` first and
case-insensitive), every call that touches the disk runs in a thread (``errors.in_thread``), and
store errors come back as the failures of ``mailgw.imap.errors``.  Subscriptions live in
Dovecot's ``subscriptions`` file (``mailgw.store.subscriptions``); a new user gets the
SPECIAL-USE folders (RFC 6154) Sent, Drafts, Trash, Junk and Archive, subscribed, at their first
login.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from mailgw.imap.errors import MailboxError, MailboxExists, NoSuchMailbox, StoreFailed, in_thread
from mailgw.imap.listing import DELIMITER
from mailgw.imap.mailbox import SessionMailbox, folder_snapshot
from mailgw.imap.parsing import storable_flags
from mailgw.store.interfaces import FolderExists, NoSuchMessage
from mailgw.store.subscriptions import change_subscriptions, read_subscriptions

#: The folders every new user gets, with their RFC 6154 attribute.
SPECIAL_USE = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}


class IAccount(Interface):
    """The avatar interface an IMAP session asks the portal for: a ``MailAccount``."""


def folder_name(name: str) -> str:
    """The store's name for an IMAP mailbox name: ``INBOX`` in any case means the INBOX; a
    name that was not valid modified UTF-7 on the wire (``mutf7.Undecodable``) fails with
    ``MailboxError``."""
    reason = getattr(name, "undecodable", None)
    if reason is not None:
        raise MailboxError(f"Mailbox name is not valid: {reason}")
    if name.upper() == "INBOX":
        return "INBOX"
    return name


@implementer(IAccount)
class MailAccount:
    """One logged-in user's view of their folders."""

    def __init__(self, store, address: str) -> None:
        self._store = store
        self.address = address
        #: Mailboxes a session is showing (watching their folder for changes).
        self.watched: set = set()

    def _run(self, call, *args, folder: str | None = None) -> Deferred:
        return in_thread(self.address, folder, call, *args)

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

    def names(self) -> Deferred:
        """``(folder names, subscribed names)`` of the user, for LIST and LSUB."""
        store, address = self._store, self.address

        def work():
            subscribed = read_subscriptions(store.user_dir(address)) or []
            return store.list_folders(address), subscribed

        return self._run(work)

    def target(self, name: str) -> Deferred:
        """The store folder ``name`` (for COPY/MOVE); fails with NoSuchMailbox."""
        name = folder_name(name)
        return self._run(self._store.folder, self.address, name, folder=name)

    def select(self, name: str, writeable: bool = True) -> Deferred:
        """Open a folder for this session: a SessionMailbox, or None if there is none; fails
        with ``StoreFailed`` if the store cannot open it."""
        store, address, name = self._store, self.address, folder_name(name)

        def work():
            folder = store.folder(address, name)
            return folder, folder_snapshot(folder)

        def opened(result):
            folder, infos = result
            return SessionMailbox(store, folder, infos, writeable, self.watched)

        def missing(failure):
            if failure.check(StoreFailed):
                return failure
            failure.trap(MailboxError)  # no such folder, or a name none can have
            return None

        # A folder already open and unchanged on disk is selected without a thread hop.
        folder = store.open_folder(address, name)
        infos = folder.messages_if_fresh() if folder is not None else None
        if infos is not None:
            return succeed(opened((folder, folder_snapshot(folder, infos))))
        return self._run(work, folder=name).addCallbacks(opened, missing)

    def create(self, name: str) -> Deferred:
        """Create a folder (a trailing '.' only says it will hold children)."""
        name = folder_name(folder_name(name).rstrip(DELIMITER))
        if name == "INBOX":
            raise MailboxExists("[ALREADYEXISTS] INBOX always exists")
        return self._run(self._store.create_folder, self.address, name, folder=name)

    def delete(self, name: str) -> Deferred:
        """Delete a folder and its messages."""
        name = folder_name(name)
        return self._run(self._store.delete_folder, self.address, name, folder=name)

    def rename(self, oldname: str, newname: str) -> Deferred:
        """Rename a folder and its children; renaming INBOX moves its messages to a new
        folder and leaves INBOX empty (RFC 3501 6.3.5)."""
        old, new = folder_name(oldname), folder_name(newname)
        store, address = self._store, self.address
        if old != "INBOX":
            return self._run(store.rename_folder, address, old, new, folder=old)

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

        return self._run(move_inbox, folder=old)

    def subscribe(self, name: str) -> Deferred:
        """Add a folder name (existing or not) to the subscriptions file."""
        user_dir = self._store.user_dir(self.address)
        return self._run(change_subscriptions, user_dir, [folder_name(name)], ())

    def unsubscribe(self, name: str) -> Deferred:
        """Remove a folder name from the subscriptions file (NoSuchMailbox if it was not)."""
        user_dir = self._store.user_dir(self.address)
        name = folder_name(name)

        def work():
            if name not in (read_subscriptions(user_dir) or []):
                raise NoSuchMailbox("Not subscribed")
            change_subscriptions(user_dir, (), [name])

        return self._run(work)

    # -- messages -------------------------------------------------------------------------

    def append(self, name: str, messages) -> Deferred:
        """Store messages (``AppendMessage``s: data, flags, internal date) into a folder, in
        order; fires with (UIDVALIDITY, [UID, ...])."""
        store, address, name = self._store, self.address, folder_name(name)

        def work():
            folder = store.folder(address, name)
            uids = [
                folder.append(m.data, storable_flags(m.flags), m.internal_date) for m in messages
            ]
            return folder.uid_validity, uids

        return self._run(work, folder=name)

    def status(self, name: str, items) -> Deferred:
        """STATUS items of a folder, without selecting it: {item: int}, in the order asked.
        SIZE (RFC 8438) and DELETED come from the folder's index (no message is read),
        HIGHESTMODSEQ from the folder."""
        name = folder_name(name)

        def report(mailbox: SessionMailbox | None) -> Deferred:
            if mailbox is None:
                raise NoSuchMailbox("No such mailbox")
            folder = mailbox.folder
            infos = folder.messages_if_fresh()
            found = succeed(infos) if infos is not None else self._run(folder.messages)
            return found.addCallback(lambda infos: _status(mailbox, infos, items))

        return self.select(name, False).addCallback(report)

    def logout(self) -> None:
        """The session ended: stop watching every folder it showed."""
        for mailbox in list(self.watched):
            mailbox.close()


def _status(mailbox: SessionMailbox, infos, items) -> dict[str, int]:
    extra = {
        "SIZE": lambda: sum(info.size for info in infos),
        "DELETED": lambda: sum(1 for info in infos if "\\Deleted" in info.flags),
        "HIGHESTMODSEQ": lambda: mailbox.folder.highest_modseq,
    }
    plain = mailbox.status([item for item in items if item not in extra])
    return {item: plain[item] if item in plain else extra[item]() for item in items}


def make_avatar(store, address: str) -> tuple:
    """The realm's factory for IMAP: ``(MailAccount, logout callable)``."""
    account = MailAccount(store, address)
    return account, account.logout
