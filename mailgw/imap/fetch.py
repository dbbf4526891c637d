"""FETCH and UID FETCH: one path for every shape of request, fast for all of them.

The set is resolved on the reactor against the session's view; the messages are then taken in
batches (at most ``BATCH_MESSAGES``, about ``CHUNK`` octets of message data): for each batch a
worker thread sets \\Seen where a non-PEEK body item asks for it, reads what the items need (no
file for UID, FLAGS, INTERNALDATE, RFC822.SIZE; the header block for ENVELOPE and top-level
header sections; the whole message otherwise) and serialises the batch's ``* n FETCH`` lines.
The reactor writes a batch, starts the next one's thread work, and waits until the transport
has sent what it holds (a push producer registered on it) before writing more, so memory
stays bounded and the disk and the network work at once.  A message gone by then is left out.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from mailgw.imap.reply import Reply, bad, no, ok
from mailgw.imap.selected import checked_set
from mailgw.imap.structure import (
    UnknownTransferEncoding,
    envelope_of_header,
    header_block,
    parse_message,
)
from mailgw.imap.view import RECENT, SEEN
from mailgw.imap.wire import commands as c
from mailgw.imap.wire import responses as r
from mailgw.store.interfaces import NoSuchMessage

#: About this many octets of message data go into one batch (a larger message goes alone).
CHUNK = 256 * 1024
#: The most messages in one batch.
BATCH_MESSAGES = 500

_METADATA = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE"})
_SETS_SEEN = frozenset({"RFC822", "RFC822.TEXT"})
#: The items whose section, without .PEEK, sets \\Seen.
_SECTIONS = frozenset({"BODY", "BINARY"})
_MONTHS = (b"", *(m.encode() for m in "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()))
#: What a FETCH reads of each message.
NOTHING, HEADER, WHOLE = range(3)
_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})
#: Octets a header block is read in.
_HEADER_READ = 8192


@dataclass(frozen=True)
class Plan:
    """What a FETCH's items need: the items in reply order, whether \\Seen is set, and how
    much of each message is read (NOTHING, HEADER or WHOLE)."""

    attributes: tuple[c.FetchAttribute, ...]
    sets_seen: bool
    reads: int

    @classmethod
    def of(cls, attributes: tuple, writeable: bool, uid: bool) -> Plan:
        """The plan for ``attributes``; FLAGS is added when \\Seen will be set (and reported),
        and UID FETCH reports UID last (as mailgw always has)."""
        sets_seen = writeable and any(
            a.name in _SETS_SEEN or (a.name in _SECTIONS and a.section is not None and not a.peek)
            for a in attributes
        )
        if sets_seen and not any(a.name == "FLAGS" for a in attributes):
            attributes = (*attributes, c.FetchAttribute("FLAGS"))
        if uid:
            attributes = (*(a for a in attributes if a.name != "UID"), c.FetchAttribute("UID"))
        reads = max((_reads(a) for a in attributes), default=NOTHING)
        return cls(tuple(attributes), sets_seen, reads)


def _reads(attribute: c.FetchAttribute) -> int:
    name, section = attribute.name, attribute.section
    if name in _METADATA:
        return NOTHING
    if name in ("ENVELOPE", "RFC822.HEADER"):
        return HEADER
    if name == "BODY" and section is not None and not section.part:
        return HEADER if section.text in _HEADER_TEXTS else WHOLE
    return WHOLE


def internal_date(timestamp: float) -> bytes:
    """INTERNALDATE's value for a POSIX timestamp, in UTC."""
    t = time.gmtime(timestamp)
    return b'"%02d-%s-%d %02d:%02d:%02d +0000"' % (
        t.tm_mday,
        _MONTHS[t.tm_mon],
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )


def section_label(name: str, section: c.Section, partial: tuple[int, int] | None) -> bytes:
    """The response's name for a section: ``BODY[1.HEADER.FIELDS (TO)]<0>``."""
    words = [b".".join(b"%d" % n for n in section.part)] if section.part else []
    if section.text is not None:
        words.append(section.text.encode("ascii"))
    inside = b".".join(words)
    if section.fields:
        inside += b" (" + " ".join(section.fields).encode("ascii", "replace") + b")"
    label = name.encode("ascii") + b"[" + inside + b"]"
    if partial is not None:
        label += b"<%d>" % partial[0]
    return label


def _window(data: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return data
    start, length = partial
    return data[start : start + length]


def read_as_listed(folder_path: str, info) -> bytes | None:
    """The message if the file ``info`` names (new/ or cur/) holds exactly its ``size`` octets,
    as the store keeps CRLF messages; None if the store must be asked: the file was renamed
    (flags changed, or moved to cur/) or removed since the snapshot, or has bare LF line ends.
    One open and one read, without the store's lock or a directory check."""
    path = os.path.join(folder_path, info.subdir, info.filename)
    try:
        with open(path, "rb", buffering=0) as f:
            data = f.read(info.size + 1)
    except OSError:
        return None
    return data if len(data) == info.size else None


def _whole(folder, folder_path: str, info) -> bytes:
    data = read_as_listed(folder_path, info)
    if data is None:
        with folder.open_message(info.uid) as fp:
            data = fp.read()
    return data


def _header(folder, folder_path: str, info) -> bytes:
    """The message's header block (with the empty line that ends it)."""
    path = os.path.join(folder_path, info.subdir, info.filename)
    try:
        fp = open(path, "rb", buffering=0)
        if os.fstat(fp.fileno()).st_size != info.size:  # not as listed (bare LF): ask the store
            fp.close()
            raise OSError("not as listed")
    except OSError:
        fp = folder.open_message(info.uid)
    with fp:
        data = fp.read(_HEADER_READ)
        while not _ends_header(data):
            chunk = fp.read(_HEADER_READ)
            if not chunk:
                break
            data += chunk
    return header_block(data)


def _ends_header(data: bytes) -> bool:
    return data.startswith((b"\r\n", b"\n")) or b"\n\r\n" in data or b"\n\n" in data


class _Message:
    """One message's content as a batch's items need it, read and parsed once."""

    def __init__(self, folder, folder_path: str, info, reads: int) -> None:
        self.data = self.header = None
        if reads == WHOLE:
            self.data = _whole(folder, folder_path, info)
        elif reads == HEADER:
            self.header = _header(folder, folder_path, info)
        self._parsed = None

    @property
    def parsed(self):
        if self._parsed is None:
            self._parsed = parse_message(self.data if self.data is not None else self.header)
        return self._parsed

    def envelope(self) -> list:
        if self.data is None:
            return envelope_of_header(self.header)
        return self.parsed.envelope()

    def section(self, section: c.Section) -> bytes:
        if section.part == () and section.text is None:
            return self.data
        return self.parsed.section(section)


def _items(plan: Plan, info, flags: bytes, message: _Message | None) -> list:
    """The FETCH items of one message, in order: bytes, or (head, literal octets)."""
    items: list = []
    for attribute in plan.attributes:
        name, section = attribute.name, attribute.section
        if name == "UID":
            items.append(b"UID %d" % info.uid)
        elif name == "FLAGS":
            items.append(flags)
        elif name == "RFC822.SIZE":
            items.append(b"RFC822.SIZE %d" % info.size)
        elif name == "INTERNALDATE":
            items.append(b"INTERNALDATE " + internal_date(info.internal_date))
        elif name == "ENVELOPE":
            items.append(b"ENVELOPE " + r.encode(message.envelope()))
        elif name in ("BODYSTRUCTURE", "BODY") and section is None:
            extended = name == "BODYSTRUCTURE"
            items.append(name.encode() + b" " + r.encode(message.parsed.body_structure(extended)))
        elif name == "BODY":
            data = _window(message.section(section), attribute.partial)
            items.append(r.literal_item(section_label(name, section, attribute.partial), data))
        elif name == "BINARY":
            data = _window(message.parsed.binary(section.part), attribute.partial)
            label = section_label(name, c.Section(section.part), attribute.partial)
            items.append(r.literal_item(label, data, binary=True))
        elif name == "BINARY.SIZE":
            size = message.parsed.binary_size(section.part)
            label = section_label(name, c.Section(section.part), None)
            items.append(label + b" %d" % size)
        elif name == "RFC822":
            items.append(r.literal_item(b"RFC822", message.data))
        elif name == "RFC822.HEADER":
            header = message.section(c.Section((), "HEADER"))
            items.append(r.literal_item(b"RFC822.HEADER", header))
        elif name == "RFC822.TEXT":
            items.append(r.literal_item(b"RFC822.TEXT", message.section(c.Section((), "TEXT"))))
    return items


def serialise(folder, rows: list, plan: Plan) -> tuple[bytes, list]:
    """The ``* n FETCH`` lines of ``rows`` (``(seq, IMessageInfo, \\Recent here)``), after
    setting \\Seen if the plan says so; and the new IMessageInfos of the messages whose flags
    this changed.  Blocking: runs in a worker thread."""
    folder_path = str(folder.path)
    changed = []
    pieces: list[bytes] = []
    flag_items: dict[tuple, bytes] = {}
    recent_files = []
    for seq, info, recent in rows:
        try:
            if plan.sets_seen and SEEN not in info.flags:
                current = folder.get(info.uid)
                if SEEN not in current.flags:
                    current = folder.set_flags(info.uid, current.flags | {SEEN})
                    changed.append(current)
                info = current
            message = None
            if plan.reads != NOTHING:
                message = _Message(folder, folder_path, info, plan.reads)
        except NoSuchMessage:
            continue
        if info.recent:
            recent_files.append(info.uid)
        key = (info.flags, recent)
        flags = flag_items.get(key)
        if flags is None:
            names = sorted(info.flags) + ([RECENT] if recent else [])
            flags = flag_items[key] = b"FLAGS " + r.flag_list(names)
        pieces.extend(r.fetch_response_parts(seq, _items(plan, info, flags, message)))
    if recent_files:
        folder.mark_seen_by_client(recent_files)
    return b"".join(pieces), changed


def batches(rows: list, plan: Plan) -> list[list]:
    """``rows`` cut into batches: at most BATCH_MESSAGES each, about CHUNK octets of data."""
    out: list[list] = []
    batch: list = []
    size = 0
    for row in rows:
        batch.append(row)
        size += row[1].size if plan.reads == WHOLE else 2048 if plan.reads == HEADER else 64
        if size >= CHUNK or len(batch) >= BATCH_MESSAGES:
            out.append(batch)
            batch, size = [], 0
    if batch:
        out.append(batch)
    return out


@implementer(IPushProducer)
class Drain:
    """Registered on a transport while a FETCH writes: tells when what was written has gone
    (the transport pauses it when its buffer is full and resumes it once it has drained)."""

    def __init__(self, transport) -> None:
        self._transport = transport
        self._paused = False
        self._stopped = False
        self._waiting: Deferred | None = None
        transport.registerProducer(self, True)

    def pauseProducing(self) -> None:
        """The transport's buffer is full."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The transport has drained."""
        self._paused = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    def stopProducing(self) -> None:
        """The connection went away."""
        self._stopped = True
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.errback(ConnectionDone("connection lost while sending FETCH responses"))

    def drained(self) -> Deferred:
        """Fires once the transport can take more."""
        if self._stopped:
            raise ConnectionDone("connection lost while sending FETCH responses")
        if not self._paused:
            return succeed(None)
        self._waiting = Deferred()
        return self._waiting

    def close(self) -> None:
        """The FETCH is done writing."""
        if not self._stopped:
            self._transport.unregisterProducer()


async def fetch(session, command: c.Fetch) -> Reply:
    """FETCH / UID FETCH: the items of every message of the set, in batches (module doc)."""
    if command.changed_since is not None or command.vanished:
        return bad(b"CHANGEDSINCE needs CONDSTORE, which is not supported")
    if any(a.name == "MODSEQ" for a in command.attributes):
        return bad(b"MODSEQ needs CONDSTORE, which is not supported")
    refused = checked_set(session, command.messages, command.uid)
    if refused is not None:
        return refused
    mailbox = session.mailbox
    plan = Plan.of(command.attributes, mailbox.writeable, command.uid)
    view, folder = mailbox.view, mailbox.folder
    work = batches(list(view.rows(view.resolve(command.messages, command.uid))), plan)
    if not work:
        return ok(b"FETCH completed")
    drain = Drain(session.transport)
    pending: Deferred | None = deferToThread(serialise, folder, work[0], plan)
    try:
        for index in range(len(work)):
            data, changed = await pending
            pending = None
            if index + 1 < len(work):
                pending = deferToThread(serialise, folder, work[index + 1], plan)
            view.apply_flags(changed)
            session.send(data)
            await drain.drained()
    except UnknownTransferEncoding:
        return no(b"[UNKNOWN-CTE] A part has a transfer encoding that cannot be decoded")
    finally:
        drain.close()
        if pending is not None:
            pending.addErrback(lambda failure: None)
    return ok(b"FETCH completed")
