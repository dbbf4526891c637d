"""One session's view of its selected folder: which messages the client knows, by sequence number.

Pure bookkeeping (no Twisted transport, no disk): replaces the flat message list that Twisted's
in-memory mailboxes keep, in the manner of pymap's ``selected.py``.  Changes made elsewhere are
noted as *pending* and only become visible (as untagged EXPUNGE / EXISTS / FETCH responses) when
the session reaches a moment where RFC 3501 7.4.1 allows it, so sequence numbers never shift
under the client's feet.  Everything here runs on the reactor thread.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from twisted.mail.imap4 import MessageSet

SEEN = "\\Seen"
RECENT = "\\Recent"


@dataclass
class Updates:
    """What the client must be told, in this order, to bring its view up to date."""

    #: Sequence numbers to announce with EXPUNGE, each valid at the moment it is sent.
    expunged: list = field(default_factory=list)
    #: Flags of messages changed elsewhere: sequence number -> flags (after the expunges).
    flags: dict = field(default_factory=dict)
    #: The new message count, or None if it did not change.
    exists: int | None = None
    #: The new \\Recent count, or None if it did not change.
    recent: int | None = None


class FolderView:
    """The ordered UIDs a session knows (sequence number = position + 1) and their metadata."""

    def __init__(self, infos: list, recent=frozenset(), claim=None) -> None:
        """Show ``infos``; ``recent`` are the UIDs \\Recent in this session, and
        ``claim(uids)`` returns those of newly arrived UIDs that become \\Recent here."""
        self._uids: list[int] = [info.uid for info in infos]
        self._infos: dict = {info.uid: info for info in infos}
        self._recent: set[int] = set(recent)
        self._claim = claim or (lambda uids: set())
        self._gone: set[int] = set()
        self._added: dict = {}
        self._changed: dict = {}

    # -- what the client sees -------------------------------------------------------------

    @property
    def count(self) -> int:
        """Messages in the view (the last EXISTS the client was told)."""
        return len(self._uids)

    @property
    def recent_count(self) -> int:
        """Messages that are \\Recent in this session."""
        return len(self._recent)

    @property
    def unseen_count(self) -> int:
        """Messages without \\Seen."""
        return sum(1 for uid in self._uids if SEEN not in self._infos[uid].flags)

    @property
    def first_unseen(self) -> int | None:
        """The sequence number of the first message without \\Seen, or None."""
        for seq, uid in enumerate(self._uids, 1):
            if SEEN not in self._infos[uid].flags:
                return seq
        return None

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

    def resolve(self, messages: MessageSet, by_uid: bool) -> list:
        """Return ``[(seq, uid), ...]`` for a sequence set (of UIDs if ``by_uid``), ascending.

        Numbers outside the view are skipped, as are messages known to be gone (by UID)."""
        if not self._uids:
            return []
        messages.last = self._uids[-1] if by_uid else len(self._uids)
        found: dict[int, int] = {}
        for low, high in messages.ranges:
            if by_uid:
                start = bisect.bisect_left(self._uids, low)
                stop = bisect.bisect_right(self._uids, high)
            else:
                start, stop = max(low, 1) - 1, min(high, len(self._uids))
            for index in range(start, stop):
                found[index + 1] = self._uids[index]
        return [(seq, uid) for seq, uid in sorted(found.items()) if uid not in self._gone]

    # -- changes made by this session -----------------------------------------------------

    def apply_flags(self, infos: list) -> None:
        """Take new flags that this session itself stored."""
        for info in infos:
            if info.uid in self._infos:
                self._infos[info.uid] = info

    def keywords(self) -> set:
        """The keywords some message in the view carries."""
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

    def out_of_range(self, messages: MessageSet) -> bool:
        """Does the sequence set name a sequence number beyond the last message?"""
        return any(
            number is not None and number > len(self._uids)
            for low, high in messages.ranges
            for number in (low, high)
        )

    def remove(self, uids) -> list:
        """Drop messages this session expunged; return their sequence numbers, as EXPUNGE wants."""
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

    def reconcile(self, infos: list) -> None:
        """Compare with a fresh listing of the folder and note every difference."""
        present = {info.uid: info for info in infos}
        self.note_expunged([uid for uid in self._uids if uid not in present])
        self.note_flags([info for info in infos if info.uid in self._infos])
        self.note_added([info for info in infos if info.uid not in self._infos])

    @property
    def has_pending(self) -> bool:
        """Are there changes the client has not been told of?"""
        return bool(self._gone or self._added or self._changed)

    def take_updates(self, allow_expunge: bool) -> Updates:
        """Apply the pending changes to the view and return what to tell the client.

        Expunges stay pending unless ``allow_expunge`` (not while answering FETCH, STORE or
        SEARCH); new messages and flag changes never shift existing sequence numbers."""
        updates = Updates()
        if allow_expunge and self._gone:
            updates.expunged = self._drop(self._gone)
        for uid, info in sorted(self._changed.items()):
            if uid in self._infos and info.flags != self._infos[uid].flags:
                self._infos[uid] = info
                updates.flags[self.seq(uid)] = self.flags(uid)
        self._changed.clear()
        added = [info for uid, info in sorted(self._added.items()) if uid > self.last_uid]
        self._added.clear()
        for info in added:
            self._uids.append(info.uid)
            self._infos[info.uid] = info
        self._recent |= self._claim([info.uid for info in added if info.recent])
        if added or updates.expunged:
            updates.exists = len(self._uids)
            updates.recent = len(self._recent)
        return updates

    def _drop(self, uids: set) -> list:
        expunged = []
        for index in range(len(self._uids) - 1, -1, -1):
            uid = self._uids[index]
            if uid in uids:
                expunged.append(index + 1)
                del self._uids[index]
                del self._infos[uid]
                self._recent.discard(uid)
                self._changed.pop(uid, None)
                self._gone.discard(uid)
        return expunged
