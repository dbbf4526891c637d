"""One Maildir folder: its messages by UID, delivery into it, flags and expunge.

The folder keeps a snapshot of its messages in memory and rescans its ``new/`` and ``cur/``
directories only when their modification times (in nanoseconds) differ from those it recorded
after its own last change, so reading an unchanged folder costs two ``stat`` calls.  A scan's
times are kept only once they are ``SETTLE_NS`` old: a directory's time is the kernel's coarse
clock, so another program's change in the same tick as one the scan already saw would leave it
unchanged (the next look scans once more instead).  All methods
are thread-safe (one re-entrant lock per folder); cross-process writers are serialised by the
index's dot lock.

Every change takes a modseq from the folder's modseq index (``mailgw.store.modseq``), recorded
there before the change is made (an added message's once it has its UID), so a crash between
the two leaves the index ahead of the Maildir, never behind it; a rescan (and the first one of
every process) compares each file's flags with what the index says, and gives whatever differs
(changes by other programs, or the other side of such a crash) a new modseq.  A state this
folder shows for the first time always has a modseq above every one it showed before, even when
another process recorded it first: whoever syncs at the highest modseq shown misses nothing.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from zope.interface import implementer

from mailgw.crashpoint import crash_point
from mailgw.store.events import Expunged, Listeners
from mailgw.store.files import (
    clean_stale,
    fsync_dir,
    remove_quietly,
    store_error,
    to_crlf,
    unique_name,
    write_durably,
)
from mailgw.store.flags import Keywords
from mailgw.store.interfaces import (
    FLAGS_REPLACE,
    FlagsSet,
    IFolder,
    ModifiedSince,
    NoSuchFolder,
    NoSuchMessage,
    StoreError,
)
from mailgw.store.maildrop_lock import MaildropLock, acquire
from mailgw.store.message import (
    MessageInfo,
    date_from_key,
    foreign_date,
    foreign_size,
    list_files,
    number_after,
)
from mailgw.store.modseq import flag_mask
from mailgw.store.reading import ListedReader
from mailgw.store.sequencer import Sequencer
from mailgw.store.uidlist import UidList

#: The marker file of a Maildir++ subfolder.
MAILDIRFOLDER = "maildirfolder"
#: Nanoseconds after which a directory's modification time is trusted to tell every change.
SETTLE_NS = 50_000_000


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
        self._path_text = str(path)
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
        self._seq = Sequencer(path, self._index.uid_validity)
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

    @property
    def highest_modseq(self) -> int:
        """The highest modseq of the folder (RFC 7162 HIGHESTMODSEQ), at least 1."""
        with self._lock:
            self._refresh()
            return self._seq.highest

    def changed_since(self, modseq: int) -> list:
        """MessageInfo of the messages whose modseq is above ``modseq``, ascending UIDs."""
        return [info for info in self.messages() if info.modseq > modseq]

    def vanished_since(self, modseq: int) -> list[int] | None:
        """UIDs expunged at a modseq above ``modseq``, ascending; None when the store no longer
        remembers that far back or never gave ``modseq``."""
        with self._lock:
            self._refresh()
            return self._seq.vanished_since(modseq, self._messages)

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

    def reader(self) -> ListedReader:
        """A new reader of this folder's messages as listed (``mailgw.store.reading``)."""
        return ListedReader(self, str(self.path))

    def lock_maildrop(self) -> MaildropLock:
        """The exclusive POP3 maildrop lock (``mailgw.store.maildrop_lock``)."""
        return acquire(self.address, self.path)

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
        physical = number_after(info.key, ",S=")
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
                    modseq = self._seq.record({uid: flag_mask(info)})
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
            flags_of = self._keywords.flags_of
            message = MessageInfo(uid, key, flags_of(info), not info, info, modseq=modseq)
            self._insert(message)
            self._seq.show(modseq)
            self._listeners.notify(self.folder_id, "messages_added", [message])
        return uid

    def set_flags(self, uid: int, flags, unchanged_since: int | None = None) -> MessageInfo:
        """Replace the flags of ``uid`` (renaming its file in cur/); return the new snapshot.

        With ``unchanged_since``, raise ModifiedSince if the message changed after it."""
        with self._lock:
            self._refresh()
            self._lookup(uid)
            done = self.set_flags_many([uid], flags, FLAGS_REPLACE, unchanged_since)
            if done.modified:
                info = self._lookup(uid)
                raise ModifiedSince(f"message {uid} changed at modseq {info.modseq}", info)
            if done.infos:
                return done.infos[0]
            if uid not in self._messages:
                raise NoSuchMessage(f"message {uid} is gone")
            return self._messages[uid]

    def set_flags_many(
        self,
        uids: Iterable[int],
        flags,
        mode: str = FLAGS_REPLACE,
        unchanged_since: int | None = None,
    ) -> FlagsSet:
        """Replace, add or remove ``flags`` on each of ``uids`` (see IFolder), one modseq,
        one append to the modseq index and one fsync of each directory for all of them."""
        with self._lock:
            self._refresh()
            wanted = [self._messages[uid] for uid in sorted(set(uids)) if uid in self._messages]
            targets = self._keywords.infos_for(wanted, frozenset(flags), mode, self._index.locked)
            log = self._seq.log
            modified: list[int] = []
            moves = [(old, info) for old, info in targets if old.recent or old.info != info]
            masks = {
                old.uid: flag_mask(info)
                for old, info in moves
                if flag_mask(info) != flag_mask(old.info)
            }
            if masks or (unchanged_since is not None and targets):
                with log.locked():
                    if unchanged_since is not None:
                        modified = [
                            old.uid
                            for old, _ in targets
                            if max(old.modseq, log.modseq_of(old.uid) or 0) > unchanged_since
                        ]
                        refused = set(modified)
                        moves = [(old, info) for old, info in moves if old.uid not in refused]
                        masks = {uid: mask for uid, mask in masks.items() if uid not in refused}
                    log.record(masks)
            renamed = []
            for old, info in moves:
                current = self._rename_flags(old, info)
                if current is not None:
                    renamed.append((current, info))
            if not renamed:
                return FlagsSet([], modified)
            self._sync_dirs({"cur", *(old.subdir for old, _ in renamed)})
            crash_point("flags.dir_synced")
            self._seq.settle({old.uid: (flag_mask(info), old.modseq) for old, info in renamed})
            flags_of = self._keywords.flags_of
            infos = []
            for old, info in renamed:
                new = MessageInfo(
                    old.uid,
                    old.key,
                    flags_of(info),
                    False,
                    info,
                    old._size,
                    old._date,
                    log.modseq_of(old.uid) or old.modseq,
                )
                self._messages[old.uid] = new
                infos.append(new)
            self._listing = None
            self._record_stamps()
            self._seq.show(max(info.modseq for info in infos))
            self._listeners.notify(self.folder_id, "flags_changed", infos)
            return FlagsSet(infos, modified)

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
                    uid, old.key, old.flags, False, info, old._size, old._date, old.modseq
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
            targets = [uid for uid in sorted(set(uids)) if uid in self._messages]
            if not targets:
                return []
            self._seq.record({}, targets)
            removed = []
            touched = set()
            for uid in targets:
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
                self._seq.settle({}, removed)
                self._notify_expunged(removed)
                self._compact_if_needed()
            return removed

    # -- delivery of a file received elsewhere (IncomingMessage.commit) --

    def deliver_links(self, sources: list[tuple[Path, int]]) -> list:
        """Hard-link each ``(source, size)`` (``size`` octets, CRLF, fsync'd) into new/.

        All of them together cost one index append with one fsync, one append to the modseq
        index with one fsync (all of them at one modseq) and one fsync of new/ (the store's
        group commit hands over every delivery waiting at that moment).  Return, in
        order, ``(uid, key)`` for each message now on disk and indexed but not yet shown (call
        ``publish`` with it once its whole delivery succeeded, or ``withdraw(key)``), or the
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

    def publish(self, delivered: list[tuple[int, str]]) -> None:
        """Show messages delivered by ``deliver_links``, ``(uid, key)`` each, and tell the
        listeners.

        If a change was shown meanwhile with a larger modseq than the delivery's, they get a
        new one first; should that fail, they are left for the next scan to show."""
        with self._lock:
            fresh = [(uid, key) for uid, key in delivered if uid not in self._messages]
            if self._gone or not fresh:
                return
            try:
                self._seq.settle({uid: (0, 0) for uid, _ in fresh})
            except StoreError:
                self._stamps = None
                return
            messages = []
            for uid, key in fresh:
                modseq = self._seq.log.modseq_of(uid) or self._seq.highest
                messages.append(MessageInfo(uid, key, frozenset(), True, None, modseq=modseq))
                self._insert(messages[-1])
            self._seq.show(max(m.modseq for m in messages))
            self._listeners.notify(self.folder_id, "messages_added", messages)

    def withdraw(self, key: str) -> None:
        """Undo a ``deliver_links`` whose delivery failed elsewhere (its UID stays unused)."""
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
            self._seq.record(dict.fromkeys(uids, 0))
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

    def _rename_flags(self, old: MessageInfo, info: str) -> MessageInfo | None:
        """Rename the file of ``old`` into cur/ with the info part ``info``; return the message
        as it was just before, or None if it is gone."""
        uid = old.uid
        for attempt in (1, 2):
            try:
                folder = self._path_text  # (str joins: pathlib's cost more than the rename)
                os.rename(f"{folder}/{old.subdir}/{old.filename}", f"{folder}/cur/{old.key}:{info}")
                crash_point("flags.renamed")
                return old
            except FileNotFoundError:
                if attempt == 2:
                    return None
                self._rescan(notify=True)
                old = self._messages.get(uid)
                if old is None:
                    return None
                if not old.recent and old.info == info:
                    return old
            except OSError as e:
                raise store_error(f"cannot change the flags of message {uid}", e) from e
        return None

    def _notify_expunged(self, uids: list[int]) -> None:
        """Tell the listeners these UIDs are gone, with the modseq of their expunge."""
        modseq = self._seq.expunge_modseq(uids)
        self._listeners.notify(self.folder_id, "messages_expunged", Expunged(uids, modseq))

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

    def _rescan(self, notify: bool) -> None:
        """List new/ and cur/, give unknown files UIDs, and rebuild the snapshot; whatever
        differs from what the modseq index says gets a new modseq (see ``_settle``)."""
        self._check()
        stamps = self._dir_stamps()
        settled = time.time_ns() - max(stamps) > SETTLE_NS
        self._keywords.reload()
        self._index.refresh()
        log = self._seq.log
        log.refresh()
        files = list_files(self.path, self.name)
        index = self._index
        unknown = list(files.keys() - index.uids.keys())
        if unknown:
            unknown.sort(key=lambda k: (date_from_key(k) or 0.0, k))
            entries = [
                (key, None if ",W=" in key else foreign_size(self.path, key, *files[key]))
                for key in unknown
            ]
            with index.locked():
                index.refresh()
                index.add(entries)
        old = self._ordered()
        fresh: dict[int, MessageInfo] = {}
        added, candidates = [], []
        #: uid -> (flag mask, modseq shown before or 0) of messages whose modseq needs settling.
        pending: dict[int, tuple[int, int]] = {}
        flags_of = self._keywords.flags_of
        logged_of = log.state.get
        masks: dict[str | None, int] = {}
        above = self._seq.highest
        unlogged = 0
        sizes = index.sizes
        last = 0
        ordered = True
        for key, uid in index.uids.items():
            entry = files.get(key)
            if entry is None:
                continue
            recent, info = entry
            prev = old.get(uid)
            logged = logged_of(uid)
            if (
                prev is not None
                and logged is not None
                and logged[0] == prev.modseq
                and prev.key == key
                and prev.info == info
                and prev.recent == recent
            ):
                fresh[uid] = prev
            else:
                mask = masks.get(info)
                if mask is None:
                    mask = masks[info] = flag_mask(info)
                if logged is None:
                    unlogged += 1
                    modseq = 0
                elif logged[1] == mask and (
                    logged[0] > above or (prev is not None and logged[0] == prev.modseq)
                ):
                    modseq = logged[0]
                else:
                    modseq = 0
                if not modseq:
                    pending[uid] = (mask, prev.modseq if prev is not None else 0)
                size = None
                if ",W=" not in key:
                    size = sizes.get(key)
                    if size is None:
                        size = sizes[key] = foreign_size(self.path, key, recent, info)
                date = None
                if not key[:1].isdigit():
                    date = foreign_date(self.path, key, recent, info)
                message = fresh[uid] = MessageInfo(
                    uid, key, flags_of(info), recent, info, size, date, modseq
                )
                if prev is None:
                    added.append(message)
                else:
                    candidates.append((message, prev))
            if uid < last:
                ordered = False
            last = uid
        if not ordered:
            fresh = dict(sorted(fresh.items()))
            added.sort(key=lambda m: m.uid)
        expunged = [uid for uid in old if uid not in fresh]
        gone = expunged
        if len(fresh) - unlogged < len(log.state):
            gone = sorted({*expunged, *(uid for uid in log.state if uid not in fresh)})
        if not log.exists:
            log.create({uid: mask for uid, (mask, _) in pending.items()})
        self._seq.settle(pending, gone)
        for uid in pending:
            fresh[uid].modseq = log.modseq_of(uid)
        changed = [m for m, prev in candidates if m.flags != prev.flags or m.modseq != prev.modseq]
        self._messages = fresh
        self._listing = None
        self._stamps = stamps if settled else None
        if notify:
            if expunged:
                self._notify_expunged(expunged)
            self._seq.show(max((m.modseq for m in (*added, *changed)), default=0))
            self._listeners.notify(self.folder_id, "messages_added", added)
            self._listeners.notify(self.folder_id, "flags_changed", changed)
        else:
            self._seq.show(max(1, log.highest))
        self._compact_if_needed()

    def _compact_if_needed(self) -> None:
        if not self._index.needs_compaction(len(self._messages)):
            return
        with self._index.locked():
            self._index.refresh()
            live = list_files(self.path, self.name)
            self._index.compact(live)
