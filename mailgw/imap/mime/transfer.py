"""Undoing a Content-Transfer-Encoding (RFC 2045 section 6) for BINARY (RFC 3516), and base64
for storing binary content APPENDed as literal8."""

from __future__ import annotations

import binascii
import re


class UnknownTransferEncoding(ValueError):
    """The part's Content-Transfer-Encoding is none this server can undo (``NO [UNKNOWN-CTE]``)."""


#: Octets of content per base64 line: 76 characters, the most RFC 2045 6.8 allows.
_BASE64_LINE = 57
_IDENTITY = frozenset({b"", b"7bit", b"8bit", b"binary"})
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_QP_SOFT_BREAK = re.compile(rb"=[ \t]*\r?\n")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_QP_TRAILING_BLANKS = re.compile(rb"[ \t]+(?=\r?\n)")


def decode(encoding: bytes, body: bytes) -> bytes:
    """``body`` with the transfer encoding named ``encoding`` (any case) undone.

    Damaged input is decoded as far as it goes, never refused: base64 ignores octets outside
    its alphabet and a dangling partial group; quoted-printable keeps a ``=`` that starts no
    valid escape.  Raises UnknownTransferEncoding for any other encoding name."""
    name = encoding.strip().lower()
    if name in _IDENTITY:
        return body
    if name == b"base64":
        return _base64(body)
    if name == b"quoted-printable":
        return _quoted_printable(body)
    raise UnknownTransferEncoding(encoding.decode("ascii", "replace"))


def encode_base64(body: bytes) -> bytes:
    """``body`` in base64, in lines of 76 characters that end in CRLF."""
    return b"".join(
        binascii.b2a_base64(body[pos : pos + _BASE64_LINE], newline=False) + b"\r\n"
        for pos in range(0, len(body), _BASE64_LINE)
    )


def _base64(body: bytes) -> bytes:
    text = _NOT_BASE64.sub(b"", body.split(b"=", 1)[0])
    text = text[: len(text) - len(text) % 4 if len(text) % 4 == 1 else len(text)]
    text += b"=" * (-len(text) % 4)
    return binascii.a2b_base64(text)


def _quoted_printable(body: bytes) -> bytes:
    body = _QP_TRAILING_BLANKS.sub(b"", body)
    body = _QP_SOFT_BREAK.sub(b"", body)
    return _QP_ESCAPE.sub(lambda found: bytes.fromhex(found.group(1).decode()), body)
