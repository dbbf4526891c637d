"""COMPRESS=DEFLATE (RFC 4978): after ``tag OK DEFLATE active`` both directions are raw deflate.

The handler answers the command; once its OK has gone out uncompressed, a ``Deflate`` becomes
the session's transport and the first stage of its input (``IMAPSession.start_compression``).
COMPRESS=DEFLATE is announced in every state, the greeting's list too (mbsync looks for it
there when the login's OK carries no list), though the command is valid only once logged in.

- Output: each write is fed to the compressor at once (what zlib gives back is written on, so
  the transport's buffer, its producers and FETCH's wait for it to drain still see the real
  octets), and the stream is flushed (``Z_SYNC_FLUSH``) once per reactor turn: the responses
  of one turn -- a FETCH batch, a command's untagged lines and its tagged reply -- go out as one
  compressed piece, and nothing waits for a later write.  ``loseConnection`` flushes first.
- Input: decompressed ``INFLATE_STEP`` octets at a time, each handed to the session's framing
  (``IMAPSession.received``) only while it reads: once it pauses (a command runs) the rest
  waits compressed, and the connection stops reading until it is used up.  So decompressed
  input is held exactly as uncompressed input is, within the line and literal limits: a deflate
  bomb meets the same ``[TOOBIG]`` answers.  A corrupt stream, or data after the client ended
  its stream, is answered ``* BYE`` (compressed, as everything after the OK is) and the
  connection closed.
- Inside TLS (STARTTLS or implicit): the ``Deflate`` wraps whatever transport the session has,
  so data is compressed before it is encrypted, the order RFC 4978 section 3 requires.
"""

from __future__ import annotations

import zlib

from twisted.internet import reactor
from zope.interface import directlyProvides, providedBy

from mailgw.imap.reply import Reply, bad, no, ok
from mailgw.imap.wire import commands as c
from mailgw.imap.wire import responses as r

#: zlib's compression level.  Dovecot's default (imap_compress_deflate_level) is 6.  Measured on
#: 10 KB pieces of ordinary text, level 6 compresses at 29 MB/s (4.2:1) and level 1 at 111 MB/s
#: (3.3:1); base64 attachments at 33 and 37 MB/s (1.3:1 both).  The compressor runs on the
#: reactor, which every session shares, so level 1: a quarter of the CPU per message for 28%
#: more octets.  On bench/imap.py's 1,000 bodies (one client, batches of 500; text that
#: compresses 75:1), over COMPRESS, medians of two runs on a shared machine: mailgw at level 1
#: 169 and 167 MB/s, at 6 136 and 114, Dovecot (at its 6) 122 and 73.
LEVEL = 1
#: zlib's memLevel for the compressor: 6 holds it to 163 KB instead of 8's 257 KB (plus the
#: inflater's window, about 40 KB), for output 2% larger on the same text at the same speed;
#: the 32 KB window stays (a smaller one costs 12% and more in size).
MEM_LEVEL = 6
#: Most octets of decompressed input handed to the session at once (a TCP read's size).
INFLATE_STEP = 64 * 1024


class Deflate:
    """The transport of a session with COMPRESS active: compresses what the session writes,
    decompresses what the client sends, and passes everything else to the transport below
    (it provides the same interfaces, so TLS is still seen)."""

    def __init__(self, session, level: int = LEVEL) -> None:
        self._session = session
        self._transport = session.transport
        self._deflater = zlib.compressobj(level, zlib.DEFLATED, -15, MEM_LEVEL)
        self._inflater = zlib.decompressobj(-15)
        self._pending = b""
        self._paused = False
        self._flush_call = None
        self._resume_call = None
        directlyProvides(self, providedBy(self._transport))

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    # -- output -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Compress ``data``; it is flushed to the client at the end of this reactor turn."""
        out = self._deflater.compress(data)
        if out:
            self._transport.write(out)
        if self._flush_call is None:
            self._flush_call = reactor.callLater(0, self._flush)

    def writeSequence(self, data) -> None:
        """Compress each piece of ``data`` (as ``write``)."""
        for piece in data:
            self.write(piece)

    def _flush(self) -> None:
        self._flush_call = None
        self._transport.write(self._deflater.flush(zlib.Z_SYNC_FLUSH))

    def loseConnection(self) -> None:
        """Flush what was written, then close once it is sent."""
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush()
        self._transport.loseConnection()

    def registerProducer(self, producer, streaming: bool) -> None:
        """Register ``producer`` on the transport below: it is paused while the compressed
        octets fill its buffer."""
        self._transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        """Unregister the producer from the transport below."""
        self._transport.unregisterProducer()

    # -- input ------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Compressed octets from the client: decompress them into the session (module doc)."""
        self._pending = self._pending + data if self._pending else data
        self._inflate()

    def _inflate(self) -> None:
        session = self._session
        while self._pending and not self._paused and not session.closing:
            try:
                out = self._inflater.decompress(self._pending, INFLATE_STEP)
            except zlib.error:
                self._corrupt("corrupt deflate stream")
                return
            self._pending = self._inflater.unconsumed_tail
            if out:
                session.received(out)
            if self._inflater.unused_data:
                self._corrupt("data after the end of the deflate stream")
                return

    def _corrupt(self, why: str) -> None:
        self._pending = b""
        self._session.tracked.closing(why)
        self._session.send(r.status_line(None, b"BYE", b"Corrupt compressed data"))
        self._session.close_connection()

    def pauseProducing(self) -> None:
        """The session reads nothing for now: keep the rest compressed, stop reading."""
        self._paused = True
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        """The session reads again: first what is still compressed here, then the network."""
        self._paused = False
        if not self._pending:
            self._transport.resumeProducing()
        elif self._resume_call is None:
            self._resume_call = reactor.callLater(0, self._resume)

    def _resume(self) -> None:
        self._resume_call = None
        if self._paused:
            return
        self._inflate()
        if not self._paused and not self._pending:
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        """Stop reading for good (the transport below's)."""
        self._transport.stopProducing()


def start(session) -> Deflate:
    """Turn compression on for ``session`` (once its OK to COMPRESS is written)."""
    deflate = Deflate(session)
    session.start_compression(deflate)
    return deflate


async def compress(session, command: c.Compress) -> Reply:
    """COMPRESS (RFC 4978), valid once logged in: DEFLATE is started after the OK.  Asked again,
    ``NO [COMPRESSIONACTIVE]`` (Dovecot's answer; RFC 4978 defines the code for compression
    already on); another mechanism is BAD (the RFC's "unknown argument"; Dovecot says NO)."""
    if isinstance(session.transport, Deflate):
        return no(b"[COMPRESSIONACTIVE] DEFLATE is already active")
    if command.mechanism != "DEFLATE":
        return bad(
            b"COMPRESS " + command.mechanism.encode("ascii", "replace") + b" is not supported"
        )
    return ok(b"DEFLATE active", then=lambda: start(session))
