"""One session's view of its selected folder: which messages the client knows, by sequence number.

Pure bookkeeping (no Twisted, no disk), in the manner of pymap's ``selected.py``.  Changes made
elsewhere are noted as *pending* and only become visible (as untagged EXPUNGE / EXISTS / FETCH
responses) when the session reaches a moment where RFC 3501 7.4.1 allows it, so sequence numbers
never shift under the client's feet.  Everything here runs on the reactor thread.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from mailgw.imap.wire.commands import SequenceSet

SEEN = "\\Seen"
RECENT = "\\Recent"


@dataclass
class Updates:
    """What the client must be told, in this order, to bring its view up to date."""

    #: ``(seq, uid)`` of the messages gone, seq valid at the moment its EXPUNGE is sent (the
    #: UIDs for QRESYNC's VANISHED).
    expunged: list = field(default_factory=list)
    #: Messages changed elsewhere: sequence number -> ``(uid, flags, modseq)`` (after the
    #: expunges).
    flags: dict = field(default_factory=dict)
    #: The new message count, or None if it did not change.
    exists: int | None = None
    #: The new \\Recent count, or None if it did not change.
    recent: int | None = None
    #: The keywords of the messages added or changed.
    keywords: set = field(default_factory=set)


def _first_unseen(uids: list, infos: dict) -> int | None:
    for seq, uid in enumerate(uids, 1):
        if SEEN not in infos[uid].flags:
            return seq
    return None


class Snapshot:
    """What every view of one folder listing starts from, computed once (read-only, shared).

    Views keep the snapshot's list and dict until they change something, then copy them, so a
    SELECT of an unchanged folder costs no per-message work in the session."""

    __slots__ = ("infos", "uids", "by_uid", "keywords", "recent", "first_unseen", "unseen")

    def __init__(self, infos: list) -> None:
        """Derive from ``infos``, a folder's IMessageInfo listing in ascending UID order."""
        self.infos = infos
        self.uids: list[int] = [info.uid for info in infos]
        self.by_uid: dict = dict(zip(self.uids, infos, strict=True))
        distinct = {info.flags for info in infos}
        self.keywords = frozenset(f for flags in distinct for f in flags if f[:1] != "\\")
        self.recent: list[int] = [info.uid for info in infos if info.recent]
        self.first_unseen = _first_unseen(self.uids, self.by_uid)
        self.unseen = sum(1 for info in infos if SEEN not in info.flags)


class FolderView:
    """The ordered UIDs a session knows (sequence number = position + 1) and their metadata."""

    def __init__(self, snapshot: Snapshot, recent=frozenset(), claim=None) -> None:
        """Show the folder as ``snapshot`` lists it; ``recent`` are the UIDs \\Recent in this
        session, and ``claim(infos)`` returns the UIDs of those newly arrived messages that
        become \\Recent here."""
        #: The snapshot whose list and dict the view still shares, None once it has its own.
        self._snapshot: Snapshot | None = snapshot
        #: The snapshot ``reconcile`` last compared the view with.
        self._reconciled: Snapshot | None = None
        self._uids: list[int] = snapshot.uids
        self._infos: dict = snapshot.by_uid
        self._recent: set[int] = set(recent)
        self._claim = claim or (lambda infos: set())
        self._gone: set[int] = set()
        self._added: dict = {}
        self._changed: dict = {}
        #: The UIDs of the search result saved for ``$`` (RFC 5182), ascending.
        self.saved: tuple[int, ...] = ()

    # -- what the client sees -------------------------------------------------------------

    @property
    def count(self) -> int:
        """Messages in the view (the last EXISTS the client was told)."""
        return len(self._uids)

    @property
    def recent_count(self) -> int:
        """Messages that are \\Recent in this session."""
        return len(self._recent)

    def forgo_recent(self) -> None:
        """Show no message \\Recent from now on (IMAP4rev2 has none, RFC 9051 E.12); the session
        still takes \\Recent for what it sees first, as any other would."""
        self._recent = set()

        def claim(infos, take=self._claim) -> set:
            take(infos)
            return set()

        self._claim = claim

    @property
    def unseen_count(self) -> int:
        """Messages without \\Seen."""
        if self._snapshot is not None:
            return self._snapshot.unseen
        return sum(1 for uid in self._uids if SEEN not in self._infos[uid].flags)

    @property
    def first_unseen(self) -> int | None:
        """The sequence number of the first message without \\Seen, or None."""
        if self._snapshot is not None:
            return self._snapshot.first_unseen
        return _first_unseen(self._uids, self._infos)

    @property
    def last_uid(self) -> int:
        """The highest UID in the view, 0 if empty."""
        return self._uids[-1] if self._uids else 0

    def uid(self, seq: int) -> int:
        """The UID at sequence number ``seq``; IndexError if there is none."""
        if seq < 1:
            raise IndexError(seq)
        return self._uids[seq - 1]

    def seq(self, uid: int) -> int | None:
        """The sequence number of ``uid``, or None if the view does not hold it."""
        index = bisect.bisect_left(self._uids, uid)
        if index < len(self._uids) and self._uids[index] == uid:
            return index + 1
        return None

    def info(self, uid: int):
        """The IMessageInfo the view holds for ``uid``."""
        return self._infos[uid]

    def flags(self, uid: int) -> tuple:
        """The flags to report for ``uid``: its stored flags, plus \\Recent for this session."""
        flags = sorted(self._infos[uid].flags)
        if uid in self._recent:
            flags.append(RECENT)
        return tuple(flags)

    def resolve(self, messages: SequenceSet, by_uid: bool) -> list:
        """Return ``[(seq, uid), ...]`` for a sequence set (of UIDs if ``by_uid``), ascending.

        Numbers outside the view are skipped, as are messages known to be gone (by UID).
        ``$`` is the saved result (``saved``), whichever ``by_uid``, less the messages gone."""
        if messages.saved:
            pairs = ((self.seq(uid), uid) for uid in self.saved if uid not in self._gone)
            return [(seq, uid) for seq, uid in pairs if seq is not None]
        if not self._uids:
            return []
        ranges = messages.resolved(self._uids[-1] if by_uid else len(self._uids))
        if len(ranges) == 1:
            start, stop = self._span(*ranges[0], by_uid)
            pairs = list(zip(range(start + 1, stop + 1), self._uids[start:stop], strict=True))
            if self._gone:
                pairs = [(seq, uid) for seq, uid in pairs if uid not in self._gone]
            return pairs
        found: dict[int, int] = {}
        for low, high in ranges:
            start, stop = self._span(low, high, by_uid)
            for index in range(start, stop):
                found[index + 1] = self._uids[index]
        return [(seq, uid) for seq, uid in sorted(found.items()) if uid not in self._gone]

    def _span(self, low: int, high: int, by_uid: bool) -> tuple[int, int]:
        if by_uid:
            return bisect.bisect_left(self._uids, low), bisect.bisect_right(self._uids, high)
        return max(low, 1) - 1, max(min(high, len(self._uids)), 0)

    def changed_since(self, modseq: int) -> list:
        """``(seq, uid)`` of the messages whose modseq is above ``modseq``, ascending."""
        infos = self._infos
        return [
            (seq, uid)
            for seq, uid in enumerate(self._uids, 1)
            if infos[uid].modseq > modseq and uid not in self._gone
        ]

    def missing(self, uids) -> list:
        """Those of ``uids`` the view does not hold (or knows to be gone), ascending."""
        return sorted(uid for uid in uids if self.seq(uid) is None or uid in self._gone)

    def changed_rows(self, messages: SequenceSet, by_uid: bool, modseq: int) -> list:
        """``rows`` of the messages of a (UID) set whose modseq is above ``modseq`` (FETCH
        CHANGEDSINCE), ascending; the others are only looked at, nothing is built for them
        (on a large view that spares the garbage collector a pass per FETCH)."""
        uids, infos, gone = self._uids, self._infos, self._gone
        if not uids:
            return []
        found = {}
        for low, high in messages.resolved(uids[-1] if by_uid else len(uids)):
            start, stop = self._span(low, high, by_uid)
            for index in range(start, stop):
                info = infos[uids[index]]
                if info.modseq > modseq and info.uid not in gone:
                    found[index + 1] = info
        recent = self._recent
        return [(seq, info, info.uid in recent) for seq, info in sorted(found.items())]

    def with_flag(self, flag: str, wanted: bool, by_uid: bool) -> list[int]:
        """Sequence numbers (UIDs if ``by_uid``) of the messages that have stored flag ``flag``
        (``wanted``) or have not: SEARCH UNSEEN and its kind, without a row per message."""
        infos, gone = self._infos, self._gone
        if by_uid:
            return [u for u in self._uids if (flag in infos[u].flags) is wanted and u not in gone]
        return [
            seq
            for seq, uid in enumerate(self._uids, 1)
            if (flag in infos[uid].flags) is wanted and uid not in gone
        ]

    def row_batches(self, messages: SequenceSet, by_uid: bool, size: int):
        """``rows`` of a (UID) set, ``size`` at a time, each batch made when asked for and from
        the view as it is then (``resolve`` gives the order).  One range (``1:*``, the common
        case) is walked by position, without a ``(seq, uid)`` pair per message: on a large
        folder the pairs, alive for the whole FETCH, cost the garbage collector full passes."""
        ranges = None
        if not messages.saved and not self._gone and self._uids:
            ranges = messages.resolved(self._uids[-1] if by_uid else len(self._uids))
        if ranges is None or len(ranges) != 1:
            pairs = self.resolve(messages, by_uid)
            for start in range(0, len(pairs), size):
                yield list(self.rows(pairs[start : start + size]))
            return
        first, stop = self._span(*ranges[0], by_uid)
        for start in range(first, stop, size):
            uids, infos, recent = self._uids, self._infos, self._recent
            yield [
                (index + 1, infos[uids[index]], uids[index] in recent)
                for index in range(start, min(start + size, stop))
            ]

    def rows(self, pairs: list):
        """``(seq, IMessageInfo, is \\Recent here)`` for each ``(seq, uid)`` the view holds."""
        infos, recent = self._infos, self._recent
        for seq, uid in pairs:
            info = infos.get(uid)
            if info is not None:
                yield seq, info, uid in recent

    # -- changes made by this session -----------------------------------------------------

    def _own(self) -> None:
        """Stop sharing the snapshot's list and dict: the view is about to change."""
        if self._snapshot is not None:
            self._uids = list(self._uids)
            self._infos = dict(self._infos)
            self._snapshot = None

    def apply_flags(self, infos: list) -> None:
        """Take new flags that this session itself stored."""
        if infos:
            self._own()
        for info in infos:
            if info.uid in self._infos:
                self._infos[info.uid] = info

    def keywords(self) -> set:
        """The keywords some message in the view carries."""
        if self._snapshot is not None:
            return set(self._snapshot.keywords)
        return {f for info in self._infos.values() for f in info.flags if f[:1] != "\\"}

    def candidates(self) -> list:
        """``(seq, uid, flags with \\Recent, size, internal date)`` of every message, in order."""
        return [
            (
                seq,
                uid,
                frozenset(self.flags(uid)),
                self._infos[uid].size,
                self._infos[uid].internal_date,
            )
            for seq, uid in enumerate(self._uids, 1)
            if uid not in self._gone
        ]

    def out_of_range(self, messages: SequenceSet) -> bool:
        """Does the sequence set name a sequence number beyond the last message (or 0)?"""
        return any(
            number is not None and not 0 < number <= len(self._uids)
            for low, high in messages.ranges
            for number in (low, high)
        )

    def remove(self, uids) -> list:
        """Drop messages this session expunged; return their ``(seq, uid)``, seq as EXPUNGE
        wants it."""
        return self._drop(set(uids))

    # -- changes made elsewhere -----------------------------------------------------------

    def note_added(self, infos: list) -> None:
        """Remember messages delivered or appended since the view was taken."""
        for info in infos:
            if info.uid > self.last_uid and info.uid not in self._gone:
                self._added[info.uid] = info

    def note_flags(self, infos: list) -> None:
        """Remember flag changes."""
        for info in infos:
            if info.uid in self._infos:
                self._changed[info.uid] = info
            elif info.uid in self._added:
                self._added[info.uid] = info

    def note_expunged(self, uids) -> None:
        """Remember messages removed for good."""
        for uid in uids:
            self._added.pop(uid, None)
            if uid in self._infos:
                self._gone.add(uid)

    def reconcile(self, snapshot: Snapshot) -> None:
        """Compare with a fresh snapshot of the folder and note every difference; nothing to
        do if it is the very snapshot the view still shares or was last compared with (the
        folder did not change since: IDLE polls cost nothing then).

        The store hands out the same IMessageInfo object for a message until it changes, so
        only the entries that are not the view's own objects are looked at closely."""
        if snapshot is self._snapshot or snapshot is self._reconciled:
            return
        self._reconciled = snapshot
        infos = snapshot.infos
        known = self._infos
        differing = [info for info in infos if known.get(info.uid) is not info]
        added = [info for info in differing if info.uid not in known]
        if len(infos) != len(known) + len(added):
            present = {info.uid for info in infos}
            self.note_expunged([uid for uid in self._uids if uid not in present])
        self.note_flags([info for info in differing if info.uid in known])
        self.note_added(added)

    @property
    def has_pending(self) -> bool:
        """Are there changes the client has not been told of?"""
        return bool(self._gone or self._added or self._changed)

    def take_updates(self, allow_expunge: bool) -> Updates:
        """Apply the pending changes to the view and return what to tell the client.

        Expunges stay pending unless ``allow_expunge`` (not while answering FETCH, STORE or
        SEARCH); new messages and flag changes never shift existing sequence numbers."""
        updates = Updates()
        self._own()
        if allow_expunge and self._gone:
            updates.expunged = self._drop(self._gone)
        for uid, info in sorted(self._changed.items()):
            known = self._infos.get(uid)
            if known is None or info.modseq < known.modseq:
                continue
            self._infos[uid] = info
            if info.flags != known.flags:
                updates.flags[self.seq(uid)] = (uid, self.flags(uid), info.modseq)
        self._changed.clear()
        added = [info for uid, info in sorted(self._added.items()) if uid > self.last_uid]
        self._added.clear()
        for info in added:
            self._uids.append(info.uid)
            self._infos[info.uid] = info
        self._recent |= self._claim(added)
        updates.keywords = {f for info in added for f in info.flags if f[:1] != "\\"}
        for _, flags, _ in updates.flags.values():
            updates.keywords.update(f for f in flags if f[:1] != "\\")
        if added or updates.expunged:
            updates.exists = len(self._uids)
            updates.recent = len(self._recent)
        return updates

    def _drop(self, uids: set) -> list:
        self._own()
        expunged = []
        for index in range(len(self._uids) - 1, -1, -1):
            uid = self._uids[index]
            if uid in uids:
                expunged.append((index + 1, uid))
                del self._uids[index]
                del self._infos[uid]
                self._recent.discard(uid)
                self._changed.pop(uid, None)
                self._gone.discard(uid)
        return expunged
