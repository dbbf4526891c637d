"""SMTP replies with RFC 3463 enhanced status codes, as named constants.

Twisted's ``SMTP.sendCode`` takes a bare code and text; its own replies carry no enhanced status
code and some carry jokes that clients may parse.  Every reply mailgw sends is one of these
``Reply`` values (or made from one with ``with_text``), so the wire text is decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: a three-digit code, an enhanced status code ('' for none) and text."""

    code: int
    status: str
    text: str

    def with_text(self, text: str) -> Reply:
        """The same codes with other text."""
        return replace(self, text=text)

    def lines(self) -> list[bytes]:
        """The reply as wire lines (without CRLF); multi-line text gets ``NNN-`` continuations.

        The enhanced status code starts every line (RFC 2034 section 4)."""
        parts = self.text.split("\n")
        prefix = f"{self.status} " if self.status else ""
        last = len(parts) - 1
        return [
            f"{self.code:03d}{' ' if index == last else '-'}{prefix}{part}".encode("ascii")
            for index, part in enumerate(parts)
        ]


OK = Reply(250, "2.0.0", "OK")
RESET = Reply(250, "2.0.0", "Reset state")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
QUEUED = Reply(250, "2.0.0", "OK: message accepted")
BYE = Reply(221, "2.0.0", "Bye")
CANNOT_VRFY = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
START_TLS = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")

SERVICE_CLOSING = Reply(421, "4.4.2", "Idle timeout, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
MISCONFIGURED = Reply(451, "4.3.5", "Recipient has no mailbox yet, try again later")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available")
AUTH_TEMPORARY = Reply(454, "4.7.0", "Temporary authentication failure")

UNRECOGNIZED = Reply(500, "5.5.1", "Command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
NEED_HELO = Reply(503, "5.5.1", "Send EHLO or HELO first")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL before RCPT")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT before DATA")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")
UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
ENCRYPTION_REQUIRED = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
NO_SUCH_USER = Reply(550, "5.1.1", "Recipient address rejected: user unknown")
BARE_LINE_END = Reply(
    550, "5.5.2", "Message refused: bare CR or LF in text (RFC 5321 2.3.8); use CRLF"
)
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address rejected: not owned by user")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Unsupported MAIL or RCPT parameter")
