"""SASL PLAIN (RFC 4616) as SMTP AUTH, POP3 AUTH and IMAP AUTHENTICATE carry it; pure, no I/O.

One decoder for every protocol, so that all three accept and refuse the same responses: strict
base64 (``=`` for an empty response, ``*`` to cancel), exactly ``[authzid] NUL authcid NUL
password``, no authorization identity other than the user's own, and a user name in clean UTF-8.
Challenge-response mechanisms (CRAM-MD5, APOP) are never offered: the user database holds
password hashes, not the plaintext secrets they need.
"""

from __future__ import annotations

import base64
import binascii


class Cancelled(Exception):
    """The client answered the challenge with ``*``."""


class SaslError(ValueError):
    """A response that is not valid; ``str(error)`` says why, for the protocol's error reply."""


class ForeignIdentity(SaslError):
    """The client asked to act as another user (an authorization identity not its own)."""


def decode_response(line: bytes) -> bytes:
    """Decode one client response: base64, ``=`` for empty; raise Cancelled or SaslError."""
    line = line.strip()
    if line == b"*":
        raise Cancelled()
    if line == b"=":
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("Invalid base64 in the response") from None


def plain_credentials(message: bytes) -> tuple[str, bytes]:
    """Return (username, password) from a PLAIN message ``[authzid] NUL authcid NUL password``.

    Raise ForeignIdentity for an authorization identity other than the user's own, SaslError
    for a malformed message or a user name that is not clean UTF-8."""
    parts = message.split(b"\0")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise SaslError("Malformed PLAIN response")
    authzid, authcid, password = parts
    if authzid and authzid != authcid:
        raise ForeignIdentity("Cannot log in as another user")
    return username_text(authcid), password


def username_text(data: bytes) -> str:
    """A user name as text; raise SaslError for bytes not UTF-8 or holding control characters."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("User name is not UTF-8") from None
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise SaslError("Bad user name")
    return text
