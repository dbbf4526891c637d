"""SORT and THREAD (RFC 5256), and UID SORT / UID THREAD, in the selected state.

The search criteria are evaluated as SEARCH evaluates them, over snapshots of the session's
view; then the header fields the keys or the algorithm need are read from the matching
messages, and the result ordered (``mailgw.imap.ordering``) -- all in one worker thread, so the
reactor never waits on the disk.  The answer is ``* SORT`` or ``* THREAD`` (with UIDs for the
UID forms), even when nothing matched.  The criteria may hold ``$`` (RFC 5182: the saved
result, wherever a sequence set may stand) and MODSEQ (RFC 7162 3.1.5), as SEARCH's may.
"""

from __future__ import annotations

import dataclasses

from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from mailgw.imap import ordering
from mailgw.imap.mime.headers import field_value, header_block, split_fields
from mailgw.imap.reply import Reply, bad, failed, no, ok
from mailgw.imap.search import Candidate, evaluate, unsupported
from mailgw.imap.selected import CHARSETS, as_uids, has_modseq
from mailgw.imap.wire import commands as c
from mailgw.imap.wire import responses as r
from mailgw.store.interfaces import NoSuchMessage, StoreError

#: The capabilities these handlers provide.
CAPABILITIES = (b"SORT", b"THREAD=ORDEREDSUBJECT", b"THREAD=REFERENCES")
BADCHARSET = b"[BADCHARSET (UTF-8 US-ASCII)] Unknown charset"


def _header_fields(reader, info, wanted: frozenset) -> dict:
    """The first value (unfolded) of each ``wanted`` field of a message; {} if it is gone."""
    try:
        block = header_block(reader.head(info))
    except (NoSuchMessage, StoreError):
        return {}
    fields: dict = {}
    for name, raw in split_fields(block):
        if name in wanted and name not in fields:
            fields[name] = field_value(raw)
    return fields


def matching(folder, criteria: tuple, candidates: list, infos: dict, wanted: frozenset) -> list:
    """The ``ordering.Message`` of each candidate matching ``criteria``, with the ``wanted``
    header fields read (``infos``: the IMessageInfo of each UID, as the view lists it;
    blocking: run it in a thread)."""
    by_seq = {candidate.seq: candidate for candidate in candidates}
    messages = []
    with folder.reader() as reader:
        for seq in evaluate(folder, criteria, candidates, False):
            found = by_seq[seq]
            fields = _header_fields(reader, infos[found.uid], wanted) if wanted else {}
            messages.append(
                ordering.Message(found.seq, found.uid, found.size, found.internal_date, fields)
            )
    return messages


def sorted_line(folder, command: c.Sort, candidates: list, infos: dict) -> bytes:
    """The ``* SORT`` response to ``command`` (blocking)."""
    wanted = ordering.fields_for(command.keys)
    messages = matching(folder, command.criteria, candidates, infos, wanted)
    numbers = [b"%d" % m.number(command.uid) for m in ordering.sort(messages, command.keys)]
    return r.untagged(r.Atom(b" ".join([b"SORT", *numbers])))


def threaded_line(folder, command: c.Thread, candidates: list, infos: dict) -> bytes:
    """The ``* THREAD`` response to ``command`` (blocking)."""
    wanted = frozenset(ordering.THREAD_FIELDS)
    messages = matching(folder, command.criteria, candidates, infos, wanted)
    if command.algorithm == "REFERENCES":
        threads = ordering.references(messages)
    else:
        threads = ordering.ordered_subject(messages)
    body = ordering.serialise(threads, command.uid)
    return r.untagged(r.Atom(b"THREAD " + body if body else b"THREAD"))


def _refused(command: c.Sort | c.Thread) -> Reply | None:
    if command.charset.upper() not in CHARSETS:
        return no(BADCHARSET)
    kind = unsupported(command.criteria)
    if kind is not None:
        return bad(b"%s %s is not supported" % (command.name, kind.encode("ascii", "replace")))
    return None


async def _answer(session, command: c.Sort | c.Thread, work) -> Reply:
    view = session.mailbox.view
    by_modseq = has_modseq(command.criteria)
    command = dataclasses.replace(command, criteria=as_uids(command.criteria, view))
    refused = _refused(command)
    if refused is not None:
        return refused
    if by_modseq:
        await session.condstore_action()
    candidates = [Candidate(*row) for row in view.candidates()]
    infos = {candidate.uid: view.info(candidate.uid) for candidate in candidates}
    try:
        line = await deferToThread(work, session.mailbox.folder, command, candidates, infos)
    except Exception:
        return failed(Failure(), command.name)
    session.send(line)
    return ok(command.name + b" completed")


async def sort(session, command: c.Sort) -> Reply:
    """SORT / UID SORT (RFC 5256 section 3): the matching messages in the order of the keys."""
    return await _answer(session, command, sorted_line)


async def thread(session, command: c.Thread) -> Reply:
    """THREAD / UID THREAD (RFC 5256 section 3), REFERENCES or ORDEREDSUBJECT."""
    return await _answer(session, command, threaded_line)
