"""Header blocks as stored: where they end, their fields, unfolded values, MIME parameters.

Everything works on the stored octets (CRLF, or bare LF tolerated) and never raises on
malformed input: a line without a colon is kept as a nameless field, an unparseable
parameter list yields the parameters read before the damage.
"""

from __future__ import annotations

import re

#: The empty line ending a header block: CRLF CRLF, or the bare-LF variants.
_BLANK_LINE = re.compile(rb"\n\r?\n")
#: A MIME token (RFC 2045): anything printable but SPACE, CTLs and tspecials.
_TOKEN_CLASS = rb'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+'
_TOKEN = re.compile(_TOKEN_CLASS)
_SPACE = re.compile(rb"[ \t\r\n]*")
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*\\?)("?)', re.S)
_ESCAPED = re.compile(rb"\\(.)", re.S)
#: A line and its LF (a lone CR is no line ending), or a last line without one.
_LINE = re.compile(rb"[^\n]*\n|[^\n]+")


def header_end(data: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """Where the header block starting at ``start`` ends: ``(fields_end, body_start)``.

    ``fields_end`` is just past the last field's line ending and ``body_start`` just past the
    empty line; without an empty line both are ``end`` (all header, no body)."""
    if end is None:
        end = len(data)
    if data.startswith(b"\r\n", start, end):
        return start, start + 2
    if data.startswith(b"\n", start, end):
        return start, start + 1
    found = _BLANK_LINE.search(data, start, end)
    if found is None:
        return end, end
    return found.start() + 1, found.end()


def header_block(data: bytes) -> bytes:
    """The message's header block as stored, including the empty line that ends it."""
    return data[: header_end(data)[1]]


def split_fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """The fields of a header block as ``(lower-case name, stored octets)``, in stored order.

    The stored octets of a field run from its name to the line ending of its last
    continuation line.  A line with no colon is a field with an empty name."""
    fields: list[tuple[bytes, bytes]] = []
    current: list[bytes] = []
    for line in _LINE.findall(block):
        if line[:1] in (b" ", b"\t"):
            if current:
                current.append(line)
            else:  # a continuation of nothing: a field without a name
                fields.append((b"", line))
            continue
        if line in (b"\r\n", b"\n"):
            break
        if current:
            fields.append(_named(current))
        current = [line]
    if current:
        fields.append(_named(current))
    return fields


def _named(lines: list[bytes]) -> tuple[bytes, bytes]:
    raw = b"".join(lines)
    colon = raw.find(b":")
    name = raw[:colon].strip().lower() if colon >= 0 else b""
    return name, raw


def field_value(raw: bytes) -> bytes:
    """A field's value unfolded (RFC 5322 2.2.3: line endings removed), without the blanks
    after the colon, as Dovecot reads it: a first line of blanks only loses one of them, and
    the blanks starting a continuation line stay."""
    colon = raw.find(b":")
    if colon < 0:
        return b""
    value = raw[colon + 1 :]
    newline = value.find(b"\n")
    first = value if newline < 0 else value[:newline]
    if first.strip(b" \t\r"):
        value = value.lstrip(b" \t")
    elif first:
        value = value[1:]
    if b"\n" not in value[:-1] and b"\r" not in value[:-2]:  # one line, the common case
        if value.endswith(b"\n"):
            value = value[:-2] if value.endswith(b"\r\n") else value[:-1]
        return value.replace(b"\r", b"")
    return value.replace(b"\r", b"").replace(b"\n", b"")


def select_fields(
    fields: list[tuple[bytes, bytes]], names, negate: bool, ended: bool = True, cut: bool = False
) -> bytes:
    """The fields named (or with ``negate``, not named) in ``names`` (any case, bytes or str),
    as stored and in stored order, then the empty line (BODY[HEADER.FIELDS[.NOT] ...]).

    As Dovecot: HEADER.FIELDS gives each field it picks the line ending it lacks, and the
    empty line unless it picked a last line the header stops in the middle of (Dovecot is
    not consistent there: from its cache it sometimes adds it) or a boundary ``cut`` the
    header; HEADER.FIELDS.NOT copies the fields and gives the empty line only if the header
    had one (``ended``)."""
    wanted = {n.encode("ascii", "replace") if isinstance(n, str) else n for n in names}
    wanted = {n.lower() for n in wanted}
    kept = [raw for name, raw in fields if (name in wanted) != negate]
    if negate:
        return b"".join(kept) + (b"\r\n" if ended else b"")
    cut = cut or bool(kept) and kept[-1] is fields[-1][1] and not kept[-1].endswith(b"\n")
    kept = [raw if raw.endswith(b"\n") else raw + b"\r\n" for raw in kept]
    return b"".join(kept) + (b"" if cut else b"\r\n")


# -- structured values (RFC 2045 Content-Type and friends) --------------------------------


class ValueReader:
    """A cursor over a structured header value: tokens, quoted strings, comments skipped."""

    def __init__(self, value: bytes) -> None:
        self.value = value
        self.pos = 0
        #: An unclosed comment was met (it runs to the end of the value).
        self.broken = False

    def skip(self) -> None:
        """Skip blanks and (nested) comments."""
        value = self.value
        while True:
            self.pos = _SPACE.match(value, self.pos).end()
            if not value.startswith(b"(", self.pos):
                return
            depth = 0
            while self.pos < len(value):
                char = value[self.pos]
                self.pos += 1
                if char == 0x5C:  # backslash quotes the next octet
                    self.pos += 1
                elif char == 0x28:
                    depth += 1
                elif char == 0x29:
                    depth -= 1
                    if depth == 0:
                        break
            self.broken = self.broken or depth > 0

    def token(self) -> bytes | None:
        """The next MIME token, or None."""
        self.skip()
        found = _TOKEN.match(self.value, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group()

    def quoted(self) -> bytes | None:
        """The quoted string at the cursor (at its opening quote), unescaped; None (and the
        cursor at the end) when it is not closed."""
        found = _QUOTED.match(self.value, self.pos)
        self.pos = found.end()
        if not found.group(2):
            return None
        inner = found.group(1)
        return _ESCAPED.sub(rb"\1", inner) if b"\\" in inner else inner

    def word(self) -> bytes | None:
        """A token or a quoted string, or None."""
        self.skip()
        if self.value.startswith(b'"', self.pos):
            return self.quoted()
        return self.token()

    def at_end(self) -> bool:
        """Is nothing but blanks and comments left?"""
        self.skip()
        return self.pos >= len(self.value)

    def skip_to(self, char: bytes) -> None:
        """Move to the next ``char`` (or the end)."""
        found = self.value.find(char, self.pos)
        self.pos = len(self.value) if found < 0 else found

    def take(self, char: bytes) -> bool:
        """Consume ``char`` if it comes next (after blanks and comments)."""
        self.skip()
        if self.value.startswith(char, self.pos):
            self.pos += 1
            return True
        return False


def content_type(value: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]] | None:
    """``(type, subtype, parameters)`` of a Content-Type value as written (case kept), or None
    when it is not ``type/subtype`` (or a lone ``type``, subtype b"") followed by nothing but
    parameters (an unclosed comment after the subtype spoils it): the rule Dovecot
    checks."""
    simple = _SIMPLE_CONTENT_TYPE.match(value)
    if simple is not None:
        params = _simple_parameters(value, simple.end())
        if params is not None:
            return simple.group(1), simple.group(2), params
    reader = ValueReader(value)
    kind = reader.token()
    if kind is None:
        return None
    if reader.take(b"/"):
        subtype = reader.token()
        if subtype is None:
            return None
    elif reader.at_end():  # (an unclosed comment after a lone type does no harm)
        return kind, b"", []
    else:
        return None
    ended = reader.at_end() or reader.value.startswith(b";", reader.pos)
    if reader.broken or not ended:
        return None
    return kind, subtype, parameters(reader)


_SIMPLE_CONTENT_TYPE = re.compile(rb"[ \t]*(%s)/(%s)[ \t]*" % (_TOKEN_CLASS, _TOKEN_CLASS))
#: A plain parameter: no RFC 2231 star in the name, no escapes or comments.
_SIMPLE_PARAMETER = re.compile(
    rb';[ \t]*([^\x00-\x20\x7f()<>@,;:\\"/\[\]?=*]+)=(?:"([^"\\]*)"|(%s))[ \t]*' % _TOKEN_CLASS
)


def _simple_parameters(value: bytes, pos: int) -> list[tuple[bytes, bytes]] | None:
    """The parameters from ``pos`` when they are all plain ``; name=value`` (the common
    case, read with one regular expression), else None."""
    params = []
    end = len(value)
    while pos < end:
        found = _SIMPLE_PARAMETER.match(value, pos)
        if found is None:
            return None
        quoted = found.group(2)
        params.append((found.group(1), found.group(3) if quoted is None else quoted))
        pos = found.end()
    return params


def leading_token(value: bytes) -> bytes | None:
    """The value's one token (Content-Transfer-Encoding), or None if there is anything else."""
    reader = ValueReader(value)
    token = reader.token()
    return token if reader.at_end() else None


def disposition(value: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A Content-Disposition's type (b"" when missing, as Dovecot sends) and parameters."""
    reader = ValueReader(value)
    kind = reader.token()
    if not (reader.at_end() or reader.value.startswith(b";", reader.pos)):
        reader.skip_to(b";")
    return kind or b"", parameters(reader)


def parameters(reader: ValueReader) -> list[tuple[bytes, bytes]]:
    """The ``; name=value`` list at the cursor, RFC 2231 pieces merged as Dovecot merges them.

    Names keep the message's spelling.  Plain parameters come first, in order; RFC 2231
    ones (``name*``, ``name*0``, ``name*1*`` ...) follow sorted by name and number, each
    name's pieces joined into one value under ``name*`` when any piece was extended
    (charset'language'%XX; a plain first piece then gets ``''`` and plain pieces their ``%``
    escaped), else under ``name``.  Pieces whose numbers do not run 0, 1, 2 ... stay apart
    as ``name*N[*]``; a ``name*`` without number takes the number of the piece before it
    (Dovecot's reading, which turns ``b*1=x; c*=y`` into ``c*1*``).  A damaged parameter is
    dropped and the rest up to the next ``;`` passed over."""
    plain: list[tuple[bytes, bytes]] = []
    pieces: list[tuple[bytes, int, bool, bytes]] = []
    number = 0
    while reader.take(b";"):
        name = reader.token() or b""  # Dovecot takes an empty name too
        value = _value(reader) if reader.take(b"=") else None
        ended = reader.at_end() or reader.value.startswith(b";", reader.pos)
        if value is None or reader.broken:  # Dovecot gives up here and looks further on
            reader.pos += 1
            reader.skip_to(b";")
            continue
        if not ended:
            reader.skip_to(b";")
        star = name.find(b"*")
        found = _PIECE.fullmatch(name, star) if star >= 0 else None
        if found is None:
            plain.append((name, value))
            continue
        lone = star + 1 == len(name)  # "name*": extended, numbered as the piece before
        if not lone:
            number = int(found.group(1) or b"0")
        pieces.append((name[:star], number, lone or bool(found.group(2)), value))
    pieces.sort(key=lambda piece: (piece[0], piece[1]))
    start = 0
    while start < len(pieces):
        base = pieces[start][0].lower()
        end = start + 1
        while end < len(pieces) and pieces[end][0].lower() == base:
            end += 1
        plain.extend(_merged(pieces[start:end]))
        start = end
    return plain


def _value(reader: ValueReader) -> bytes | None:
    """A parameter value: a token, a quoted string (None if unclosed), or b"".  A value
    starting with ``=`` (an unquoted encoded-word, ``name==?utf-8?...``) runs to the next
    ``;`` or blank, as Dovecot reads it."""
    reader.skip()
    value = reader.value
    if value.startswith(b'"', reader.pos):
        return reader.quoted()
    if value.startswith(b"=", reader.pos):
        found = _UNQUOTED_WORD.match(value, reader.pos)
        reader.pos = found.end()
        return found.group()
    return reader.token() or b""


_UNQUOTED_WORD = re.compile(rb"[^; \t\r\n]*")


#: The part of an RFC 2231 name from its star: ``*``, ``*N``, ``*N*`` (or ``**``).
_PIECE = re.compile(rb"\*([0-9]*)(\*?)")


def _merged(group: list[tuple[bytes, int, bool, bytes]]) -> list[tuple[bytes, bytes]]:
    """One name's RFC 2231 pieces (sorted) as Dovecot writes them."""
    if [piece[1] for piece in group] != list(range(len(group))):
        return [
            (b"%s*%d%s" % (base, number, b"*" if extended else b""), value)
            for base, number, extended, value in group
        ]
    extended = any(piece[2] for piece in group)
    value = b"''" if extended and not group[0][2] else b""
    for _, _, piece_extended, piece in group:
        value += piece.replace(b"%", b"%25") if extended and not piece_extended else piece
    return [(group[0][0] + (b"*" if extended else b""), value)]


def parameter(params: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of the first parameter called ``name`` (lower-case; any case matches)."""
    for key, value in params:
        if key.lower() == name:
            return value
    return None


def language_tags(value: bytes) -> list[bytes]:
    """The comma-separated tags of a Content-Language value."""
    reader = ValueReader(value)
    tags = []
    while True:
        tag = reader.token()
        if tag is None:
            break
        tags.append(tag)
        if not reader.take(b","):
            break
    return tags
