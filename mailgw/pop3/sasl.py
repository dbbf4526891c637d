"""SASL PLAIN for POP3 AUTH (RFC 5034, RFC 4616): decoding a client response; pure, no I/O.

Twisted's POP3 has no AUTH command of this form (its ``AUTH`` predates RFC 5034 and answers
challenges with ``+`` plus NUL-terminated strings).  PLAIN is the only mechanism: the user
database holds password hashes, so challenge-response mechanisms that need the plaintext secret on
the server (CRAM-MD5, and APOP for the same reason) cannot be offered.
"""

from __future__ import annotations

import base64
import binascii

#: The mechanisms offered, in CAPA order.
MECHANISMS = (b"PLAIN",)


class Cancelled(Exception):
    """The client answered the challenge with ``*`` (RFC 5034 section 4)."""


class SaslError(ValueError):
    """A response that is not valid for the mechanism; ``str(error)`` is the ``-ERR`` text."""


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

    An authorization identity other than the user's own is refused: nobody may act for another
    user.  Raise SaslError for a malformed message or a username that is not clean UTF-8."""
    parts = message.split(b"\0")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise SaslError("Malformed PLAIN response")
    authzid, authcid, password = parts
    if authzid and authzid != authcid:
        raise SaslError("Cannot log in as another user")
    try:
        username = authcid.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("User name is not UTF-8") from None
    if any(ord(char) < 32 or ord(char) == 127 for char in username):
        raise SaslError("Bad user name")
    return username, password
