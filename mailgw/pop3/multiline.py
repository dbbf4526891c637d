"""Multi-line POP3 responses: byte-stuffing a streamed message and cutting it short for TOP.

Replaces ``twisted.mail.pop3.POP3.transformChunk`` and ``_HeadersPlusNLines``.  Twisted's
transform works on each 16 KiB chunk alone: a ``.`` opening the first line of a chunk is not
stuffed, and it turns every CRLF of a stored message into CR CR LF.  Its TOP reader misses a
header/body separator that straddles two reads.  ``DotStuffer`` keeps its line-start state across
chunks of a message stored with CRLF line ends; ``TopReader`` reads whole lines.  Both serve
``twisted.protocols.basic.FileSender``, which streams the file to the transport as a producer.
Pure: they read only the open file they are given.
"""

from __future__ import annotations

import re
from typing import BinaryIO

#: The line that ends every multi-line response.
TERMINATOR = b".\r\n"

#: A dot opening a line that is not the chunk's first.  ``re.sub`` with it is several times
#: faster than ``bytes.replace(b"\n.", ...)``, which is slow on text with many dots.
_LINE_DOT = re.compile(rb"\n\.")


class DotStuffer:
    """Byte-stuffs the chunks of one message (RFC 1939 section 3) and ends the response."""

    def __init__(self) -> None:
        self._at_line_start = True
        self._last = b""

    def transform(self, chunk: bytes) -> bytes:
        """Return ``chunk`` with a ``.`` added before every ``.`` that opens a line."""
        if not chunk:
            return chunk
        stuffed = _LINE_DOT.sub(b"\n..", chunk)
        if self._at_line_start and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        self._at_line_start = chunk.endswith(b"\n")
        self._last = chunk[-2:] if len(chunk) > 1 else self._last[-1:] + chunk
        return stuffed

    def terminator(self) -> bytes:
        """Return what ends the response: a CRLF first when the message did not end with one."""
        if self._last and self._last != b"\r\n":
            return b"\r\n" + TERMINATOR
        return TERMINATOR


class TopReader:
    """A file-like view of a message's header, blank line, and first ``count`` body lines."""

    def __init__(self, fp: BinaryIO, count: int) -> None:
        self._fp = fp
        self._left = count
        self._in_header = True
        self._at_line_start = True
        self._done = False

    def read(self, size: int = -1) -> bytes:
        """Return about ``size`` more bytes of the view (whole lines where possible), b"" at end."""
        parts: list[bytes] = []
        total = 0
        budget = size if size > 0 else 1 << 16
        while total < budget and not self._done:
            if not self._in_header and self._at_line_start and self._left <= 0:
                self._done = True
                break
            line = self._fp.readline(max(budget - total, 2))
            if not line:
                self._done = True
                break
            starts_line = self._at_line_start
            self._at_line_start = line.endswith(b"\n")
            parts.append(line)
            total += len(line)
            if self._in_header:
                if starts_line and line in (b"\r\n", b"\n"):
                    self._in_header = False
            elif self._at_line_start:
                self._left -= 1
        return b"".join(parts)

    def close(self) -> None:
        """Close the underlying file."""
        self._fp.close()
