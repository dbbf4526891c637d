"""The SASL PLAIN and LOGIN exchanges of SMTP AUTH (RFC 4954, 4616); pure, no I/O.

Replaces Twisted's ``twisted.mail._cred.PLAINCredentials``/``LOGINCredentials``: those accept any
authorization identity, prompt with NUL-terminated challenges and leave base64 decoding to
``ESMTP.state_AUTH``, which accepts malformed base64.  CRAM-MD5 is deliberately absent: the user
database holds password hashes, not the shared secrets CRAM-MD5 needs.
"""

from __future__ import annotations

from mailgw.auth import sasl
from mailgw.auth.sasl import Cancelled
from mailgw.smtp import replies
from mailgw.smtp.parsing import CommandError

__all__ = ["MECHANISMS", "Cancelled", "decode_response"]


def decode_response(line: bytes) -> bytes:
    """Decode one client response: base64, ``=`` for empty; raise Cancelled or CommandError."""
    try:
        return sasl.decode_response(line)
    except sasl.SaslError:
        raise CommandError(replies.BAD_BASE64) from None


class Exchange:
    """State of one mechanism's conversation: subclasses give ``challenge()`` (the next prompt,
    unencoded) and ``respond(data)`` (take the decoded answer); username and password are set
    once ``done``."""

    def __init__(self) -> None:
        self.username = ""
        self.password = b""
        self.done = False


class Plain(Exchange):
    """PLAIN: one message ``[authzid] NUL authcid NUL password``; authzid must be empty or same."""

    def challenge(self) -> bytes:
        """PLAIN has an empty first challenge."""
        return b""

    def respond(self, data: bytes) -> None:
        """Split the message; a foreign authorization identity is refused."""
        try:
            self.username, self.password = sasl.plain_credentials(data)
        except sasl.ForeignIdentity:
            raise CommandError(replies.AUTH_FAILED) from None
        except sasl.SaslError as error:
            raise CommandError(replies.SYNTAX.with_text(str(error))) from None
        self.done = True


class Login(Exchange):
    """LOGIN: ask ``Username:`` then ``Password:``."""

    def challenge(self) -> bytes:
        """The prompt for the field still missing."""
        return b"Password:" if self.username else b"Username:"

    def respond(self, data: bytes) -> None:
        """Record the username, then the password."""
        if not self.username:
            if not data:
                raise CommandError(replies.SYNTAX.with_text("Empty username"))
            self.username = _text(data)
        else:
            self.password = data
            self.done = True


#: Mechanisms offered, in EHLO order.
MECHANISMS = {b"PLAIN": Plain, b"LOGIN": Login}


def _text(data: bytes) -> str:
    """A username as text; refuse bytes that are not UTF-8 or hold control characters."""
    try:
        return sasl.username_text(data)
    except sasl.SaslError as error:
        raise CommandError(replies.SYNTAX.with_text(str(error))) from None
