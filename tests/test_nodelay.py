"""TCP_NODELAY on every connection of every protocol, plain and under implicit TLS.

Without it, Nagle's algorithm and the client's delayed ACKs hold small replies back (Twisted's
own POP3 server was 40 times slower for it).  The option is read back from the server's own
socket of a live connection.
"""

from __future__ import annotations

import socket
import ssl

import pytest
from conftest import in_reactor
from twisted.internet import reactor
from twisted.internet.tcp import Server
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailgw import imap, pop3, smtp

GREETINGS = {"smtp": b"220 ", "pop3": b"+OK", "imap": b"* OK"}
MODULES = {"smtp": smtp, "pop3": pop3, "imap": imap}


def _server_socket_option(client_port: int) -> int | None:
    """TCP_NODELAY of the server's socket whose peer is the client's ``client_port``."""
    for selectable in set(reactor.getReaders()) | set(reactor.getWriters()):
        if isinstance(selectable, Server) and selectable.getPeer().port == client_port:
            return selectable.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    return None


def _greeting(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "implicit-tls"])
@pytest.mark.parametrize("protocol", ["smtp", "pop3", "imap"])
def test_every_connection_has_tcp_nodelay(server, protocol, tls):
    """The server's end of an SMTP, POP3 or IMAP connection, with or without TLS, has no Nagle."""
    make_factory = MODULES[protocol].make_factory
    if tls:
        port = server.listen(lambda ctx: TLSMemoryBIOFactory(ctx.tls, False, make_factory(ctx)))
    else:
        port = server.listen(make_factory)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    client_port = raw.getsockname()[1]
    sock = raw
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(raw, server_hostname="mx.example.test")
    with sock:
        assert _greeting(sock).startswith(GREETINGS[protocol])
        assert in_reactor(_server_socket_option, client_port) == 1
