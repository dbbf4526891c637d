"""The Maildir store: every user's folders under ``mail_dir/<domain>/<localpart>/``.

INBOX is the user's top Maildir; other folders are Maildir++ subfolders ``.<Name>`` with '.'
as the hierarchy delimiter, each with a ``maildirfolder`` marker.  A message being received is
kept in memory (up to ``MEMORY_SPOOL``, then in a file in ``tmp_dir``, on the same file system);
its commit writes and fsyncs the file and hard-links it into each recipient's INBOX, together
with the commits of other threads (group commit, ``mailgw.store.commit``).
The store is synchronous and thread-safe; listener calls go through ``dispatch`` (the server
passes ``reactor.callFromThread``).  It imports nothing of Twisted.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from zope.interface import implementer

from mailgw.durable import replace_file
from mailgw.store.commit import GroupCommitter
from mailgw.store.events import Expunged, Listeners, call_now
from mailgw.store.files import (
    DIR_MODE,
    FILE_MODE,
    clean_stale,
    fsync_dir,
    make_dirs,
    remove_quietly,
    store_error,
)
from mailgw.store.folder import MAILDIRFOLDER, MaildirFolder
from mailgw.store.interfaces import (
    FolderExists,
    IIncomingMessage,
    IMailStore,
    InvalidFolderName,
    NoSuchFolder,
    StoreError,
)
from mailgw.store.names import (
    DELIMITER,
    canonical_address,
    canonical_folder,
    folder_dir_name,
    folder_from_dir_name,
    split_address,
)
from mailgw.store.uidlist import UidList

#: Per user: the last UIDVALIDITY given to a folder (hex), so re-created folders get a larger one.
UIDVALIDITY_FILE = "dovecot-uidvalidity"
_SUBDIRS = ("tmp", "new", "cur")


@implementer(IMailStore)
class MaildirStore:
    """All users' Maildirs under ``mail_dir``; ``tmp_dir`` holds messages being received."""

    def __init__(
        self, mail_dir: Path, tmp_dir: Path, hostname: str, dispatch: Callable = call_now
    ) -> None:
        """Use (and create) ``mail_dir`` and ``tmp_dir``; name files after ``hostname``."""
        self.mail_dir = Path(mail_dir)
        self.tmp_dir = Path(tmp_dir)
        self.hostname = hostname
        make_dirs(self.mail_dir)
        make_dirs(self.tmp_dir)
        clean_stale(self.tmp_dir)
        self._listeners = Listeners(dispatch)
        self._lock = threading.Lock()
        self._user_locks: dict[str, threading.RLock] = {}
        self._folders: dict[tuple[str, str], MaildirFolder] = {}
        #: Commits the deliveries of concurrent threads together.
        self.committer = GroupCommitter(self.folder)

    def user_dir(self, address: str) -> Path:
        """The directory of ``address``'s INBOX (validated; raise StoreError)."""
        domain, localpart = split_address(address)
        return self.mail_dir / domain / localpart

    def folder(self, address: str, name: str = "INBOX") -> MaildirFolder:
        """Return the folder; raise NoSuchFolder (INBOX is created on first use)."""
        address = canonical_address(address)
        name = canonical_folder(name)
        with self._user_lock(address):
            cached = self._folders.get((address, name))
            path = self._folder_path(address, name)
            if cached is not None and (path / "cur").is_dir():
                return cached
            if cached is not None:
                cached.mark_gone()
                del self._folders[(address, name)]
            if name == "INBOX":
                self._make_maildir(path)
            elif not (path / "cur").is_dir():
                raise NoSuchFolder(f"no folder {name!r}")
            else:
                for subdir in _SUBDIRS:
                    make_dirs(path / subdir)
            user_dir = self.user_dir(address)
            folder = MaildirFolder(
                address,
                name,
                path,
                self.hostname,
                self._listeners,
                lambda: self._next_uid_validity(user_dir),
            )
            self._folders[(address, name)] = folder
            return folder

    def open_folder(self, address: str, name: str = "INBOX") -> MaildirFolder | None:
        """The folder if this store has it open already, else None; never waits or scans, so
        it may be called where blocking is not allowed (then use ``folder()`` in a thread)."""
        try:
            return self._folders.get((canonical_address(address), canonical_folder(name)))
        except StoreError:
            return None

    def list_folders(self, address: str) -> list:
        """Return the names of the user's folders, 'INBOX' first, the others sorted."""
        address = canonical_address(address)
        with self._user_lock(address):
            self.folder(address)
            names = []
            try:
                entries = list(os.scandir(self.user_dir(address)))
            except OSError as e:
                raise store_error("cannot list folders", e) from e
            for entry in entries:
                name = folder_from_dir_name(entry.name)
                if name is not None and os.path.isdir(os.path.join(entry.path, "cur")):
                    names.append(name)
            return ["INBOX", *sorted(names)]

    def create_folder(self, address: str, name: str) -> MaildirFolder:
        """Create a folder (and any missing parent levels); return it.

        Raise InvalidFolderName or FolderExists.
        """
        address = canonical_address(address)
        name = canonical_folder(name)
        if name == "INBOX":
            raise FolderExists("INBOX always exists")
        with self._user_lock(address):
            self.folder(address)
            path = self._folder_path(address, name)
            if (path / "cur").is_dir():
                raise FolderExists(f"folder {name!r} exists")
            parts = name.split(DELIMITER)
            for depth in range(1, len(parts)):
                parent = self._folder_path(address, DELIMITER.join(parts[:depth]))
                if not (parent / "cur").is_dir():
                    self._make_subfolder(address, parent)
            self._make_subfolder(address, path)
            return self.folder(address, name)

    def delete_folder(self, address: str, name: str) -> None:
        """Delete a folder and its messages (not its subfolders); INBOX cannot be deleted."""
        address = canonical_address(address)
        name = canonical_folder(name)
        if name == "INBOX":
            raise StoreError("INBOX cannot be deleted")
        with self._user_lock(address):
            path = self._folder_path(address, name)
            if not (path / "cur").is_dir():
                raise NoSuchFolder(f"no folder {name!r}")
            doomed = self.tmp_dir / f"deleted-{uuid.uuid4().hex}"
            try:
                os.rename(path, doomed)
                fsync_dir(path.parent)
            except OSError as e:
                raise store_error(f"cannot delete folder {name!r}", e) from e
            shutil.rmtree(doomed, ignore_errors=True)
            cached = self._folders.pop((address, name), None)
            if cached is not None:
                uids = cached.mark_gone()
                self._listeners.notify((address, name), "messages_expunged", Expunged(uids, 0))

    def rename_folder(self, address: str, old: str, new: str) -> None:
        """Rename a folder and its subfolders; renaming INBOX is not supported here."""
        address = canonical_address(address)
        old = canonical_folder(old)
        new = canonical_folder(new)
        if old == "INBOX":
            raise StoreError("renaming INBOX is not supported")
        if new == "INBOX":
            raise FolderExists("INBOX always exists")
        if new == old or new.startswith(old + DELIMITER):
            raise InvalidFolderName("a folder cannot be moved inside itself")
        with self._user_lock(address):
            user_dir = self.user_dir(address)
            if not (self._folder_path(address, old) / "cur").is_dir():
                raise NoSuchFolder(f"no folder {old!r}")
            moves = [(old, new)]
            for entry in os.listdir(user_dir):
                child = folder_from_dir_name(entry)
                if child is not None and child.startswith(old + DELIMITER):
                    moves.append((child, new + child[len(old) :]))
            for _, target in moves:
                canonical_folder(target)
                if self._folder_path(address, target).exists():
                    raise FolderExists(f"folder {target!r} exists")
            parts = new.split(DELIMITER)
            for depth in range(1, len(parts)):
                parent = self._folder_path(address, DELIMITER.join(parts[:depth]))
                if not (parent / "cur").is_dir():
                    self._make_subfolder(address, parent)
            try:
                for source, target in moves:
                    os.rename(
                        self._folder_path(address, source), self._folder_path(address, target)
                    )
                    cached = self._folders.pop((address, source), None)
                    if cached is not None:
                        cached.mark_gone()
                fsync_dir(user_dir)
            except OSError as e:
                raise store_error(f"cannot rename folder {old!r}", e) from e

    def incoming(self) -> IncomingMessage:
        """Return a new IncomingMessage for a delivery to one or more recipients."""
        return IncomingMessage(self)

    def add_listener(self, address: str, name: str, listener: object) -> None:
        """Tell ``listener`` (IFolderListener) of changes to that folder until removed."""
        self._listeners.add((canonical_address(address), canonical_folder(name)), listener)

    def remove_listener(self, address: str, name: str, listener: object) -> None:
        """Stop telling ``listener``."""
        self._listeners.remove((canonical_address(address), canonical_folder(name)), listener)

    # -- internals --

    def _user_lock(self, address: str) -> threading.RLock:
        with self._lock:
            lock = self._user_locks.get(address)
            if lock is None:
                lock = self._user_locks[address] = threading.RLock()
            return lock

    def _folder_path(self, address: str, name: str) -> Path:
        user_dir = self.user_dir(address)
        return user_dir if name == "INBOX" else user_dir / folder_dir_name(name)

    def _make_maildir(self, path: Path) -> None:
        if all((path / subdir).is_dir() for subdir in _SUBDIRS):
            return
        for subdir in _SUBDIRS:
            make_dirs(path / subdir)
        try:
            fsync_dir(path)
            fsync_dir(path.parent)
        except OSError as e:
            raise store_error(f"cannot create {path}", e) from e

    def _make_subfolder(self, address: str, path: Path) -> None:
        """Create a Maildir++ subfolder; cur/ comes last, so a half-made one does not count."""
        user_dir = self.user_dir(address)
        try:
            path.mkdir(mode=DIR_MODE, exist_ok=True)
            os.close(os.open(path / MAILDIRFOLDER, os.O_WRONLY | os.O_CREAT, FILE_MODE))
            for subdir in ("tmp", "new"):
                (path / subdir).mkdir(mode=DIR_MODE, exist_ok=True)
            UidList(path, lambda: self._next_uid_validity(user_dir))
            (path / "cur").mkdir(mode=DIR_MODE, exist_ok=True)
            fsync_dir(path)
            fsync_dir(user_dir)
        except OSError as e:
            raise store_error(f"cannot create folder {path.name[1:]!r}", e) from e

    def _next_uid_validity(self, user_dir: Path) -> int:
        """A UIDVALIDITY larger than any given before in this user's Maildir (time-based)."""
        path = user_dir / UIDVALIDITY_FILE
        try:
            last = int(path.read_text().strip(), 16)
        except (OSError, ValueError):
            last = 0
        value = max(int(time.time()), last + 1)
        try:
            replace_file(path, f"{value:08x}\n".encode(), FILE_MODE)
        except OSError as e:
            raise store_error("cannot record UIDVALIDITY", e) from e
        return value


#: A message being received stays in memory up to this many octets and is written to its file
#: only by ``commit`` (in the committing thread), so that receiving a typical message costs the
#: receiving thread (the reactor) no file system call; a larger one spills to its file at once.
MEMORY_SPOOL = 256 * 1024


@implementer(IIncomingMessage)
class IncomingMessage:
    """A message being received: in memory up to ``MEMORY_SPOOL``, then in a file in tmp_dir."""

    def __init__(self, store: MaildirStore) -> None:
        """Start an empty message (its file in ``store.tmp_dir`` is made when needed)."""
        self._store = store
        self._path = store.tmp_dir / f"incoming-{os.getpid()}-{uuid.uuid4().hex}"
        self.size = 0
        self._spool: bytearray | None = bytearray()
        self._file: io.BufferedWriter | None = None
        self._done = False

    def write(self, data: bytes) -> None:
        """Append ``data`` (CRLF line endings) to the message."""
        if self._done:
            raise StoreError("message already committed or aborted")
        try:
            if self._spool is None:
                self._file.write(data)
            else:
                self._spool += data
                if len(self._spool) > MEMORY_SPOOL:
                    self._spill()
        except OSError as e:
            self.abort()
            raise store_error("cannot write the message", e) from e
        self.size += len(data)

    def _spill(self) -> None:
        """Create the message file and move what is in memory to it; raise OSError."""
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        self._file = os.fdopen(fd, "wb")
        self._file.write(self._spool)
        self._spool = None

    @property
    def source(self) -> Path:
        """The message file, once ``write_out`` has made it."""
        return self._path

    def commit(self, addresses: Iterable[str]) -> dict:
        """Deliver to each address's INBOX (one fsync, then hard links); return {address: uid}.

        Commits of concurrent threads are made durable together (``mailgw.store.commit``).
        On any failure every copy this commit made is removed and StoreError is raised.
        """
        if self._done:
            raise StoreError("message already committed or aborted")
        given = list(addresses)
        try:
            canonical = {address: canonical_address(address) for address in given}
        except StoreError:
            self.abort()
            raise
        if not given:
            self.abort()
            raise StoreError("no recipients")
        self._done = True
        uids = self._store.committer.commit(self, list(dict.fromkeys(canonical.values())))
        return {address: uids[canonical[address]] for address in given}

    def write_out(self) -> int:
        """Write the whole message to its file (not yet fsync'd); return the file descriptor.

        Called by the group commit; raise StoreError (the file is then removed)."""
        try:
            if self._spool is not None:
                self._spill()
            self._file.flush()
        except OSError as e:
            self.discard()
            raise store_error("cannot write the message", e) from e
        return self._file.fileno()

    def discard(self) -> None:
        """Close and remove the message file (its links in folders stay)."""
        self._spool = None
        if self._file is None:
            return
        try:
            self._file.close()
        except OSError:
            pass
        self._file = None
        remove_quietly(self._path)

    def abort(self) -> None:
        """Throw the message away (harmless if already committed or aborted)."""
        if self._done:
            return
        self._done = True
        self.discard()
