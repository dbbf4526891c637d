"""The IMAP token reader (RFC 3501 section 9 and the extensions mailgw speaks).

``Reader`` walks one whole command (as ``framing`` delivers it: lines, literal markers and
literal octets) and reads one token at a time; every failure raises ``ParseError`` with the
command's tag and a short reason the client can read.  Tokens are found with simple regular
expressions anchored at the current position (no backtracking) and literals by their size, so
the work is linear in the command's length.

Leniency, as Dovecot: a run of spaces counts as one SP, trailing spaces are ignored, quoted
strings may hold UTF-8 (RFC 9051).  Numbers are 32-bit (``number``, ``nz-number``) or 63-bit
(``mod-sequence-value``); larger is an error, and so is 0 in a sequence set (RFC 3501 says
``nz-number``; Dovecot answers BAD too).
"""

from __future__ import annotations

import functools
import re
from typing import NoReturn

from mailgw.imap.parsing import parse_date_time
from mailgw.imap.wire import mutf7
from mailgw.imap.wire.commands import SequenceSet

#: Largest ``number``/``nz-number`` (RFC 3501: 32-bit unsigned).
MAX_NUMBER = 4294967295
#: Largest ``mod-sequence-value`` (RFC 7162: 63-bit).
MAX_MODSEQ = 9223372036854775807

_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\]\x80-\xff]+')
_ASTRING = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\x80-\xff]+')
_LIST_MAILBOX = re.compile(rb'[^(){ \x00-\x1f\x7f"\\\x80-\xff]+')
_TAG = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\+\x80-\xff]+')
_HEAD = re.compile(rb"(" + _TAG.pattern + rb") +(" + _ATOM.pattern + rb")")
_QUOTED = re.compile(rb'"([^"\\\r\n\x00]*(?:\\["\\][^"\\\r\n\x00]*)*)"')
_UNESCAPE = re.compile(rb'\\(["\\])')
_DIGITS = re.compile(rb"[0-9]+")
_SEQUENCE = re.compile(rb"[0-9*:,$]+")
_SPACES = re.compile(rb" +")
_DATE = re.compile(rb'("?)([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})("?)')
_MONTHS = {
    name: number
    for number, name in enumerate(b"JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)
}
_SP, _LPAREN, _RPAREN, _QUOTE, _BRACE, _TILDE = b' ()"{~'


class ParseError(Exception):
    """A command that cannot be parsed: the session answers ``tag BAD reason``, or
    ``* BAD reason`` when ``tag`` is None (the tag itself is missing or malformed)."""

    def __init__(self, tag: bytes | None, reason: str) -> None:
        super().__init__(reason)
        self.tag = tag
        self.reason = reason


def _sequence_set(raw: bytes) -> SequenceSet:
    """The SequenceSet ``raw`` spells, or ValueError."""
    if raw == b"$":
        return SequenceSet(saved=True)
    ranges = []
    for part in raw.split(b","):
        low, colon, high = part.partition(b":")
        low_n = _seq_number(low)
        ranges.append((low_n, _seq_number(high) if colon else low_n))
    return SequenceSet(tuple(ranges))


#: Short sequence sets, remembered: clients repeat the same few (``1:*``, ``$``).
_cached_sequence_set = functools.lru_cache(maxsize=256)(_sequence_set)


def _seq_number(raw: bytes) -> int | None:
    if raw == b"*":
        return None
    if not raw.isdigit():
        raise ValueError("bad sequence set")
    if len(raw) > 10 or int(raw) > MAX_NUMBER:
        raise ValueError("number too large")
    if not int(raw):
        raise ValueError("0 is not a message number")
    return int(raw)


def _show(raw: bytes) -> str:
    """A token for an error message: printable ASCII, cut short."""
    text = raw[:24].decode("ascii", "replace")
    return "".join(c if c.isprintable() and c.isascii() else "?" for c in text)


class Reader:
    """A cursor over one command, without its final line end.

    Methods named after a grammar rule read one such token at the cursor and move past it, or
    raise ``ParseError(tag, reason)`` with the ``reason`` their caller gives."""

    __slots__ = ("data", "pos", "end", "tag", "utf8")

    def __init__(self, data: bytes, utf8: bool = False) -> None:
        """Read ``data``; mailbox names in UTF-8 if ``utf8`` (IMAP4rev2 enabled, RFC 9051
        5.1), else in modified UTF-7."""
        self.utf8 = utf8
        end = len(data)
        if data.endswith(b"\n"):
            end -= 2 if data.endswith(b"\r\n") else 1
        self.data, self.pos, self.end, self.tag = data, 0, end, None

    def fail(self, reason: str) -> NoReturn:
        """Raise the ParseError for this command."""
        raise ParseError(self.tag, reason)

    def more(self) -> bool:
        """Is anything left before the line end?"""
        return self.pos < self.end

    def peek(self) -> int:
        """The next octet, or -1 at the end."""
        return self.data[self.pos] if self.pos < self.end else -1

    def skip(self, octet: int) -> bool:
        """Move past ``octet`` if it comes next."""
        if self.pos < self.end and self.data[self.pos] == octet:
            self.pos += 1
            return True
        return False

    def expect(self, octet: int, reason: str) -> None:
        """Move past ``octet``, which must come next."""
        if not self.skip(octet):
            self.fail(reason)

    def sp(self, reason: str) -> None:
        """Move past one or more spaces, which must come next and be followed by more."""
        match = _SPACES.match(self.data, self.pos, self.end)
        if match is None or match.end() >= self.end:
            self.fail(reason)
        self.pos = match.end()

    def maybe_sp(self) -> bool:
        """Move past spaces if more than spaces follow; return whether there was something."""
        match = _SPACES.match(self.data, self.pos, self.end)
        if match is None or match.end() >= self.end:
            return False
        self.pos = match.end()
        return True

    def finish(self, command: str) -> None:
        """Nothing but spaces may be left of the command."""
        match = _SPACES.match(self.data, self.pos, self.end)
        if match is not None:
            self.pos = match.end()
        if self.pos < self.end:
            self.fail(f"unexpected {_show(self.data[self.pos : self.end])!r} after {command}")

    def head(self) -> str:
        """The tag (kept in ``tag``) and the command name, upper-cased."""
        match = _HEAD.match(self.data, 0, self.end)
        if match is None or (match.end() < self.end and self.data[match.end()] != _SP):
            self.tag_token()
            self.sp("missing command")
            return self.keyword("bad command name")
        self.tag, self.pos = match.group(1), match.end()
        return match.group(2).decode("ascii").upper()

    def tag_token(self) -> bytes:
        """The command's tag; a ParseError for a bad one has no tag."""
        match = _TAG.match(self.data, 0, self.end)
        if match is None:
            self.fail("empty command line" if not self.end else "missing or malformed tag")
        self.pos = match.end()
        if self.pos < self.end and self.data[self.pos] != _SP:
            self.fail("missing or malformed tag")
        self.tag = match.group()
        return self.tag

    def match(self, pattern: re.Pattern, reason: str) -> bytes:
        """The text ``pattern`` matches at the cursor."""
        match = pattern.match(self.data, self.pos, self.end)
        if match is None:
            self.fail(reason)
        self.pos = match.end()
        return match.group()

    def atom(self, reason: str) -> bytes:
        """An ``atom``."""
        return self.match(_ATOM, reason)

    def keyword(self, reason: str) -> str:
        """An atom upper-cased (command names, options)."""
        return self.match(_ATOM, reason).decode("ascii").upper()

    def quoted(self, reason: str) -> bytes:
        """A ``quoted`` string's content, unescaped."""
        match = _QUOTED.match(self.data, self.pos, self.end)
        if match is None:
            self.fail(reason if self.peek() != _QUOTE else "malformed quoted string")
        self.pos = match.end()
        text = match.group(1)
        return _UNESCAPE.sub(rb"\1", text) if b"\\" in text else text

    def literal(self, reason: str, binary: bool = False) -> bytes:
        """A ``literal`` (``{n}`` or ``{n+}``, then n octets); ``binary`` also allows the
        ``~{n}`` of literal8 (RFC 3516)."""
        data, start = self.data, self.pos
        if start < self.end and data[start] == _TILDE:
            if not binary:
                self.fail("literal8 is only allowed in APPEND")
            start += 1
        if start >= self.end or data[start] != _BRACE:
            self.fail(reason)
        close = data.find(b"}", start + 1, min(self.end, start + 24))
        size_text = data[start + 1 : close].removesuffix(b"+") if close > 0 else b""
        if not size_text.isdigit():
            self.fail("literal size is not a number")
        after = close + 1
        if data.startswith(b"\r\n", after):
            after += 2
        elif data.startswith(b"\n", after):
            after += 1
        else:
            self.fail("a literal's size must end its line")
        stop = after + int(size_text)
        if stop > self.end:
            if stop > len(data) - 1:
                self.fail("literal is shorter than its size")
            self.end = stop  # the literal ended in CR and its line in a bare LF
        self.pos = stop
        return data[after:stop]

    def string(self, reason: str) -> bytes:
        """A ``string``: quoted or literal."""
        octet = self.peek()
        return self.quoted(reason) if octet == _QUOTE else self.literal(reason)

    def astring(self, reason: str) -> bytes:
        """An ``astring``: an atom (``]`` allowed), quoted or literal."""
        octet = self.peek()
        if octet == _QUOTE:
            return self.quoted(reason)
        if octet == _BRACE or (octet == _TILDE and self.data.startswith(b"{", self.pos + 1)):
            return self.literal(reason)
        return self.match(_ASTRING, reason)

    def nstring(self, reason: str) -> bytes | None:
        """An ``nstring``: NIL or a string."""
        octet = self.peek()
        if octet in (_QUOTE, _BRACE):
            return self.string(reason)
        if self.match(_ATOM, reason).upper() != b"NIL":
            self.fail(reason)
        return None

    def number(self, reason: str, limit: int = MAX_NUMBER) -> int:
        """A ``number`` (at most ``limit``)."""
        digits = self.match(_DIGITS, reason)
        if len(digits) > 19 or int(digits) > limit:
            self.fail("number too large")
        return int(digits)

    def nz_number(self, reason: str, limit: int = MAX_NUMBER) -> int:
        """An ``nz-number`` (at most ``limit``)."""
        value = self.number(reason, limit)
        if not value:
            self.fail("0 is not allowed here")
        return value

    def sequence_set(self, reason: str, saved: bool = True) -> SequenceSet:
        """A ``sequence-set``, or ``$`` (RFC 5182) when ``saved``."""
        raw = self.match(_SEQUENCE, reason)
        if raw == b"$" and not saved:
            self.fail("$ is not allowed here")
        try:
            return _cached_sequence_set(raw) if len(raw) <= 64 else _sequence_set(raw)
        except ValueError as error:
            self.fail(str(error))

    def mailbox(self, reason: str) -> str:
        """A ``mailbox``: an astring in modified UTF-7 (or UTF-8), INBOX in any case as
        ``"INBOX"``."""
        name = self._decode_mailbox(self.astring(reason))
        return "INBOX" if name.isascii() and name.upper() == "INBOX" else name

    def list_mailbox(self, reason: str) -> str:
        """A ``list-mailbox`` pattern: an atom that may hold ``%`` and ``*``, or a string."""
        octet = self.peek()
        if octet in (_QUOTE, _BRACE):
            return self._decode_mailbox(self.string(reason))
        return self._decode_mailbox(self.match(_LIST_MAILBOX, reason))

    def _decode_mailbox(self, raw: bytes) -> str:
        if self.utf8:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                self.fail("bad mailbox name: not UTF-8")
        try:
            return mutf7.decode(raw)
        except ValueError as error:
            if raw.isascii():
                return mutf7.Undecodable(raw.decode("ascii"), str(error))
            self.fail(f"bad mailbox name: {error}")

    def flag(self, reason: str) -> str:
        """A ``flag``: ``\\`` and an atom (a system flag), or an atom (a keyword)."""
        system = self.skip(0x5C)
        text = self.match(_ATOM, reason if not system else "bad flag").decode("ascii")
        if system and text.lower() == "recent":
            self.fail("\\Recent cannot be set by a client")
        return "\\" + text if system else text

    def flag_list(self, reason: str) -> tuple[str, ...]:
        """A ``flag-list``: ``(`` flags ``)``, possibly empty."""
        self.expect(_LPAREN, reason)
        flags = []
        self.skip_spaces()
        while not self.skip(_RPAREN):
            if self.peek() == _LPAREN:
                self.fail("nested parentheses in a flag list")
            if not self.more():
                self.fail("unterminated flag list")
            flags.append(self.flag("bad flag"))
            self.skip_spaces()
        return tuple(flags)

    def skip_spaces(self) -> None:
        """Move past any spaces."""
        match = _SPACES.match(self.data, self.pos, self.end)
        if match is not None:
            self.pos = match.end()

    def list_of(self, read, reason: str, empty: bool = False) -> list:
        """``(`` items ``)``, each read by ``read(reason)``; at least one unless ``empty``."""
        self.expect(_LPAREN, reason)
        items = []
        self.skip_spaces()
        while not self.skip(_RPAREN):
            if not self.more():
                self.fail(f"unterminated list: {reason}")
            items.append(read(reason))
            self.skip_spaces()
        if not items and not empty:
            self.fail(reason)
        return items

    def date(self, reason: str) -> tuple[int, int, int]:
        """A ``date`` (``1-Feb-2024``, quoted or not) as (year, month, day)."""
        match = _DATE.match(self.data, self.pos, self.end)
        if match is None or match.group(1) != match.group(5):
            self.fail(reason)
        month = _MONTHS.get(match.group(3).upper())
        day = int(match.group(2))
        if month is None or not 1 <= day <= 31:
            self.fail(reason)
        self.pos = match.end()
        return (int(match.group(4)), month, day)

    def date_time(self, reason: str) -> float:
        """A quoted ``date-time`` (``"17-Jul-1996 02:44:25 -0700"``) as a POSIX timestamp."""
        raw = self.quoted(reason)
        try:
            return parse_date_time(raw)
        except ValueError as error:
            self.fail(f"bad date-time: {error}")
