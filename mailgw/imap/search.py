"""SEARCH criteria (RFC 3501 6.4.4), compiled once and evaluated over the session's view.

The wire parser gives the criteria as a tree (``Search.criteria``: ``("AND", [...])`` of leaf
tuples such as ``("FLAG", "\\Seen", True)``); ``compile_tree`` turns it into one predicate, and
``Plan`` says whether the evaluation needs the header block or the whole message.  A search on
flags, sizes, dates and numbers never opens a file: over a view of at most ``REACTOR_ROWS``
messages ``find`` answers it at once (a thread hop costs more than the evaluation); one that
reads files runs in a thread.  BODY and TEXT match the decoded text of every part (base64,
quoted-printable, charsets, as ``email`` decodes them); a message of plain ASCII without
encodings whose octets do not hold the word is rejected without being parsed.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThread

from mailgw.imap.mime.address import address_text
from mailgw.store.interfaces import NoSuchMessage, StoreError

#: Views of at most this many messages are searched on the reactor when no file is read.
REACTOR_ROWS = 5_000

_RECENT = "\\Recent"
#: Fields whose addresses are also matched as written back plainly (with comments inside an
#: address dropped), as Dovecot does for SEARCH FROM, TO, CC and BCC.
_ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc"})
#: Octets whose presence means the text as decoded may differ from the octets as stored
#: (encoded words, transfer encodings, charsets that are not ASCII supersets, escapes).
_ENCODING_MARKS = (
    b"=?",
    b"base64",
    b"quoted-printable",
    b"uue",
    b"utf-7",
    b"utf-16",
    b"utf-32",
    b"\x1b",
    b"~{",
    b"\x00",
)


class SearchSyntaxError(ValueError):
    """The criteria tree holds a criterion the evaluator does not know."""


def read_header_block(fp) -> bytes:
    """Read a message's header block, up to and including the empty line that ends it."""
    chunks = []
    for line in fp:
        chunks.append(line)
        if line in (b"\r\n", b"\n"):
            break
    return b"".join(chunks)


@dataclass(frozen=True)
class Candidate:
    """One message as the session knows it, for evaluation away from the reactor."""

    seq: int
    uid: int
    flags: frozenset
    size: int
    internal_date: float


@dataclass(frozen=True)
class Plan:
    """What evaluating a criteria tree reads from the message files."""

    headers: bool
    body: bool

    @classmethod
    def of(cls, tree: tuple) -> Plan:
        """Walk the tree once."""
        kinds = set(_kinds(tree))
        body = bool(kinds & {"BODY", "TEXT"})
        return cls(headers=body or bool(kinds & {"HEADER", "SENT"}), body=body)


#: The criteria ``evaluate`` knows; the others (MODSEQ, $) need extensions not offered.
KNOWN = frozenset(
    {"ALL", "FLAG", "KEYWORD", "SIZE", "SEQ", "UID", "DATE", "SENT", "HEADER", "BODY", "TEXT"}
)


def unsupported(tree: tuple) -> str | None:
    """The first criterion of ``tree`` that ``evaluate`` does not know, if any."""
    return next((kind for kind in _kinds(tree) if kind not in KNOWN), None)


def _kinds(node: tuple):
    kind = node[0]
    if kind == "AND":
        for child in node[1]:
            yield from _kinds(child)
    elif kind == "NOT":
        yield from _kinds(node[1])
    elif kind == "OR":
        yield from _kinds(node[1])
        yield from _kinds(node[2])
    elif kind == "DATE" and node[1].startswith("SENT"):
        yield "SENT"
    else:
        yield kind


class _Content:
    """A message's octets, headers and text, read once on demand (in the evaluating thread)."""

    def __init__(self, folder, reader, info, plan: Plan) -> None:
        self._folder, self._reader, self._info, self._plan = folder, reader, info, plan
        self._raw: bytes | None = None
        self._lowered: bytes | None = None
        self._message = None
        self._text: str | None = None

    def raw(self) -> bytes:
        """The whole message as stored (CRLF)."""
        if self._raw is None:
            self._raw = _read(self._folder, self._reader, self._info)
        return self._raw

    def may_hold(self, word: bytes) -> bool:
        """False only if the decoded text cannot hold ``word`` (lower-case ASCII): the
        message is plain ASCII, without encodings, and its octets do not hold it."""
        if self._lowered is None:
            raw = self.raw()
            lowered = raw.lower()
            plain = raw.isascii() and not any(mark in lowered for mark in _ENCODING_MARKS)
            self._lowered = lowered if plain else b""
        return not self._lowered or word in self._lowered

    def message(self):
        if self._message is None:
            parser = BytesParser(policy=policy.compat32)
            if self._plan.body:
                self._message = parser.parsebytes(self.raw())
            else:
                with self._folder.open_message(self._info.uid) as fp:
                    header = read_header_block(fp)
                self._message = parser.parsebytes(header, headersonly=True)
        return self._message

    def header(self, name: str) -> list[str]:
        return [_decoded(value) for value in self.message().get_all(name, [])]

    def addresses(self, name: str) -> list[str]:
        """The values of an address field written back plainly (``address_text``), decoded
        and in lower case: what SEARCH FROM, TO, CC and BCC match besides the value."""
        return [
            _decoded(
                address_text(str(value).encode("utf-8", "surrogateescape")).decode(
                    "utf-8", "surrogateescape"
                )
            )
            for value in self.message().get_all(name, [])
        ]

    def body(self) -> str:
        if self._text is None:
            texts = []
            for part in self.message().walk():
                if part.is_multipart():
                    continue
                payload = part.get_payload(decode=True) or b""
                charset = part.get_content_charset() or "utf-8"
                try:
                    texts.append(payload.decode(charset, "replace"))
                except LookupError:
                    texts.append(payload.decode("utf-8", "replace"))
            self._text = "\n".join(texts).lower()
        return self._text

    def all_headers(self) -> str:
        return "\n".join(f"{k.lower()}: {_decoded(v)}" for k, v in self.message().items())


def _decoded(value) -> str:
    """A header field's value with its encoded words decoded, in lower case."""
    try:
        return str(make_header(decode_header(str(value)))).lower()
    except (ValueError, LookupError):
        return str(value).lower()


def _read(folder, reader, info) -> bytes:
    """The message's octets: as the view lists it (``reader``), else through the store."""
    if isinstance(info, Candidate):
        with folder.open_message(info.uid) as fp:
            return fp.read()
    return reader.whole(info)


def _day(timestamp: float) -> tuple:
    return time.localtime(timestamp)[:3]


def _sent_day(content: _Content) -> tuple | None:
    values = content.message().get_all("date", [])
    if not values:
        return None
    try:
        parsed = email.utils.parsedate_tz(str(values[0]))
    except (TypeError, ValueError):
        return None
    return tuple(parsed[:3]) if parsed else None


#: A compiled criterion: ``(seq, info, recent here, content, last) -> matched``, with
#: ``last`` the (sequence number, UID) that ``*`` stands for.
Predicate = Callable[[int, object, bool, object, tuple], bool]


def _ranges(ranges: list, index: int) -> Predicate:
    def within(value: int, star: int) -> bool:
        for low, high in ranges:
            low = star if low is None else low
            high = star if high is None else high
            if min(low, high) <= value <= max(low, high):
                return True
        return False

    if index:
        return lambda seq, info, recent, content, last: within(info.uid, last[1])
    return lambda seq, info, recent, content, last: within(seq, last[0])


def _all_of(predicates: list) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]

    def every(seq, info, recent, content, last) -> bool:
        for predicate in predicates:
            if not predicate(seq, info, recent, content, last):
                return False
        return True

    return every


def _date(key: str, day: tuple) -> Predicate:
    op = key.removeprefix("SENT")
    compare = {
        "BEFORE": lambda d: d < day,
        "ON": lambda d: d == day,
        "SINCE": lambda d: d >= day,
    }[op]
    if key.startswith("SENT"):

        def sent(seq, info, recent, content, last) -> bool:
            found = _sent_day(content)
            return found is not None and compare(found)

        return sent
    return lambda seq, info, recent, content, last: compare(_day(info.internal_date))


def _text(kind: str, word: str) -> Predicate:
    octets = word.encode("ascii") if word.isascii() else None

    def text(seq, info, recent, content, last) -> bool:
        if octets is not None and not content.may_hold(octets):
            return False
        if kind == "TEXT" and word in content.all_headers():
            return True
        return word in content.body()

    return text


def compile_tree(node: tuple) -> Predicate:
    """The predicate for a criteria tree (SearchSyntaxError for an unknown criterion)."""
    kind = node[0]
    if kind == "AND":
        return _all_of([compile_tree(child) for child in node[1]])
    if kind == "ALL":
        return lambda seq, info, recent, content, last: True
    if kind == "FLAG":
        flag, wanted = node[1], node[2]
        if flag == _RECENT:
            return lambda seq, info, recent, content, last: recent == wanted
        return lambda seq, info, recent, content, last: (flag in info.flags) == wanted
    if kind == "KEYWORD":
        keyword, wanted = node[1], node[2]
        return lambda seq, info, recent, content, last: (
            any(f.lower() == keyword for f in info.flags) == wanted
        )
    if kind == "NOT":
        inner = compile_tree(node[1])
        return lambda seq, info, recent, content, last: not inner(seq, info, recent, content, last)
    if kind == "OR":
        a, b = compile_tree(node[1]), compile_tree(node[2])
        return lambda seq, info, recent, content, last: (
            a(seq, info, recent, content, last) or b(seq, info, recent, content, last)
        )
    if kind == "SIZE":
        larger, n = node[1], node[2]
        if larger:
            return lambda seq, info, recent, content, last: info.size > n
        return lambda seq, info, recent, content, last: info.size < n
    if kind in ("SEQ", "UID"):
        return _ranges(node[1], kind == "UID")
    if kind == "DATE":
        return _date(node[1], node[2])
    if kind == "HEADER":
        name, value = node[1], node[2]

        def header(seq, info, recent, content, last) -> bool:
            values = content.header(name)
            return bool(values) and (not value or any(value in v for v in values))

        if name not in _ADDRESS_FIELDS:
            return header

        def address(seq, info, recent, content, last) -> bool:
            return header(seq, info, recent, content, last) or (
                bool(value) and any(value in v for v in content.addresses(name))
            )

        return address
    if kind in ("BODY", "TEXT"):
        return _text(kind, node[1])
    raise SearchSyntaxError(f"unknown criterion {kind}")


def one_flag(tree: tuple) -> tuple[str, bool] | None:
    """``(flag, wanted)`` if the tree is one stored flag's test alone, else None."""
    while tree[0] == "AND" and len(tree[1]) == 1:
        tree = tree[1][0]
    if tree[0] == "FLAG" and tree[1] != _RECENT and isinstance(tree[2], bool):
        return tree[1], tree[2]
    return None


def matching(folder, tree: tuple, rows: list, by_uid: bool) -> list[int]:
    """Sequence numbers (or UIDs if ``by_uid``) of the matching rows, ``(seq, IMessageInfo,
    \\Recent here)`` in view order (blocking when the criteria read files)."""
    flag = one_flag(tree)
    if flag is not None:  # UNSEEN, FLAGGED, DELETED...: the commonest search, with no call
        name, wanted = flag
        if by_uid:
            return [info.uid for _, info, _ in rows if (name in info.flags) is wanted]
        return [seq for seq, info, _ in rows if (name in info.flags) is wanted]
    predicate = compile_tree(tree)
    last = (rows[-1][0], rows[-1][1].uid) if rows else (0, 0)
    plan = Plan.of(tree)
    if not plan.headers:
        return [
            info.uid if by_uid else seq
            for seq, info, recent in rows
            if predicate(seq, info, recent, None, last)
        ]
    found = []
    with folder.reader() as reader:
        for seq, info, recent in rows:
            try:
                matched = predicate(seq, info, recent, _Content(folder, reader, info, plan), last)
            except (NoSuchMessage, StoreError):
                continue
            if matched:
                found.append(info.uid if by_uid else seq)
    return found


def find(folder, tree: tuple, rows: list, by_uid: bool) -> Deferred:
    """``matching`` at once when it reads no file and ``rows`` are few (at most
    REACTOR_ROWS), else in a thread; fires with the numbers found."""
    if not Plan.of(tree).headers and len(rows) <= REACTOR_ROWS:
        return maybeDeferred(matching, folder, tree, rows, by_uid)
    return deferToThread(matching, folder, tree, rows, by_uid)


def evaluate(folder, tree: tuple, candidates: list, by_uid: bool) -> list[int]:
    """Sequence numbers (or UIDs if ``by_uid``) of the matching candidates (blocking)."""
    rows = [(candidate.seq, candidate, _RECENT in candidate.flags) for candidate in candidates]
    return matching(folder, tree, rows, by_uid)
