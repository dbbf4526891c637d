"""FETCH and UID FETCH: one path for every shape of request, fast for all of them.

The set is resolved on the reactor against the session's view and cut into batches of about
``CHUNK`` octets (of response; of message data when messages are read, at most
``BATCH_MESSAGES`` of them), each batch's rows made only when it is started. Each batch is
``serialise``d: \\Seen set where a non-PEEK body item asks for it, what the items need read (no
file for UID, FLAGS, INTERNALDATE, RFC822.SIZE; the header block for ENVELOPE and top-level
header sections; the whole message otherwise), the ``* n FETCH`` lines built. That runs in a
worker thread whenever it could wait for the disk; at once when it cannot: a batch of metadata,
or one whose files are all in the page cache (read with ``RWF_NOWAIT``, which fails rather than
wait; a file that is not cached sends the batch to the thread) -- a thread hop per batch costs
more than the reading of cached files. The reactor writes a batch, starts the next one, and
waits until the transport has sent what it holds (a push producer registered on it) before
writing more, so memory stays bounded and the disk and the network work at once. A message gone
by then is left out; files still in new/ move to cur/ at the end, in one store call (read where
the snapshot lists them, not after a rename).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from mailgw.imap import cache
from mailgw.imap.errors import in_thread
from mailgw.imap.reply import Reply, bad, failed, no, ok
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
from mailgw.store.interfaces import FLAGS_ADD, NoSuchMessage
from mailgw.store.reading import NOWAIT, NotCached

#: Responses are written in pieces of about this many octets (a larger literal goes alone);
#: a batch of metadata is about one CHUNK of response.
CHUNK = 256 * 1024
#: The most messages in one batch.
BATCH_MESSAGES = 500
#: Messages in one batch of metadata (about 32 KB of response): small enough that its rows
#: are mostly gone before the garbage collector's next pass, so they are not promoted.
METADATA_BATCH = 512

_METADATA = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})
_SETS_SEEN = frozenset({"RFC822", "RFC822.TEXT"})
#: The items whose section, without .PEEK, sets \\Seen.
_SECTIONS = frozenset({"BODY", "BINARY"})
_MONTHS = (b"", *(m.encode() for m in "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()))
#: What a FETCH reads of each message.
NOTHING, HEADER, WHOLE = range(3)
_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


@dataclass(frozen=True)
class Plan:
    """What a FETCH's items need: the items in reply order, whether \\Seen is set, and how
    much of each message is read (NOTHING, HEADER or WHOLE)."""

    attributes: tuple[c.FetchAttribute, ...]
    sets_seen: bool
    reads: int

    @classmethod
    def of(
        cls, attributes: tuple, writeable: bool, uid: bool, modseq: bool = False, condstore=False
    ) -> Plan:
        """The plan for ``attributes``; FLAGS is added when \\Seen will be set (and reported),
        with MODSEQ too once ``condstore`` is enabled; MODSEQ if ``modseq`` (CHANGEDSINCE);
        and UID FETCH reports UID last (as mailgw always has)."""
        sets_seen = writeable and any(
            a.name in _SETS_SEEN or (a.name in _SECTIONS and a.section is not None and not a.peek)
            for a in attributes
        )
        if sets_seen and not any(a.name == "FLAGS" for a in attributes):
            attributes = (*attributes, c.FetchAttribute("FLAGS"))
        if (modseq or sets_seen and condstore) and not any(a.name == "MODSEQ" for a in attributes):
            attributes = (*attributes, c.FetchAttribute("MODSEQ"))
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


class _Cold(Exception):
    """A read would have to wait for the disk (or the file is not as listed).  Out of
    ``serialise`` it carries the writes of the rows before that message (``done``) and the
    rows left (``rest``)."""

    done: list | None = None
    rest: list | None = None


class _Piecewise:
    """A large message's file, open, as the literal of a FETCH item: sent in pieces of CHUNK
    octets read in the worker thread, so it is never held whole (``len`` is its size)."""

    __slots__ = ("_file", "_left", "size")

    def __init__(self, file, size: int) -> None:
        self._file, self._left, self.size = file, size, size

    @classmethod
    def open(cls, reader, info) -> _Piecewise | None:
        """The file ``info`` names if it holds exactly its size (CRLF, as listed), else None."""
        file = reader.stream(info)
        return None if file is None else cls(file, info.size)

    def __len__(self) -> int:
        return self.size

    def read(self) -> bytes:
        """The next piece (blocking); the file is closed after the last one.  A file cut
        short since it was opened is made up with spaces: the literal's size was sent."""
        want = min(CHUNK, self._left)
        try:
            piece = self._file.read(want) or b""
        except OSError:
            piece = b""
        piece += b" " * (want - len(piece))
        self._left -= want
        if not self._left:
            self._file.close()
        return piece

    def close(self) -> None:
        """Give the file back (when the FETCH ends before sending it all)."""
        self._file.close()


class _Message:
    """One message's content as a batch's items need it, read (on first need) and parsed once;
    its ENVELOPE, BODY and BODYSTRUCTURE are taken from the process's cache when there."""

    __slots__ = ("_reader", "_info", "_reads", "_cached", "_key", "_read", "_parsed")

    def __init__(self, reader, info, reads: int, cached: bool, key) -> None:
        """Read what ``reads`` says when first asked, with ``reader`` (the folder's
        IListedReader); only from the page cache if ``cached`` (else _Cold).  ``key`` is the
        folder's ``(address, name, UIDVALIDITY)``."""
        self._reader, self._info = reader, info
        self._reads, self._cached, self._key = reads, cached, key
        self._read = self._parsed = None

    def _octets(self) -> bytes:
        if self._read is None:
            reader, info = self._reader, self._info
            try:
                if self._reads == WHOLE:
                    self._read = reader.cached(info) if self._cached else reader.whole(info)
                else:
                    head = reader.cached_head(info) if self._cached else reader.head(info)
                    self._read = header_block(head)
            except NotCached:
                raise _Cold() from None
        return self._read

    @property
    def data(self) -> bytes | None:
        """The whole message, if the FETCH reads it whole."""
        return self._octets() if self._reads == WHOLE else None

    @property
    def parsed(self):
        if self._parsed is None:
            self._parsed = parse_message(self._octets())
        return self._parsed

    def envelope(self) -> list:
        if self._reads != WHOLE:
            return envelope_of_header(self._octets())
        return self.parsed.envelope()

    def section(self, section: c.Section) -> bytes:
        if section.part == () and section.text is None:
            return self.data
        return self.parsed.section(section)

    def whole(self, label: bytes) -> tuple:
        """The whole message as a ``literal_item``; one of CHUNK octets or more, not read yet,
        as a _Piecewise (in the thread: from the page cache only, it is _Cold)."""
        info = self._info
        if self._read is None and info.size >= CHUNK and self._reads == WHOLE:
            if self._cached:
                raise _Cold()
            piecewise = _Piecewise.open(self._reader, info)
            if piecewise is not None:
                return label + b" {%d}\r\n" % info.size, piecewise
        return r.literal_item(label, self.data)

    def item(self, name: bytes, compute) -> bytes:
        """``name`` and the serialised value ``compute()`` gives, computed once per process
        for this message (``cache.items``)."""
        key = (self._key, self._info.uid, name)
        value = cache.items.get(key)
        if value is None:
            value = name + b" " + compute()
            cache.items.put(key, value)
        return value


def _maker(attribute: c.FetchAttribute):
    """The function ``(info, FLAGS item, _Message) -> item`` that serialises ``attribute`` for
    one message: bytes, or a ``literal_item``."""
    name, section, partial = attribute.name, attribute.section, attribute.partial
    if name == "UID":
        return lambda info, flags, message: b"UID %d" % info.uid
    if name == "FLAGS":
        return lambda info, flags, message: flags
    if name == "RFC822.SIZE":
        return lambda info, flags, message: b"RFC822.SIZE %d" % info.size
    if name == "MODSEQ":
        return lambda info, flags, message: b"MODSEQ (%d)" % info.modseq
    if name == "INTERNALDATE":
        return lambda info, flags, message: b"INTERNALDATE " + internal_date(info.internal_date)
    if name == "ENVELOPE":
        return lambda info, flags, message: message.item(
            b"ENVELOPE", lambda: r.encode(message.envelope())
        )
    if name in ("BODYSTRUCTURE", "BODY") and section is None:
        head, extended = name.encode(), name == "BODYSTRUCTURE"
        return lambda info, flags, message: message.item(
            head, lambda: r.encode(message.parsed.body_structure(extended))
        )
    if name == "BODY" and partial is None and section == c.Section():
        label = section_label(name, section, None)
        return lambda info, flags, message: message.whole(label)
    if name == "BODY":
        label = section_label(name, section, partial)
        return lambda info, flags, message: r.literal_item(
            label, _window(message.section(section), partial)
        )
    if name == "BINARY":
        label = section_label(name, c.Section(section.part), partial)
        return lambda info, flags, message: r.literal_item(
            label, _window(message.parsed.binary(section.part), partial), binary=True
        )
    if name == "BINARY.SIZE":
        head = section_label(name, c.Section(section.part), None) + b" "
        return lambda info, flags, message: head + b"%d" % message.parsed.binary_size(section.part)
    if name == "RFC822":
        return lambda info, flags, message: message.whole(b"RFC822")
    text = "HEADER" if name == "RFC822.HEADER" else "TEXT"
    whole = c.Section((), text)
    label = name.encode()
    return lambda info, flags, message: r.literal_item(label, message.section(whole))


#: The metadata items: each one's %-format, and the expression of its value in terms of
#: ``info`` (an IMessageInfo), ``recent`` and ``flag_items`` (a _Flags), as
#: ``_metadata_lines`` compiles it.
_METADATA_ITEMS = {
    "UID": (b"UID %d", "info.uid"),
    "FLAGS": (b"%s", "flag_items[info.flags, recent]"),
    "RFC822.SIZE": (b"RFC822.SIZE %d", "info.size"),
    "MODSEQ": (b"MODSEQ (%d)", "info.modseq"),
    "INTERNALDATE": (b"INTERNALDATE %s", "internal_date(info.internal_date)"),
}


@functools.lru_cache(maxsize=64)
def _metadata_lines(names: tuple[str, ...]):
    """The function ``(rows, flag items) -> FETCH lines`` for metadata items ``names``,
    compiled once per shape of request into a single comprehension: one %-format per
    message, no call per item (on 100,000 messages the per-item calls were most of the
    time of ``UID FETCH 1:* (FLAGS)``)."""
    line = r.fetch_line_format([_METADATA_ITEMS[name][0] for name in names])
    values = "".join(f", {_METADATA_ITEMS[name][1]}" for name in names)
    source = f"lambda rows, flag_items: [line % (seq{values}) for seq, info, recent in rows]"
    return eval(source, {"line": line, "internal_date": internal_date})  # noqa: S307


class _Flags(dict):
    """FLAGS items by (stored flags, \\Recent here), each serialised once per batch."""

    def __missing__(self, key: tuple) -> bytes:
        flags, recent = key
        item = self[key] = b"FLAGS " + r.flag_list(sorted(flags) + ([RECENT] if recent else []))
        return item


def serialise(folder, rows: list, plan: Plan, cached: bool = False) -> tuple[list[bytes], list]:
    """The ``* n FETCH`` lines of ``rows`` (``(seq, IMessageInfo, \\Recent here)``), as writes
    of about CHUNK octets each (a larger literal goes alone, uncopied), after setting \\Seen if
    the plan says so; and the new IMessageInfos of the messages whose flags this changed.
    Blocking when it reads files or changes flags (it then runs in a thread), unless
    ``cached``: then files are read only from the page cache, and _Cold raised if one is not."""
    flag_items = _Flags()
    if plan.reads == NOTHING and not plan.sets_seen:
        make = _metadata_lines(tuple(a.name for a in plan.attributes))
        writes = [b"".join(make(rows, flag_items))]
        changed = []
    else:
        with folder.reader() as reader:
            writes, changed = _general(folder, reader, rows, plan, flag_items, cached)
    return writes, changed


def _general(
    folder, reader, rows: list, plan: Plan, flags_of: _Flags, cached: bool
) -> tuple[list, list]:
    """``serialise`` for items that read the message or set \\Seen: (writes, changed)."""
    key = (folder.address, folder.name, folder.uid_validity)
    makers = [_maker(attribute) for attribute in plan.attributes]
    reads = plan.reads
    changed: list = []
    seen: dict = {}
    if plan.sets_seen:
        unseen = [info.uid for _, info, _ in rows if SEEN not in info.flags]
        if unseen:
            changed = folder.set_flags_many(unseen, {SEEN}, FLAGS_ADD).infos
            seen = {info.uid: info for info in changed}
    writes: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for index, (seq, info, recent) in enumerate(rows):
        try:
            if SEEN not in info.flags and plan.sets_seen:
                info = seen.get(info.uid) or folder.get(info.uid)
            message = _Message(reader, info, reads, cached, key) if reads else None
            flags = flags_of[info.flags, recent]
            items = [make(info, flags, message) for make in makers]
        except NoSuchMessage:
            continue
        except _Cold as cold:  # (only when reading from the page cache: nothing changed)
            cold.done, cold.rest = writes + ([b"".join(group)] if group else []), rows[index:]
            raise
        parts = r.fetch_response_parts(seq, items)
        length = sum(map(len, parts))
        if length >= CHUNK:  # its literal is written as it is, not copied into a group
            if group:
                writes.append(b"".join(group))
                group, size = [], 0
            writes += parts
            continue
        group += parts
        size += length
        if size >= CHUNK:
            writes.append(b"".join(group))
            group, size = [], 0
    if group:
        writes.append(b"".join(group))
    return writes, changed


def batches(view, messages: c.SequenceSet, by_uid: bool, plan: Plan):
    """The rows of a (UID) set in batches of about CHUNK octets: of response for metadata, of
    message data when messages are read (and then at most BATCH_MESSAGES messages).  Each
    batch's rows are made from the view when it is asked for, so no row outlives its batch:
    on a large folder, 100,000 rows kept for the whole FETCH cost more in the garbage
    collector's full passes than their serialisation did."""
    if plan.reads == NOTHING:
        yield from view.row_batches(messages, by_uid, METADATA_BATCH)
        return
    for rows in view.row_batches(messages, by_uid, BATCH_MESSAGES):
        yield from _cut(rows, plan)


def _cut(rows: list, plan: Plan):
    """``rows`` in batches of about CHUNK octets (of message data if messages are read, at
    most BATCH_MESSAGES of them; of response for metadata)."""
    batch: list = []
    size = 0
    guess = {NOTHING: 64, HEADER: 2048}.get(plan.reads)
    limit = len(rows) if plan.reads == NOTHING else BATCH_MESSAGES
    for row in rows:
        batch.append(row)
        size += guess or row[1].size
        if size >= CHUNK or len(batch) >= limit:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


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


#: Threads that serialise batches, for all sessions together: more would only take turns at
#: Python's GIL with each other and with the reactor (they read cached files, mostly).
WORKERS = 1
_pool: ThreadPool | None = None


def _workers() -> ThreadPool:
    """The FETCH worker threads, started on first use and stopped with the reactor."""
    global _pool
    if _pool is None:
        _pool = ThreadPool(WORKERS, WORKERS, "imap-fetch")
        _pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", _pool.stop)
    return _pool


def _begin(folder, batch: list, plan: Plan) -> Deferred:
    """``serialise`` a batch: at once if that cannot wait for the disk (metadata only, or files
    all in the page cache), else in a worker thread (a file is not cached, \\Seen is set)."""
    if plan.reads == NOTHING and not plan.sets_seen:
        return maybeDeferred(serialise, folder, batch, plan)
    if NOWAIT is not None and not plan.sets_seen:
        try:
            return succeed(serialise(folder, batch, plan, cached=True))
        except _Cold as cold:  # what came before the file is kept, the rest read in the thread
            done, batch = cold.done or [], cold.rest or batch
        except Exception:
            return fail()
        rest = deferToThreadPool(reactor, _workers(), serialise, folder, batch, plan)
        return rest.addCallback(lambda result: (done + result[0], result[1]))
    return deferToThreadPool(reactor, _workers(), serialise, folder, batch, plan)


async def vanished_earlier(session, messages: c.SequenceSet, since: int) -> bytes:
    """``* VANISHED (EARLIER)`` for the UIDs of ``messages`` expunged above modseq ``since``
    (RFC 7162 3.2.6), empty if none; when the store does not know that far back, every UID of
    the set up to the last one the session knows that is not in its view."""
    mailbox = session.mailbox
    view, folder = mailbox.view, mailbox.folder
    ranges = messages.resolved(max(mailbox.uid_next - 1, 0))
    gone = await in_thread(folder.address, folder.name, folder.vanished_since, since)
    if gone is None:
        last = view.last_uid
        gone = (u for low, high in ranges for u in range(low, min(high, last) + 1))
    else:
        gone = (u for u in gone if any(low <= u <= high for low, high in ranges))
    missing = view.missing(gone)
    if not missing:
        return b""
    return r.untagged(r.Atom(b"VANISHED (EARLIER) " + r.sequence_set(missing)))


async def _send_pieces(session, drain: Drain, piecewise: _Piecewise) -> None:
    """Send a large message's file piece by piece, each read in the worker thread once the
    transport has taken the one before."""
    sent = 0
    try:
        while sent < piecewise.size:
            piece = await deferToThreadPool(reactor, _workers(), piecewise.read)
            sent += len(piece)
            session.send(piece)
            await drain.drained()
    finally:
        if sent < piecewise.size:
            piecewise.close()


async def fetch(session, command: c.Fetch) -> Reply:
    """FETCH / UID FETCH: the items of every message of the set, in batches (module doc);
    with CHANGEDSINCE (RFC 7162 3.1.4) only the messages changed since, MODSEQ included, and
    with VANISHED (UID FETCH once QRESYNC is enabled) first the UIDs expunged since."""
    since = command.changed_since
    if command.vanished and not (command.uid and session.qresync):
        return bad(b"VANISHED needs UID FETCH and QRESYNC enabled")
    if since is not None or any(a.name == "MODSEQ" for a in command.attributes):
        await session.condstore_action()
    refused = checked_set(session, command.messages, command.uid)
    if refused is not None:
        return refused
    mailbox = session.mailbox
    plan = Plan.of(
        command.attributes, mailbox.writeable, command.uid, since is not None, session.condstore
    )
    view, folder = mailbox.view, mailbox.folder
    if command.vanished:
        try:
            session.send(await vanished_earlier(session, command.messages, since))
        except Exception:
            return failed(Failure(), b"FETCH")
    if since is None:
        work = batches(view, command.messages, command.uid, plan)
    else:
        work = _cut(view.changed_rows(command.messages, command.uid, since), plan)
    batch = next(work, None)
    if batch is None:
        return ok(b"FETCH completed")
    drain = Drain(session.transport)
    recent: list[int] = []
    pending: Deferred | None = _begin(folder, batch, plan)
    try:
        while pending is not None:
            recent += [info.uid for _, info, _ in batch if info.recent]
            writes, changed = await pending
            view.apply_flags(changed)
            batch = next(work, None)
            pending = None if batch is None else _begin(folder, batch, plan)
            for data in writes:
                if isinstance(data, _Piecewise):
                    await _send_pieces(session, drain, data)
                    continue
                session.send(data)
                await drain.drained()
    except UnknownTransferEncoding:
        return no(b"[UNKNOWN-CTE] A part has a transfer encoding that cannot be decoded")
    finally:
        drain.close()
        if pending is not None:
            pending.addErrback(lambda failure: None)
    # Fetched messages still in new/ are no longer \\Recent for later sessions: moved to cur/
    # once, after they were read where the snapshot lists them.
    if recent:
        try:
            await in_thread(folder.address, folder.name, folder.mark_seen_by_client, recent)
        except Exception:
            return failed(Failure(), b"FETCH")
    return ok(b"FETCH completed")
