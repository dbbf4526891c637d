"""The commands of the selected state but FETCH: CHECK, CLOSE, UNSELECT (RFC 3691), EXPUNGE and
UID EXPUNGE (RFC 4315), STORE, COPY and MOVE (RFC 6851, with COPYUID), SEARCH; and IDLE (RFC 2177).

Sequence numbers beyond the mailbox are ``BAD``; a UID that is not there is just absent.  The
store calls run in threads; a read-only (EXAMINEd) mailbox answers ``NO [READ-ONLY]``.
"""

from __future__ import annotations

from twisted.python.failure import Failure

from mailgw.imap.mailbox import RECENT_CLAIMS
from mailgw.imap.reply import Reply, bad, failed, no, ok
from mailgw.imap.search import find, one_flag, unsupported
from mailgw.imap.wire import commands as c
from mailgw.imap.wire import responses as r

#: The extensions this module answers for: ESEARCH (RFC 4731) and SEARCHRES (RFC 5182).
CAPABILITIES = (b"ESEARCH", b"SEARCHRES")
#: Charsets SEARCH accepts.
CHARSETS = frozenset({"US-ASCII", "UTF-8"})
OUT_OF_RANGE = b"Message sequence number out of range"

#: Every message of the view, as a sequence set.
_EVERY = c.SequenceSet(((1, None),))
#: ``$``, the saved search result (RFC 5182).
_SAVED = c.SequenceSet(saved=True)


def checked_set(session, messages: c.SequenceSet, uid: bool) -> Reply | None:
    """The BAD a sequence set gets in the selected mailbox (numbers beyond it), if any; ``$``
    (RFC 5182) is always accepted: it names the saved result, maybe empty."""
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
    """EXPUNGE every message flagged \\Deleted (UID EXPUNGE: only those of the UIDs given);
    with QRESYNC, when one went, the tagged OK carries the new HIGHESTMODSEQ (RFC 7162 3.2.7,
    3.2.9)."""
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
    if numbers and session.qresync:
        highest = await mailbox.highest_modseq()
        return ok(b"[HIGHESTMODSEQ %d] EXPUNGE completed" % highest)
    return ok(b"EXPUNGE completed")


async def store(session, command: c.Store) -> Reply:
    """STORE [+-]FLAGS[.SILENT]; keywords are kept; NO on a read-only mailbox.  With
    UNCHANGEDSINCE (RFC 7162 3.1.3) the messages changed since are left alone and named in
    ``[MODIFIED ...]`` and every other one reported with its MODSEQ, even with .SILENT; once
    CONDSTORE is enabled each change is reported with its MODSEQ, even with .SILENT."""
    if command.unchanged_since is not None:
        await session.condstore_action()
    mailbox = session.mailbox
    if not mailbox.writeable:
        return no(b"[READ-ONLY] Mailbox is read-only")
    refused = checked_set(session, command.messages, command.uid)
    if refused is not None:
        return refused
    try:
        result = await mailbox.store(
            command.messages, command.flags, command.mode, command.uid, command.unchanged_since
        )
    except Exception:
        return failed(Failure(), b"STORE")
    view = mailbox.view
    out = [session.keyword_lines(view.flags(uid) for uid in result.reported.values())]
    for seq, uid in sorted(result.reported.items()):
        modseq = view.info(uid).modseq
        if not command.silent:
            out.append(session.flags_line(seq, uid, view.flags(uid), modseq, command.uid))
        elif session.condstore and (uid in result.changed or command.unchanged_since is not None):
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
    RECENT_CLAIMS.offer(target, [d for _, d in pairs])
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


def _uid_runs(pairs) -> list:
    """``(seq, uid)`` pairs of the view, ascending, as UID ranges: one per run of sequence
    numbers (no other message of the view lies between its ends)."""
    ranges: list = []
    previous = None
    for seq, uid in pairs:
        if previous is not None and seq == previous + 1:
            ranges[-1] = (ranges[-1][0], uid)
        else:
            ranges.append((uid, uid))
        previous = seq
    return ranges


def as_uids(node: tuple, view) -> tuple:
    """The criteria tree with the leaves the evaluator does not see as such replaced by the
    UIDs of the view that match them: ``("MODSEQ", n)`` (RFC 7162 3.1.5: modseq at least n)
    and ``$`` (``("SAVED",)``, ``("UID_SAVED",)``: the saved result, RFC 5182)."""
    kind = node[0]
    if kind == "MODSEQ":
        return ("UID", _uid_runs(view.changed_since(node[1] - 1)))
    if kind in ("SAVED", "UID_SAVED"):
        return ("UID", _uid_runs(view.resolve(_SAVED, True)))
    if kind == "AND":
        return ("AND", [as_uids(child, view) for child in node[1]])
    if kind == "NOT":
        return ("NOT", as_uids(node[1], view))
    if kind == "OR":
        return ("OR", as_uids(node[1], view), as_uids(node[2], view))
    return node


def has_modseq(node: tuple) -> bool:
    """Does the criteria tree hold a MODSEQ criterion (a CONDSTORE enabling action)?"""
    kind = node[0]
    if kind == "MODSEQ":
        return True
    if kind == "AND":
        return any(has_modseq(child) for child in node[1])
    if kind == "NOT":
        return has_modseq(node[1])
    if kind == "OR":
        return has_modseq(node[1]) or has_modseq(node[2])
    return False


def _to_save(found: list, returns: tuple) -> list:
    """What ``RETURN (SAVE ...)`` keeps of the result (RFC 5182 2.4): only the minimum and/or
    maximum when MIN and/or MAX come without ALL and COUNT, else all of it."""
    if not found or not {"MIN", "MAX"} & set(returns) or {"ALL", "COUNT"} & set(returns):
        return found
    kept = set()
    if "MIN" in returns:
        kept.add(found[0])
    if "MAX" in returns:
        kept.add(found[-1])
    return sorted(kept)


def _esearch(command: c.Search, returns: tuple, found: list, modseq_of) -> bytes:
    """The ``* ESEARCH`` line (RFC 4731) for ``found`` (ascending), with the result options
    ``returns``; ``modseq_of`` gives the modseq of a number found, or is None when no MODSEQ
    criterion was given (RFC 7162 3.1.5: with MIN and/or MAX alone, the highest modseq of the
    messages returned)."""
    words = [b"ESEARCH (TAG " + r.string(command.tag) + b")"]
    if command.uid:
        words.append(b"UID")
    if found:
        if "MIN" in returns:
            words.append(b"MIN %d" % found[0])
        if "MAX" in returns:
            words.append(b"MAX %d" % found[-1])
    if "COUNT" in returns:
        words.append(b"COUNT %d" % len(found))
    if found and "ALL" in returns:
        words.append(b"ALL " + r.sequence_set(found))
    if modseq_of is not None and found:
        returned = found
        if not {"ALL", "COUNT"} & set(returns):
            returned = _to_save(found, returns)
        words.append(b"MODSEQ %d" % max(map(modseq_of, returned)))
    return r.untagged(r.Atom(b" ".join(words)))


async def search(session, command: c.Search) -> Reply:
    """SEARCH, evaluated over the session's view (``search.find``); ``* SEARCH`` even
    when nothing matched (RFC 3501 7.2.5).  With a MODSEQ criterion (a CONDSTORE enabling
    action) the line ends with ``(MODSEQ n)``, the highest modseq of the messages found.
    ``RETURN (...)`` answers ``* ESEARCH`` (RFC 4731) instead, and with SAVE keeps the result
    for ``$`` (RFC 5182; a SAVE that fails leaves ``$`` empty); SAVE alone answers nothing
    untagged.  With IMAP4rev2 enabled every SEARCH is answered with ESEARCH, a plain one as
    ``RETURN (ALL)`` (RFC 9051 6.4.4)."""
    mailbox = session.mailbox
    view = mailbox.view
    returns = command.returns or ()
    if command.returns is None and session.rev2:
        returns = ("ALL",)
    saving = "SAVE" in returns
    if saving:
        view.saved = ()
    if command.charset is not None and command.charset.upper() not in CHARSETS:
        return no(b"[BADCHARSET (US-ASCII UTF-8)] Unknown charset")
    criteria = as_uids(command.criteria, view)
    by_modseq = has_modseq(command.criteria)
    kind = unsupported(criteria)
    if kind is not None:
        return bad(b"SEARCH %s is not supported" % kind.encode("ascii", "replace"))
    if by_modseq:
        await session.condstore_action()
    flag = one_flag(criteria)
    if flag is not None:  # UNSEEN, FLAGGED...: the commonest search, answered from the view
        found = view.with_flag(*flag, command.uid)
    else:
        rows = list(view.rows(view.resolve(_EVERY, False)))
        try:
            found = await find(mailbox.folder, criteria, rows, command.uid)
        except Exception:
            return failed(Failure(), b"SEARCH")
    view = mailbox.view
    uid_of = (lambda n: n) if command.uid else view.uid
    modseq_of = (lambda n: view.info(uid_of(n)).modseq) if by_modseq else None
    if saving:
        view.saved = tuple(uid_of(n) for n in _to_save(found, returns))
    if not returns:
        words = [b"SEARCH", *(b"%d" % n for n in found)]
        if modseq_of is not None and found:
            words.append(b"(MODSEQ %d)" % max(map(modseq_of, found)))
        session.send(r.untagged(r.Atom(b" ".join(words))))
    elif returns != ("SAVE",):
        session.send(_esearch(command, returns, found, modseq_of))
    return ok(b"SEARCH completed, result saved" if saving else b"SEARCH completed")


async def idle(session, command: c.Idle) -> Reply:
    """IDLE (RFC 2177): changes are pushed at once until the client sends DONE."""
    session.send(r.continuation(b"idling"))
    line = await session.idle_until_done()
    if line.strip().upper() != b"DONE":
        return bad(b"Expected DONE")
    return ok(b"IDLE terminated")
