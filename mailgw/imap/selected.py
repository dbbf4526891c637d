"""The commands of the selected state but FETCH: CHECK, CLOSE, UNSELECT (RFC 3691), EXPUNGE and
UID EXPUNGE (RFC 4315), STORE, COPY and MOVE (RFC 6851, with COPYUID), SEARCH; and IDLE (RFC 2177).

Sequence numbers beyond the mailbox are ``BAD``; a UID that is not there is just absent.  The
store calls run in threads; a read-only (EXAMINEd) mailbox answers ``NO [READ-ONLY]``.
"""

from __future__ import annotations

from twisted.python.failure import Failure

from mailgw.imap.reply import Reply, bad, failed, no, ok
from mailgw.imap.search import find, unsupported
from mailgw.imap.wire import commands as c
from mailgw.imap.wire import responses as r

#: Charsets SEARCH accepts.
CHARSETS = frozenset({"US-ASCII", "UTF-8"})
OUT_OF_RANGE = b"Message sequence number out of range"

#: Every message of the view, as a sequence set.
_EVERY = c.SequenceSet(((1, None),))


def checked_set(session, messages: c.SequenceSet, uid: bool) -> Reply | None:
    """The BAD a sequence set gets in the selected mailbox (``$`` or numbers beyond it), if
    any."""
    if messages.saved:
        return bad(b"$ needs SEARCHRES, which is not supported")
    if not uid and session.mailbox.out_of_range(messages):
        return bad(OUT_OF_RANGE)
    return None


async def refreshed(session, command: bytes, done: bytes) -> Reply:
    """Rescan the selected folder (changes are reported before the OK ``done``)."""
    try:
        await session.mailbox.refresh()
    except Exception:
        return failed(Failure(), command)
    return ok(done)


async def check(session, command: c.Check) -> Reply:
    """CHECK: rescan the selected folder (the store is always durable)."""
    return await refreshed(session, b"CHECK", b"CHECK completed")


async def close(session, command: c.Close) -> Reply:
    """CLOSE: expunge silently (if selected read-write), then leave the mailbox."""
    mailbox = session.mailbox
    if mailbox.writeable:
        try:
            await mailbox.expunge()
        except Exception:
            return failed(Failure(), b"CLOSE")
    session.deselect()
    return ok(b"CLOSE completed")


async def unselect(session, command: c.Unselect) -> Reply:
    """UNSELECT (RFC 3691): leave the mailbox without expunging."""
    session.deselect()
    return ok(b"UNSELECT completed")


async def expunge(session, command: c.Expunge) -> Reply:
    """EXPUNGE every message flagged \\Deleted (UID EXPUNGE: only those of the UIDs given)."""
    mailbox = session.mailbox
    uids = None
    if command.uids is not None:
        refused = checked_set(session, command.uids, True)
        if refused is not None:
            return refused
        uids = [u for _, u in mailbox.resolve(command.uids, True)]
    try:
        numbers = await mailbox.expunge(uids)
    except Exception:
        return failed(Failure(), b"EXPUNGE")
    session.send(session.expunged_lines(numbers))
    return ok(b"EXPUNGE completed")


async def store(session, command: c.Store) -> Reply:
    """STORE [+-]FLAGS[.SILENT]; keywords are kept; NO on a read-only mailbox.  With
    UNCHANGEDSINCE (RFC 7162 3.1.3) the messages changed since are left alone and named in
    ``[MODIFIED ...]``; once CONDSTORE is enabled each change is reported with its MODSEQ, even
    with .SILENT."""
    if command.unchanged_since is not None:
        session.enable_condstore()
    mailbox = session.mailbox
    if not mailbox.writeable:
        return no(b"[READ-ONLY] Mailbox is read-only")
    refused = checked_set(session, command.messages, command.uid)
    if refused is not None:
        return refused
    before = set(mailbox.flags())
    try:
        result = await mailbox.store(
            command.messages, command.flags, command.mode, command.uid, command.unchanged_since
        )
    except Exception:
        return failed(Failure(), b"STORE")
    out = []
    after = mailbox.flags()
    if set(after) != before:
        out.append(r.untagged(r.Atom(b"FLAGS"), r.flag_list(after)))
    view = mailbox.view
    for seq, uid in sorted(result.reported.items()):
        modseq = view.info(uid).modseq
        if not command.silent:
            out.append(session.flags_line(seq, uid, view.flags(uid), modseq, command.uid))
        elif session.condstore and uid in result.changed:
            items = [b"UID %d" % uid] if command.uid or session.qresync else []
            out.append(r.fetch_response(seq, [*items, b"MODSEQ (%d)" % modseq]))
    session.send(b"".join(out))
    if result.modified:
        modified = result.modified
        if not command.uid:
            modified = sorted(n for n in map(view.seq, modified) if n is not None)
        return ok(b"[MODIFIED %s] Conditional STORE failed" % r.sequence_set(modified))
    return ok(b"STORE completed")


async def copy(session, command: c.Copy) -> Reply:
    """COPY (or MOVE) messages to another folder; answers with COPYUID (RFC 4315)."""
    name = b"MOVE" if command.move else b"COPY"
    refused = checked_set(session, command.messages, command.uid)
    if refused is not None:
        return refused
    mailbox = session.mailbox
    if command.move and not mailbox.writeable:
        return no(b"[READ-ONLY] Mailbox is read-only")
    sources = [u for _, u in mailbox.resolve(command.messages, command.uid)]
    try:
        target = await session.account.target(command.mailbox)
        pairs = await mailbox.copy_to(sources, target)
    except Exception:
        return failed(Failure(), name, missing=b"[TRYCREATE]")
    code = b""
    if pairs:
        code = b"[COPYUID %d %s %s] " % (
            target.uid_validity,
            r.sequence_set([s for s, _ in pairs]),
            r.sequence_set([d for _, d in pairs]),
        )
    if not command.move:
        return ok(code + b"COPY completed")
    if code:
        session.send(r.status_line(None, b"OK", code + b"Moved"))
    try:
        numbers = await mailbox.expunge([s for s, _ in pairs], deleted_only=False)
    except Exception:
        return failed(Failure(), name)
    session.send(session.expunged_lines(numbers))
    return ok(b"MOVE completed")


def _modseq_as_uids(node: tuple, view) -> tuple:
    """The criteria tree with each ``("MODSEQ", n)`` leaf (RFC 7162 3.1.5: modseq at least
    n) replaced by the UIDs in the view that match it, as runs of the view's order."""
    kind = node[0]
    if kind == "MODSEQ":
        ranges: list = []
        previous = None
        for seq, uid in view.changed_since(node[1] - 1):
            if previous is not None and seq == previous + 1:
                ranges[-1] = (ranges[-1][0], uid)
            else:
                ranges.append((uid, uid))
            previous = seq
        return ("UID", ranges)
    if kind == "AND":
        return ("AND", [_modseq_as_uids(child, view) for child in node[1]])
    if kind == "NOT":
        return ("NOT", _modseq_as_uids(node[1], view))
    if kind == "OR":
        return ("OR", _modseq_as_uids(node[1], view), _modseq_as_uids(node[2], view))
    return node


async def search(session, command: c.Search) -> Reply:
    """SEARCH, evaluated over the session's view (``search.find``); ``* SEARCH`` even
    when nothing matched (RFC 3501 7.2.5).  With a MODSEQ criterion (a CONDSTORE enabling
    action) the line ends with ``(MODSEQ n)``, the highest modseq of the messages found."""
    if command.returns is not None:
        return bad(b"ESEARCH is not supported")
    if command.charset is not None and command.charset.upper() not in CHARSETS:
        return no(b"[BADCHARSET (US-ASCII UTF-8)] Unknown charset")
    mailbox = session.mailbox
    view = mailbox.view
    criteria = _modseq_as_uids(command.criteria, view)
    by_modseq = criteria != command.criteria
    kind = unsupported(criteria)
    if kind is not None:
        return bad(b"SEARCH %s is not supported" % kind.encode("ascii", "replace"))
    if by_modseq:
        session.enable_condstore()
    rows = list(view.rows(view.resolve(_EVERY, False)))
    try:
        found = await find(mailbox.folder, criteria, rows, command.uid)
    except Exception:
        return failed(Failure(), b"SEARCH")
    words = [b"SEARCH", *(b"%d" % n for n in found)]
    if by_modseq and found:
        uids = found if command.uid else [view.uid(n) for n in found]
        words.append(b"(MODSEQ %d)" % max(view.info(uid).modseq for uid in uids))
    session.send(r.untagged(r.Atom(b" ".join(words))))
    return ok(b"SEARCH completed")


async def idle(session, command: c.Idle) -> Reply:
    """IDLE (RFC 2177): changes are pushed at once until the client sends DONE."""
    session.send(r.continuation(b"idling"))
    line = await session.idle_until_done()
    if line.strip().upper() != b"DONE":
        return bad(b"Expected DONE")
    return ok(b"IDLE terminated")
