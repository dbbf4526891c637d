"""FETCH for ``IMAP4Server``: implicit \\Seen, exact header sections, partial ranges, streaming.

A mixin over Twisted's ``IMAP4Server.do_FETCH``/``spew_*``.  It replaces ``do_FETCH`` so the
mailbox can load what the items need (and set \\Seen) in a thread before anything is written,
replaces ``spew_body``/``spew_rfc822*`` so header sections are the stored bytes (Twisted
re-formats a header dict) and ``<start.length>`` is honoured (Twisted ignores it), and streams
bodies from the message file with ``LiteralProducer`` (a pull producer that closes the file).
Twisted's own ``spewMessage`` still writes each ``* n FETCH (...)`` line, except for the common
item sets (UID, FLAGS, RFC822.SIZE, INTERNALDATE, BODY[]/BODY.PEEK[]): those are answered in one
pass over the whole range by ``ResponseProducer`` (metadata from the store's snapshots, message
files read only for BODY[], written in large chunks as the transport asks for them), since
Twisted's per-message scheduler, Deferreds and buffers cost several times the work itself.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer
from twisted.logger import Logger
from twisted.mail import imap4
from zope.interface import implementer

from mailgw.imap.message import select_fields
from mailgw.imap.parsing import FetchPlan
from mailgw.imap.view import RECENT
from mailgw.store.interfaces import NoSuchMessage

_log = Logger()


@implementer(IPullProducer)
class LiteralProducer:
    """Writes ``{n}\\r\\n`` and then ``n`` octets of a binary file from ``start``; closes it."""

    CHUNK = 64 * 1024

    def __init__(self, fp, start: int, length: int) -> None:
        self._fp = fp
        self._remaining = length
        fp.seek(start)
        self._done: Deferred = Deferred()
        self._consumer = None

    def beginProducing(self, consumer) -> Deferred:
        """Start writing to ``consumer``; the Deferred fires when all octets are written."""
        self._consumer = consumer
        consumer.write(b"{%d}\r\n" % self._remaining)
        consumer.registerProducer(self, False)
        return self._done

    def resumeProducing(self) -> None:
        """Write the next chunk (called by the transport when it wants more)."""
        if self._consumer is None:
            return
        if self._remaining <= 0:
            self._finish()
            return
        data = self._fp.read(min(self.CHUNK, self._remaining))
        if not data:
            self._fail(OSError("message file ended early"))
            return
        self._remaining -= len(data)
        self._consumer.write(data)

    def stopProducing(self) -> None:
        """The connection went away."""
        self._fail(ConnectionError("connection lost while sending a literal"))

    def _finish(self) -> None:
        consumer, self._consumer = self._consumer, None
        consumer.unregisterProducer()
        self._fp.close()
        self._done.callback(None)

    def _fail(self, error: Exception) -> None:
        if self._consumer is None:
            return
        consumer, self._consumer = self._consumer, None
        consumer.unregisterProducer()
        self._fp.close()
        self._done.errback(error)


@implementer(IPullProducer)
class ResponseProducer:
    """Writes the byte strings of an iterator, one each time the transport asks for more;
    the Deferred fires when the iterator is exhausted (it is closed if the connection goes)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._done: Deferred = Deferred()
        self._consumer = None

    def beginProducing(self, consumer) -> Deferred:
        """Start writing to ``consumer``."""
        self._consumer = consumer
        consumer.registerProducer(self, False)
        return self._done

    def resumeProducing(self) -> None:
        """Write the next piece; finish when there is none left."""
        consumer = self._consumer
        if consumer is None:
            return
        try:
            piece = next(self._pieces, None)
        except Exception as error:
            self._stop(error)
            return
        if piece is None:
            self._stop(None)
        else:
            consumer.write(piece)

    def stopProducing(self) -> None:
        """The connection went away."""
        self._stop(ConnectionError("connection lost while sending FETCH responses"))

    def _stop(self, error: Exception | None) -> None:
        if self._consumer is None:
            return
        consumer, self._consumer = self._consumer, None
        consumer.unregisterProducer()
        self._pieces.close()
        if error is None:
            self._done.callback(None)
        else:
            self._done.errback(error)


_METADATA = frozenset({"uid", "flags", "rfc822size", "internaldate"})
_MONTHS = (b"", *(m.encode() for m in "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()))
#: Responses are written in pieces of about this size; bodies above it are read in such pieces.
CHUNK = 256 * 1024


def fast_items(query: list) -> bool:
    """Can ``fetch_responses`` answer every item of ``query`` (metadata and BODY[])?"""
    for item in query:
        if item.type in _METADATA:
            continue
        if item.type == "body" and item.empty and not item.part and item.partialBegin is None:
            continue
        return False
    return True


def internal_date(timestamp: float) -> bytes:
    """INTERNALDATE's value for a POSIX timestamp, in UTC, as Twisted's spew_internaldate."""
    t = time.gmtime(timestamp)
    return b'"%02d-%s-%d %02d:%02d:%02d +0000"' % (
        t.tm_mday,
        _MONTHS[t.tm_mon],
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )


def _flags_item(flags: frozenset, recent: bool) -> bytes:
    names = sorted(flags)
    if recent:
        names.append(RECENT)
    return b"FLAGS (" + " ".join(names).encode("utf-8") + b")"


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


def fetch_responses(rows, query: list, uid: bool, folder) -> Iterator[bytes]:
    """The ``* n FETCH (...)`` responses for ``rows`` of ``(seq, IMessageInfo, \\Recent)`` of
    ``folder``, items in query order (UID last if ``uid`` and not asked for), joined into pieces
    of about ``CHUNK`` octets.  Message files are read only for BODY[]; a message whose file is
    gone by then is left out; one larger than ``CHUNK`` is read and written in pieces."""
    kinds = [(item.type, _label(item) if item.type == "body" else b"") for item in query]
    if uid and not any(kind == "uid" for kind, _ in kinds):
        kinds.append(("uid", b""))
    needs_file = any(kind == "body" for kind, _ in kinds)
    folder_path = str(folder.path)
    flag_items: dict[tuple, bytes] = {}
    out: list[bytes] = []
    size = 0
    for seq, info, recent in rows:
        body = fp = None
        if needs_file:
            body = read_as_listed(folder_path, info) if info.size <= CHUNK else None
            if body is None:
                try:
                    fp = folder.open_message(info.uid)
                except NoSuchMessage:
                    continue
                if fp.seek(0, io.SEEK_END) <= CHUNK:
                    fp.seek(0)
                    body = fp.read()
                    fp.close()
                    fp = None
        try:
            line = [b"* %d FETCH (" % seq]
            for kind, label in kinds:
                if len(line) > 1:
                    line.append(b" ")
                if kind == "uid":
                    line.append(b"UID %d" % info.uid)
                elif kind == "flags":
                    key = (info.flags, recent)
                    item = flag_items.get(key)
                    if item is None:
                        item = flag_items[key] = _flags_item(*key)
                    line.append(item)
                elif kind == "rfc822size":
                    line.append(b"RFC822.SIZE %d" % info.size)
                elif kind == "internaldate":
                    line.append(b"INTERNALDATE " + internal_date(info.internal_date))
                elif body is not None:
                    line.append(label + b" {%d}\r\n" % len(body))
                    line.append(body)
                else:
                    length = fp.seek(0, io.SEEK_END)
                    fp.seek(0)
                    line.append(label + b" {%d}\r\n" % length)
                    out.extend(line)
                    yield b"".join(out)
                    out, size, line = [], 0, []
                    yield from _read_pieces(fp, length)
        finally:
            if fp is not None:
                fp.close()
        line.append(b")\r\n")
        out.extend(line)
        size += sum(map(len, line)) if needs_file else 64
        if size >= CHUNK:
            yield b"".join(out)
            out, size = [], 0
    if out:
        yield b"".join(out)


def _read_pieces(fp, length: int) -> Iterator[bytes]:
    remaining = length
    while remaining > 0:
        data = fp.read(min(CHUNK, remaining))
        if not data:
            raise OSError("message file ended early")
        remaining -= len(data)
        yield data


def _file_size(fp) -> int:
    position = fp.tell()
    size = fp.seek(0, io.SEEK_END)
    fp.seek(position)
    return size


def _window(size: int, part) -> tuple[int, int]:
    """(start, length) of the octets a possibly partial body section asks for."""
    if part.partialBegin is None:
        return 0, size
    start = min(part.partialBegin, size)
    return start, max(0, min(part.partialLength, size - start))


def _label(part) -> bytes:
    """The response's name for a body section: BODY[...] and, if partial, <start>."""
    section = part.getBytes()
    if part.partialBegin is not None:
        section = section[: section.rindex(b"<")] + b"<%d>" % part.partialBegin
    return section


class FetchCommands:
    """FETCH and UID FETCH for an ``IMAP4Server`` subclass with a SessionMailbox selected."""

    def do_FETCH(self, tag, messages, query, uid=0):
        """Resolve and load the messages in a thread, then stream the responses in order."""
        if self._out_of_range(tag, messages, uid):
            return
        plan = FetchPlan.of(query)
        if plan.sets_seen and not plan.has_flags and self.mbox.isWriteable():
            query = [*query, imap4._FetchParser.Flags()]
        if fast_items(query):
            # Nothing to parse beforehand: the responses are built as they are written.
            d = self.mbox.fetch_rows(messages, uid, plan)
            spew = self._spew_fast
        else:
            d = self.mbox.fetch_for(messages, uid, plan)
            spew = self._spew_all
        d.addCallbacks(spew, self._fetch_failed, (tag, query, uid), None, (tag,))

    select_FETCH = (do_FETCH, imap4.IMAP4Server.arg_seqset, imap4.IMAP4Server.arg_fetchatt)

    def arg_fetchatt(self, line):
        """fetch-att, with Twisted's parser errors turned into BAD (not "server error")."""
        try:
            return imap4.IMAP4Server.arg_fetchatt(self, line)
        except imap4.IllegalClientResponse:
            raise
        except Exception as e:
            raise imap4.IllegalClientResponse(f"Invalid fetch attribute: {e}") from None

    def _fetch_failed(self, failure, tag):
        _log.failure("FETCH could not load messages", failure)
        self.sendNegativeResponse(tag, b"[SERVERBUG] FETCH failed")

    def _spew_all(self, results, tag, query, uid):
        pending = iter(results)

        def next_message(_=None):
            for seq, msg in pending:
                d = self.spewMessage(seq, msg, query, uid)
                d.addCallback(next_message).addErrback(self._spew_failed)
                return
            self.sendPositiveResponse(tag, b"FETCH completed")

        next_message()

    def _spew_fast(self, rows, tag, query, uid):
        pieces = fetch_responses(rows, query, uid, self.mbox.folder)
        producer = ResponseProducer(pieces)
        d = producer.beginProducing(self.transport)
        d.addCallback(lambda _: self.sendPositiveResponse(tag, b"FETCH completed"))
        d.addErrback(self._spew_failed)

    def _spew_failed(self, failure):
        # Part of a response is already on the wire: the only safe way out is to hang up.
        _log.failure("FETCH response failed part-way", failure)
        self.transport.loseConnection()

    def _send_bytes(self, label: bytes, data: bytes, part, _w) -> None:
        start, length = _window(len(data), part)
        _w(label + b" " + imap4._literal(data[start : start + length]))

    def _send_file(self, label: bytes, fp, offset: int, part, _w, _f) -> Deferred:
        start, length = _window(_file_size(fp) - offset, part)
        _w(label + b" ")
        _f()
        return LiteralProducer(fp, offset + start, length).beginProducing(self.transport)

    def spew_body(self, part, id, msg, _w=None, _f=None):
        """BODY[section]<partial> from the stored bytes; BODY alone is the structure."""
        target = msg
        try:
            for number in part.part:
                if target.isMultipart():
                    target = target.getSubPart(number)
                elif number > 0:
                    raise IndexError(number)
        except (IndexError, TypeError):
            _w(_label(part) + b" NIL")
            return None
        label = _label(part)
        if part.header:
            header = target.header_block()
            if part.header.fields:
                header = select_fields(header, part.header.fields, part.header.negate)
            return self._send_bytes(label, header, part, _w)
        if part.mime:
            return self._send_bytes(label, target.header_block(), part, _w)
        if part.text or (part.empty and part.part):
            if target is msg:
                fp = msg.open()
                return self._send_file(label, fp, len(msg.header_block()), part, _w, _f)
            return self._send_file(label, target.getBodyFile(), 0, part, _w, _f)
        if part.empty:
            return self._send_file(label, msg.open(), 0, part, _w, _f)
        _w(b"BODY " + imap4.collapseNestedLists([msg.body_structure(False)]))
        return None

    def spew_bodystructure(self, id, msg, _w=None, _f=None):
        """BODYSTRUCTURE, computed when the message was loaded."""
        _w(b"BODYSTRUCTURE " + imap4.collapseNestedLists([msg.body_structure(True)]))

    def spew_rfc822header(self, id, msg, _w=None, _f=None):
        """RFC822.HEADER: the stored header block."""
        _w(b"RFC822.HEADER " + imap4._literal(msg.header_block()))

    def spew_rfc822text(self, id, msg, _w=None, _f=None):
        """RFC822.TEXT: the body, streamed."""
        offset = len(msg.header_block())
        return self._send_file(b"RFC822.TEXT", msg.open(), offset, _WHOLE, _w, _f)

    def spew_rfc822(self, id, msg, _w=None, _f=None):
        """RFC822: the whole message, streamed."""
        return self._send_file(b"RFC822", msg.open(), 0, _WHOLE, _w, _f)


class _Whole:
    partialBegin = None


_WHOLE = _Whole()
