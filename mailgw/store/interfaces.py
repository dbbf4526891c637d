"""The seam between the protocols and the mail store.

Protocols (SMTP, POP3, IMAP) see mail only through these interfaces; a backend other than Maildir
can be added by providing them.  Everything here is synchronous and thread-safe: the Twisted glue
in each protocol package runs slow calls (anything that fsyncs or scans a directory) with
``deferToThread``.  The store imports nothing of Twisted's networking.

Types are fixed once: message data is ``bytes``, user addresses and folder names are ``str``,
paths are ``pathlib.Path``.  Folder names use ``.`` as the hierarchy delimiter (as Dovecot's
Maildir++ layout does) and ``INBOX`` is the user's top Maildir.
"""

from __future__ import annotations

from typing import NamedTuple

from zope.interface import Attribute, Interface

#: The IMAP system flags kept in a Maildir file name's ``:2,`` info part, with their letters.
SYSTEM_FLAGS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}


class StoreError(Exception):
    """The store could not carry out an operation (disk full, permissions, corrupt data)."""


class StoreBusy(StoreError):
    """A lock the operation needs was not obtained in time: a temporary failure, try again."""


class InvalidFolderName(StoreError):
    """A folder name is not allowed (``..``, ``/``, control characters, ``new``/``cur``...)."""


class NoSuchFolder(StoreError):
    """The folder does not exist."""


class FolderExists(StoreError):
    """The folder already exists."""


class NoSuchMessage(StoreError):
    """The message (by UID) is not, or no longer, in the folder."""


class ModifiedSince(StoreError):
    """A conditional flag change was refused: the message changed after the given modseq.

    ``info`` is the message's IMessageInfo as it is now (its flags and modseq)."""

    def __init__(self, message: str, info: object) -> None:
        super().__init__(message)
        self.info = info


#: How ``IFolder.set_flags_many`` combines the flags given with those a message has.
FLAGS_REPLACE, FLAGS_ADD, FLAGS_REMOVE = "replace", "add", "remove"


class FlagsSet(NamedTuple):
    """What ``IFolder.set_flags_many`` did."""

    #: The new IMessageInfo of each message whose flags it changed (or moved out of new/).
    infos: list
    #: The UIDs it left alone because they changed after ``unchanged_since``.
    modified: list


class IMessageInfo(Interface):
    """An immutable snapshot of one stored message's metadata."""

    uid = Attribute("int: the IMAP UID, unique in its folder, never reused.")
    key = Attribute("str: the Maildir base name (file name before ':2,'), stable for the message.")
    flags = Attribute("frozenset[str]: IMAP flags, e.g. '\\\\Seen' (see SYSTEM_FLAGS).")
    size = Attribute("int: size in octets with CRLF line endings (what POP3 and IMAP report).")
    internal_date = Attribute("float: the message's internal date, a POSIX timestamp.")
    recent = Attribute("bool: the file is still in new/ (no client has seen it yet).")
    modseq = Attribute(
        "int >= 1: the modification sequence (RFC 7162) of the message's last change: its "
        "delivery or append, or a change of its flags (keywords too; not \\Recent).  Messages "
        "of a folder that had no modseq index yet start at 1."
    )


class IFolderListener(Interface):
    """Told of changes to one folder, whoever made them.  Called on the store's dispatcher.

    Every IMessageInfo in an event carries its new ``modseq``; the folder's
    ``highest_modseq`` is at least the largest modseq of any event already sent."""

    def messages_added(folder_id: tuple[str, str], infos: list) -> None:
        """New messages (IMessageInfo list, ascending UIDs) were delivered or appended."""

    def flags_changed(folder_id: tuple[str, str], infos: list) -> None:
        """The flags of these messages (new IMessageInfo snapshots) changed.

        Also sent, with the flags unchanged, when only the modseq moved (a change that another
        process recorded, or one undone before it was made, as after a crash)."""

    def messages_expunged(folder_id: tuple[str, str], uids: list) -> None:
        """These UIDs (ascending) were removed from the folder for good.

        ``uids`` is a list with one more attribute, ``modseq``: the modseq of the expunge (the
        largest, if they were expunged in more than one change; 0 when the folder itself was
        deleted)."""


class MaildropLocked(Exception):
    """Another POP3 session holds the maildrop (``IFolder.lock_maildrop``)."""


class IListedReader(Interface):
    """Reads messages as an IMessageInfo of a listing names them: at once, without the
    folder's lock, falling back to ``IFolder.open_message`` when the listing is out of date.
    What protocols send message octets with; they never see where or how messages are kept."""

    def whole(info) -> bytes:
        """The whole message (CRLF line ends).  Raise NoSuchMessage if it is gone."""

    def listed(info) -> bytes | None:
        """The whole message if it is still as listed, else None (ask ``whole``)."""

    def head(info) -> bytes:
        """The message's first octets, at least through the empty line ending its header."""

    def stream(info):
        """A binary file object of the message as listed, to read piece by piece; or None."""

    def cached(info, count: int | None = None) -> bytes:
        """The first ``count`` octets (all if None), only if they can be had without waiting
        for the disk; else raise ``mailgw.store.reading.NotCached``."""

    def cached_head(info) -> bytes:
        """``head``, only if it can be had without waiting for the disk (else NotCached)."""

    def close() -> None:
        """Give back what the reader holds open."""


class IFolder(Interface):
    """One mail folder (a Maildir or Maildir++ subfolder) of one user."""

    address = Attribute("str: the owner's address.")
    name = Attribute("str: the folder name, 'INBOX' or e.g. 'Sent', 'Archive.2024'.")
    uid_validity = Attribute("int: UIDVALIDITY, fixed for the life of the folder.")
    uid_next = Attribute("int: the UID the next message will get.")
    highest_modseq = Attribute(
        "int >= 1: the highest modseq of the folder (RFC 7162 HIGHESTMODSEQ), of its messages "
        "and its expunges; 1 for a new empty folder.  It never goes down, across restarts and "
        "crashes too, and every later change gets a larger one."
    )

    def messages() -> tuple:
        """Return IMessageInfo snapshots of all messages, in ascending UID order.

        The same tuple object is returned again while the folder is unchanged.

        Picks up changes made by other programs (a rescan, only when the directory changed)."""

    def get(uid: int):
        """Return the IMessageInfo for ``uid``; raise NoSuchMessage."""

    def open_message(uid: int):
        """Return a binary file object reading the message as stored (CRLF line endings).

        Raise NoSuchMessage if it is gone."""

    def reader():
        """A new IListedReader of this folder's messages (for one thread; close it after)."""

    def lock_maildrop():
        """Take the exclusive POP3 maildrop lock (RFC 1939 4) of this folder, for every
        process on the store, without waiting; return the hold (``release()`` gives it
        back; a process that dies gives it back too).  Raise MaildropLocked if it is held."""

    def append(data: bytes, flags=(), internal_date: float | None = None) -> int:
        """Store ``data`` durably (file and directories fsync'd) and return its UID."""

    def set_flags(uid: int, flags, unchanged_since: int | None = None) -> object:
        """Replace the flags of ``uid``; return the new IMessageInfo.  Raise NoSuchMessage.

        With ``unchanged_since`` (RFC 7162 UNCHANGEDSINCE), refuse, atomically, if the
        message's modseq is above it: raise ModifiedSince (carrying the current info) and
        change nothing.  A change takes a new modseq; setting the flags it has takes none."""

    def set_flags_many(uids, flags, mode: str = FLAGS_REPLACE, unchanged_since=None) -> FlagsSet:
        """Replace (FLAGS_REPLACE), add (FLAGS_ADD) or remove (FLAGS_REMOVE) ``flags`` on each
        of ``uids``: the batch form of ``set_flags`` (IMAP STORE), one modseq for all of it
        and one durable write of each kind, however many messages.

        Return a FlagsSet ``(infos, modified)``: the new IMessageInfo of each message changed
        (ascending UIDs) and the UIDs refused because their modseq is above ``unchanged_since``
        (RFC 7162 MODIFIED; none without it).  UIDs not in the folder are skipped.  Raise
        StoreError for a flag that cannot be stored, before anything changes."""

    def changed_since(modseq: int) -> list:
        """IMessageInfo of the messages whose modseq is above ``modseq``, ascending UIDs
        (RFC 7162 CHANGEDSINCE)."""

    def vanished_since(modseq: int) -> list | None:
        """UIDs expunged at a modseq above ``modseq``, ascending (QRESYNC's VANISHED).

        None when the store no longer knows that far back (it remembers at least the latest
        ``mailgw.store.modseq.VANISHED_KEPT`` expunges) or never gave ``modseq``: then compare
        with the UIDs the client knows instead."""

    def mark_seen_by_client(uids) -> None:
        """Move these messages from new/ to cur/: they are no longer \\Recent for anyone."""

    def expunge(uids) -> list:
        """Remove these messages durably; return the UIDs actually removed."""


class IIncomingMessage(Interface):
    """A message being received (for example over SMTP DATA), in memory or a temporary file."""

    size = Attribute("int: octets written so far.")

    def write(data: bytes) -> None:
        """Append data (with CRLF line endings) to the message."""

    def commit(addresses) -> dict:
        """Deliver durably to the INBOX of each address (hard links; one fsync of the data).

        Return {address: uid}.  Only after this returns is the message acknowledged.  On error
        raise StoreError and leave no visible partial message."""

    def abort() -> None:
        """Throw the message away."""


class IMailStore(Interface):
    """All users' folders."""

    def folder(address: str, name: str = "INBOX"):
        """Return the IFolder; raise NoSuchFolder (INBOX always exists: it is created on use)."""

    def list_folders(address: str) -> list:
        """Return the names of the user's folders, 'INBOX' first."""

    def create_folder(address: str, name: str):
        """Create a folder; raise InvalidFolderName or FolderExists.  Return the IFolder."""

    def delete_folder(address: str, name: str) -> None:
        """Delete a folder and its messages; INBOX cannot be deleted."""

    def rename_folder(address: str, old: str, new: str) -> None:
        """Rename a folder (and its subfolders)."""

    def incoming():
        """Return a new IIncomingMessage for a delivery to one or more recipients."""

    def add_listener(address: str, name: str, listener) -> None:
        """Tell ``listener`` (IFolderListener) of changes to that folder until removed."""

    def remove_listener(address: str, name: str, listener) -> None:
        """Stop telling ``listener``."""
