"""What a command handler returns: the tagged reply, and what the session does after sending it.

A handler is ``async def handler(session, command) -> Reply``: it sends its untagged responses
itself (through ``session.send``) and returns the status and text of the tagged one; the session
reports pending mailbox changes, writes the tagged line and then runs ``then`` (STARTTLS starts
TLS there, LOGOUT closes the connection).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.python.failure import Failure

from mailgw.imap.errors import refusal


@dataclass(frozen=True)
class Reply:
    """The tagged reply to a command: ``status`` (OK, NO or BAD) and its text."""

    status: bytes
    text: bytes
    #: Run once the reply is written.
    then: Callable[[], None] | None = None


def ok(text: bytes, then: Callable[[], None] | None = None) -> Reply:
    """An OK reply."""
    return Reply(b"OK", text, then)


def no(text: bytes) -> Reply:
    """A NO reply: the command failed."""
    return Reply(b"NO", text)


def bad(text: bytes) -> Reply:
    """A BAD reply: the command was not acceptable (it counts as a client error)."""
    return Reply(b"BAD", text)


def failed(failure: Failure, command: bytes, missing: bytes = b"[NONEXISTENT]") -> Reply:
    """The NO for a command that failed below the session (``errors.refusal``)."""
    return no(refusal(failure, command, missing))
