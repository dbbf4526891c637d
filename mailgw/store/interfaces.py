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


class IMessageInfo(Interface):
    """An immutable snapshot of one stored message's metadata."""

    uid = Attribute("int: the IMAP UID, unique in its folder, never reused.")
    key = Attribute("str: the Maildir base name (file name before ':2,'), stable for the message.")
    flags = Attribute("frozenset[str]: IMAP flags, e.g. '\\\\Seen' (see SYSTEM_FLAGS).")
    size = Attribute("int: size in octets with CRLF line endings (what POP3 and IMAP report).")
    internal_date = Attribute("float: the message's internal date, a POSIX timestamp.")
    recent = Attribute("bool: the file is still in new/ (no client has seen it yet).")


class IFolderListener(Interface):
    """Told of changes to one folder, whoever made them.  Called on the store's dispatcher."""

    def messages_added(folder_id: tuple[str, str], infos: list) -> None:
        """New messages (IMessageInfo list, ascending UIDs) were delivered or appended."""

    def flags_changed(folder_id: tuple[str, str], infos: list) -> None:
        """The flags of these messages (new IMessageInfo snapshots) changed."""

    def messages_expunged(folder_id: tuple[str, str], uids: list) -> None:
        """These UIDs were removed from the folder for good."""


class IFolder(Interface):
    """One mail folder (a Maildir or Maildir++ subfolder) of one user."""

    address = Attribute("str: the owner's address.")
    name = Attribute("str: the folder name, 'INBOX' or e.g. 'Sent', 'Archive.2024'.")
    uid_validity = Attribute("int: UIDVALIDITY, fixed for the life of the folder.")
    uid_next = Attribute("int: the UID the next message will get.")

    def messages() -> tuple:
        """Return IMessageInfo snapshots of all messages, in ascending UID order.

        The same tuple object is returned again while the folder is unchanged.

        Picks up changes made by other programs (a rescan, only when the directory changed)."""

    def get(uid: int):
        """Return the IMessageInfo for ``uid``; raise NoSuchMessage."""

    def open_message(uid: int):
        """Return a binary file object reading the message as stored (CRLF line endings).

        Raise NoSuchMessage if it is gone."""

    def append(data: bytes, flags=(), internal_date: float | None = None) -> int:
        """Store ``data`` durably (file and directories fsync'd) and return its UID."""

    def set_flags(uid: int, flags) -> object:
        """Replace the flags of ``uid``; return the new IMessageInfo.  Raise NoSuchMessage."""

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
