"""A selected folder as Twisted's ``IMailbox``, over the store's ``IFolder``.

Replaces Twisted's in-memory mailbox examples with an adapter that keeps a per-session
``FolderView`` and does every blocking store call (scan, set_flags, expunge, reading message
headers) with ``deferToThread``; ``IMAP4Server`` accepts Deferreds from fetch, store, expunge,
requestStatus and close.  Changes made by other sessions arrive through the store's listener
(on the reactor thread), are kept pending in the view, and are handed to the session (the
``ISessionListener``) when it asks with ``sync()`` at a moment RFC 3501 allows.
"""

from __future__ import annotations

import email.utils
import weakref
from functools import partial

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.mail import imap4
from zope.interface import implementer

from mailgw.imap.message import StoredMessage
from mailgw.imap.parsing import PERMANENT_FLAGS, FetchPlan, storable_flags
from mailgw.imap.view import SEEN, FolderView, Snapshot
from mailgw.store.interfaces import IFolderListener, NoSuchMessage, StoreError

DELETED = "\\Deleted"

_log = Logger()


class RecentClaims:
    """Which session holds \\Recent for a new message: the first to see it, one per message.

    Every session of this process runs on the reactor thread, so claiming needs no lock.  A
    claimed message is then moved from new/ to cur/ so that later sessions (and other programs)
    no longer see it as recent; the claim is forgotten once the move is done."""

    def __init__(self) -> None:
        self._claimed: dict[tuple, set] = {}

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

        def failed(failure):
            # The session still shows them \\Recent; they stay in new/ for the next one.
            _log.failure(
                "could not move {count} new message(s) of {user}, folder {folder!r}, to cur/",
                failure,
                count=len(won),
                user=folder.address,
                folder=folder.name,
            )

        def forget(result):
            taken = self._claimed.get(key, set())
            taken -= won
            if not taken:
                self._claimed.pop(key, None)
            return None

        deferToThread(folder.mark_seen_by_client, sorted(won)).addErrback(failed).addBoth(forget)
        return won


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


class ISessionListener(imap4.IMailboxListener):
    """A session showing a selected mailbox: told of expunges and of pending changes."""

    def messagesExpunged(sequence_numbers: list) -> None:
        """Announce these EXPUNGEs, in this order (each number valid when sent)."""

    def changesPending() -> None:
        """The folder changed elsewhere; call ``sync()`` at the next moment that allows it."""


@implementer(IFolderListener)
class _FolderWatch:
    """Forwards the store's notifications for one folder into a mailbox's view."""

    def __init__(self, mailbox: SessionMailbox) -> None:
        self._mailbox = mailbox

    def messages_added(self, folder_id, infos) -> None:
        """New messages: pending EXISTS."""
        self._mailbox._view.note_added(infos)
        self._mailbox._notify()

    def flags_changed(self, folder_id, infos) -> None:
        """Flags changed: pending FETCH."""
        self._mailbox._view.note_flags(infos)
        self._mailbox._notify()

    def messages_expunged(self, folder_id, uids) -> None:
        """Messages removed: pending EXPUNGE."""
        self._mailbox._view.note_expunged(uids)
        self._mailbox._notify()


@implementer(imap4.IMailbox, imap4.ICloseableMailbox)
class SessionMailbox:
    """One session's selection of one folder.

    ``watched`` is the account's set of mailboxes whose folder is being watched; this mailbox
    is in it from its first listener until close(), so logout can stop every watch."""

    def __init__(self, store, folder, snapshot: Snapshot, writeable: bool, watched: set) -> None:
        """Select ``folder``, as ``snapshot`` (``folder_snapshot``) lists it."""
        self._store = store
        self._watched = watched
        self.folder = folder
        recent = snapshot.recent
        if writeable:
            recent = RECENT_CLAIMS.claim(folder, recent)
            claim = partial(RECENT_CLAIMS.claim, folder)
        else:
            recent = RECENT_CLAIMS.unclaimed(folder, recent)
            claim = None
        self._view = FolderView(snapshot, recent, claim)
        self._writeable = writeable
        self._listeners: list = []
        self._watch: _FolderWatch | None = None

    # -- IMailboxInfo / IMailbox read side ------------------------------------------------

    def getFlags(self) -> list:
        """The flags messages here carry or can carry: system flags and keywords in use."""
        return list(PERMANENT_FLAGS) + sorted(self._view.keywords())

    def getHierarchicalDelimiter(self) -> str:
        """'.' (Maildir++)."""
        return "."

    def getUIDValidity(self) -> int:
        """UIDVALIDITY."""
        return self.folder.uid_validity

    def getUIDNext(self) -> int:
        """The UID the next message will get, as far as this session knows."""
        return max(self.folder.uid_next, self._view.last_uid + 1)

    def getUID(self, message: int) -> int:
        """The UID at sequence number ``message``."""
        return self._view.uid(message)

    def getMessageCount(self) -> int:
        """Messages in this session's view."""
        return self._view.count

    def getRecentCount(self) -> int:
        """Messages \\Recent in this session."""
        return self._view.recent_count

    def getUnseenCount(self) -> int:
        """Messages without \\Seen."""
        return self._view.unseen_count

    def firstUnseen(self) -> int | None:
        """The sequence number of the first message without \\Seen (SELECT's [UNSEEN n])."""
        return self._view.first_unseen

    def isWriteable(self) -> bool:
        """Selected with SELECT (True) or EXAMINE (False)."""
        return self._writeable

    def destroy(self) -> None:
        """Folders are deleted through the account; nothing to release here."""

    def requestStatus(self, names) -> dict:
        """STATUS items from the view taken at select time."""
        return imap4.statusRequestHelper(self, names)

    # -- listeners and pending changes ----------------------------------------------------

    def addListener(self, listener) -> None:
        """Start telling ``listener`` (an ISessionListener) of changes; watch the folder."""
        self._listeners.append(listener)
        if self._watch is None:
            self._watch = _FolderWatch(self)
            self._store.add_listener(self.folder.address, self.folder.name, self._watch)
            self._watched.add(self)

    def removeListener(self, listener) -> None:
        """Stop telling ``listener``; stop watching the folder when no one listens."""
        if listener in self._listeners:
            self._listeners.remove(listener)
        if not self._listeners and self._watch is not None:
            self._store.remove_listener(self.folder.address, self.folder.name, self._watch)
            self._watch = None
            self._watched.discard(self)

    def close(self) -> None:
        """The session leaves the folder."""
        for listener in list(self._listeners):
            self.removeListener(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener.changesPending()

    def refresh(self) -> Deferred:
        """Rescan the folder (in a thread) and note whatever changed, even by other programs."""
        return deferToThread(folder_snapshot, self.folder).addCallback(self._view.reconcile)

    def sync(self, allow_expunge: bool) -> None:
        """Tell the listeners of pending changes (EXPUNGEs only if ``allow_expunge``)."""
        if not self._view.has_pending:
            return
        updates = self._view.take_updates(allow_expunge)
        for listener in list(self._listeners):
            if updates.expunged:
                listener.messagesExpunged(updates.expunged)
            if updates.flags:
                listener.flagsChanged(updates.flags)
            if updates.exists is not None:
                listener.newMessages(updates.exists, updates.recent)

    # -- commands -------------------------------------------------------------------------

    def fetch(self, messages, uid: bool) -> Deferred:
        """``[(seq, IMessage)]`` for the messages that still exist (no content loaded)."""
        return self.fetch_for(messages, uid, FetchPlan(False, False, False, True))

    def fetch_rows(self, messages, uid: bool, plan: FetchPlan) -> Deferred:
        """For FETCH's one-pass writer: fires with an iterator of ``(seq, IMessageInfo,
        \\Recent here)``, once \\Seen is set (if ``plan`` says so) and \\Recent ones are marked."""
        if plan.sets_seen and self._writeable:
            d = self.fetch_for(messages, uid, plan)
            return d.addCallback(
                lambda loaded: self._view.rows([(s, m.getUID()) for s, m in loaded])
            )
        pairs = self._view.resolve(messages, uid)
        rows = self._view.rows(pairs)
        recent = [info.uid for _, info, _ in self._view.rows(pairs) if info.recent]
        if not recent:
            return succeed(rows)
        return deferToThread(self.folder.mark_seen_by_client, recent).addCallback(lambda _: rows)

    def fetch_for(self, messages, uid: bool, plan: FetchPlan) -> Deferred:
        """Like fetch(), loading what ``plan`` needs and setting \\Seen if it says so."""
        view = self._view
        targets = [(seq, view.info(u)) for seq, u in view.resolve(messages, uid)]
        set_seen = plan.sets_seen and self._writeable
        folder = self.folder

        def work():
            recent = [info.uid for _, info in targets if info.recent]
            if recent:
                folder.mark_seen_by_client(recent)
            seen_infos = []
            loaded = []
            for seq, info in targets:
                try:
                    if set_seen and SEEN not in info.flags:
                        current = folder.get(info.uid)
                        if SEEN not in current.flags:
                            seen_infos.append(folder.set_flags(info.uid, current.flags | {SEEN}))
                    loaded.append((seq, info.uid))
                except NoSuchMessage:
                    continue
            return seen_infos, loaded

        def built(result):
            seen_infos, loaded = result
            self._view.apply_flags(seen_infos)
            return [
                (seq, StoredMessage(folder, self._view.info(u), self._view.flags(u)))
                for seq, u in loaded
            ]

        def load(messages_list):
            def work_load():
                present = []
                for seq, message in messages_list:
                    try:
                        message.load(plan.needs_headers, plan.needs_structure)
                    except NoSuchMessage:
                        continue
                    present.append((seq, message))
                return present

            if plan.needs_headers or plan.needs_structure:
                return deferToThread(work_load)
            return messages_list

        return deferToThread(work).addCallback(built).addCallback(load)

    def store(self, messages, flags, mode: int, uid: bool) -> Deferred:
        """Add (mode 1), remove (-1) or replace (0) system flags; return {seq: flags}."""
        if not self._writeable:
            raise imap4.ReadOnlyMailbox()
        wanted = storable_flags(flags)
        targets = self._view.resolve(messages, uid)
        folder = self.folder

        def work():
            changed = []
            for _, target in targets:
                try:
                    current = folder.get(target).flags
                    if mode > 0:
                        new = current | wanted
                    elif mode < 0:
                        new = current - wanted
                    else:
                        new = wanted
                    if new != current:
                        changed.append(folder.set_flags(target, new))
                except NoSuchMessage:
                    continue
                except StoreError as error:
                    raise imap4.MailboxException(str(error)) from None
            return changed

        def done(changed):
            self._view.apply_flags(changed)
            return {seq: self._view.flags(u) for seq, u in targets if self._view.seq(u)}

        return deferToThread(work).addCallback(done)

    def candidates(self) -> list:
        """Snapshots of the messages the session knows, for SEARCH (reactor thread)."""
        return self._view.candidates()

    def out_of_range(self, messages) -> bool:
        """Does a sequence set (not UIDs) go beyond the last message?"""
        return self._view.out_of_range(messages)

    def resolve(self, messages, uid: bool) -> list:
        """``[(seq, uid)]`` for a sequence or UID set."""
        return self._view.resolve(messages, uid)

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

        return deferToThread(work)

    def expunge(self, uids=None, deleted_only: bool = True) -> Deferred:
        """Remove the messages flagged \\Deleted (only those of ``uids``, if given: UID EXPUNGE;
        all of ``uids`` if not ``deleted_only``: MOVE); return the sequence numbers for EXPUNGE."""
        if not self._writeable:
            raise imap4.ReadOnlyMailbox()
        targets = self._view.resolve(imap4.MessageSet(1, None), False)
        if uids is not None:
            wanted = set(uids)
            targets = [(seq, u) for seq, u in targets if u in wanted]
        candidates = [
            u for _, u in targets if not deleted_only or DELETED in self._view.info(u).flags
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

        return deferToThread(work).addCallback(self._view.remove)

    def addMessage(self, message, flags, date=None) -> Deferred:
        """Append the message read from the file ``message`` (used by COPY); return its UID.

        ``date`` is an RFC 2822 date, a POSIX timestamp or None (now)."""
        if isinstance(date, (bytes, str)):
            text = date.decode("ascii", "replace") if isinstance(date, bytes) else date
            date = email.utils.parsedate_to_datetime(text).timestamp()
        return deferToThread(append_file, self.folder, message, flags, date)


def append_file(folder, message, flags, internal_date: float | None) -> int:
    """Store the message read from the binary file ``message`` (blocking); return its UID."""
    data = message.read()
    return folder.append(data, storable_flags(flags), internal_date)
