"""One Maildir folder: its messages by UID, delivery into it, flags and expunge.

The folder keeps a snapshot of its messages in memory and rescans its ``new/`` and ``cur/``
directories only when their modification times (in nanoseconds) differ from those it recorded
after its own last change, so reading an unchanged folder costs two ``stat`` calls.  All methods
are thread-safe (one re-entrant lock per folder); cross-process writers are serialised by the
index's dot lock.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from zope.interface import implementer

from mailgw.crashpoint import crash_point
from mailgw.store.events import Listeners
from mailgw.store.files import (
    clean_stale,
    crlf_size,
    fsync_dir,
    remove_quietly,
    store_error,
    to_crlf,
    unique_name,
    write_durably,
)
from mailgw.store.flags import Keywords
from mailgw.store.interfaces import (
    IFolder,
    IMessageInfo,
    NoSuchFolder,
    NoSuchMessage,
    StoreError,
)
from mailgw.store.uidlist import UidList

#: The marker file of a Maildir++ subfolder.
MAILDIRFOLDER = "maildirfolder"


def _number_after(key: str, field: str) -> int | None:
    start = key.find(field)
    if start < 0:
        return None
    start += len(field)
    end = start
    while end < len(key) and key[end].isdigit():
        end += 1
    return int(key[start:end]) if end > start else None


def date_from_key(key: str) -> float | None:
    """Return the time stamp a Maildir base name starts with (``<sec>[.M<usec>]``), if any."""
    sec, _, rest = key.partition(".")
    if not sec.isdigit():
        return None
    usec = _number_after(rest, "M") if rest.startswith("M") else None
    return int(sec) + (usec or 0) / 1_000_000


@implementer(IMessageInfo)
class MessageInfo:
    """An immutable snapshot of one message; size and date are read from the name on demand."""

    __slots__ = ("uid", "key", "flags", "recent", "info", "_size", "_date")

    def __init__(
        self,
        uid: int,
        key: str,
        flags: frozenset,
        recent: bool,
        info: str | None,
        size: int | None = None,
        date: float | None = None,
    ) -> None:
        """Describe the file ``key[:info]`` in new/ (``recent``) or cur/ with UID ``uid``."""
        self.uid = uid
        self.key = key
        self.flags = flags
        self.recent = recent
        #: The info part of the file name (text after ':'), or None.
        self.info = info
        self._size = size
        self._date = date

    @property
    def size(self) -> int:
        """Size in octets with CRLF line endings (read from the name once, then kept)."""
        if self._size is None:
            self._size = _number_after(self.key, ",W=") or 0
        return self._size

    @property
    def internal_date(self) -> float:
        """The internal date (a POSIX time stamp), from the name or the file's mtime."""
        if self._date is not None:
            return self._date
        return date_from_key(self.key) or 0.0

    @property
    def filename(self) -> str:
        """The file's name in new/ or cur/."""
        return f"{self.key}:{self.info}" if self.info is not None else self.key

    @property
    def subdir(self) -> str:
        """'new' or 'cur'."""
        return "new" if self.recent else "cur"

    def __repr__(self) -> str:
        return f"<MessageInfo uid={self.uid} flags={sorted(self.flags)} recent={self.recent}>"


@implementer(IFolder)
class MaildirFolder:
    """A Maildir (INBOX) or Maildir++ subfolder of one user; build through MaildirStore."""

    def __init__(
        self,
        address: str,
        name: str,
        path: Path,
        hostname: str,
        listeners: Listeners,
        new_uid_validity: Callable[[], int],
    ) -> None:
        """Open the folder at ``path`` (its directories must exist): read index, scan once."""
        self.address = address
        self.name = name
        self.path = path
        self._hostname = hostname
        self._listeners = listeners
        self._lock = threading.RLock()
        self._gone = False
        self._messages: dict[int, MessageInfo] = {}
        #: messages() as handed out, kept until the next change (None: build it again).
        self._listing: tuple | None = None
        #: True when ``_messages`` is not in ascending UID order (see ``_insert``).
        self._unordered = False
        self._stamps: tuple[int, int] | None = None
        clean_stale(path / "tmp")
        self._index = UidList(path, new_uid_validity)
        self._keywords = Keywords(path)
        with self._lock:
            self._rescan(notify=False)

    @property
    def folder_id(self) -> tuple[str, str]:
        """(address, folder name), as listeners are told."""
        return (self.address, self.name)

    @property
    def uid_validity(self) -> int:
        """UIDVALIDITY, fixed for the life of the folder."""
        return self._index.uid_validity

    @property
    def uid_next(self) -> int:
        """The UID the next message will get."""
        with self._lock:
            self._check()
            self._index.refresh()
            return self._index.uid_next

    def messages(self) -> tuple:
        """Return MessageInfo snapshots of all messages, in ascending UID order.

        While the folder is unchanged, every call returns the same tuple (callers may compare
        listings by identity); building it costs one pass only after a change."""
        with self._lock:
            self._refresh()
            if self._listing is None:
                self._listing = tuple(self._ordered().values())
            return self._listing

    def messages_if_fresh(self) -> tuple | None:
        """``messages()`` if that needs no wait and no directory scan, else None.

        Costs two stat calls when it answers: nothing else holds the folder and nothing changed
        on disk since the store last looked.  For callers that must not block."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._gone or self._dir_stamps() != self._stamps:
                return None
            if self._listing is None:
                self._listing = tuple(self._ordered().values())
            return self._listing
        except StoreError:
            return None
        finally:
            self._lock.release()

    def get(self, uid: int) -> MessageInfo:
        """Return the MessageInfo for ``uid``; raise NoSuchMessage."""
        with self._lock:
            self._refresh()
            return self._lookup(uid)

    def open_message(self, uid: int):
        """Return a binary file object reading the message with CRLF line endings."""
        with self._lock:
            self._refresh()
            for attempt in (1, 2):
                info = self._lookup(uid)
                try:
                    f = open(self.path / info.subdir / info.filename, "rb")
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise NoSuchMessage(f"message {uid} is gone") from None
                    self._rescan(notify=True)
                except OSError as e:
                    raise store_error(f"cannot read message {uid}", e) from e
        physical = _number_after(info.key, ",S=")
        if physical is None:
            physical = os.fstat(f.fileno()).st_size
        if physical == info.size:
            return f
        with f:
            return io.BytesIO(to_crlf(f.read()))

    def append(self, data: bytes, flags=(), internal_date: float | None = None) -> int:
        """Store ``data`` (bare LF becomes CRLF) durably and return its UID."""
        data = to_crlf(bytes(data))
        key = unique_name(self._hostname, len(data), internal_date)
        flags = frozenset(flags)
        tmp = self.path / "tmp" / key
        write_durably(tmp, data, mtime=internal_date)
        crash_point("append.file_synced")
        with self._lock:
            try:
                self._refresh()
                with self._index.locked():
                    self._index.refresh()
                    info = self._keywords.info_of(flags) if flags else None
                    [uid] = self._index.add([(key, None)])
                    crash_point("append.indexed")
                    subdir = "cur" if info else "new"
                    dest = self.path / subdir / (f"{key}:{info}" if info else key)
                    os.rename(tmp, dest)
                    crash_point("append.renamed")
                    fsync_dir(dest.parent)
                    crash_point("append.dir_synced")
            except OSError as e:
                remove_quietly(tmp)
                raise store_error("cannot deliver the message", e) from e
            except BaseException:
                remove_quietly(tmp)
                raise
            self._record_stamps()
            message = MessageInfo(uid, key, self._keywords.flags_of(info), not info, info)
            self._insert(message)
            self._listeners.notify(self.folder_id, "messages_added", [message])
        return uid

    def set_flags(self, uid: int, flags) -> MessageInfo:
        """Replace the flags of ``uid`` (renaming its file in cur/); return the new snapshot."""
        flags = frozenset(flags)
        with self._lock:
            self._refresh()
            self._lookup(uid)
            if all(flag.startswith("\\") for flag in flags if isinstance(flag, str)):
                info = self._keywords.info_of(flags)
            else:
                with self._index.locked():
                    info = self._keywords.info_of(flags)
            for attempt in (1, 2):
                old = self._lookup(uid)
                if not old.recent and old.info == info:
                    return old
                try:
                    os.rename(
                        self.path / old.subdir / old.filename,
                        self.path / "cur" / f"{old.key}:{info}",
                    )
                    crash_point("flags.renamed")
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise NoSuchMessage(f"message {uid} is gone") from None
                    self._rescan(notify=True)
                except OSError as e:
                    raise store_error(f"cannot change the flags of message {uid}", e) from e
            self._sync_dirs({"cur", old.subdir})
            crash_point("flags.dir_synced")
            new = MessageInfo(
                uid, old.key, self._keywords.flags_of(info), False, info, old._size, old._date
            )
            self._messages[uid] = new
            self._listing = None
            self._record_stamps()
            self._listeners.notify(self.folder_id, "flags_changed", [new])
            return new

    def mark_seen_by_client(self, uids: Iterable[int]) -> None:
        """Move these messages from new/ to cur/ (with a ':2,' info part): no longer recent."""
        with self._lock:
            self._refresh()
            moved = False
            for uid in uids:
                old = self._messages.get(uid)
                if old is None or not old.recent:
                    continue
                info = old.info if old.info and old.info.startswith("2,") else "2,"
                try:
                    os.rename(
                        self.path / "new" / old.filename, self.path / "cur" / f"{old.key}:{info}"
                    )
                    crash_point("recent.moved")
                except FileNotFoundError:
                    continue
                except OSError as e:
                    raise store_error(f"cannot move message {uid} to cur/", e) from e
                self._messages[uid] = MessageInfo(
                    uid, old.key, old.flags, False, info, old._size, old._date
                )
                self._listing = None
                moved = True
            if moved:
                self._sync_dirs({"new", "cur"})
                crash_point("recent.dir_synced")
                self._record_stamps()

    def expunge(self, uids: Iterable[int]) -> list:
        """Remove these messages durably; return the UIDs actually removed (ascending)."""
        with self._lock:
            self._refresh()
            removed = []
            touched = set()
            for uid in sorted(set(uids)):
                for attempt in (1, 2):
                    old = self._messages.get(uid)
                    if old is None:
                        break
                    try:
                        os.unlink(self.path / old.subdir / old.filename)
                        crash_point("expunge.unlinked")
                    except FileNotFoundError:
                        if attempt == 1:
                            self._rescan(notify=True)
                        continue
                    except OSError as e:
                        raise store_error(f"cannot remove message {uid}", e) from e
                    touched.add(old.subdir)
                    del self._messages[uid]
                    self._listing = None
                    removed.append(uid)
                    break
            if removed:
                self._sync_dirs(touched)
                crash_point("expunge.dir_synced")
                self._record_stamps()
                self._listeners.notify(self.folder_id, "messages_expunged", removed)
                self._compact_if_needed()
            return removed

    # -- delivery of a file received elsewhere (IncomingMessage.commit) --

    def deliver_links(self, sources: list[tuple[Path, int]]) -> list:
        """Hard-link each ``(source, size)`` (``size`` octets, CRLF, fsync'd) into new/.

        All of them together cost one index append with one fsync and one fsync of new/ (the
        store's group commit hands over every delivery waiting at that moment).  Return, in
        order, ``(uid, key)`` for each message now on disk and indexed but not yet shown (call
        ``publish(uid, key)`` once its whole delivery succeeded, or ``withdraw(key)``), or the
        StoreError that stopped it.

        The links come first, so that on file systems with one journal (ext4, XFS) the fsync of
        the index also makes the new directory entries durable and the fsync of new/ that
        follows finds little left to write.  Nothing may be acknowledged before this returns,
        and a link whose index line a crash lost is simply indexed again by the next scan.
        """
        new = self.path / "new"
        results: list = []
        with self._lock:
            self._refresh()
            try:
                with self._index.locked():
                    self._index.refresh()
                    linked = []
                    for source, size in sources:
                        key = unique_name(self._hostname, size)
                        try:
                            os.link(source, new / key)
                        except OSError as e:
                            results.append(store_error("cannot deliver the message", e))
                        else:
                            results.append(key)
                            linked.append(key)
                    if linked:
                        crash_point("delivery.linked")
                    uids = self._index_links(linked)
            finally:
                try:
                    self._record_stamps()
                except StoreError:
                    self._stamps = None
        if isinstance(uids, StoreError):
            return [r if isinstance(r, StoreError) else uids for r in results]
        given = iter(uids)
        return [r if isinstance(r, StoreError) else (next(given), r) for r in results]

    def publish(self, uid: int, key: str) -> None:
        """Show a message delivered by ``deliver_link`` and tell the listeners."""
        with self._lock:
            if self._gone or uid in self._messages:
                return
            message = MessageInfo(uid, key, frozenset(), True, None)
            self._insert(message)
            self._listeners.notify(self.folder_id, "messages_added", [message])

    def withdraw(self, key: str) -> None:
        """Undo a ``deliver_link`` whose delivery failed elsewhere (its UID stays unused)."""
        with self._lock:
            remove_quietly(self.path / "new" / key)
            try:
                fsync_dir(self.path / "new")
            except OSError:
                pass

    def mark_gone(self) -> list[int]:
        """The folder was deleted or renamed: every further call raises NoSuchFolder.

        Return the UIDs it held.
        """
        with self._lock:
            uids = list(self._ordered())
            self._gone = True
            self._messages = {}
            self._listing = None
            return uids

    # -- internals --

    def _index_links(self, keys: list[str]) -> list[int] | StoreError:
        """Index the files just linked into new/ as ``keys`` and fsync new/; their UIDs.

        On failure the links are taken back and the StoreError is returned."""
        if not keys:
            return []
        new = self.path / "new"
        try:
            uids = self._index.add([(key, None) for key in keys])
            crash_point("delivery.indexed")
            fsync_dir(new)
            crash_point("delivery.dir_synced")
            return uids
        except (OSError, StoreError) as e:
            error = e if isinstance(e, StoreError) else store_error("cannot deliver", e)
        for key in keys:
            remove_quietly(new / key)
        try:
            fsync_dir(new)
        except OSError:
            pass
        return error

    def _check(self) -> None:
        if self._gone:
            raise NoSuchFolder(f"folder {self.name!r} no longer exists")

    def _lookup(self, uid: int) -> MessageInfo:
        info = self._messages.get(uid)
        if info is None:
            raise NoSuchMessage(f"no message with UID {uid} in {self.name!r}")
        return info

    def _insert(self, message: MessageInfo) -> None:
        """Add a message; deliveries committed together may be published out of UID order,
        so the dict is sorted again only when next read in order (``_ordered``)."""
        messages = self._messages
        if not self._unordered and messages and message.uid < next(reversed(messages)):
            self._unordered = True
        messages[message.uid] = message
        self._listing = None

    def _ordered(self) -> dict[int, MessageInfo]:
        """The messages by UID, in ascending UID order."""
        if self._unordered:
            self._messages = dict(sorted(self._messages.items()))
            self._unordered = False
        return self._messages

    def _dir_stamps(self) -> tuple[int, int]:
        try:
            return (
                os.stat(self.path / "new").st_mtime_ns,
                os.stat(self.path / "cur").st_mtime_ns,
            )
        except FileNotFoundError:
            raise NoSuchFolder(f"folder {self.name!r} no longer exists") from None
        except OSError as e:
            raise store_error(f"cannot read folder {self.name!r}", e) from e

    def _record_stamps(self) -> None:
        self._stamps = self._dir_stamps()

    def _refresh(self) -> None:
        self._check()
        if self._dir_stamps() != self._stamps:
            self._rescan(notify=True)

    def _sync_dirs(self, subdirs: Iterable[str]) -> None:
        try:
            for subdir in subdirs:
                fsync_dir(self.path / subdir)
        except OSError as e:
            raise store_error(f"cannot sync folder {self.name!r}", e) from e

    def _list(self) -> dict[str, tuple[bool, str | None]]:
        files: dict[str, tuple[bool, str | None]] = {}
        for subdir, recent in (("new", True), ("cur", False)):
            try:
                names = os.listdir(self.path / subdir)
            except FileNotFoundError:
                raise NoSuchFolder(f"folder {self.name!r} no longer exists") from None
            except OSError as e:
                raise store_error(f"cannot list folder {self.name!r}", e) from e
            for name in names:
                if name[:1] == ".":
                    continue
                key, sep, info = name.partition(":")
                files[key] = (recent, info if sep else None)
        return files

    def _foreign_size(self, key: str, recent: bool, info: str | None) -> int:
        name = f"{key}:{info}" if info is not None else key
        try:
            return crlf_size(self.path / ("new" if recent else "cur") / name)
        except OSError:
            return _number_after(key, ",S=") or 0

    def _rescan(self, notify: bool) -> None:
        """List new/ and cur/, give unknown files UIDs, and rebuild the snapshot."""
        self._check()
        stamps = self._dir_stamps()
        self._keywords.reload()
        self._index.refresh()
        files = self._list()
        index = self._index
        unknown = [key for key in files if key not in index.uids]
        if unknown:
            unknown.sort(key=lambda k: (date_from_key(k) or 0.0, k))
            entries = [
                (key, None if ",W=" in key else self._foreign_size(key, *files[key]))
                for key in unknown
            ]
            with index.locked():
                index.refresh()
                index.add(entries)
        old = self._ordered()
        fresh: dict[int, MessageInfo] = {}
        added, changed = [], []
        flags_of = self._keywords.flags_of
        sizes = index.sizes
        last = 0
        ordered = True
        for key, uid in index.uids.items():
            entry = files.get(key)
            if entry is None:
                continue
            recent, info = entry
            prev = old.get(uid)
            if prev is not None and prev.key == key and prev.info == info and prev.recent == recent:
                fresh[uid] = prev
            else:
                size = None
                if ",W=" not in key:
                    size = sizes.get(key)
                    if size is None:
                        size = sizes[key] = self._foreign_size(key, recent, info)
                date = None
                if not key[:1].isdigit():
                    date = self._foreign_date(key, recent, info)
                message = fresh[uid] = MessageInfo(
                    uid, key, flags_of(info), recent, info, size, date
                )
                if prev is None:
                    added.append(message)
                elif prev.flags != message.flags:
                    changed.append(message)
            if uid < last:
                ordered = False
            last = uid
        if not ordered:
            fresh = dict(sorted(fresh.items()))
            added.sort(key=lambda m: m.uid)
        expunged = [uid for uid in old if uid not in fresh]
        self._messages = fresh
        self._listing = None
        self._stamps = stamps
        if notify:
            self._listeners.notify(self.folder_id, "messages_expunged", expunged)
            self._listeners.notify(self.folder_id, "messages_added", added)
            self._listeners.notify(self.folder_id, "flags_changed", changed)
        self._compact_if_needed()

    def _foreign_date(self, key: str, recent: bool, info: str | None) -> float:
        name = f"{key}:{info}" if info is not None else key
        try:
            return os.stat(self.path / ("new" if recent else "cur") / name).st_mtime
        except OSError:
            return 0.0

    def _compact_if_needed(self) -> None:
        if not self._index.needs_compaction(len(self._messages)):
            return
        with self._index.locked():
            self._index.refresh()
            live = self._list()
            self._index.compact(live)
