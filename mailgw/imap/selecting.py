"""SELECT and EXAMINE: open a mailbox for the session and report its state.

A folder that does not exist is ``NO [NONEXISTENT]``, a store failure ``[SERVERBUG]`` or
``[UNAVAILABLE]``, logged (``mailgw.imap.errors``).
"""

from __future__ import annotations

from twisted.python.failure import Failure

from mailgw.imap.reply import Reply, bad, failed, no, ok
from mailgw.imap.wire import commands as c
from mailgw.imap.wire import responses as r


async def select(session, command: c.Select) -> Reply:
    """SELECT or EXAMINE: the mailbox's counts, flags, UIDVALIDITY, UIDNEXT and UNSEEN."""
    name = b"EXAMINE" if command.readonly else b"SELECT"
    if command.condstore or command.qresync is not None:
        return bad(b"CONDSTORE and QRESYNC are not supported")
    session.deselect()
    try:
        mailbox = await session.account.select(command.mailbox, not command.readonly)
    except Exception:
        return failed(Failure(), name)
    if mailbox is None:
        return no(b"[NONEXISTENT] No such mailbox")
    view = mailbox.view
    flags = mailbox.flags()
    permanent = [*flags, "\\*"] if mailbox.writeable else []
    lines = [
        r.untagged(view.count, r.Atom(b"EXISTS")),
        r.untagged(view.recent_count, r.Atom(b"RECENT")),
        r.untagged(r.Atom(b"FLAGS"), r.flag_list(flags)),
        r.status_line(None, b"OK", b"[PERMANENTFLAGS " + r.flag_list(permanent) + b"] Limited"),
    ]
    if view.first_unseen is not None:
        lines.append(r.status_line(None, b"OK", b"[UNSEEN %d] First unseen" % view.first_unseen))
    validity = mailbox.folder.uid_validity
    lines.append(r.status_line(None, b"OK", b"[UIDVALIDITY %d] UIDs valid" % validity))
    lines.append(r.status_line(None, b"OK", b"[UIDNEXT %d] Predicted next UID" % mailbox.uid_next))
    session.send(b"".join(lines))
    session.select(mailbox)
    mode = b"[READ-WRITE] " if mailbox.writeable else b"[READ-ONLY] "
    return ok(mode + name + b" completed")
