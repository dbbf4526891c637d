"""ENVELOPE (RFC 3501 7.4.2) from a header block, with addresses split as Dovecot does.

Values are the stored header values with the folding removed, not decoded (encoded-words
stay as they are).  Address lists are ready-serialised :class:`Atom` values: RFC 3501 puts
no space between addresses, which a plain list would get from ``encode``.  Display names
and the subject are cleaned for humans the way Dovecot does (runs of blanks become one
space, CR/LF dropped, NUL becomes U+FFFD), and whenever that changes anything, or the text
has quotes or 8-bit octets, Dovecot sends it as a literal: so do we, with an Atom literal.
"""

from __future__ import annotations

import re

from mailgw.imap.mime.headers import field_value, split_fields
from mailgw.imap.wire.responses import MAX_QUOTED, Atom, encode, literal, string

#: What an address lacks is filled in with these (Dovecot's placeholders).
MISSING_MAILBOX = b"MISSING_MAILBOX"
MISSING_DOMAIN = b"MISSING_DOMAIN"
#: The route of ``<@host>`` (a route without its colon), as Dovecot fills it in.
INVALID_ROUTE = b"INVALID_ROUTE"
#: The domain of an address whose ``<`` is not closed (Dovecot's placeholder).
SYNTAX_ERROR = b"SYNTAX_ERROR"

_ENVELOPE_FIELDS = (
    b"date",
    b"subject",
    b"from",
    b"sender",
    b"reply-to",
    b"to",
    b"cc",
    b"bcc",
    b"in-reply-to",
    b"message-id",
)
_ADDRESS_FIELDS = frozenset({b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc"})

_LEXEME = re.compile(
    rb'(?P<space>[ \t\r\n]+)|(?P<quoted>"(?:[^"\\]|\\.)*")|(?P<literal>\[(?:[^\]\\]|\\.)*\])'
    rb'|(?P<junk>["\[])'
    rb'|(?P<comment>\()|(?P<special>[<>@,;:.])|(?P<atom>[^ \t\r\n"\[\]()<>@,;:.\\]+)|(?P<other>.)',
    re.S,
)
_PLAIN_TEXT = re.compile(rb'[^"\\\r\n\x00\x80-\xff]*')
_LITERAL_TEXT = re.compile(rb"[\r\n\x00\x80-\xff]")
_BLANKS = re.compile(rb"[ \t]+")
#: What a NUL in a subject or name becomes (U+FFFD in UTF-8, as Dovecot sends it).
_REPLACEMENT = "\ufffd".encode()
_SPECIALS_HUMAN = re.compile(rb'["\\\x80-\xff\x00\t\r\n]|  |^ | $')


def humane(text: bytes, folded: bool = False) -> bytes | Atom:
    """``text`` as Dovecot writes text meant for people (subject, display names).

    ``folded``: the header field was folded (Dovecot then always sends a literal)."""
    if not folded and not _SPECIALS_HUMAN.search(text):
        return dovecot_string(text)
    cleaned = text.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", _REPLACEMENT)
    cleaned = _BLANKS.sub(b" ", cleaned).strip(b" ")
    if not cleaned:
        return b""
    return Atom(literal(cleaned))


def adjacent(items: list) -> Atom:
    """A parenthesised list of lists written with no space between them, as RFC 3501
    writes address lists and the bodies of a multipart (``((...)(...))``)."""
    return Atom(b"(" + b"".join(map(encode, items)) + b")")


def _address_list(found: list) -> Atom:
    """``adjacent(found)`` for addresses (four nstrings each), without the general encoder."""
    return Atom(
        b"(" + b"".join(b"(" + b" ".join(map(_nstring, address)) + b")" for address in found) + b")"
    )


def _nstring(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    if len(value) <= MAX_QUOTED and _PLAIN_TEXT.fullmatch(value):
        return b'"' + value + b'"'
    if not isinstance(value, Atom):
        value = dovecot_string(value)
    return value if isinstance(value, Atom) else string(value)


def dovecot_string(text: bytes) -> bytes | Atom:
    """``text`` as Dovecot writes a string: as a literal when it has CR, LF, NUL, 8-bit
    octets or more than 4 quotes and backslashes, else quoted, however long (``encode`` alone
    would send a long one as a literal)."""
    if _PLAIN_TEXT.fullmatch(text):
        return text if len(text) <= MAX_QUOTED else Atom(b'"' + text + b'"')
    if _LITERAL_TEXT.search(text) or text.count(b'"') + text.count(b"\\") > 4:
        return Atom(literal(text))
    if len(text) <= MAX_QUOTED:
        return text
    return Atom(b'"' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"')


def envelope_of_header(header_block: bytes) -> list:
    """The ENVELOPE of a message from its header block alone (nested values for ``encode``)."""
    return envelope_of_fields(split_fields(header_block))


def envelope_of_fields(fields: list[tuple[bytes, bytes]]) -> list:
    """The ENVELOPE from already split header fields (see ``split_fields``).

    As Dovecot: of a repeated Date, Subject, In-Reply-To or Message-ID the last counts; the
    addresses of a repeated address field are joined."""
    texts: dict[bytes, bytes] = {}
    found: dict[bytes, list] = {}
    folded_subject = False
    for name, raw in fields:
        if name in _ADDRESS_FIELDS:
            found.setdefault(name, []).extend(addresses(field_value(raw)))
        elif name in _ENVELOPE_FIELDS:
            texts[name] = field_value(raw)
            if name == b"subject":
                folded_subject = b"\n" in raw[:-1]
    envelope: list = []
    for name in _ENVELOPE_FIELDS:
        if name in _ADDRESS_FIELDS:
            envelope.append(_address_list(found[name]) if found.get(name) else None)
        elif name not in texts:
            envelope.append(None)
        elif name == b"subject":
            envelope.append(humane(texts[name], folded_subject))
        else:
            envelope.append(dovecot_string(texts[name]))
    for sender in (3, 4):
        if envelope[sender] is None:
            envelope[sender] = envelope[2]
    return envelope


class _Lexer:
    """Address lexemes as (kind, text, spaced): ``spaced`` when blanks or a comment came
    before; comments are skipped but remembered (the last one can name an address).  An
    unclosed quoted string or domain literal is one last ``junk`` lexeme, an unclosed
    comment an ``open-comment`` one (Dovecot gives up at once there)."""

    def __init__(self, value: bytes) -> None:
        self.items: list[tuple[str, bytes, bool]] = []
        self.comments: list[bytes] = []
        spaced = False
        pos = 0
        while pos < len(value):
            found = _LEXEME.match(value, pos)
            kind = found.lastgroup
            if kind == "comment":
                end = _comment_end(value, pos)
                if end > len(value):
                    kind = "open-comment"
                else:
                    self.items.append(("comment", value[pos + 1 : end - 1], spaced))
                    pos = end
                    spaced = True
                    continue
            if kind in ("junk", "open-comment"):  # unclosed: parsing ends here
                self.items.append((kind, b"", spaced))
                break
            if kind == "space":
                spaced = True
            else:
                self.items.append((kind, found.group(), spaced))
                spaced = False
            pos = found.end()
        self.pos = 0

    def peek(self) -> tuple[str, bytes, bool]:
        """The next lexeme that is not a comment (not consumed)."""
        pos = self.pos
        while pos < len(self.items) and self.items[pos][0] == "comment":
            pos += 1
        return self.items[pos] if pos < len(self.items) else ("end", b"", False)

    def next(self) -> tuple[str, bytes, bool]:
        """Consume the next lexeme that is not a comment, remembering the comments before."""
        while self.pos < len(self.items) and self.items[self.pos][0] == "comment":
            self.comments.append(self.items[self.pos][1])
            self.pos += 1
        item = self.peek()
        self.pos += 1
        return item

    def skip_comments(self) -> None:
        """Consume (and remember) comments at the cursor."""
        while self.pos < len(self.items) and self.items[self.pos][0] == "comment":
            self.comments.append(self.items[self.pos][1])
            self.pos += 1


def _comment_end(value: bytes, pos: int) -> int:
    depth = 0
    while pos < len(value):
        char = value[pos]
        pos += 1
        if char == 0x5C:
            pos += 1
        elif char == 0x28:
            depth += 1
        elif char == 0x29:
            depth -= 1
            if depth == 0:
                return pos
    return len(value) + (1 if depth else 0)


def _unquote(text: bytes) -> bytes:
    inner = text[1:-1] if len(text) > 1 and text.endswith(b'"') else text[1:]
    return re.sub(rb"\\(.)", rb"\1", inner, flags=re.S)


#: One plain address (``local@domain``, ``Name <local@domain>``, ``"Name" <local@domain>``)
#: and its comma: the common case, read without the full parser.
_PLAIN_ADDRESS = re.compile(
    rb'[ \t]*(?:(?:"(?P<quoted>[^"\\\r\n]*)"|(?P<name>[^"<>()@,;:.\\\[\]]*?))[ \t]*'
    rb"<(?P<local>[^\x00-\x20<>()@,;:\\\"\[\]]+)@(?P<domain>[^\x00-\x20<>()@,;:\\\"\[\]]+)>"
    rb"|(?P<bare_local>[^\x00-\x20<>()@,;:\\\"\[\]]+)@(?P<bare_domain>[^\x00-\x20<>()@,;:\\\"\[\]]+))"
    rb"[ \t]*(?:,|\Z)"
)


def addresses(value: bytes) -> list:
    """An address-list header value as RFC 3501 address structures, groups included."""
    found = _parsed(value)
    for address in found:
        if address[0] is not None:
            address[0] = humane(address[0])
    return found


def address_text(value: bytes) -> bytes:
    """An address-list header value written back plainly, as Dovecot matches SEARCH FROM,
    TO, CC and BCC: ``name <local@domain>`` or ``local@domain`` joined by ``, ``, a group as
    ``name: ...;``; comments inside an address dropped, a lone comment taken as the name."""
    text = bytearray()
    in_group = False
    for name, route, mailbox, domain in _parsed(value):
        if domain is None:  # a group's start (its name in ``mailbox``) or end
            if in_group:
                if text.endswith(b", "):
                    del text[-2:]
                text += b";, "
            else:
                text += mailbox + b": "
            in_group = not in_group
            continue
        mailbox = b"" if mailbox == MISSING_MAILBOX else mailbox
        domain = b"" if domain in (MISSING_DOMAIN, SYNTAX_ERROR) else b"@" + domain
        spec = (route + b":" if route else b"") + mailbox + domain
        text += b"%s <%s>, " % (name, spec) if name else spec + b", "
    return bytes(text.removesuffix(b", "))


def _parsed(value: bytes) -> list:
    """The address structures of ``value`` with display names as read (not yet humane)."""
    plain = _plain_addresses(value)
    if plain is not None:
        return plain
    lexer = _Lexer(value)
    result: list = []
    while lexer.peek()[0] != "end":
        if lexer.peek()[0] == "open-comment":  # after a comma it still counts as one
            if result:
                result.append([None, None, MISSING_MAILBOX, MISSING_DOMAIN])
            break
        start, count = lexer.pos, len(result)
        more = _address(lexer, result)
        if lexer.pos == start:  # no address where one should start
            if len(result) == count:
                result.append([None, None, MISSING_MAILBOX, MISSING_DOMAIN])
            break
        if not more:  # something else than a comma after it: Dovecot stops there
            break
    return result


def _plain_addresses(value: bytes) -> list | None:
    """The addresses of a list made of plain addresses only, else None."""
    result = []
    pos = 0
    end = len(value)
    while pos < end:
        found = _PLAIN_ADDRESS.match(value, pos)
        if found is None or found.end() == pos:
            return None
        local, domain = found.group("local", "domain")
        if local is None:
            local, domain = found.group("bare_local", "bare_domain")
            name = None
        else:
            name = found.group("quoted")
            if name is None:
                name = b" ".join(found.group("name").split()) or None
        if _odd_dots(local) or _odd_dots(domain):
            return None
        result.append([name or None, None, local, domain])
        pos = found.end()
        if value.endswith(b",", 0, pos) and pos == end:
            return None
    return result


def _odd_dots(text: bytes) -> bool:
    return text.startswith(b".") or text.endswith(b".") or b".." in text


def _phrase(lexer: _Lexer) -> bytes | None:
    """Words as Dovecot joins them: a quoted string, or atoms and dots written together,
    is one word; words are separated by one space."""
    words = []
    previous = ""
    while True:
        kind, text, spaced = lexer.peek()
        if kind == "quoted":
            text = _unquote(text)
        elif not (kind == "atom" or (kind == "special" and text == b".")):
            return b"".join(words) if words else None
        if words and (spaced or kind == "quoted" or previous == "quoted"):
            text = b" " + text
        words.append(text)
        previous = kind
        lexer.next()


def _address(lexer: _Lexer, result: list) -> bool:
    """Parse one address or group into ``result``; True if a comma followed it."""
    start = lexer.pos
    words = _phrase(lexer)
    kind, text, _ = lexer.peek()
    if text == b":" and kind == "special":
        lexer.next()
        result.append([None, None, words or b"", None])
        closed = False
        while lexer.peek()[0] not in ("end", "open-comment"):
            if lexer.peek()[1] == b";":
                lexer.next()
                closed = True
                break
            _mailbox(lexer, result)
            if lexer.peek()[1] == b",":
                lexer.next()
            elif lexer.peek()[1] != b";":
                break
        result.append([None, None, None, None])
        if not closed:
            return False
    else:
        lexer.pos = start
        _mailbox(lexer, result)
    if lexer.peek()[1] == b",":
        lexer.next()
        return True
    return False


def _mailbox(lexer: _Lexer, result: list) -> None:
    """Parse one mailbox into ``result`` as Dovecot does: a missing ``>`` makes the domain
    SYNTAX_ERROR; words that make no address are a name with nothing else."""
    start = lexer.pos
    words = _phrase(lexer)
    after_words = lexer.pos
    kind, text, _ = lexer.peek()
    if text == b"<":
        lexer.next()
        route = _route(lexer)
        if route == INVALID_ROUTE:
            mailbox, domain = MISSING_MAILBOX, MISSING_DOMAIN
        else:
            mailbox, domain = _addr_spec(lexer)
        if lexer.peek()[1] == b">":
            lexer.next()
        else:
            domain = SYNTAX_ERROR
        result.append([words or None, route, mailbox, domain])
        return
    if text == b";" and not words:
        return
    if text == b"," and not words:
        result.append([None, None, MISSING_MAILBOX, MISSING_DOMAIN])
        return
    lexer.pos = start
    del lexer.comments[:]
    local = _local(lexer)
    kind, text, _ = lexer.peek()
    if words is not None and (b" " in words or not words) and text != b"@":
        # Not an addr-spec after all: the words (even an empty "") are a name without an
        # address.
        lexer.pos = after_words
        result.append([words, None, MISSING_MAILBOX, MISSING_DOMAIN])
        return
    domain = MISSING_DOMAIN
    if text == b"@":
        lexer.next()
        domain = _domain(lexer) or MISSING_DOMAIN
    lexer.skip_comments()
    name = lexer.comments[-1] if lexer.comments else None
    result.append([name or None, None, local or MISSING_MAILBOX, domain])


def _route(lexer: _Lexer) -> bytes | None:
    """An obsolete source route (``@a,@b:``), INVALID_ROUTE without its colon, or None."""
    if lexer.peek()[1] != b"@":
        return None
    hops = []
    while lexer.peek()[1] == b"@":
        lexer.next()
        hops.append(b"@" + _domain(lexer))
        if lexer.peek()[1] == b",":
            lexer.next()
    if lexer.peek()[1] != b":":
        return INVALID_ROUTE
    lexer.next()
    return b",".join(hops)


def _addr_spec(lexer: _Lexer) -> tuple[bytes, bytes]:
    mailbox = _local(lexer) or MISSING_MAILBOX
    if lexer.peek()[1] != b"@":
        return mailbox, MISSING_DOMAIN
    lexer.next()
    return mailbox, _domain(lexer) or MISSING_DOMAIN


def _local(lexer: _Lexer) -> bytes:
    """A local part; lost (b"") when an unclosed comment follows it, as with Dovecot."""
    local = _dotted(lexer, ("atom", "quoted"))
    return b"" if lexer.peek()[0] == "open-comment" else local


def _domain(lexer: _Lexer) -> bytes:
    """A domain; b"" when it ends in a dot or an unclosed comment follows (Dovecot)."""
    domain = _dotted(lexer, ("atom", "literal"))
    if domain.endswith(b".") or lexer.peek()[0] == "open-comment":
        return b""
    return domain


def _dotted(lexer: _Lexer, kinds: tuple[str, ...]) -> bytes:
    """Words joined by dots (a local part or a domain); blanks may only sit next to a dot,
    so a second word after a blank ends it."""
    parts: list[bytes] = []
    dot = True
    while True:
        kind, text, spaced = lexer.peek()
        if kind == "special" and text == b".":
            dot = True
        elif kind in kinds and (dot or not spaced):
            text = _unquote(text) if kind == "quoted" else text
            dot = False
        else:
            return b"".join(parts)
        parts.append(text)
        lexer.next()
