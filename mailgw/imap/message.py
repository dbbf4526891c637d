"""Stored messages as Twisted's ``IMessage``/``IMessageFile``, parsed lazily with ``email``.

Replaces the in-memory ``MessagePart`` objects of Twisted's examples with objects over the store:
the message file is opened only when a body is streamed; the header block (and, when a FETCH
asks for the MIME structure, the whole message) is parsed with the stdlib ``email`` package
(``BytesParser``, policy ``compat32``) by ``load()``, which the mailbox runs in a thread.  Header
sections are served from the stored bytes, not re-formatted, so ``BODY[HEADER]`` is exact.
"""

from __future__ import annotations

import io
from email import policy
from email.message import Message as EmailMessage
from email.parser import BytesParser

from twisted.mail import imap4
from zope.interface import implementer

from mailgw.imap.parsing import internal_date_header

_CRLF_POLICY = policy.compat32.clone(linesep="\r\n")


def read_header_block(fp) -> bytes:
    """Read a message's header block, up to and including the empty line that ends it."""
    chunks = []
    for line in fp:
        chunks.append(line)
        if line in (b"\r\n", b"\n"):
            break
    return b"".join(chunks)


def select_fields(header_block: bytes, names, negate: bool) -> bytes:
    """Return the header fields of ``header_block`` named (or, if ``negate``, not named) in
    ``names`` (bytes or str, any case), in stored order, followed by the ending empty line."""
    wanted = {(n.decode("ascii", "replace") if isinstance(n, bytes) else n).lower() for n in names}
    kept = []
    keep = False
    for line in header_block.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        keep = (name in wanted) != negate
        if keep:
            kept.append(line)
    return b"".join(kept) + b"\r\n"


#: RFC 2045 5.2: a part without Content-Type is plain US-ASCII text.
DEFAULT_CONTENT_TYPE = "text/plain; charset=us-ascii"


def _headers_dict(message: EmailMessage, negate: bool, names) -> dict:
    wanted = {(n.decode("ascii", "replace") if isinstance(n, bytes) else n).lower() for n in names}
    result: dict[str, str] = {}
    for key, value in message.items():
        lower = key.lower()
        if (lower in wanted) != negate and lower not in result:
            result[lower] = str(value)
    if not negate and "content-type" in wanted and "content-type" not in result:
        result["content-type"] = DEFAULT_CONTENT_TYPE
    return result


@implementer(imap4.IMessagePart)
class MessagePart:
    """One MIME part of a parsed message (a sub-part, or the whole message for BODYSTRUCTURE)."""

    def __init__(self, part: EmailMessage) -> None:
        self._part = part
        data = part.as_bytes(policy=_CRLF_POLICY)
        end = data.find(b"\r\n\r\n")
        split = end + 4 if end >= 0 else len(data)
        self._header = data[:split]
        self._body = data[split:]

    def header_block(self) -> bytes:
        """The part's header block, ending with the empty line."""
        return self._header

    def getHeaders(self, negate: bool, *names) -> dict:
        """Header fields as {lower-case name: value} (first occurrence of each)."""
        return _headers_dict(self._part, negate, names)

    def getBodyFile(self):
        """The part's body, as stored (transfer-encoded)."""
        return io.BytesIO(self._body)

    def getSize(self) -> int:
        """Octets in the part's body."""
        return len(self._body)

    def isMultipart(self) -> bool:
        """Has this part sub-parts?"""
        return self._part.is_multipart()

    def getSubPart(self, part: int) -> MessagePart:
        """The ``part``-th (from 0) sub-part; IndexError if there is none."""
        if not self._part.is_multipart():
            raise TypeError("not a multipart")
        return MessagePart(self._part.get_payload(part))


@implementer(imap4.IMessage, imap4.IMessageFile)
class StoredMessage:
    """One message of a folder as a FETCH sees it: metadata from the store, content on demand."""

    def __init__(self, folder, info, flags: tuple) -> None:
        self._folder = folder
        self.info = info
        self._flags = flags
        self._header: bytes | None = None
        self._headers: EmailMessage | None = None
        self._parsed: MessagePart | None = None
        self._structure: dict = {}

    def load(self, headers: bool, structure: bool) -> None:
        """Read what a FETCH will need (blocking: call in a thread).

        Raise NoSuchMessage if the message is gone."""
        if structure:
            with self._folder.open_message(self.info.uid) as fp:
                parsed = BytesParser(policy=policy.compat32).parse(fp)
            self._parsed = MessagePart(parsed)
            self._structure = {
                extended: imap4.getBodyStructure(self._parsed, extended)
                for extended in (False, True)
            }
        if headers or structure:
            with self._folder.open_message(self.info.uid) as fp:
                self._header = read_header_block(fp)
            self._headers = BytesParser(policy=policy.compat32).parsebytes(
                self._header, headersonly=True
            )

    def _header_bytes(self) -> bytes:
        if self._header is None:
            self.load(headers=True, structure=False)
        return self._header

    def header_block(self) -> bytes:
        """The stored header block, byte for byte, ending with the empty line."""
        return self._header_bytes()

    def body_structure(self, extended: bool) -> list:
        """BODY (or, if ``extended``, BODYSTRUCTURE) as Twisted's nested lists."""
        if not self._structure:
            self.load(headers=True, structure=True)
        return self._structure[extended]

    # IMessage

    def getUID(self) -> int:
        """The message's UID."""
        return self.info.uid

    def getFlags(self) -> tuple:
        """The flags to report, \\Recent included when this session holds it."""
        return self._flags

    def getInternalDate(self) -> str:
        """The internal date as an RFC 2822 date."""
        return internal_date_header(self.info.internal_date)

    # IMessagePart

    def getHeaders(self, negate: bool, *names) -> dict:
        """Header fields as {lower-case name: value} (first occurrence of each)."""
        self._header_bytes()
        return _headers_dict(self._headers, negate, names)

    def getBodyFile(self):
        """The body (everything after the header block) as an open binary file."""
        offset = len(self._header_bytes())
        fp = self._folder.open_message(self.info.uid)
        fp.seek(offset)
        return fp

    def getSize(self) -> int:
        """The message's size in octets (CRLF line endings)."""
        return self.info.size

    def isMultipart(self) -> bool:
        """Is the message a MIME multipart?"""
        self._header_bytes()
        return self._headers.get_content_maintype() == "multipart"

    def getSubPart(self, part: int) -> MessagePart:
        """The ``part``-th (from 0) MIME part; IndexError if there is none."""
        if self._parsed is None:
            self.load(headers=True, structure=True)
        return self._parsed.getSubPart(part)

    # IMessageFile

    def open(self):
        """The whole stored message as an open binary file."""
        return self._folder.open_message(self.info.uid)
