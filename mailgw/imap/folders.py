"""The commands of the authenticated state: CREATE, DELETE, RENAME, (UN)SUBSCRIBE,
LIST, LSUB, NAMESPACE, STATUS and APPEND (MULTIAPPEND, RFC 3502; APPENDUID, RFC 4315), with
LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154) and STATUS=SIZE
(RFC 8438); what LIST and LSUB list is ``listing``'s.

Every one answers when the store is done (its calls run in threads); a folder that does not
exist is ``NO [NONEXISTENT]`` (``[TRYCREATE]`` for APPEND), a store failure ``[SERVERBUG]`` or
``[UNAVAILABLE]``, logged (``mailgw.imap.errors``).  Names are told in modified UTF-7, in UTF-8
once the client enabled IMAP4rev2 (RFC 9051 5.1).
"""

from __future__ import annotations

from dataclasses import replace

from twisted.python.failure import Failure

from mailgw.imap.account import SPECIAL_USE
from mailgw.imap.listing import DELIMITER, Listed, Query, list_mailboxes, lsub_mailboxes
from mailgw.imap.reply import Reply, bad, failed, no, ok
from mailgw.imap.structure import binary_as_base64
from mailgw.imap.wire import commands as c
from mailgw.imap.wire import mutf7
from mailgw.imap.wire import responses as r

#: What these commands add to CAPABILITY.
CAPABILITIES = [b"LIST-EXTENDED", b"LIST-STATUS", b"STATUS=SIZE"]
#: The extended data item of a name listed for its subscribed children (RFC 5258 3.5).
_CHILDINFO = r.Atom(b'("CHILDINFO" ("SUBSCRIBED"))')


async def _answer(work, done: bytes, command: bytes, missing: bytes = b"[NONEXISTENT]") -> Reply:
    try:
        await work()
    except Exception:
        return failed(Failure(), command, missing)
    return ok(done)


async def create(session, command: c.Create) -> Reply:
    """CREATE a folder; ``(USE (...))`` (RFC 6154) only as the folder's name implies it (the
    special-use folders are known by name), else ``NO [USEATTR]``."""
    wanted = {flag.lower() for flag in command.special_use}
    if wanted and wanted != {SPECIAL_USE.get(command.mailbox, "").lower()}:
        return no(b"[USEATTR] Special-use attributes follow the folder name here")
    return await _answer(lambda: session.account.create(command.mailbox), b"CREATE done", b"CREATE")


async def delete(session, command: c.Delete) -> Reply:
    """DELETE a folder (never INBOX)."""
    if command.mailbox == "INBOX":  # the parser spells INBOX so in any case
        return no(b"INBOX cannot be deleted")
    return await _answer(lambda: session.account.delete(command.mailbox), b"DELETE done", b"DELETE")


async def rename(session, command: c.Rename) -> Reply:
    """RENAME a folder; RENAME INBOX moves its messages to the new folder."""
    if command.new == "INBOX":
        return no(b"[ALREADYEXISTS] INBOX always exists")
    work = lambda: session.account.rename(command.old, command.new)  # noqa: E731
    return await _answer(work, b"RENAME done", b"RENAME")


async def subscribe(session, command: c.Subscribe) -> Reply:
    """SUBSCRIBE: kept in the user's subscriptions file."""
    work = lambda: session.account.subscribe(command.mailbox)  # noqa: E731
    return await _answer(work, b"SUBSCRIBE completed", b"SUBSCRIBE")


async def unsubscribe(session, command: c.Unsubscribe) -> Reply:
    """UNSUBSCRIBE (NO [NONEXISTENT] if the name was not subscribed)."""
    work = lambda: session.account.unsubscribe(command.mailbox)  # noqa: E731
    return await _answer(work, b"UNSUBSCRIBE completed", b"UNSUBSCRIBE")


def _undecodable(name: str) -> bool:
    return getattr(name, "undecodable", None) is not None


def wire_name(session, name: str) -> bytes:
    """A mailbox name as the session is told it: in UTF-8 once IMAP4rev2 is enabled (RFC 9051
    5.1), else in modified UTF-7 (RFC 3501 5.1.3)."""
    return name.encode("utf-8") if session.rev2 else mutf7.encode(name)


def list_line(session, kind: bytes, listed: Listed) -> bytes:
    """The ``* LIST`` (or ``* LSUB``) response of ``listed``."""
    name = wire_name(session, listed.name)
    values = [r.Atom(kind), r.flag_list(listed.attributes), DELIMITER, name]
    if listed.child_info:
        values.append(_CHILDINFO)
    return r.untagged(*values)


async def list_(session, command: c.List) -> Reply:
    """LIST, plain or extended: selection and return options, several patterns, and the STATUS
    of each selectable mailbox listed after its LIST line (RETURN (STATUS ...))."""
    patterns = tuple(p for p in command.patterns if not _undecodable(p))
    if command.patterns == ("",) and not command.extended:
        session.send(r.untagged(r.Atom(b"LIST"), r.flag_list(["\\Noselect"]), DELIMITER, ""))
        return ok(b"LIST completed")
    if _undecodable(command.reference) or not patterns:
        return ok(b"LIST completed")
    try:
        folders, subscribed = await session.account.names()
    except Exception:
        return failed(Failure(), b"LIST")
    returns = set(command.returns)
    if "SUBSCRIBED" in command.selection:
        returns.add("SUBSCRIBED")
    selection = frozenset(command.selection)
    query = Query(command.reference, patterns, selection, frozenset(returns), session.rev2)
    for listed in list_mailboxes(query, folders, subscribed, SPECIAL_USE):
        line = list_line(session, b"LIST", listed)
        if command.status and listed.with_status:
            line += await _status_line(session, listed.name, command.status)
        session.send(line)
    return ok(b"LIST completed")


async def lsub(session, command: c.Lsub) -> Reply:
    """LSUB: the subscribed names (those without a folder are \\Noselect), and the parents a
    ``%`` stops at above them (\\Noselect unless subscribed)."""
    if _undecodable(command.reference) or _undecodable(command.pattern):
        return ok(b"LSUB completed")
    try:
        folders, subscribed = await session.account.names()
    except Exception:
        return failed(Failure(), b"LSUB")
    found = lsub_mailboxes(command.reference, command.pattern, set(folders), subscribed)
    session.send(b"".join(list_line(session, b"LSUB", listed) for listed in found))
    return ok(b"LSUB completed")


async def namespace(session, command: c.Namespace) -> Reply:
    """NAMESPACE (RFC 2342): one personal namespace, no shared ones."""
    session.send(r.untagged(r.Atom(b"NAMESPACE"), [["", DELIMITER]], None, None))
    return ok(b"NAMESPACE completed")


async def _status_line(session, name: str, items) -> bytes:
    """``* STATUS`` of a listed folder, or nothing if it cannot be read now (RFC 5819)."""
    try:
        values = await session.account.status(name, items)
    except Exception:
        return b""
    return _status_response(session, name, values)


def _status_response(session, name: str, values: dict) -> bytes:
    pairs = [value for item, number in values.items() for value in (r.Atom(item.encode()), number)]
    return r.untagged(r.Atom(b"STATUS"), wire_name(session, name), pairs)


async def status(session, command: c.Status) -> Reply:
    """STATUS of a folder, read without selecting it: the RFC 3501 items, SIZE (RFC 8438),
    DELETED and HIGHESTMODSEQ (RFC 7162)."""
    if not command.items:
        return bad(b"STATUS needs items")
    try:
        values = await session.account.status(command.mailbox, command.items)
    except Exception:
        return failed(Failure(), b"STATUS")
    session.send(_status_response(session, command.mailbox, values))
    return ok(b"STATUS completed")


async def append(session, command: c.Append) -> Reply:
    """APPEND one or more messages (MULTIAPPEND) to a folder, answering APPENDUID; the selected
    mailbox reports EXISTS through its view.  A message given as literal8 (RFC 3516) is stored
    with its binary parts in base64 (``structure.binary_as_base64``)."""
    if not command.messages:
        return bad(b"APPEND needs a message")
    messages = [
        replace(message, data=binary_as_base64(message.data)) if message.binary else message
        for message in command.messages
    ]
    try:
        validity, uids = await session.account.append(command.mailbox, messages)
    except Exception:
        return failed(Failure(), b"APPEND", missing=b"[TRYCREATE]")
    return ok(b"[APPENDUID %d %s] APPEND completed" % (validity, r.sequence_set(uids)))
