"""SELECT and EXAMINE: open a mailbox for the session and report its state, with CONDSTORE's
HIGHESTMODSEQ and QRESYNC's resynchronisation (RFC 7162 3.1.2, 3.2.5).

The folder is watched before the state reported is taken (``SessionMailbox.catch_up``), so a
message delivered while SELECT runs is either in the answer or reported after it.  A SELECT
that replaces a selected mailbox first says ``[CLOSED]`` (RFC 7162 3.2.11).  A folder that does
not exist is ``NO [NONEXISTENT]``, a store failure ``[SERVERBUG]`` or ``[UNAVAILABLE]``,
logged (``mailgw.imap.errors``).  With IMAP4rev2 enabled (RFC 9051 6.3.2) the answer has the
mailbox's ``* LIST`` line and neither RECENT nor the deprecated ``[UNSEEN n]``, and the view
shows no \\Recent.
"""

from __future__ import annotations

from twisted.python.failure import Failure

from mailgw.imap.account import SPECIAL_USE
from mailgw.imap.folders import list_line
from mailgw.imap.listing import Query, list_mailboxes
from mailgw.imap.reply import Reply, bad, failed, no, ok
from mailgw.imap.wire import commands as c
from mailgw.imap.wire import responses as r


async def select(session, command: c.Select) -> Reply:
    """SELECT or EXAMINE: the mailbox's counts, flags, UIDVALIDITY, UIDNEXT, UNSEEN and
    HIGHESTMODSEQ; with QRESYNC what vanished and changed since the client's modseq."""
    name = b"EXAMINE" if command.readonly else b"SELECT"
    resync = command.qresync
    if resync is not None and not session.qresync:
        return bad(b"QRESYNC must be enabled first")
    if command.condstore:
        session.enable_condstore()
    if session.mailbox is not None:
        session.send(r.status_line(None, b"OK", b"[CLOSED] Previous mailbox is now closed"))
    session.deselect()
    try:
        mailbox = await session.account.select(command.mailbox, not command.readonly)
    except Exception:
        return failed(Failure(), name)
    if mailbox is None:
        return no(b"[NONEXISTENT] No such mailbox")
    validity = mailbox.folder.uid_validity
    if resync is not None and resync.uid_validity != validity:
        resync = None
    session.select(mailbox)
    try:
        highest, vanished = await mailbox.catch_up(resync.modseq if resync else None)
    except Exception:
        session.deselect()
        return failed(Failure(), name)
    view = mailbox.view
    lines = [r.untagged(view.count, r.Atom(b"EXISTS"))]
    if session.rev2:
        view.forgo_recent()
        lines.append(await _list_lines(session, command.mailbox))
    else:
        lines.append(r.untagged(view.recent_count, r.Atom(b"RECENT")))
    if view.first_unseen is not None and not session.rev2:
        lines.append(r.status_line(None, b"OK", b"[UNSEEN %d] First unseen" % view.first_unseen))
    lines.append(r.status_line(None, b"OK", b"[UIDVALIDITY %d] UIDs valid" % validity))
    lines.append(r.status_line(None, b"OK", b"[UIDNEXT %d] Predicted next UID" % mailbox.uid_next))
    lines.append(flags_lines(mailbox))  # after UIDNEXT, as in RFC 3501 6.3.1's and 9051's example
    lines.append(r.status_line(None, b"OK", b"[HIGHESTMODSEQ %d] Highest" % highest))
    if resync is not None:
        lines += resynchronised(session, resync, vanished)
    session.send(b"".join(lines))
    mode = b"[READ-WRITE] " if mailbox.writeable else b"[READ-ONLY] "
    return ok(mode + name + b" completed")


async def _list_lines(session, name: str) -> bytes:
    """The ``* LIST`` line of the selected mailbox, as LIST would give it (RFC 9051 6.3.2);
    nothing if the names cannot be read now."""
    try:
        folders, subscribed = await session.account.names()
    except Exception:
        return b""
    found = list_mailboxes(Query("", (name,), rev2=True), folders, subscribed, SPECIAL_USE)
    return b"".join(list_line(session, b"LIST", listed) for listed in found if listed.name == name)


def flags_lines(mailbox) -> bytes:
    """``* FLAGS`` and ``* OK [PERMANENTFLAGS ...]`` (empty when read-only) of ``mailbox``."""
    flags = mailbox.flags()
    permanent = [*flags, "\\*"] if mailbox.writeable else []
    return r.untagged(r.Atom(b"FLAGS"), r.flag_list(flags)) + r.status_line(
        None, b"OK", b"[PERMANENTFLAGS " + r.flag_list(permanent) + b"] Limited"
    )


def resynchronised(session, resync: c.QResync, vanished: list | None) -> list[bytes]:
    """QRESYNC's answer (RFC 7162 3.2.5): ``* VANISHED (EARLIER)`` for the known UIDs gone
    since ``resync.modseq``, then a FETCH of UID, FLAGS and MODSEQ for each message changed
    since.  ``vanished`` is the store's list, None when it does not know that far back: then
    every known UID not here is reported, but for those below the last sequence match (the
    client's numbering still holds there, so none of them went)."""
    view = session.mailbox.view
    last = max(session.mailbox.uid_next - 1, 0)
    known = resync.known_uids
    if vanished is None:
        floor = _matched_uid(view, resync.sequence_match)
        span = known.resolved(last) if known is not None else [(1, last)]
        candidates = (
            u for low, high in span for u in range(max(low, floor + 1), min(high, last) + 1)
        )
        gone = view.missing(candidates)
    else:
        gone = view.missing(vanished)
        if known is not None:
            ranges = known.resolved(last)
            gone = [u for u in gone if any(low <= u <= high for low, high in ranges)]
    lines = []
    if gone:
        lines.append(r.untagged(r.Atom(b"VANISHED (EARLIER) " + r.sequence_set(gone))))
    for seq, uid in view.changed_since(resync.modseq):
        info = view.info(uid)
        items = [b"UID %d" % uid, b"FLAGS " + r.flag_list(view.flags(uid))]
        items.append(b"MODSEQ (%d)" % info.modseq)
        lines.append(r.fetch_response(seq, items))
    return lines


def _matched_uid(view, match: tuple | None) -> int:
    """The largest UID of the client's (sequence numbers, UIDs) pairs that is still at its
    sequence number in the view; 0 if none (or no pairs)."""
    if match is None:
        return 0
    count, last = view.count, view.last_uid
    seqs = [n for low, high in match[0].resolved(count) for n in range(low, min(high, count) + 1)]
    uids = [n for low, high in match[1].resolved(last) for n in range(low, min(high, last) + 1)]
    best = 0
    for seq, uid in zip(seqs, uids, strict=False):
        try:
            if view.uid(seq) == uid:
                best = max(best, uid)
        except IndexError:
            break
    return best
