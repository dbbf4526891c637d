"""FETCH for ``IMAP4Server``: implicit \\Seen, exact header sections, partial ranges, streaming.

A mixin over Twisted's ``IMAP4Server.do_FETCH``/``spew_*``.  It replaces ``do_FETCH`` so the
mailbox can load what the items need (and set \\Seen) in a thread before anything is written,
replaces ``spew_body``/``spew_rfc822*`` so header sections are the stored bytes (Twisted
re-formats a header dict) and ``<start.length>`` is honoured (Twisted ignores it), and streams
bodies from the message file with ``LiteralProducer`` (a pull producer that closes the file).
Twisted's own ``spewMessage`` still writes each ``* n FETCH (...)`` line.
"""

from __future__ import annotations

import io

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer
from twisted.logger import Logger
from twisted.mail import imap4
from zope.interface import implementer

from mailgw.imap.message import select_fields
from mailgw.imap.parsing import FetchPlan

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
        d = self.mbox.fetch_for(messages, uid, plan)
        d.addCallbacks(self._spew_all, self._fetch_failed, (tag, query, uid), None, (tag,))

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
