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


# -- whole responses -------------------------------------------------------------------------

CRLF = b"\r\n"


def untagged(*values) -> bytes:
    """An untagged response line: ``*``, then each value serialised (``encode``), CRLF."""
    return b"* " + b" ".join(encode(value) for value in values) + CRLF


def status_line(tag: bytes | None, status: bytes, text: bytes = b"") -> bytes:
    """A status response: ``tag`` (``*`` when None), ``OK``/``NO``/``BAD``/``BYE``/``PREAUTH``
    and the human-readable text (a ``[CODE]`` first, if any), CRLF."""
    line = (tag or b"*") + b" " + status
    if text:
        line += b" " + text
    return line + CRLF


def continuation(text: bytes = b"") -> bytes:
    """A continuation request: ``+``, the text, CRLF."""
    return b"+ " + text + CRLF


def flag_list(flags) -> Atom:
    """A parenthesised list of flags (str), as they are spelled."""
    return Atom(b"(" + " ".join(flags).encode("utf-8") + b")")


def fetch_response(seq: int, items: list[bytes]) -> bytes:
    """``* seq FETCH (items)`` CRLF, ``items`` already serialised (``name value`` each)."""
    return b"* %d FETCH (%s)\r\n" % (seq, b" ".join(items))


def sequence_set(numbers) -> bytes:
    """A compact sequence set for ascending ``numbers`` (e.g. ``1:3,7``)."""
    ranges: list[list[int]] = []
    for number in numbers:
        if ranges and number == ranges[-1][1] + 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    return b",".join(b"%d" % a if a == b else b"%d:%d" % (a, b) for a, b in ranges)


def literal_item(label: bytes, data: bytes, binary: bool = False) -> tuple[bytes, bytes]:
    """A FETCH item whose value is a literal, as ``(label and literal head, octets)`` so that
    large octets are not copied; ``binary`` data with a NUL goes as literal8 (RFC 3516)."""
    mark = b"~{%d}\r\n" if binary and b"\x00" in data else b"{%d}\r\n"
    return label + b" " + mark % len(data), data


def fetch_line_format(item_formats: list[bytes]) -> bytes:
    """A %-format of FETCH lines: ``%d`` for the sequence number, then each item's format."""
    return b"* %d FETCH (" + b" ".join(item_formats) + b")" + CRLF


def fetch_response_parts(seq: int, items: list) -> list[bytes]:
    """``fetch_response`` as pieces to join, an item being bytes or a ``literal_item``."""
    parts = [b"* %d FETCH (" % seq]
    for index, item in enumerate(items):
        if index:
            parts.append(b" ")
        if isinstance(item, tuple):
            parts.extend(item)
        else:
            parts.append(item)
    parts.append(b")" + CRLF)
    return parts
