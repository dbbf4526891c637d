"""The IMAP listener's factory: one ``IMAPSession`` per connection, within the connection limits.

The session (``session.py``) is mailgw's own IMAP4rev1 engine; Twisted gives the reactor,
endpoints, TLS and cred.  Connections over ``connections``/``connections_per_ip`` are told
``* BYE [UNAVAILABLE]`` and closed (``mailgw.sessions``).
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol, ServerFactory

from mailgw.context import ServerContext
from mailgw.imap.session import IMAPSession
from mailgw.sessions import BUSY_TEXT, SessionTracker


class IMAPFactory(ServerFactory):
    """Builds an IMAPSession per connection, all sharing one ServerContext."""

    noisy = False

    def __init__(self, context: ServerContext) -> None:
        self.context = context
        busy = f"* BYE [UNAVAILABLE] {BUSY_TEXT}\r\n".encode("ascii")
        self.sessions = SessionTracker(context.limits, "imap", busy, users=context.user_sessions)

    def buildProtocol(self, addr) -> IMAPSession | Protocol:
        """A new session, or a refusal when the connection limits are reached."""
        tracked = self.sessions.start(addr)
        if tracked is None:
            return self.sessions.refusal()
        protocol = IMAPSession(self.context, tracked)
        protocol.factory = self
        return protocol


def make_factory(ctx: ServerContext) -> IMAPFactory:
    """The IMAP listener's factory (plain, STARTTLS-capable, or behind implicit TLS)."""
    return IMAPFactory(ctx)
