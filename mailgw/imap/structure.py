"""A stored message's MIME structure for IMAP: ENVELOPE, BODY[STRUCTURE], BODY[section], BINARY.

Pure and without I/O: ``parse_message`` takes the octets as stored and finds the header/body
and multipart boundaries by offset, once, on first need; sections are slices of those
octets.  Malformed MIME never raises: a missing boundary makes a part run to the end, a
multipart with no parts gets one empty text/plain part, nesting past ``MAX_DEPTH`` leaves
the deeper part unparsed.  What is sent is what Debian's Dovecot 2.3 sends, broken input
included (boundaries, parameters, addresses and sizes read its way; types and parameter
names as the message has them, ``charset`` defaulted to us-ascii on text parts, Content-*
fields ignored in a message without MIME-Version or Content-Type), with two differences
on purpose: an unparseable Content-Type is text/plain (RFC 2045 5.2; Dovecot sends type
"" subtype ""), and BINARY decodes damaged base64 or quoted-printable as far as it goes
(Dovecot refuses with [PARSE]).  ``tests/test_imap_structure_dovecot.py`` compares the two.
"""

from __future__ import annotations

import re
from functools import cached_property

from mailgw.imap.mime.address import (
    adjacent,
    dovecot_string,
    envelope_of_fields,
    envelope_of_header,
)
from mailgw.imap.mime.headers import (
    content_type,
    disposition,
    field_value,
    header_block,
    header_end,
    language_tags,
    leading_token,
    parameter,
    select_fields,
    split_fields,
)
from mailgw.imap.mime.transfer import UnknownTransferEncoding, decode, encode_base64
from mailgw.imap.wire.commands import Section
from mailgw.imap.wire.responses import Atom

__all__ = [
    "ParsedMessage",
    "binary_as_base64",
    "UnknownTransferEncoding",
    "envelope_of_header",
    "header_block",
    "parse_message",
]

#: Deepest nesting of parts, the message counted (Dovecot's limit): a multipart or
#: message/rfc822 at the bottom is a leaf, shown as application/octet-stream.
MAX_DEPTH = 100
#: Most parts parsed in one message; a container met after that is a leaf as above.
MAX_PARTS = 10_000

_DASHES_AT_LINE_START = re.compile(rb"^--", re.M)
_DEFAULT_CHARSET = [b"charset", b"us-ascii"]
_EMPTY_TEXT = [b"text", b"plain", _DEFAULT_CHARSET, None, None, b"7bit", 0, 0]


class Part:
    """One MIME entity: offsets of its header and body in the message, and what it holds.

    ``children`` is the list of sub-parts of a parsed multipart (else None); ``message``
    the encapsulated message of a parsed message/rfc822 part (else None)."""

    __slots__ = (
        "data",
        "start",
        "fields_end",
        "body_start",
        "end",
        "children",
        "message",
        "parent_kind",
        "header_cut",
        "__dict__",
    )

    def __init__(
        self, data: bytes, start: int, fields_end: int, body_start: int, parent_kind: bytes
    ) -> None:
        self.data = data
        self.start = start
        #: Just past the last header field; below ``body_start`` when an empty line ends
        #: the header.
        self.fields_end = fields_end
        self.body_start = body_start
        self.end = len(data)
        self.children: list[Part] | None = None
        self.message: Part | None = None
        #: The type/subtype of the multipart this is a part of, b"" for a message.
        self.parent_kind = parent_kind
        #: A boundary line came before the end of the header (it ends the part there).
        self.header_cut = False

    @cached_property
    def fields(self) -> list[tuple[bytes, bytes]]:
        """The header fields as ``(lower-case name, stored octets)``."""
        return split_fields(self.data[self.start : self.body_start])

    @cached_property
    def _first(self) -> dict[bytes, bytes]:
        first: dict[bytes, bytes] = {}
        for field, raw in self.fields:
            first.setdefault(field, raw)
        return first

    def header(self, name: bytes) -> bytes | None:
        """The unfolded value of the first field called ``name`` (lower-case), or None."""
        raw = self._first.get(name)
        return None if raw is None else field_value(raw)

    @cached_property
    def content_type(self) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
        """``(type, subtype, parameters)``; text/plain when absent or unparseable."""
        value = self.header(b"content-type")
        parsed = content_type(value) if value is not None else None
        if parsed is not None:
            return parsed
        if self.parent_kind == b"multipart/digest" and value is None:
            return b"message", b"rfc822", []
        return b"text", b"plain", []

    def kind(self) -> bytes:
        """The lower-case type/subtype, e.g. b"multipart/mixed"."""
        major, minor, _ = self.content_type
        return major.lower() + b"/" + minor.lower()

    @property
    def body(self) -> bytes:
        """The body octets as stored (transfer-encoded)."""
        return self.data[self.body_start : self.end]

    @property
    def mime(self) -> bool:
        """Do its Content-* fields count?  Always in a multipart; in a message only with
        MIME-Version or Content-Type (else Dovecot's BODYSTRUCTURE ignores them)."""
        return (
            bool(self.parent_kind)
            or b"mime-version" in self._first
            or (b"content-type" in self._first)
        )

    def mime_header(self, name: bytes) -> bytes | None:
        """``header(name)``, or None when the Content-* fields do not count (see ``mime``)."""
        return self.header(name) if self.mime else None

    def encoding(self) -> bytes | None:
        """The Content-Transfer-Encoding token as written, or None."""
        value = self.header(b"content-transfer-encoding")
        return leading_token(value) if value is not None else None


class _Parser:
    """Finds the parts of one message, boundaries matched as Dovecot does (by prefix, the
    longest, then the innermost), each boundary's preceding line ending belonging to it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.count = 0

    def boundary(
        self, pos: int, stack: list[bytes], before: int | None = None
    ) -> tuple[int, int, int, bool] | None:
        """The next boundary line of ``stack`` from ``pos`` (starting before ``before``):
        (line start, next line start, index in stack, closing?).

        As Dovecot: a line is a boundary if it starts with ``--`` and one of the boundaries
        (an empty one too); of several, the longest, then the innermost."""
        if not stack:
            return None
        data = self.data
        for found in _DASHES_AT_LINE_START.finditer(data, pos, before or len(data)):
            at = found.end()
            best = -1
            for index in range(len(stack) - 1, -1, -1):
                candidate = stack[index]
                if (best < 0 or len(candidate) > len(stack[best])) and data.startswith(
                    candidate, at
                ):
                    best = index
            if best >= 0:
                after = at + len(stack[best])
                newline = data.find(b"\n", after)
                line_end = len(data) if newline < 0 else newline + 1
                return found.start(), line_end, best, data.startswith(b"--", after)
        return None

    def content_end(self, floor: int, stop: tuple | None) -> int:
        """Where content before the boundary ``stop`` ends: the line ending before the
        boundary is the boundary's, unless it lies before ``floor`` (it ended a line that
        was not content, such as a closing delimiter)."""
        if stop is None:
            return len(self.data)
        end = stop[0]
        if end > floor and self.data[end - 1] == 0x0A:
            end -= 1
            if end > floor and self.data[end - 1] == 0x0D:
                end -= 1
        return end

    def entity(
        self,
        start: int,
        stack: list[bytes],
        depth: int,
        parent_kind: bytes = b"",
        fields: list[tuple[bytes, bytes]] | None = None,
    ):
        """Parse the entity at ``start``; return it and the boundary that ended it.

        ``fields`` are its header fields when the caller has split them already."""
        self.count += 1
        data = self.data
        fields_end, body_start = header_end(data, start)
        limit = self.boundary(start, stack, fields_end)
        if limit is not None:  # a boundary inside the header ends the part there
            fields_end = body_start = self.content_end(start, limit)
        part = Part(data, start, fields_end, body_start, parent_kind)
        part.header_cut = limit is not None
        if fields is not None:
            part.fields = fields
        kind = part.kind()
        if limit is None and stack and body_start > fields_end:
            # An outer boundary right after the empty line takes it as its line ending.
            own = parameter(part.content_type[2], b"boundary") if _is_multipart(kind) else None
            limit = self.boundary(body_start, [*stack, own] if own else stack, body_start + 2)
            if limit is not None and limit[2] < len(stack):
                part.body_start = body_start = fields_end
            else:
                limit = None
        container = _is_multipart(kind) or kind == b"message/rfc822"
        if container and (depth + 1 >= MAX_DEPTH or self.count >= MAX_PARTS):
            # Too deep or too many: a leaf of unknown content, as Dovecot shows it.
            part.content_type = (b"application", b"octet-stream", part.content_type[2])
        elif _is_multipart(kind):
            return self.multipart(part, stack, depth)
        elif container:
            part.message, stop = self.entity(body_start, stack, depth + 1)
            inner = part.message
            # A message whose header a boundary cuts keeps its last line ending inside the
            # part, though not in its own header (as Dovecot counts them).
            part.end = stop[0] if inner.header_cut and stop is not None else inner.end
            return part, stop
        stop = limit or self.boundary(body_start, stack)
        part.end = self.content_end(body_start, stop)
        return part, stop

    def multipart(self, part: Part, stack: list[bytes], depth: int):
        """Parse a multipart's parts (none without a boundary parameter; an empty boundary
        matches any ``--`` line, as with Dovecot)."""
        part.children = []
        boundary = parameter(part.content_type[2], b"boundary")
        inner = stack if boundary is None else [*stack, boundary]
        own = len(stack)
        stop = self.boundary(part.body_start, inner)
        kind = part.kind()
        floor = part.body_start
        child = None
        while stop is not None and stop[2] == own:
            child = None
            if stop[3] or self.count >= MAX_PARTS:
                floor = stop[1]
                stop = self.boundary(floor, stack)
                break
            child, stop = self.entity(stop[1], inner, depth + 1, kind)
            part.children.append(child)
        # A part ended by an outer boundary ends where its last sub-part does (with the line
        # ending a cut header leaves, as for message/rfc822 below).
        if child is None:
            part.end = self.content_end(floor, stop)
        else:
            part.end = stop[0] if child.header_cut and stop is not None else child.end
        return part, stop


def _is_multipart(kind: bytes) -> bool:
    """multipart/<something>: a lone ``multipart`` type is no multipart (as for Dovecot)."""
    return kind.startswith(b"multipart/") and len(kind) > 10


class ParsedMessage:
    """A stored message, parsed on first need; every method answers, none raises on bad MIME.

    A message with bare LF line endings is seen with CRLF ones, in sizes and sections alike
    (as Dovecot serves it, and as IMAP wants it); a CRLF message is never copied."""

    def __init__(self, stored: bytes) -> None:
        self._stored = stored

    @cached_property
    def data(self) -> bytes:
        """The message's octets as IMAP sees them (CRLF line endings)."""
        stored = self._stored
        if stored.count(b"\n") != stored.count(b"\r\n"):
            return _BARE_LF.sub(b"\r\n", stored)
        return stored

    @cached_property
    def root(self) -> Part:
        """The message as a tree of parts."""
        known = self._header_fields if "_header_fields" in self.__dict__ else None
        if self.data is not self._stored:
            known = None
        return _Parser(self.data).entity(0, [], 0, fields=known)[0]

    @cached_property
    def _header_fields(self) -> list[tuple[bytes, bytes]]:
        return split_fields(header_block(self._stored))

    def envelope(self) -> list:
        """The ENVELOPE, as nested values for ``responses.encode``."""
        return envelope_of_fields(self._header_fields)

    def body_structure(self, extended: bool) -> list:
        """BODYSTRUCTURE (``extended``) or BODY, as nested values for ``responses.encode``."""
        return _structure(self.root, extended)

    def find(self, part: tuple[int, ...]) -> Part | None:
        """The part numbered ``part`` (``()`` is the message), or None if there is none.

        Numbers inside a message/rfc822 part count the parts of the message it holds; part 1
        of a part that is not multipart is that part itself, and nothing lies below it
        unless it is a message/rfc822 (as Dovecot answers)."""
        node = self.root
        for index, number in enumerate(part):
            more = index + 1 < len(part)
            if node.children is not None:
                if not 1 <= number <= len(node.children):
                    return None
                node = node.children[number - 1]
            elif number != 1 or (more and node.message is None):
                return None
            if more and node.message is not None:
                node = node.message
        return node

    def section(self, section: Section) -> bytes:
        """The octets of BODY[section] (before any <partial>); b"" for a part that does not
        exist, and for HEADER or TEXT of a part that holds no message.  A NUL, which IMAP
        does not allow there, is sent as 0x80 (as Dovecot does); BINARY keeps it."""
        octets = self._section(section)
        return octets.replace(b"\x00", b"\x80") if b"\x00" in octets else octets

    def _section(self, section: Section) -> bytes:
        node = self.find(section.part)
        if node is None:
            return b""
        text = section.text
        if text is None:
            return node.body if section.part else self.data
        if text == "MIME":
            return self.data[node.start : node.body_start]
        if section.part:
            node = node.message
            if node is None:
                return b""
        if text == "TEXT":
            return node.body
        if text == "HEADER":
            return self.data[node.start : node.body_start]
        if text not in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            return b""
        ended = node.body_start > node.fields_end or node.body_start == node.start
        negate = text == "HEADER.FIELDS.NOT"
        return select_fields(node.fields, section.fields, negate, ended, node.header_cut)

    def binary(self, part: tuple[int, ...]) -> bytes:
        """The part's content with its Content-Transfer-Encoding undone (RFC 3516); a part
        that does not exist is b"".

        The content of a multipart or message/rfc822 part, and ``()`` (the whole message,
        header included), has every part inside decoded and re-labelled
        ``Content-Transfer-Encoding: binary``, as Dovecot sends them.  Raises
        UnknownTransferEncoding for an encoding it cannot undo."""
        if not part:
            return self._binary_entity(self.root)
        node = self.find(part)
        return b"" if node is None else self._binary_body(node)

    def _binary_body(self, node: Part) -> bytes:
        if node.message is not None:
            inner = node.message
            return self._binary_entity(inner) + self.data[inner.end : node.end]
        if node.children is None:
            encoding = node.encoding()
            return node.body if encoding is None else decode(encoding, node.body)
        pieces = []
        pos = node.body_start
        for child in node.children:
            pieces.append(self.data[pos : child.start])
            pieces.append(self._binary_entity(child))
            pos = child.end
        pieces.append(self.data[pos : node.end])
        return b"".join(pieces)

    def _binary_entity(self, node: Part) -> bytes:
        """Header and decoded body; the header says ``binary`` if the body was decoded."""
        body = self._binary_body(node)
        encoding = node.encoding()
        if node.children is not None or node.message is not None or encoding is None:
            return self.data[node.start : node.body_start] + body
        if encoding.lower() in (b"7bit", b"8bit", b"binary"):
            return self.data[node.start : node.body_start] + body
        return _relabelled(node, b"binary") + body

    def binary_size(self, part: tuple[int, ...]) -> int:
        """The octet count of ``binary(part)``.  Raises UnknownTransferEncoding."""
        return len(self.binary(part))


_BARE_LF = re.compile(rb"(?<!\r)\n")


def _relabelled(node: Part, encoding: bytes) -> bytes:
    """The part's header, with its Content-Transfer-Encoding fields replaced by one saying
    ``encoding`` (placed last), and the empty line after it."""
    kept = [raw for name, raw in node.fields if name != b"content-transfer-encoding"]
    blank = node.data[node.fields_end : node.body_start]
    return b"".join(kept) + b"Content-Transfer-Encoding: " + encoding + b"\r\n" + blank


def binary_as_base64(data: bytes) -> bytes:
    """A message given as literal8 (APPEND ``~{n}``, RFC 3516) as it is stored: each part
    labelled ``Content-Transfer-Encoding: binary`` that holds no other part has its body
    base64-encoded and is labelled so (as Dovecot stores it), the rest of the octets as
    given.  Its octets (NULs, bare CR or LF) then survive the store's CRLF line endings and
    never reach BODY[]; BINARY[] gives them back exactly."""
    if b"binary" not in data.lower():
        return data
    pieces = []
    pos = 0
    for part in _leaves(_Parser(data).entity(0, [], 0)[0]):
        encoding = part.encoding()
        if encoding is None or encoding.lower() != b"binary":
            continue
        pieces += [data[pos : part.start], _relabelled(part, b"base64"), encode_base64(part.body)]
        pos = part.end
    return b"".join(pieces) + data[pos:] if pieces else data


def _leaves(part: Part):
    """The parts below ``part`` (itself included) that hold no other part, in order."""
    if part.children is not None:
        for child in part.children:
            yield from _leaves(child)
    elif part.message is not None:
        yield from _leaves(part.message)
    else:
        yield part


def parse_message(data: bytes) -> ParsedMessage:
    """The message ``data`` (as stored: CRLF, bare LF tolerated) ready for FETCH; nothing is
    parsed before it is needed (ENVELOPE alone reads only the header block)."""
    return ParsedMessage(data)


# -- BODY / BODYSTRUCTURE ------------------------------------------------------------------


def _structure(part: Part, extended: bool) -> list:
    if part.children is not None:
        return _multipart(part, extended)
    major, minor, params = part.content_type
    out: list = [_text(major), _text(minor), _parameters(part, params)]
    out.append(_text(part.mime_header(b"content-id")))
    out.append(_text(part.mime_header(b"content-description")))
    out.append(_text((part.encoding() if part.mime else None) or b"7bit"))
    out.append(part.end - part.body_start)
    lines = part.data.count(b"\n", part.body_start, part.end)
    if part.message is not None:
        out.append(envelope_of_fields(part.message.fields))
        out.append(_structure(part.message, extended))
        out.append(lines)
    elif major.lower() == b"text":
        out.append(lines)
    if extended:
        out.append(_text(part.mime_header(b"content-md5")))
        out.extend(_extension(part))
    return out


def _multipart(part: Part, extended: bool) -> list:
    children = [_structure(child, extended) for child in part.children]
    if not children:
        children = [_EMPTY_TEXT + ([None] * 4 if extended else [])]
    out: list = [Atom(adjacent(children)[1:-1]), _text(part.content_type[1])]
    if extended:
        out.append(_flat(part.content_type[2]) or None)
        out.extend(_extension(part))
    return out


def _text(value: bytes | None):
    """A string of the structure, quoted or literal as Dovecot sends it; None stays NIL."""
    return None if value is None else dovecot_string(value)


def _parameters(part: Part, params: list[tuple[bytes, bytes]]) -> list | None:
    flat = _flat(params)
    if part.content_type[0].lower() == b"text" and parameter(params, b"charset") is None:
        flat.extend(_DEFAULT_CHARSET)
    return flat or None


def _flat(params: list[tuple[bytes, bytes]]) -> list:
    return [dovecot_string(item) for pair in params for item in pair]


def _extension(part: Part) -> list:
    """Disposition, language and location (the extension data after MD5)."""
    value = part.mime_header(b"content-disposition")
    if value is None:
        shown = None
    else:
        kind, params = disposition(value)
        shown = [_text(kind), _flat(params) or None]
    value = part.mime_header(b"content-language")
    languages = [_text(tag) for tag in language_tags(value)] if value is not None else []
    return [shown, languages or None, _text(part.mime_header(b"content-location"))]
