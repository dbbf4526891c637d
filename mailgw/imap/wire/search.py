"""SEARCH criteria (RFC 3501 6.4.4, RFC 7162 MODSEQ, RFC 5182 ``$``) read into the tree that
``mailgw.imap.search`` evaluates.

The tree is ``("AND", [...])`` of leaves: ``("ALL",)``, ``("FLAG", "\\Seen", wanted)``,
``("KEYWORD", keyword_lowered, wanted)``, ``("HEADER", name_lowered, value_lowered)`` (FROM, TO,
CC, BCC and SUBJECT are headers too), ``("BODY"|"TEXT", value_lowered)``, ``("DATE", key,
(y, m, d))``, ``("SIZE", larger, n)``, ``("SEQ", ranges)``, ``("UID", ranges)`` with ranges a
list of (low, high) and None for ``*``, ``("NOT", node)``, ``("OR", a, b)``, and the new
``("MODSEQ", n)``, ``("SAVED",)`` for ``$`` and ``("UID_SAVED",)`` for ``UID $``.  Strings are
decoded in the command's CHARSET when Python knows it, else as UTF-8.
"""

from __future__ import annotations

import codecs

from mailgw.imap.wire.grammar import MAX_MODSEQ, Reader

#: Deepest nesting of parentheses, NOT and OR accepted in one SEARCH (real clients use a few).
MAX_DEPTH = 50

#: Flag criteria: name -> (flag, wanted present?).
_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "RECENT": ("\\Recent", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_ADDRESS_KEYS = frozenset(("FROM", "TO", "CC", "BCC", "SUBJECT"))
_DATE_KEYS = frozenset(("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"))
_ENTRY_TYPES = frozenset((b"PRIV", b"SHARED", b"ALL"))
_DIGIT_OR_SET = frozenset(b"0123456789*$")
_LPAREN, _RPAREN, _QUOTE = b'()"'


def charset_decoder(charset: str | None):
    """A function turning a search string's octets into ``str`` for ``charset`` (UTF-8 when
    Python has no text codec of that name, or its codec fails)."""
    name = "utf-8"
    if charset:
        try:
            name = codecs.lookup(charset).name
            b"a".decode(name, "replace")  # LookupError for bytes-to-bytes codecs (base64...)
        except (LookupError, UnicodeError):
            name = "utf-8"

    def decode(raw: bytes) -> str:
        try:
            return raw.decode(name, "replace")
        except UnicodeError:  # codecs without "replace" (idna) or stricter inside (punycode)
            return raw.decode("utf-8", "replace")

    return decode


def read_criteria(reader: Reader, charset: str | None) -> tuple:
    """Read search keys separated by spaces up to the end of the command."""
    decode = charset_decoder(charset)
    keys = [_key(reader, 0, decode)]
    while reader.maybe_sp():
        keys.append(_key(reader, 0, decode))
    return ("AND", keys)


def _key(reader: Reader, depth: int, decode) -> tuple:
    if depth > MAX_DEPTH:
        reader.fail("search criteria nested too deeply")
    octet = reader.peek()
    if octet == _LPAREN:
        reader.pos += 1
        keys = []
        reader.skip_spaces()
        while not reader.skip(_RPAREN):
            if not reader.more():
                reader.fail("unbalanced parentheses in search criteria")
            keys.append(_key(reader, depth + 1, decode))
            reader.skip_spaces()
        if not keys:
            reader.fail("empty parentheses in search criteria")
        return ("AND", keys)
    if octet in _DIGIT_OR_SET:
        found = reader.sequence_set("bad sequence set")
        return ("SAVED",) if found.saved else ("SEQ", list(found.ranges))
    if octet == -1:
        reader.fail("missing search key")
    if octet == _QUOTE:
        reader.fail("a search key cannot be a quoted string")
    key = reader.keyword("bad search key")

    def arg(what: str = "an argument") -> None:
        reader.sp(f"{key} needs {what}")

    def text() -> str:
        arg()
        return decode(reader.astring(f"{key} needs a string"))

    if key == "ALL":
        return ("ALL",)
    if key in _FLAG_KEYS:
        return ("FLAG", *_FLAG_KEYS[key])
    if key == "NEW":
        return ("AND", [("FLAG", "\\Recent", True), ("FLAG", "\\Seen", False)])
    if key == "OLD":
        return ("FLAG", "\\Recent", False)
    if key in ("KEYWORD", "UNKEYWORD"):
        return ("KEYWORD", text().lower(), key == "KEYWORD")
    if key in _ADDRESS_KEYS:
        return ("HEADER", key.lower(), text().lower())
    if key == "HEADER":
        name = text().lower()
        return ("HEADER", name, text().lower())
    if key in ("BODY", "TEXT"):
        return (key, text().lower())
    if key in _DATE_KEYS:
        arg("a date")
        return ("DATE", key, reader.date("bad date (expected e.g. 1-Feb-2024)"))
    if key in ("LARGER", "SMALLER"):
        arg("a number")
        return ("SIZE", key == "LARGER", reader.number(f"{key} needs a number"))
    if key == "UID":
        arg("a sequence set")
        found = reader.sequence_set("UID needs a sequence set")
        return ("UID_SAVED",) if found.saved else ("UID", list(found.ranges))
    if key == "MODSEQ":
        return ("MODSEQ", _modseq(reader))
    if key == "NOT":
        arg("a search key")
        return ("NOT", _key(reader, depth + 1, decode))
    if key == "OR":
        arg("two search keys")
        first = _key(reader, depth + 1, decode)
        arg("two search keys")
        return ("OR", first, _key(reader, depth + 1, decode))
    reader.fail(f"unknown search key {key[:24]}")


def _modseq(reader: Reader) -> int:
    """``MODSEQ [entry-name entry-type-req] mod-sequence-valzer`` (RFC 7162 3.1.5)."""
    reader.sp("MODSEQ needs a mod-sequence")
    if reader.peek() == _QUOTE:
        entry = reader.quoted("bad MODSEQ entry name")
        if not entry.lower().startswith(b"/flags/"):
            reader.fail("MODSEQ entry name must be /flags/<flag>")
        reader.sp("MODSEQ needs an entry type")
        if reader.atom("MODSEQ needs an entry type").upper() not in _ENTRY_TYPES:
            reader.fail("MODSEQ entry type must be priv, shared or all")
        reader.sp("MODSEQ needs a mod-sequence")
    return reader.number("MODSEQ needs a mod-sequence", MAX_MODSEQ)
