"""SEARCH criteria (RFC 3501 6.4.4) evaluated in a thread.

The wire parser gives the criteria as a tree (``Search.criteria``: ``("AND", [...])`` of leaf
tuples such as ``("FLAG", "\\Seen", True)``); ``Plan`` says whether the evaluation needs the
header block or the whole message, so a search on flags, sizes, dates and numbers never opens a
file; ``evaluate`` runs over ``Candidate`` snapshots of the session's view and is safe to run in
a thread.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser

from mailgw.store.interfaces import NoSuchMessage, StoreError


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
