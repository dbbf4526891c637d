"""COMPRESS=DEFLATE (RFC 4978) over real sockets: a raw client that talks raw deflate both ways
after the OK, in plaintext and inside TLS; corrupt streams and deflate bombs; mbsync."""

from __future__ import annotations

import re
import resource
import socket
import ssl
import threading
import time
import zlib

import pytest
from conftest import LiveServer, make_config
from test_imap_clients import MESSAGES, Mbsync, server_state, start_server
from test_imap_rfc3501 import normalise
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailgw.imap import compress, make_factory
from mailgw.imap import session as session_module
from mailgw.imap.wire import commands as c

ALICE = "alice@example.test"
PASSWORD = "secret"
#: A body of about 10 KB, different for each message.
BODY = "".join(f"line {i:04d} of a ten kilobyte body, message {{n}}\r\n" for i in range(220))


@pytest.fixture
def failures():
    """Every failure (traceback) logged while the test runs."""
    seen: list[dict] = []

    def observe(event):
        if "log_failure" in event:
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def message(n: int) -> bytes:
    """Message ``n``: a header and a 10 KB body of its own."""
    return (
        f"From: bob@elsewhere.test\r\nTo: {ALICE}\r\nSubject: message {n}\r\n"
        f"Message-ID: <{n}@elsewhere.test>\r\n\r\n" + BODY.replace("{n}", str(n))
    ).encode()


@pytest.fixture
def imap(server):
    """Alice, an IMAP listener and an imaps one (implicit TLS) on one store: the server."""
    server.add_user(ALICE, PASSWORD)
    server.port = server.listen(make_factory)
    server.tls_port = server.listen(
        lambda ctx: TLSMemoryBIOFactory(ctx.tls, False, make_factory(ctx))
    )
    return server


class Client:
    """A raw IMAP client on a socket; after ``compress()`` both directions are raw deflate."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inflate: zlib._Decompress | None = None
        self.deflate: zlib._Compress | None = None
        self.buffer = b""
        self.tags = 0
        self.received = 0
        self.greeting = self.read_line()

    def send(self, data: bytes) -> None:
        """Send ``data`` (compressed and flushed once compression is on)."""
        if self.deflate is not None:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        self.received += len(chunk)
        if self.inflate is not None:
            chunk = self.inflate.decompress(chunk)
        self.buffer += chunk
        return bool(chunk) or self.inflate is not None and bool(self.inflate.unconsumed_tail)

    def read_line(self) -> bytes:
        """The next line, with its CRLF (b"" once the server has closed)."""
        while b"\r\n" not in self.buffer:
            if not self._fill():
                line, self.buffer = self.buffer, b""
                return line
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def read_until(self, tag: bytes) -> bytes:
        """Everything up to and with the line starting with ``tag``, literals read whole."""
        out = b""
        while True:
            line = self.read_line()
            out += line
            if not line or line.startswith(tag + b" "):
                return out
            literal = re.search(rb"\{(\d+)\}\r\n$", line)
            if literal:
                size = int(literal.group(1))
                while len(self.buffer) < size:
                    if not self._fill():
                        return out
                out, self.buffer = out + self.buffer[:size], self.buffer[size:]

    def command(self, text: bytes) -> bytes:
        """Send a tagged command; return the responses up to and with its tagged reply."""
        self.tags += 1
        tag = b"t%d" % self.tags
        self.send(tag + b" " + text + b"\r\n")
        return self.read_until(tag)

    def compress(self) -> bytes:
        """COMPRESS DEFLATE; compression starts both ways right after an OK."""
        reply = self.command(b"COMPRESS DEFLATE")
        if reply.rsplit(b"\r\n", 2)[-2].split(b" ")[1] == b"OK":
            self.inflate = zlib.decompressobj(-15)
            self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
            early, self.buffer = self.buffer, b""
            self.buffer = self.inflate.decompress(early)
        return reply

    def login(self) -> None:
        """LOGIN as Alice."""
        assert b" OK " in self.command(f"LOGIN {ALICE} {PASSWORD}".encode())


def connect(port: int, tls: bool = False) -> Client:
    """A raw client on ``port`` (inside TLS when ``tls``), greeting read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    return Client(sock)


def compressed_session(port: int, tls: bool = False) -> Client:
    """A logged-in client with COMPRESS DEFLATE on."""
    client = connect(port, tls)
    client.login()
    assert b"OK DEFLATE active" in client.compress()
    return client


def fetched_bodies(reply: bytes) -> dict[int, bytes]:
    """The BODY[] literals of FETCH responses, by sequence number."""
    out = {}
    pos = 0
    pattern = re.compile(rb"\* (\d+) FETCH \(.*?BODY\[\] \{(\d+)\}\r\n")
    while match := pattern.search(reply, pos):
        start = match.end()
        out[int(match.group(1))] = reply[start : start + int(match.group(2))]
        pos = start + int(match.group(2))
    return out


def test_capability_announced_in_the_greeting_and_after_login(imap):
    """COMPRESS=DEFLATE is in the greeting's list (mbsync takes its list from there) and in
    CAPABILITY after LOGIN."""
    client = connect(imap.port)
    assert b" COMPRESS=DEFLATE" in client.greeting
    client.login()
    assert b" COMPRESS=DEFLATE" in client.command(b"CAPABILITY")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "imaps"])
def test_select_and_fetch_bodies_byte_exact_through_compression(imap, tls):
    """300 bodies of 10 KB fetched in one FETCH over COMPRESS decompress to the stored bytes,
    with far fewer octets on the wire than the bodies hold; inside TLS too."""
    inbox = imap.store.folder(ALICE)
    messages = [message(n) for n in range(1, 301)]
    for data in messages:
        inbox.append(data)
    client = compressed_session(imap.tls_port if tls else imap.port, tls)
    # The session still sees TLS through compression: no STARTTLS offered inside it.
    assert (b" STARTTLS" in client.command(b"CAPABILITY")) is not tls
    assert b"* 300 EXISTS" in client.command(b"SELECT INBOX")
    before = client.received
    reply = client.command(b"FETCH 1:300 (BODY.PEEK[])")
    assert reply.endswith(b" OK FETCH completed\r\n")
    assert fetched_bodies(reply) == dict(enumerate(messages, 1))
    assert client.received - before < sum(map(len, messages)) / 5
    assert client.command(b"LOGOUT").startswith(b"* BYE")


def test_append_literal_through_compression(imap):
    """APPEND with a synchronising literal: the + and the OK come compressed, the message is
    stored as sent."""
    client = compressed_session(imap.port)
    data = message(7) * 30  # 300 KB: several of the server's inflate steps
    client.send(b"a APPEND INBOX {%d}\r\n" % len(data))
    assert client.read_line().startswith(b"+ ")
    client.send(data + b"\r\n")
    assert b"a OK [APPENDUID" in client.read_until(b"a")
    reply = client.command(b"SELECT INBOX")
    assert b"* 1 EXISTS" in reply
    assert fetched_bodies(client.command(b"FETCH 1 BODY.PEEK[]")) == {1: data}


def test_idle_through_compression(imap):
    """IDLE's continuation, a delivery's EXISTS and DONE's OK all pass through compression."""
    inbox = imap.store.folder(ALICE)
    client = compressed_session(imap.port)
    client.command(b"SELECT INBOX")
    client.send(b"i IDLE\r\n")
    assert client.read_line().startswith(b"+ ")
    inbox.append(message(1))
    assert client.read_line() == b"* 1 EXISTS\r\n"
    client.send(b"DONE\r\n")
    assert b"i OK" in client.read_until(b"i")


def test_pipelined_commands_in_one_compressed_burst_all_answered(imap):
    """5,000 pipelined FETCHes (200 KB, several of the server's inflate steps, each FETCH
    waiting for a disk read while the rest stays compressed) in one small compressed burst:
    all answered, in order."""
    imap.store.folder(ALICE).append(message(1))
    client = compressed_session(imap.port)
    client.command(b"SELECT INBOX")
    count = 5000
    client.send(b"".join(b"f%d FETCH 1 (BODY.PEEK[HEADER])\r\n" % i for i in range(count)))
    for i in range(count):
        reply = client.read_until(b"f%d" % i)
        assert reply.startswith(b"* 1 FETCH (BODY[HEADER] {")
        assert reply.endswith(b"f%d OK FETCH completed\r\n" % i)


def test_compress_twice_is_no_compressionactive(imap):
    """A second COMPRESS is NO [COMPRESSIONACTIVE]; compression goes on."""
    client = compressed_session(imap.port)
    assert b" NO [COMPRESSIONACTIVE]" in client.command(b"COMPRESS DEFLATE")
    assert b" OK " in client.command(b"NOOP")


def test_compress_before_login_and_unknown_mechanism_are_bad(imap):
    """COMPRESS before LOGIN is BAD (valid once authenticated), as is another mechanism; the
    session stays uncompressed."""
    client = connect(imap.port)
    assert b" BAD " in client.compress()
    assert client.inflate is None
    client.login()
    reply = client.command(b"COMPRESS LZW")
    assert b" BAD " in reply and b"LZW" in reply
    assert b" OK " in client.command(b"NOOP")


def test_commands_pipelined_after_compress_are_discarded(imap):
    """Plain bytes the client sent behind COMPRESS in one segment are not run as commands."""
    client = connect(imap.port)
    client.login()
    client.send(b"z COMPRESS DEFLATE\r\nq LOGOUT\r\n")
    assert client.read_line() == b"z OK DEFLATE active\r\n"
    client.inflate = zlib.decompressobj(-15)
    client.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    assert client.command(b"NOOP") == b"t2 OK NOOP completed\r\n"


def test_corrupt_stream_is_bye_and_close_and_server_goes_on(imap, failures):
    """Garbage instead of deflate: a compressed BYE, the connection closed, no traceback
    logged; another client is served."""
    client = compressed_session(imap.port)
    client.sock.sendall(b"\xff\xfe not deflate at all\r\n")
    assert client.read_line() == b"* BYE Corrupt compressed data\r\n"
    assert client.read_line() == b""
    other = compressed_session(imap.port)
    assert b" OK " in other.command(b"NOOP")
    assert failures == []


def test_data_after_the_clients_stream_ended_is_bye(imap, failures):
    """A command in the block that ends the client's stream is answered; anything sent after
    the end is BYE and close."""
    client = compressed_session(imap.port)
    client.sock.sendall(client.deflate.compress(b"n NOOP\r\n") + client.deflate.flush())
    assert client.read_line() == b"n OK NOOP completed\r\n"
    client.sock.sendall(zlib.compress(b"m NOOP\r\n"))
    assert client.read_line() == b"* BYE Corrupt compressed data\r\n"
    assert client.read_line() == b""
    assert failures == []


def test_deflate_bomb_is_refused_with_memory_bounded(imap, failures):
    """256 MB of one line, compressed to about 256 KB: answered BAD [TOOBIG] and BYE once the
    line limit is passed; the server decompresses little of it (its peak memory stays)."""
    client = compressed_session(imap.port)
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    line = b"x" * (1 << 20)
    data = b"".join(bomb.compress(line) for _ in range(256)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    assert len(data) < 300_000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def send() -> None:
        try:
            client.sock.sendall(data)
        except OSError:
            pass  # the server hung up first

    sender = threading.Thread(target=send)
    sender.start()
    started = time.monotonic()
    assert client.read_line() == b"* BAD [TOOBIG] Command line too long\r\n"
    assert client.read_line() == b"* BYE Closing connection\r\n"
    sender.join(10)
    assert time.monotonic() - started < 5
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown < 32 * 1024  # KB: nowhere near the 256 MB the bomb holds
    assert b" OK " in compressed_session(imap.port).command(b"NOOP")
    assert failures == []


@pytest.fixture
def mbsync_server(tmp_path, monkeypatch):
    """test_imap_clients' server (passwords only over TLS), recording COMPRESS's replies."""
    replies: list[bytes] = []

    async def recorded(session, command):
        reply = await compress.compress(session, command)
        replies.append(reply.status)
        return reply

    for state in ("auth", "selected"):
        monkeypatch.setitem(session_module.TABLES[state], c.Compress, recorded)
    srv = start_server(tmp_path / "data", allow_plaintext=False)
    srv.compress_replies = replies
    yield srv
    srv.close()


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "imaps"])
def test_mbsync_syncs_with_compression_on(mbsync_server, tmp_path, implicit_tls):
    """mbsync (isync 1.4.4 asks for COMPRESS=DEFLATE when announced) syncs every message
    through compression, inside TLS."""
    mbsync = Mbsync(mbsync_server, tmp_path, implicit_tls=implicit_tls)
    mbsync.run()
    assert mbsync_server.compress_replies and set(mbsync_server.compress_replies) == {b"OK"}
    files = mbsync.files()
    state = server_state(mbsync_server)
    assert len(files) == len(MESSAGES) == len(state)


#: RFC 4978 section 3's greeting, as both its examples have it.
RFC4978_GREETING = b"* OK [CAPABILITY IMAP4REV1 STARTTLS COMPRESS=DEFLATE]\r\n"


def starttls_login(srv: LiveServer) -> Client:
    """The first lines of RFC 4978 section 3's example: the greeting, ``a starttls`` (then
    TLS), ``b login`` (Alice for the example's arnt), each answer compared after
    ``normalise`` with the RFC's line; the client, in TLS and logged in."""
    srv.add_user(ALICE, PASSWORD)
    client = connect(srv.listen(make_factory))
    assert normalise(client.greeting) == normalise(RFC4978_GREETING)
    assert b" COMPRESS=DEFLATE " in client.greeting and b" STARTTLS " in client.greeting
    client.send(b"a starttls\r\n")
    assert normalise(client.read_until(b"a")) == normalise(b"a OK TLS active\r\n")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client.sock = context.wrap_socket(client.sock)
    client.send(f"b login {ALICE} {PASSWORD}\r\n".encode())
    assert normalise(client.read_until(b"b")) == normalise(b"b OK Logged in as arnt\r\n")
    return client


def test_rfc4978_example_starttls_login_compress(tmp_path):
    """RFC 4978 section 3's first example, its lines compared after ``normalise``
    (tests/test_imap_rfc3501.py; the capability lists are each server's own): STARTTLS, LOGIN
    inside TLS, then ``c compress deflate`` in lower case, and from then on everything is
    compressed before being encrypted.  The RFC answers ``d OK DEFLATE active`` to ``c``, a
    slip: mailgw answers with the command's tag, ``c OK DEFLATE active``, the RFC's text."""
    srv = LiveServer(make_config(tmp_path / "strict", allow_plaintext=False))
    try:
        client = starttls_login(srv)
        client.send(b"c compress deflate\r\n")
        assert client.read_until(b"c") == b"c OK DEFLATE active\r\n"
        client.inflate = zlib.decompressobj(-15)
        client.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        client.send(b"e noop\r\n")
        assert client.read_until(b"e") == b"e OK NOOP completed\r\n"
    finally:
        srv.close()


def test_rfc4978_example_refusing_to_compress_twice(tmp_path):
    """RFC 4978 section 3's second example: ``c compress deflate`` when the same mechanism is
    active already is ``c NO [COMPRESSIONACTIVE]`` ("it MUST send COMPRESSIONACTIVE").  The
    RFC's server compresses in TLS; mailgw's TLS does not, so here DEFLATE is already on from
    an earlier COMPRESS (the ``[...]`` of the example), and compression goes on."""
    srv = LiveServer(make_config(tmp_path / "strict", allow_plaintext=False))
    try:
        client = starttls_login(srv)
        client.send(b"x compress deflate\r\n")
        assert client.read_until(b"x") == b"x OK DEFLATE active\r\n"
        client.inflate = zlib.decompressobj(-15)
        client.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        client.send(b"c compress deflate\r\n")
        assert normalise(client.read_until(b"c")) == normalise(
            b"c NO [COMPRESSIONACTIVE] DEFLATE active via TLS\r\n"
        )
        client.send(b"e noop\r\n")
        assert client.read_until(b"e") == b"e OK NOOP completed\r\n"
    finally:
        srv.close()
