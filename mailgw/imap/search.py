"""SEARCH criteria (RFC 3501 6.4.4): parsed on the reactor, evaluated in a thread.

Replaces Twisted's ``IMAP4Server.search_*`` methods, which read every message's headers on the
reactor thread one at a time.  ``parse_criteria`` turns the command's tokens into a tree of
``Criterion`` tuples; ``Plan`` says whether the evaluation needs the header block or the whole
message, so a search on flags, sizes, dates and numbers never opens a file; ``evaluate`` runs
over ``Candidate`` snapshots of the session's view and is safe to run in a thread.
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser

from mailgw.imap.message import read_header_block
from mailgw.store.interfaces import NoSuchMessage, StoreError

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
_ADDRESS_KEYS = ("FROM", "TO", "CC", "BCC", "SUBJECT")
_DATE_KEYS = ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE")
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DATE = re.compile(r"^(\d{1,2})-([A-Za-z]{3})-(\d{4})$")
_SEQUENCE = re.compile(rb"^(\d+|\*)(:(\d+|\*))?(,(\d+|\*)(:(\d+|\*))?)*$")
_TOKEN = re.compile(rb'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))')


class SearchSyntaxError(ValueError):
    """The criteria cannot be parsed (the session answers BAD)."""


@dataclass(frozen=True)
class Candidate:
    """One message as the session knows it, for evaluation away from the reactor."""

    seq: int
    uid: int
    flags: frozenset
    size: int
    internal_date: float


def tokenize(line: bytes) -> list:
    """Split criteria into atoms (bytes), quoted strings (str) and nested lists."""
    stack: list[list] = [[]]
    pos = 0
    line = line.strip()
    while pos < len(line):
        match = _TOKEN.match(line, pos)
        if match is None or match.end() == pos:
            raise SearchSyntaxError("unparsable search criteria")
        pos = match.end()
        opening, closing, quoted, atom = match.groups()
        if opening:
            if len(stack) > MAX_DEPTH:
                raise SearchSyntaxError("search criteria nested too deeply")
            stack.append([])
        elif closing:
            if len(stack) == 1:
                raise SearchSyntaxError("unbalanced parentheses")
            inner = stack.pop()
            stack[-1].append(inner)
        elif quoted is not None:
            text = re.sub(rb"\\(.)", rb"\1", quoted)
            stack[-1].append(text.decode("utf-8", "replace"))
        else:
            stack[-1].append(atom)
    if len(stack) != 1:
        raise SearchSyntaxError("unbalanced parentheses")
    if not stack[0]:
        raise SearchSyntaxError("missing search criteria")
    return stack[0]


def _text(token) -> str:
    if isinstance(token, str):
        return token
    if isinstance(token, bytes):
        return token.decode("utf-8", "replace")
    raise SearchSyntaxError("expected a string")


def _date(token) -> tuple:
    match = _DATE.match(_text(token))
    month = match and match.group(2).lower()
    if not match or month not in _MONTHS:
        raise SearchSyntaxError("bad date (expected e.g. 1-Feb-2024)")
    return (int(match.group(3)), _MONTHS.index(month) + 1, int(match.group(1)))


def _number(token) -> int:
    text = _text(token)
    if not text.isdigit() or len(text) > 20:
        raise SearchSyntaxError("expected a number")
    return int(text)


def _sequence(token) -> list:
    raw = token.encode() if isinstance(token, str) else token
    if not isinstance(raw, bytes) or not _SEQUENCE.match(raw):
        raise SearchSyntaxError("bad sequence set")
    ranges = []
    for part in raw.split(b","):
        low, _, high = part.partition(b":")
        low_n = None if low == b"*" else int(low)
        high_n = low_n if not high else (None if high == b"*" else int(high))
        if 0 in (low_n, high_n):
            raise SearchSyntaxError("0 is not a message number")
        ranges.append((low_n, high_n))
    return ranges


#: Deepest nesting of parentheses, NOT and OR accepted in one SEARCH (real clients use a few).
MAX_DEPTH = 50


def parse_criteria(tokens: list, depth: int = 0) -> tuple:
    """The criteria tree: ('AND', [...]) of leaves like ('FLAG', '\\\\Seen', True)."""
    items = list(tokens)
    result = []
    while items:
        result.append(_one(items, depth))
    return ("AND", result)


def _one(items: list, depth: int) -> tuple:
    if depth > MAX_DEPTH:
        raise SearchSyntaxError("search criteria nested too deeply")
    token = items.pop(0)
    if isinstance(token, list):
        return parse_criteria(token, depth + 1)
    if isinstance(token, str):
        raise SearchSyntaxError("a search key cannot be a quoted string")
    key = token.decode("ascii", "replace").upper()

    def arg():
        if not items:
            raise SearchSyntaxError(f"{key} needs an argument")
        return items.pop(0)

    if key == "ALL":
        return ("ALL",)
    if key in _FLAG_KEYS:
        return ("FLAG", *_FLAG_KEYS[key])
    if key == "NEW":
        return ("AND", [("FLAG", "\\Recent", True), ("FLAG", "\\Seen", False)])
    if key == "OLD":
        return ("FLAG", "\\Recent", False)
    if key in ("KEYWORD", "UNKEYWORD"):
        return ("KEYWORD", _text(arg()).lower(), key == "KEYWORD")
    if key in _ADDRESS_KEYS:
        return ("HEADER", key.lower(), _text(arg()).lower())
    if key == "HEADER":
        name = _text(arg()).lower()
        return ("HEADER", name, _text(arg()).lower())
    if key in ("BODY", "TEXT"):
        return (key, _text(arg()).lower())
    if key in _DATE_KEYS:
        return ("DATE", key, _date(arg()))
    if key in ("LARGER", "SMALLER"):
        return ("SIZE", key == "LARGER", _number(arg()))
    if key == "UID":
        return ("UID", _sequence(arg()))
    if key == "NOT":
        return ("NOT", _one(items, depth + 1) if items else _missing(key))
    if key == "OR":
        first = _one(items, depth + 1) if items else _missing(key)
        return ("OR", first, _one(items, depth + 1) if items else _missing(key))
    if key[:1].isdigit() or key[:1] == "*":
        return ("SEQ", _sequence(token))
    raise SearchSyntaxError(f"unknown search key {key}")


def _missing(key: str):
    raise SearchSyntaxError(f"{key} needs a search key")


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
    """A message's headers and text, read once on demand (in the evaluating thread)."""

    def __init__(self, folder, uid: int, plan: Plan) -> None:
        self._folder, self._uid, self._plan = folder, uid, plan
        self._message = None
        self._text: str | None = None

    def message(self):
        if self._message is None:
            with self._folder.open_message(self._uid) as fp:
                if self._plan.body:
                    self._message = BytesParser(policy=policy.compat32).parse(fp)
                else:
                    header = read_header_block(fp)
                    parser = BytesParser(policy=policy.compat32)
                    self._message = parser.parsebytes(header, headersonly=True)
        return self._message

    def header(self, name: str) -> list[str]:
        values = []
        for value in self.message().get_all(name, []):
            try:
                values.append(str(make_header(decode_header(str(value)))).lower())
            except (ValueError, LookupError):
                values.append(str(value).lower())
        return values

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
        return "\n".join(f"{k}: {v}" for k, v in self.message().items()).lower()


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


def _in(ranges: list, value: int, star: int) -> bool:
    for low, high in ranges:
        low = star if low is None else low
        high = star if high is None else high
        if min(low, high) <= value <= max(low, high):
            return True
    return False


def _match(node: tuple, c: Candidate, content: _Content, last: tuple) -> bool:
    kind = node[0]
    if kind == "AND":
        return all(_match(child, c, content, last) for child in node[1])
    if kind == "ALL":
        return True
    if kind == "FLAG":
        return (node[1] in c.flags) == node[2]
    if kind == "KEYWORD":
        return any(f.lower() == node[1] for f in c.flags) == node[2]
    if kind == "NOT":
        return not _match(node[1], c, content, last)
    if kind == "OR":
        return _match(node[1], c, content, last) or _match(node[2], c, content, last)
    if kind == "SIZE":
        return c.size > node[2] if node[1] else c.size < node[2]
    if kind == "SEQ":
        return _in(node[1], c.seq, last[0])
    if kind == "UID":
        return _in(node[1], c.uid, last[1])
    if kind == "DATE":
        day = _sent_day(content) if node[1].startswith("SENT") else _day(c.internal_date)
        if day is None:
            return False
        op = node[1].removeprefix("SENT")
        return {"BEFORE": day < node[2], "ON": day == node[2], "SINCE": day >= node[2]}[op]
    if kind == "HEADER":
        values = content.header(node[1])
        return bool(values) and (not node[2] or any(node[2] in v for v in values))
    if kind == "BODY":
        return node[1] in content.body()
    if kind == "TEXT":
        return node[1] in content.all_headers() or node[1] in content.body()
    raise SearchSyntaxError(f"unknown criterion {kind}")


def evaluate(folder, tree: tuple, candidates: list, by_uid: bool) -> list[int]:
    """Sequence numbers (or UIDs if ``by_uid``) of the matching candidates (blocking)."""
    plan = Plan.of(tree)
    last = (candidates[-1].seq, candidates[-1].uid) if candidates else (0, 0)
    found = []
    for candidate in candidates:
        content = _Content(folder, candidate.uid, plan)
        try:
            matched = _match(tree, candidate, content, last)
        except (NoSuchMessage, StoreError):
            continue
        if matched:
            found.append(candidate.uid if by_uid else candidate.seq)
    return found
