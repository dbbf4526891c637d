"""Modified UTF-7 of mailbox names (RFC 3501 5.1.3).

``encode`` gives the canonical form; ``decode`` accepts only the canonical form (the one
``encode`` gives back) and raises ValueError on anything else: bad or non-zero-padded base64, a
``&`` section left open, printable ASCII or a broken surrogate pair inside a section, and raw
control characters.  A parser keeps an ASCII name that does not decode as ``Undecodable``, so
that the command can answer NO for it as Dovecot does (a LIST pattern of it matches nothing).
As Dovecot does for clients that send UTF-8 names (RFC 6855 style), bytes
with 8-bit octets that are valid UTF-8 are taken as UTF-8 as they are (``&`` included).
"""

from __future__ import annotations

import binascii
import re

_DIRECT = frozenset(range(0x20, 0x7F)) - {ord("&")}
#: A name of printable ASCII without ``&``: the same in modified UTF-7 (the common case).
_PLAIN = re.compile(rb"[\x20-\x25\x27-\x7e]*")
_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


class Undecodable(str):
    """A mailbox name or pattern in ASCII that is not valid modified UTF-7: the client's text,
    with ``undecodable`` saying why (for the NO that answers it)."""

    undecodable: str

    def __new__(cls, text: str, reason: str) -> Undecodable:
        """``text`` as sent, ``reason`` why it does not decode."""
        name = super().__new__(cls, text)
        name.undecodable = reason
        return name


def encode(name: str) -> bytes:
    """``name`` in modified UTF-7: printable ASCII as is, ``&`` as ``&-``, the rest as
    ``&``-sections of base64 UTF-16 (``,`` for ``/``, no padding)."""
    if name.isascii() and name.isprintable() and "&" not in name:
        return name.encode("ascii")
    out = bytearray()
    pending: list[str] = []
    for char in name:
        code = ord(char)
        if code in _DIRECT or char == "&":
            if pending:
                out += _section("".join(pending))
                pending.clear()
            out += b"&-" if char == "&" else char.encode("ascii")
        else:
            pending.append(char)
    if pending:
        out += _section("".join(pending))
    return bytes(out)


def _section(text: str) -> bytes:
    raw = binascii.b2a_base64(text.encode("utf-16-be"), newline=False)
    return b"&" + raw.rstrip(b"=").replace(b"/", b",") + b"-"


def decode(name: bytes) -> str:
    """The mailbox name that the modified UTF-7 ``name`` stands for (see the module text)."""
    if _PLAIN.fullmatch(name):
        return name.decode("ascii")
    if not name.isascii():
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("mailbox name is neither modified UTF-7 nor UTF-8") from None
    out: list[str] = []
    pos, end = 0, len(name)
    while pos < end:
        amp = name.find(b"&", pos)
        plain = name[pos : end if amp < 0 else amp]
        if any(code not in _DIRECT for code in plain):
            raise ValueError("control character in mailbox name")
        out.append(plain.decode("ascii"))
        if amp < 0:
            break
        close = name.find(b"-", amp + 1)
        if close < 0:
            raise ValueError("unterminated & in mailbox name")
        out.append(_unsection(name[amp + 1 : close]) if close > amp + 1 else "&")
        pos = close + 1
    text = "".join(out)
    if encode(text) != name:
        raise ValueError("non-canonical modified UTF-7 in mailbox name")
    return text


def _unsection(chunk: bytes) -> str:
    if any(code not in _BASE64 for code in chunk):
        raise ValueError("bad base64 in mailbox name")
    if len(chunk) * 6 % 16 >= 6:
        raise ValueError("truncated base64 in mailbox name")
    raw = binascii.a2b_base64(chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4))
    try:
        return raw[: len(raw) - len(raw) % 2].decode("utf-16-be")
    except UnicodeDecodeError:
        raise ValueError("broken UTF-16 in mailbox name") from None
