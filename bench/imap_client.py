"""The benchmark's IMAP client: a raw socket, one command at a time, a literal-aware reader.

It parses responses only as far as needed to find literals and the tagged reply, so that the
client costs as little as possible and the same for every server.  ``COMPRESS DEFLATE`` (RFC
4978) is done with zlib's raw deflate on both directions, as a real client does.
"""

from __future__ import annotations

import re
import socket
import time
import zlib

from pop3 import PASSWORD, TIMEOUT

_LITERAL = re.compile(rb"\{(\d+)\}$")
_CAPABILITY = b"* CAPABILITY "


class IMAPError(Exception):
    """The server answered NO or BAD, or closed the connection."""


class Client:
    """A minimal blocking IMAP client over a raw loopback socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.tags = 0
        self.untagged: list[bytes] = []
        self._deflate: zlib._Compress | None = None
        self._inflate: zlib._Decompress | None = None
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        del self.buffer[: end + 2]

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise IMAPError("connection closed")
        if self._inflate is not None:
            chunk = self._inflate.decompress(chunk)
        self.buffer += chunk

    def _send(self, data: bytes) -> None:
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def command(self, text: str, keep: bool = False) -> tuple[int, int]:
        """Send a command, read up to its tagged OK; return (response lines, literal octets).

        A response with literals counts as one line (the part after its last literal).  With
        ``keep``, the untagged lines (those parts, literals left out) are kept in ``untagged``.
        Raise IMAPError on a tagged NO or BAD."""
        self.tags += 1
        tag = b"b%d" % self.tags
        self._send(tag + b" " + text.encode() + b"\r\n")
        self.untagged = []
        lines = octets = 0
        buffer = self.buffer
        start = 0
        while True:
            end = buffer.find(b"\r\n", start)
            if end < 0:
                del buffer[:start]
                start = 0
                self._fill()
                continue
            line = buffer[start:end]
            start = end + 2
            if line.endswith(b"}"):
                size = int(_LITERAL.search(line).group(1))
                while len(buffer) < start + size:
                    del buffer[:start]
                    start = 0
                    self._fill()
                start += size
                octets += size
                continue
            if line.startswith(tag + b" "):
                del buffer[:start]
                if not line.startswith(tag + b" OK"):
                    raise IMAPError(f"{text}: {line.decode(errors='replace')}")
                return lines, octets
            if keep:
                self.untagged.append(bytes(line))
            lines += 1

    def timed(self, text: str, keep: bool = False) -> tuple[float, int, int]:
        """(seconds, lines, literal octets) of one command."""
        started = time.perf_counter()
        lines, octets = self.command(text, keep)
        return time.perf_counter() - started, lines, octets

    def capabilities(self) -> set[str]:
        """What the server announces now (CAPABILITY), upper-cased."""
        self.command("CAPABILITY", keep=True)
        for line in self.untagged:
            if line.upper().startswith(_CAPABILITY):
                return set(line[len(_CAPABILITY) :].decode().upper().split())
        raise IMAPError("no CAPABILITY response")

    def compress(self) -> None:
        """``COMPRESS DEFLATE``: from its OK on, both directions are raw deflate streams."""
        self.command("COMPRESS DEFLATE")
        self._deflate = zlib.compressobj(wbits=-15)
        self._inflate = zlib.decompressobj(wbits=-15)
        early = bytes(self.buffer)  # compressed octets read together with the OK, if any
        self.buffer.clear()
        if early:
            self.buffer += self._inflate.decompress(early)

    def close(self) -> None:
        """LOGOUT if possible, then close."""
        try:
            self.command("LOGOUT")
        except (OSError, IMAPError):
            pass
        self.sock.close()


def session(port: int, user: str) -> Client:
    """A logged-in session."""
    client = Client(port)
    client.command(f'LOGIN "{user}" "{PASSWORD}"')
    return client
