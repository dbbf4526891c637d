"""A selected folder: one session's ``FolderView`` over the store's ``IFolder``.

Every blocking store call (scan, set_flags, expunge, copy) runs with ``deferToThread``; store
failures come back as ``StoreFailed`` (``errors.in_thread``).  Changes made by other sessions
arrive through the store's listener (on the reactor thread), are kept pending in the view, and
are handed to the session when it asks with ``sync()`` at a moment RFC 3501 7.4.1 allows; the
session is told that there is something to ask for through its ``changes_pending()``.
"""

from __future__ import annotations

import weakref
from functools import partial
from typing import NamedTuple

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import Interface, implementer

from mailgw.imap.errors import ReadOnly, in_thread
from mailgw.imap.parsing import PERMANENT_FLAGS, storable_flags
from mailgw.imap.view import FolderView, Snapshot, Updates
from mailgw.imap.wire.commands import SequenceSet
from mailgw.store.interfaces import (
    FLAGS_ADD,
    FLAGS_REMOVE,
    FLAGS_REPLACE,
    IFolderListener,
    NoSuchMessage,
)

DELETED = "\\Deleted"
#: STORE's modes as ``IFolder.set_flags_many`` names them.
_MODES = {"add": FLAGS_ADD, "remove": FLAGS_REMOVE, "set": FLAGS_REPLACE}
#: Every message of a mailbox, as a sequence set.
EVERYTHING = SequenceSet(((1, None),))

_log = Logger()


class RecentClaims:
    """Which session holds \\Recent for a new message: the first to see it, one per message.

    Every session of this process runs on the reactor thread, so claiming needs no lock.  A
    claimed message is then moved from new/ to cur/ so that later sessions (and other programs)
    no longer see it as recent.  Sessions watching the folder may still hold news of it from
    before the move (an event, a listing), so the claims of a folder are kept while any session
    watches it (``hold``/``release``) or a move is under way, and forgotten after."""

    def __init__(self) -> None:
        self._claimed: dict[tuple, set] = {}
        #: UIDs copied into watched folders by this process, \Recent for the first to see them.
        self._offered: dict[tuple, set] = {}
        #: Watching sessions and moves under way, by folder.
        self._users: dict[tuple, int] = {}

    def hold(self, folder) -> None:
        """A session watches ``folder``: keep its claims."""
        key = (folder.folder_id, folder.uid_validity)
        self._users[key] = self._users.get(key, 0) + 1

    def release(self, folder) -> None:
        """A ``hold`` ends; the claims go once nothing holds them."""
        key = (folder.folder_id, folder.uid_validity)
        users = self._users.get(key, 0) - 1
        if users > 0:
            self._users[key] = users
        else:
            self._users.pop(key, None)
            self._claimed.pop(key, None)
            self._offered.pop(key, None)

    def unclaimed(self, folder, uids) -> set:
        """Those of ``uids`` no session holds."""
        taken = self._claimed.get((folder.folder_id, folder.uid_validity), set())
        return {uid for uid in uids if uid not in taken}

    def claim(self, folder, uids) -> set:
        """Take the unclaimed ones of ``uids`` (\\Recent in new/) for the caller."""
        won = self.unclaimed(folder, uids)
        if not won:
            return won
        key = (folder.folder_id, folder.uid_validity)
        self._claimed.setdefault(key, set()).update(won)
        self.hold(folder)

        def failed(failure):
            # The session still shows them \\Recent; they stay in new/ for the next one.
            _log.failure(
                "could not move {count} new message(s) of {user}, folder {folder!r}, to cur/",
                failure,
                count=len(won),
                user=folder.address,
                folder=folder.name,
            )

        def moved(result):
            self.release(folder)

        deferToThread(folder.mark_seen_by_client, sorted(won)).addErrback(failed).addBoth(moved)
        return won

    def offer(self, folder, uids) -> None:
        """Messages just copied into ``folder`` (RFC 3501 6.4.7: \\Recent in the target): the
        first session watching it that sees them arriving takes \\Recent for them.  Only while
        some session watches the folder (one that selects it later does not see them
        \\Recent)."""
        key = (folder.folder_id, folder.uid_validity)
        if key in self._users:
            self._offered.setdefault(key, set()).update(uids)

    def claim_arrivals(self, folder, infos) -> set:
        """The UIDs of the newly arrived ``infos`` that become \\Recent for the caller: those
        in new/ no session holds, and those offered (``offer``) that no session took yet."""
        offered = self._offered.get((folder.folder_id, folder.uid_validity), set())
        copies = {info.uid for info in infos if not info.recent and info.uid in offered}
        offered -= copies
        return copies | self.claim(folder, [info.uid for info in infos if info.recent])


#: The one claim table of this process.
RECENT_CLAIMS = RecentClaims()

#: The last Snapshot taken of each open folder object.
_SNAPSHOTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def folder_snapshot(folder, infos: tuple | None = None) -> Snapshot:
    """The folder's listing (``infos``, else ``folder.messages()``: blocking, call in a thread)
    as a Snapshot; the previous one is reused if the folder did not change since (the store
    then hands out the same listing)."""
    if infos is None:
        infos = folder.messages()
    previous = _SNAPSHOTS.get(folder)
    if previous is not None and previous.infos is infos:
        return previous
    snapshot = Snapshot(infos)
    _SNAPSHOTS[folder] = snapshot
    return snapshot


class ISessionListener(Interface):
    """A session showing a selected mailbox."""

    def changes_pending() -> None:
        """The folder changed elsewhere; call ``sync()`` at the next moment that allows it."""


@implementer(IFolderListener)
class _FolderWatch:
    """Forwards the store's notifications for one folder into a mailbox's view."""

    def __init__(self, mailbox: SessionMailbox) -> None:
        self._mailbox = mailbox

    def messages_added(self, folder_id, infos) -> None:
        """New messages: pending EXISTS."""
        self._mailbox.view.note_added(infos)
        self._mailbox.notify()

    def flags_changed(self, folder_id, infos) -> None:
        """Flags changed: pending FETCH."""
        self._mailbox.view.note_flags(infos)
        self._mailbox.notify()

    def messages_expunged(self, folder_id, uids) -> None:
        """Messages removed: pending EXPUNGE."""
        self._mailbox.view.note_expunged(uids)
        self._mailbox.notify()


class Stored(NamedTuple):
    """What ``SessionMailbox.store`` did."""

    #: ``{seq: uid}`` of the messages named that are still here and were not refused.
    reported: dict
    #: The UIDs whose flags it changed.
    changed: set
    #: The UIDs refused because they changed after UNCHANGEDSINCE (RFC 7162 MODIFIED).
    modified: list


class SessionMailbox:
    """One session's selection of one folder.

    ``watched`` is the account's set of mailboxes whose folder is being watched; this mailbox
    is in it from ``watch()`` until ``close()``, so logout can stop every watch."""

    def __init__(self, store, folder, snapshot: Snapshot, writeable: bool, watched: set) -> None:
        """Select ``folder``, as ``snapshot`` (``folder_snapshot``) lists it."""
        self._store = store
        self._watched = watched
        self.folder = folder
        recent = snapshot.recent
        if writeable:
            recent = RECENT_CLAIMS.claim(folder, recent)
            claim = partial(RECENT_CLAIMS.claim_arrivals, folder)
        else:
            recent = RECENT_CLAIMS.unclaimed(folder, recent)
            claim = None
        #: What the client knows of the folder.
        self.view = FolderView(snapshot, recent, claim)
        #: Selected with SELECT (True) or EXAMINE (False).
        self.writeable = writeable
        self._listener = None
        self._watch: _FolderWatch | None = None
        #: The keywords the client has been told of in FLAGS (they only grow).
        self._told: set[str] = set(self.view.keywords())

    # -- what SELECT and STATUS report ----------------------------------------------------

    def flags(self) -> list[str]:
        """What FLAGS lists: the system flags and every keyword the client was told of, which
        includes every keyword on a message of the view (one told stays listed while the
        mailbox is selected, so none still in use is ever dropped: RFC 3501 7.2.6)."""
        return list(PERMANENT_FLAGS) + sorted(self._told)

    def tell(self, flags) -> bool:
        """Note the keywords among ``flags`` as told; True if one of them was not yet (the
        client must then get FLAGS before any response that shows it)."""
        new = {flag for flag in flags if flag[:1] != "\\" and flag not in self._told}
        self._told |= new
        return bool(new)

    @property
    def uid_next(self) -> int:
        """The UID the next message will get, as far as this session knows."""
        return max(self.folder.uid_next, self.view.last_uid + 1)

    def status(self, items) -> dict[str, int]:
        """STATUS items (MESSAGES, RECENT, UIDNEXT, UIDVALIDITY, UNSEEN), in the order asked."""
        values = {
            "MESSAGES": lambda: self.view.count,
            "RECENT": lambda: self.view.recent_count,
            "UIDNEXT": lambda: self.uid_next,
            "UIDVALIDITY": lambda: self.folder.uid_validity,
            "UNSEEN": lambda: self.view.unseen_count,
        }
        return {item: values[item]() for item in items}

    # -- listening and pending changes ----------------------------------------------------

    def watch(self, listener) -> None:
        """Start telling ``listener`` (an ISessionListener) of changes; watch the folder."""
        self._listener = listener
        if self._watch is None:
            self._watch = _FolderWatch(self)
            RECENT_CLAIMS.hold(self.folder)
            self._store.add_listener(self.folder.address, self.folder.name, self._watch)
            self._watched.add(self)

    def close(self) -> None:
        """The session leaves the folder: stop watching it."""
        self._listener = None
        if self._watch is not None:
            self._store.remove_listener(self.folder.address, self.folder.name, self._watch)
            self._watch = None
            self._watched.discard(self)
            RECENT_CLAIMS.release(self.folder)

    def notify(self) -> None:
        """Tell the listener that changes are pending."""
        if self._listener is not None:
            self._listener.changes_pending()

    def refresh(self) -> Deferred:
        """Rescan the folder (in a thread) and note whatever changed, even by other programs."""
        return self._in_thread(folder_snapshot, self.folder).addCallback(self.view.reconcile)

    def catch_up(self, since: int | None = None) -> Deferred:
        """Once watched: rescan, so that what changed between the listing SELECT showed and
        the start of the watch is not missed, and apply it all to the view (the client has
        been told nothing yet).  Fires with ``(HIGHESTMODSEQ, vanished)``: a HIGHESTMODSEQ
        that every change the view now shows is at or below, and the UIDs expunged above
        ``since`` (``vanished_since``; None if not asked or not known that far back)."""
        folder = self.folder

        def work():
            highest = folder.highest_modseq
            vanished = folder.vanished_since(since) if since is not None else None
            return highest, vanished, folder_snapshot(folder)

        def apply(result):
            highest, vanished, snapshot = result
            self.view.reconcile(snapshot)
            if self.view.has_pending:
                self.view.take_updates(allow_expunge=True)
                self._told |= self.view.keywords()
            return highest, vanished

        return self._in_thread(work).addCallback(apply)

    def highest_modseq(self) -> Deferred:
        """The folder's HIGHESTMODSEQ (read in a thread: it may wait for the index)."""
        folder = self.folder
        return self._in_thread(lambda: folder.highest_modseq)

    def sync(self, allow_expunge: bool) -> Updates | None:
        """The pending changes to tell the client of (EXPUNGEs only if ``allow_expunge``), now
        applied to the view; None if there are none."""
        if not self.view.has_pending:
            return None
        return self.view.take_updates(allow_expunge)

    # -- commands -------------------------------------------------------------------------

    def _in_thread(self, call, *args) -> Deferred:
        return in_thread(self.folder.address, self.folder.name, call, *args)

    def _check_writeable(self) -> None:
        if not self.writeable:
            raise ReadOnly()

    def out_of_range(self, messages: SequenceSet) -> bool:
        """Does a sequence set (not UIDs) go beyond the last message?"""
        return self.view.out_of_range(messages)

    def resolve(self, messages: SequenceSet, uid: bool) -> list:
        """``[(seq, uid)]`` for a sequence or UID set."""
        return self.view.resolve(messages, uid)

    def store(
        self, messages: SequenceSet, flags, mode: str, uid: bool, unchanged_since=None
    ) -> Deferred:
        """Add (mode ``add``), remove (``remove``) or replace (``set``) flags, in one store
        call; with ``unchanged_since`` (RFC 7162) only on messages not changed since.  Fires
        with ``Stored``."""
        self._check_writeable()
        wanted = storable_flags(flags)
        targets = self.view.resolve(messages, uid)
        uids = [target for _, target in targets]
        call = partial(self.folder.set_flags_many, uids, wanted, _MODES[mode], unchanged_since)

        def done(result):
            self.view.apply_flags(result.infos)
            refused = set(result.modified)
            changed = {info.uid for info in result.infos}
            view = self.view
            return Stored(
                {seq: u for seq, u in targets if view.seq(u) and u not in refused},
                changed,
                sorted(refused),
            )

        return self._in_thread(call).addCallback(done)

    def copy_to(self, uids: list, target) -> Deferred:
        """Copy these messages (flags and internal date kept) into the folder ``target``.

        Fires with ``[(source uid, new uid)]`` for those still present."""
        folder = self.folder

        def work():
            copied = []
            for uid in uids:
                try:
                    info = folder.get(uid)
                    with folder.open_message(uid) as fp:
                        data = fp.read()
                except NoSuchMessage:
                    continue
                copied.append((uid, target.append(data, info.flags, info.internal_date)))
            return copied

        return self._in_thread(work)

    def expunge(self, uids=None, deleted_only: bool = True) -> Deferred:
        """Remove the messages flagged \\Deleted (only those of ``uids``, if given: UID EXPUNGE;
        all of ``uids`` if not ``deleted_only``: MOVE); fires with the sequence numbers to
        announce with EXPUNGE."""
        self._check_writeable()
        targets = self.view.resolve(EVERYTHING, False)
        if uids is not None:
            wanted = set(uids)
            targets = [(seq, u) for seq, u in targets if u in wanted]
        candidates = [
            u for _, u in targets if not deleted_only or DELETED in self.view.info(u).flags
        ]
        folder = self.folder

        def work():
            confirmed = []
            for target in candidates:
                try:
                    if not deleted_only or DELETED in folder.get(target).flags:
                        confirmed.append(target)
                except NoSuchMessage:
                    continue
            return folder.expunge(confirmed) if confirmed else []

        return self._in_thread(work).addCallback(self.view.remove)
