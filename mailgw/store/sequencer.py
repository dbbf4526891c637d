"""The modseqs one folder shows, and the rule that keeps a client that synced from missing a change.

A client that synced at the highest modseq a folder showed must see, later, every change with a
larger one.  The folder's modseq index (``ModseqLog``) may hold modseqs the folder has not shown
yet: another process recorded a change before making it, or a delivery got its modseq before a
change that was shown first.  So whenever the folder is about to show a state for the first time
(a message's flags, a new message, an expunge), the ``Sequencer`` keeps the index's modseq for it
only if that is above every modseq shown so far (or is the very one already shown for it), and
otherwise records a new one.  That costs a write only in those races, never in the usual case.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from pathlib import Path

from mailgw.store.modseq import ModseqLog


class Sequencer:
    """The modseq index of the folder ``directory`` and the highest modseq the folder showed."""

    def __init__(self, directory: Path, uid_validity: int) -> None:
        """Read (not yet create) the modseq index of ``directory``."""
        self.log = ModseqLog(directory, uid_validity)
        #: The highest modseq shown (0 until the folder's first scan shows the index's).
        self.highest = 0

    def show(self, modseq: int) -> None:
        """Something with ``modseq`` is being shown: the highest shown is at least that."""
        if modseq > self.highest:
            self.highest = modseq

    def record(self, masks: Mapping[int, int], gone: Iterable[int] = ()) -> int | None:
        """Record these messages' flag masks and these expunged UIDs at one new modseq (under
        the index's lock); return it (None if there was nothing to record)."""
        with self.log.locked():
            return self.log.record(masks, gone)

    def settle(self, present: Mapping[int, tuple[int, int]], gone: Iterable[int] = ()) -> None:
        """Make sure what the folder is about to show has a modseq it may show.

        ``present`` maps each UID about to be shown to ``(flag mask of its file, modseq shown
        for it before, or 0)``; ``gone`` lists UIDs about to be shown expunged.  Those whose
        index entry does not say so, or says so at a modseq it may not show, are recorded
        anew, in one append."""
        log = self.log
        gone = list(gone)

        def unsettled() -> tuple[dict[int, int], list[int]]:
            above = self.highest
            state, expunged = log.state, log.expunged
            masks = {}
            for uid, (mask, shown) in present.items():
                entry = state.get(uid)
                if entry is None or entry[1] != mask or (entry[0] <= above and entry[0] != shown):
                    masks[uid] = mask
            lost = [uid for uid in gone if uid in state or expunged.get(uid, 0) <= above]
            return masks, lost

        masks, lost = unsettled()
        if masks or lost:
            with log.locked():
                log.record(*unsettled())

    def expunge_modseq(self, uids: Iterable[int]) -> int:
        """The modseq to show the expunge of these UIDs with (the largest of theirs)."""
        expunged = self.log.expunged
        modseq = max((expunged.get(uid, 0) for uid in uids), default=0)
        self.show(modseq)
        return modseq

    def vanished_since(self, modseq: int, live: Container[int]) -> list[int] | None:
        """UIDs expunged above ``modseq`` and not in ``live``; None beyond what is known."""
        if modseq > self.highest:
            return None
        uids = self.log.vanished_since(modseq)
        if uids is None:
            return None
        return [uid for uid in uids if uid not in live]
