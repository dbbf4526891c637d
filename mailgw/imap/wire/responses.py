"""Serialising IMAP response data: one place that decides quoted string, literal, atom or NIL.

Values are nested Python data: ``bytes`` or ``str`` is an IMAP string (quoted when it can be,
else a literal), ``int`` a number, ``None`` NIL, ``list``/``tuple`` a parenthesised list, and
``Atom`` a word written as is (flags, ``BODY[...]`` labels, response keywords).
"""

from __future__ import annotations

import re

#: What may go between double quotes: no CR, LF, NUL or 8-bit octets (RFC 3501 ``quoted``).
_QUOTABLE = re.compile(rb"[^\r\n\x00\x80-\xff]*\Z")
#: Longest string sent quoted; a longer one goes as a literal (as Dovecot does at 1 KB).
MAX_QUOTED = 1024


class Atom(bytes):
    """Bytes written as they are, with no quoting (an atom, a flag, a section label)."""


def string(value: bytes | str) -> bytes:
    """``value`` as an IMAP string: quoted when short and plain, else a literal."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if len(value) <= MAX_QUOTED and _QUOTABLE.match(value):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(value)


def literal(value: bytes) -> bytes:
    """``value`` as a synchronising literal: ``{n}`` CRLF, then the octets."""
    return b"{%d}\r\n" % len(value) + value


def encode(value) -> bytes:
    """Serialise nested response data (see the module docstring)."""
    if isinstance(value, Atom):
        return bytes(value)
    if isinstance(value, bytes | str):
        return string(value)
    if value is None:
        return b"NIL"
    if isinstance(value, bool):
        raise TypeError("a bool is not IMAP data")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, list | tuple):
        return b"(" + b" ".join(encode(item) for item in value) + b")"
    raise TypeError(f"cannot serialise {type(value).__name__} as IMAP data")
