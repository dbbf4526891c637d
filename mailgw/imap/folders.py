"""The commands of the authenticated state: CREATE, DELETE, RENAME, (UN)SUBSCRIBE,
LIST, LSUB, NAMESPACE, STATUS and APPEND (MULTIAPPEND, RFC 3502; APPENDUID, RFC 4315).

Every one answers when the store is done (its calls run in threads); a folder that does not
exist is ``NO [NONEXISTENT]`` (``[TRYCREATE]`` for APPEND), a store failure ``[SERVERBUG]`` or
``[UNAVAILABLE]``, logged (``mailgw.imap.errors``).
"""

from __future__ import annotations

from twisted.python.failure import Failure

from mailgw.imap.account import DELIMITER, folder_name
from mailgw.imap.reply import Reply, bad, failed, no, ok
from mailgw.imap.wire import commands as c
from mailgw.imap.wire import mutf7
from mailgw.imap.wire import responses as r

#: STATUS items mailgw answers.
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")


async def _answer(work, done: bytes, command: bytes, missing: bytes = b"[NONEXISTENT]") -> Reply:
    try:
        await work()
    except Exception:
        return failed(Failure(), command, missing)
    return ok(done)


async def create(session, command: c.Create) -> Reply:
    """CREATE a folder."""
    return await _answer(lambda: session.account.create(command.mailbox), b"CREATE done", b"CREATE")


async def delete(session, command: c.Delete) -> Reply:
    """DELETE a folder (never INBOX)."""
    if folder_name(command.mailbox) == "INBOX":
        return no(b"INBOX cannot be deleted")
    return await _answer(lambda: session.account.delete(command.mailbox), b"DELETE done", b"DELETE")


async def rename(session, command: c.Rename) -> Reply:
    """RENAME a folder; RENAME INBOX moves its messages to the new folder."""
    if folder_name(command.new) == "INBOX":
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


async def _listing(session, kind: bytes, reference: str, pattern: str, subscribed: bool) -> Reply:
    if not pattern and not subscribed:
        session.send(r.untagged(r.Atom(kind), r.flag_list(["\\Noselect"]), DELIMITER, ""))
        return ok(kind + b" completed")
    try:
        found = await session.account.list_folders(reference, pattern, subscribed)
    except Exception:
        return failed(Failure(), kind)
    session.send(
        b"".join(
            r.untagged(r.Atom(kind), r.flag_list(flags), DELIMITER, mutf7.encode(name))
            for name, flags in found
        )
    )
    return ok(kind + b" completed")


async def list_(session, command: c.List) -> Reply:
    """LIST (the RFC 3501 form; a LIST-EXTENDED one is BAD)."""
    if command.extended or len(command.patterns) != 1:
        return bad(b"LIST-EXTENDED is not supported")
    return await _listing(session, b"LIST", command.reference, command.patterns[0], False)


async def lsub(session, command: c.Lsub) -> Reply:
    """LSUB: the subscribed names (those without a folder are \\Noselect)."""
    return await _listing(session, b"LSUB", command.reference, command.pattern, True)


async def namespace(session, command: c.Namespace) -> Reply:
    """NAMESPACE (RFC 2342): one personal namespace, no shared ones."""
    session.send(r.untagged(r.Atom(b"NAMESPACE"), [["", DELIMITER]], None, None))
    return ok(b"NAMESPACE completed")


async def status(session, command: c.Status) -> Reply:
    """STATUS of a folder, read without selecting it."""
    if not command.items or not set(command.items) <= set(STATUS_ITEMS):
        return bad(b"Unknown STATUS item")
    try:
        values = await session.account.status(command.mailbox, command.items)
    except Exception:
        return failed(Failure(), b"STATUS")
    pairs = [value for item, number in values.items() for value in (r.Atom(item.encode()), number)]
    session.send(r.untagged(r.Atom(b"STATUS"), mutf7.encode(command.mailbox), pairs))
    return ok(b"STATUS completed")


async def append(session, command: c.Append) -> Reply:
    """APPEND one or more messages (MULTIAPPEND) to a folder, answering APPENDUID; the selected
    mailbox reports EXISTS through its view."""
    if not command.messages:
        return bad(b"APPEND needs a message")
    try:
        validity, uids = await session.account.append(command.mailbox, command.messages)
    except Exception:
        return failed(Failure(), b"APPEND", missing=b"[TRYCREATE]")
    return ok(b"[APPENDUID %d %s] APPEND completed" % (validity, r.sequence_set(uids)))
