"""RFC 5256 SORT and THREAD, pure: from header values already read to ordered numbers.

A ``Message`` carries what ordering needs of one message: its sequence number and UID, size,
internal date and the first value (unfolded, undecoded) of each header field in ``FIELDS``.
Where RFC 5256 leaves a choice, Dovecot's answer is taken, since clients are tested against it:
strings compare after RFC 2047 decoding and i;unicode-casemap folding (titlecase, decomposed),
an address key is the first address's mailbox (a group's name for a group), a date that is
missing or unparseable is the internal date, and ties fall to the sequence number.  THREAD
REFERENCES follows section 2 with Dovecot's choices for conflicting links (a message's own
References replace a parent guessed from another message's; a link that would make a loop is
dropped; of two messages with one Message-ID the first keeps it).
"""

from __future__ import annotations

import email.utils
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.header import decode_header

from mailgw.imap.mime.address import addresses

#: The header fields SORT and THREAD read (lower-case).
FIELDS = (
    b"subject",
    b"date",
    b"from",
    b"to",
    b"cc",
    b"message-id",
    b"references",
    b"in-reply-to",
)
#: The fields each sort key reads; THREAD reads them all but the address fields.
KEY_FIELDS = {
    "ARRIVAL": (),
    "SIZE": (),
    "DATE": (b"date",),
    "SUBJECT": (b"subject",),
    "FROM": (b"from",),
    "TO": (b"to",),
    "CC": (b"cc",),
}
THREAD_FIELDS = (b"subject", b"date", b"message-id", b"references", b"in-reply-to")


@dataclass(frozen=True)
class Message:
    """One message to order: numbers, metadata, and ``fields`` (lower-case name -> first
    value, unfolded; a field the message lacks is absent)."""

    seq: int
    uid: int
    size: int = 0
    internal_date: float = 0.0
    fields: dict = field(default_factory=dict)

    def number(self, by_uid: bool) -> int:
        """The UID if ``by_uid`` (UID SORT, UID THREAD), else the sequence number."""
        return self.uid if by_uid else self.seq


# -- strings: decoding, folding, base subject ------------------------------------------------


def decoded(value: bytes) -> str:
    """A header value with its RFC 2047 encoded-words decoded (unknown charsets read as
    UTF-8), the rest as UTF-8; never raises."""
    text = value.decode("utf-8", "replace")
    if "=?" not in text:
        return text
    try:
        chunks = decode_header(text)
    except (ValueError, LookupError, AssertionError):
        return text
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        try:
            out.append(chunk.decode(charset or "raw-unicode-escape", "replace"))
        except LookupError:
            out.append(chunk.decode("utf-8", "replace"))
    return "".join(out)


def folded(text: str) -> str:
    """``text`` folded as i;unicode-casemap (RFC 5051) compares it: each character's titlecase,
    then decomposed (so ``a`` and ``A`` are one, and ``e`` with an accent sorts by ``E``)."""
    if text.isascii():
        return text.upper()
    titled = "".join(t if len(t := ch.title()) == 1 else ch for ch in text)
    return unicodedata.normalize("NFKD", titled)


_WHITESPACE = re.compile(r"[ \t\r\n]+")
_BLOB = re.compile(r"\[[^\[\]]*\] ?")
_LEADER = re.compile(r"(?:\[[^\[\]]*\] ?)*(?:RE|FWD|FW) ?(?:\[[^\[\]]*\] ?)?:")
_TRAILER = re.compile(r"(?: |\(FWD\))+\Z")


def base_subject(value: bytes) -> tuple[str, bool]:
    """RFC 5256 2.1: the base subject of a Subject value, folded for comparison, and whether
    the subject marked a reply or forward (``Re:``, ``Fwd:``, ``(fwd)``, ``[fwd: ...]``)."""
    text = _WHITESPACE.sub(" ", folded(decoded(value)))  # (1)
    reply = False
    start, end = 0, len(text)
    while True:
        trailer = _TRAILER.search(text, start, end)  # (2)
        if trailer is not None and trailer.start() < end:
            reply = reply or "(FWD)" in trailer.group()
            end = trailer.start()
        while True:
            found = False
            if text.startswith(" ", start, end):  # (3): a leading blank always goes
                start += 1
                found = True
            leader = _LEADER.match(text, start, end)
            if leader is not None:
                start, reply, found = leader.end(), True, True
            blob = _BLOB.match(text, start, end)  # (4): a blob, if text remains after it
            if blob is not None and blob.end() < end:
                start, found = blob.end(), True
            if not found:  # (5)
                break
        if text.startswith("[FWD:", start, end) and text.endswith("]", start, end):  # (6)
            start, end, reply = start + 5, end - 1, True
            continue
        return text[start:end], reply


# -- keys ----------------------------------------------------------------------------------


def sent_date(message: Message) -> int:
    """RFC 5256 2.2: the Date field as seconds since the epoch (UTC), or, when the message has
    none that parses, its internal date (whole seconds, as Dovecot compares them)."""
    value = message.fields.get(b"date")
    if value:
        try:
            parsed = email.utils.parsedate_tz(value.decode("latin-1"))
            stamp = email.utils.mktime_tz(parsed) if parsed else 0
        except (TypeError, ValueError, OverflowError, IndexError):
            stamp = 0
        if stamp > 0:
            return stamp
    return int(message.internal_date)


def first_mailbox(value: bytes | None) -> str:
    """The folded mailbox (local part) of the first address of an address field, a group's
    name when it starts with a group; "" without one."""
    if not value:
        return ""
    found = addresses(value)
    if not found or found[0][2] is None:
        return ""
    return folded(found[0][2].decode("utf-8", "replace"))


def _key(name: str, message: Message):
    if name == "ARRIVAL":
        return int(message.internal_date)
    if name == "SIZE":
        return message.size
    if name == "DATE":
        return sent_date(message)
    if name == "SUBJECT":
        subject = message.fields.get(b"subject")
        return base_subject(subject)[0] if subject is not None else ""
    return first_mailbox(message.fields.get(name.lower().encode("ascii")))


def fields_for(keys: Iterable[tuple[bool, str]]) -> frozenset:
    """The header fields sorting by ``keys`` reads."""
    return frozenset(f for _, name in keys for f in KEY_FIELDS[name])


def sort(messages: list[Message], keys: tuple[tuple[bool, str], ...]) -> list[Message]:
    """RFC 5256 SORT: ``messages`` ordered by ``keys`` ((reverse, key name) each, first key
    first); a REVERSE reverses its key only; what every key ties on is in sequence order."""
    ordered = sorted(messages, key=lambda m: m.seq)
    for reverse, name in reversed(keys):
        values = {m.seq: _key(name, m) for m in ordered}
        ordered.sort(key=lambda m: values[m.seq], reverse=reverse)
    return ordered


# -- threads -------------------------------------------------------------------------------


class Node:
    """A node of a thread tree: a message, or None for a dummy (a root grouping messages that
    share a missing parent or a subject), and its children in the order they are written."""

    __slots__ = ("message", "children", "date")

    def __init__(self, message: Message | None, children: list | None = None) -> None:
        self.message = message
        self.children: list[Node] = children or []
        self.date = sent_date(message) if message is not None else 0

    def order(self) -> tuple[int, int]:
        """What siblings are sorted by: sent date, then UID (a dummy: its first child's)."""
        if self.message is None:
            return self.children[0].order()
        return self.date, self.message.uid


def ordered_subject(messages: list[Message]) -> list[Node]:
    """THREAD ORDEREDSUBJECT (RFC 5256 section 3): one thread per base subject (empty ones
    too), its oldest message the parent of the others; threads by their first message's date."""
    by_subject: dict[str, list[Message]] = {}
    for message in sort(messages, ((False, "SUBJECT"), (False, "DATE"))):
        subject = message.fields.get(b"subject")
        base = base_subject(subject)[0] if subject is not None else ""
        by_subject.setdefault(base, []).append(message)
    threads = [Node(group[0], [Node(m) for m in group[1:]]) for group in by_subject.values()]
    threads.sort(key=lambda node: (node.date, node.message.seq))
    return threads


_QUOTED_ID = re.compile(r'[ \t]*"((?:[^"\\]|\\.)*)"@[ \t]*([^\s<>@"()\[\]]+)>')


def message_ids(value: bytes | None) -> list[str]:
    """The msg-ids of a Message-ID, References or In-Reply-To value, as Dovecot reads them:
    between ``<`` and ``>``, with an ``@``, blanks removed; anything else is passed over."""
    if not value:
        return []
    text = value.decode("utf-8", "replace")
    found, pos = [], 0
    while (pos := text.find("<", pos)) >= 0:
        pos += 1
        end = text.find(">", pos)
        if end < 0:
            break
        inner = text[pos:end]
        if '"' in inner or "(" in inner or "[" in inner:
            quoted = _QUOTED_ID.match(text, pos)
            if quoted is not None:
                local = re.sub(r"\\(.)", r"\1", quoted.group(1))
                found.append(local + "@" + quoted.group(2))
                pos = quoted.end()
            continue
        if "@" in inner:
            found.append(re.sub(r"[ \t\r\n]", "", inner))
        pos = end + 1
    return found


class _Container:
    """An id_table entry (RFC 5256 2, step 1): a message or none yet, and its parent."""

    __slots__ = ("message", "parent")

    def __init__(self) -> None:
        self.message: Message | None = None
        self.parent: _Container | None = None

    def descends_from(self, other: _Container) -> bool:
        node: _Container | None = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False


def _link(parent: _Container, child: _Container) -> None:
    """Make ``child`` a child of ``parent``, unless that makes a loop or it has a parent."""
    if parent.descends_from(child) or child.parent is not None:
        return
    child.parent = parent


def _linked(messages: list[Message]) -> list[_Container]:
    """Step 1: the containers of every Message-ID and reference, parents set."""
    table: dict[str, _Container] = {}
    every: list[_Container] = []

    def container(msgid: str) -> _Container:
        found = table.get(msgid)
        if found is None:
            found = table[msgid] = _Container()
            every.append(found)
        return found

    for message in sorted(messages, key=lambda m: m.uid):
        ids = message_ids(message.fields.get(b"message-id"))
        own = container(ids[0]) if ids else None
        if own is None or own.message is not None:  # no Message-ID, or a duplicate one
            own = _Container()
            every.append(own)
        own.message = message
        references = message_ids(message.fields.get(b"references"))
        if not references:
            references = message_ids(message.fields.get(b"in-reply-to"))[:1]
        chain = [container(msgid) for msgid in references]
        for parent, child in zip(chain, chain[1:], strict=False):
            _link(parent, child)
        last = chain[-1] if chain else None
        if own.parent is not None and own.parent is not last:
            own.parent = None  # the message's own References win over a guess
        if last is not None:
            _link(last, own)
    return every


def references(messages: list[Message]) -> list[Node]:
    """THREAD REFERENCES (RFC 5256 section 2): the threads of ``messages``, roots and siblings
    ordered by sent date, then UID."""
    containers = _linked(messages)
    nodes = {id(c): Node(c.message, []) for c in containers if c.message is not None}
    roots: dict[int, Node] = {}
    for c in containers:  # steps 2 and 3: dummies dropped, their children moved up
        if c.parent is None:
            if id(c) not in nodes:
                roots[id(c)] = nodes[id(c)] = Node(None, [])
            else:
                roots[id(c)] = nodes[id(c)]
    for c in containers:
        if c.message is None or c.parent is None:
            continue
        parent = c.parent
        while parent.message is None and parent.parent is not None:
            parent = parent.parent
        nodes[id(parent)].children.append(nodes[id(c)])
    threads = _sorted_roots(list(roots.values()))
    return _sorted_roots(_by_subject(threads))


def _sorted_roots(roots: list[Node]) -> list[Node]:
    """Roots with their children sorted, childless dummies gone, a dummy with one child
    replaced by it (step 3, deferred as Dovecot does), in date order."""
    kept = []
    for root in roots:
        if root.message is None:
            if not root.children:
                continue
            if len(root.children) == 1:
                root = root.children[0]
        if root.message is None:
            root.children.sort(key=Node.order)
        kept.append(root)
    kept.sort(key=Node.order)
    return kept


def _by_subject(roots: list[Node]) -> list[Node]:
    """Step 5: roots whose threads have one base subject gathered under one root."""
    table: dict[str, int] = {}
    parent: list[int | None] = [None] * len(roots)
    reply = [False] * len(roots)
    for index, root in enumerate(roots):
        first = root if root.message is not None else root.children[0]
        value = first.message.fields.get(b"subject")
        if value is None:
            continue
        subject, reply[index] = base_subject(value)
        if not subject:
            continue
        held = table.get(subject)
        if held is None:
            table[subject] = index
        elif roots[held].message is not None and (
            root.message is None or (reply[held] and not reply[index])
        ):
            parent[held] = index
            table[subject] = index
        else:
            parent[index] = held
    ignored = [False] * len(roots)
    for index in range(len(roots)):
        if parent[index] is None or ignored[index]:
            continue
        top = parent[index]
        while parent[top] is not None:
            top = parent[top]
        current, held = roots[index], roots[top]
        if current.message is None:  # both dummies: the children become siblings
            held.children.extend(current.children)
            current.children = []
        elif held.message is None or (reply[index] and not reply[top]):
            held.children.append(current)
        else:  # a new dummy over both
            roots.append(Node(None, [held, current]))
            parent.append(None)
            reply.append(False)
            ignored.append(False)
            parent[top] = len(roots) - 1
            ignored[top] = True
        ignored[index] = True
    return [root for root, gone in zip(roots, ignored, strict=True) if not gone]


# -- the THREAD response -------------------------------------------------------------------


def serialise(threads: list[Node], by_uid: bool) -> bytes:
    """The threads as RFC 5256 ``thread-list``s, one after another: ``(1 2 (3)(4 5))``; a chain
    of only children without inner parentheses, a dummy root as ``((3)(4))``.  Children are
    written in date order (then UID)."""
    out: list[bytes] = []
    # A stack of pending work: a Node to write as "(" members ")", or bytes to emit.
    stack: list = list(reversed(threads))
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
            continue
        out.append(b"(")
        numbers, node = [], item
        if node.message is not None:
            numbers.append(b"%d" % node.message.number(by_uid))
            while len(node.children) == 1:
                node = node.children[0]
                numbers.append(b"%d" % node.message.number(by_uid))
        out.append(b" ".join(numbers))
        children = sorted(node.children, key=Node.order)
        if children and numbers:
            out.append(b" ")
        stack.append(b")")
        stack.extend(reversed(children))
    return b"".join(out)
