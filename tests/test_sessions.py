"""Connection limits and session logging on the SMTP, POP3 and IMAP listeners, on real sockets.

The listeners here allow 3 connections at once, 2 from one client IP.  The clients bind to
other loopback addresses (127.0.0.2, 127.0.0.3) to be "other clients".
"""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LiveServer, make_config
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailgw import imap, pop3, sessions, smtp
from mailgw.context import Limits

ALICE = "alice@example.test"
PASSWORD = "pw-Sess10n-S3cret"


@dataclass(frozen=True)
class Kind:
    """What one protocol looks like on the wire."""

    name: str
    make_factory: object
    greeting: bytes
    busy: bytes
    quit: bytes


KINDS = [
    Kind(
        "smtp",
        smtp.make_factory,
        b"220 ",
        b"421 4.7.0 mx.example.test Too many connections, try again later\r\n",
        b"QUIT\r\n",
    ),
    Kind(
        "pop3",
        pop3.make_factory,
        b"+OK ",
        b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
        b"QUIT\r\n",
    ),
    Kind(
        "imap",
        imap.make_factory,
        b"* OK ",
        b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
        b"a LOGOUT\r\n",
    ),
]


@pytest.fixture(params=KINDS, ids=lambda kind: kind.name)
def kind(request) -> Kind:
    """Each protocol in turn."""
    return request.param


@pytest.fixture
def limited(tmp_path: Path):
    """A LiveServer allowing 3 connections per listener, 2 from one IP (on the MX listener
    too); alice exists."""
    limits = Limits(connections=3, connections_per_ip=2, smtp_connections_per_ip=2)
    srv = LiveServer(make_config(tmp_path / "d", limits=limits))
    srv.add_user(ALICE, PASSWORD)
    yield srv
    srv.close()


@pytest.fixture
def log_events():
    """Every event logged while the test runs (appended from the reactor thread)."""
    events: list[dict] = []
    lock = threading.Lock()

    def observe(event: dict) -> None:
        with lock:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A raw TCP connection to the listener from loopback address ``source``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_line(sock: socket.socket) -> bytes:
    """One line (with CRLF) from the server, or what came before EOF."""
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (fails on timeout: no silent hang)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def admitted(kind: Kind, port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connection that got the protocol's greeting."""
    sock = connect(port, source)
    line = read_line(sock)
    assert line.startswith(kind.greeting), line
    return sock


def assert_refused(kind: Kind, port: int, source: str = "127.0.0.1") -> None:
    """A connection that gets exactly the busy reply, then EOF."""
    with connect(port, source) as sock:
        assert read_to_eof(sock) == kind.busy


def reset(sock: socket.socket) -> None:
    """Close abruptly: the server sees a TCP RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def eventually_admitted(kind: Kind, port: int, source: str = "127.0.0.1") -> socket.socket:
    """Connect until admitted (the server notices a close asynchronously), within 5 s."""
    deadline = time.monotonic() + 5
    while True:
        sock = connect(port, source)
        line = read_line(sock)
        if line.startswith(kind.greeting):
            return sock
        sock.close()
        assert line == kind.busy
        assert time.monotonic() < deadline, "the slot was never given back"
        time.sleep(0.05)


def test_third_connection_from_one_ip_gets_busy_reply_then_eof(limited, kind):
    port = limited.listen(kind.make_factory)
    first, second = admitted(kind, port), admitted(kind, port)
    assert_refused(kind, port)
    assert_refused(kind, port)
    # The admitted sessions are unaffected.
    first.sendall(kind.quit)
    assert read_line(first)[:1] in (b"2", b"+", b"*")
    first.close()
    second.close()


def test_other_client_ip_admitted_while_one_ip_is_at_its_limit(limited, kind):
    port = limited.listen(kind.make_factory)
    held = [admitted(kind, port), admitted(kind, port)]
    assert_refused(kind, port, "127.0.0.1")
    other = admitted(kind, port, "127.0.0.2")
    for sock in [*held, other]:
        sock.close()


def test_total_limit_refuses_every_ip(limited, kind):
    port = limited.listen(kind.make_factory)
    held = [admitted(kind, port), admitted(kind, port), admitted(kind, port, "127.0.0.2")]
    assert_refused(kind, port, "127.0.0.3")
    assert_refused(kind, port, "127.0.0.2")
    held.pop().close()
    held.append(eventually_admitted(kind, port, "127.0.0.3"))
    for sock in held:
        sock.close()


def test_slots_come_back_after_quit_close_and_reset(limited, kind):
    """No count leaks however a session ends, and none is given back twice."""
    port = limited.listen(kind.make_factory)
    for end in ("quit", "close", "reset"):
        first, second = admitted(kind, port), admitted(kind, port)
        if end == "quit":
            first.sendall(kind.quit)
            read_to_eof(first)
            first.close()
            second.close()
        elif end == "close":
            first.close()
            second.close()
        else:
            reset(first)
            reset(second)
        again = [eventually_admitted(kind, port), eventually_admitted(kind, port)]
        assert_refused(kind, port)
        for sock in again:
            reset(sock)
        again = [eventually_admitted(kind, port), eventually_admitted(kind, port)]
        for sock in again:
            sock.close()
        time.sleep(0.05)


def test_refused_client_that_talks_first_still_reads_the_reply(limited, kind):
    """Input a refused client already sent must not make the server reset the connection."""
    port = limited.listen(kind.make_factory)
    held = [admitted(kind, port), admitted(kind, port)]
    with connect(port) as sock:
        sock.sendall(b"EHLO x\r\nCAPA\r\na CAPABILITY\r\n" * 50)
        assert read_to_eof(sock) == kind.busy
    for sock in held:
        sock.close()


def test_refused_client_that_stays_is_cut_off(limited, kind, monkeypatch):
    """A refused client cannot hold a socket open: it is cut off after the grace period."""
    monkeypatch.setattr(sessions, "REFUSAL_GRACE", 0.3)
    plain = limited.listen(kind.make_factory)
    tls = limited.listen(lambda ctx: TLSMemoryBIOFactory(ctx.tls, False, kind.make_factory(ctx)))
    held = [admitted(kind, plain), admitted(kind, plain), connect(tls), connect(tls)]
    with connect(plain) as stays:
        assert read_to_eof(stays) == kind.busy
        time.sleep(0.6)
        with pytest.raises(OSError):  # the server end is gone: reset
            for _ in range(20):
                stays.sendall(b"NOOP\r\n")
                time.sleep(0.05)
    with connect(tls) as no_handshake:  # never sends a ClientHello
        started = time.monotonic()
        try:
            assert read_to_eof(no_handshake) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 3
    for sock in held:
        sock.close()


def test_implicit_tls_listener_sends_the_busy_reply_over_tls(limited, kind):
    port = limited.listen(lambda ctx: TLSMemoryBIOFactory(ctx.tls, False, kind.make_factory(ctx)))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def tls(source: str = "127.0.0.1") -> ssl.SSLSocket:
        return context.wrap_socket(connect(port, source), server_hostname="mx.example.test")

    held = [tls(), tls()]
    for sock in held:
        assert read_line(sock).startswith(kind.greeting)
    with tls() as sock:
        assert read_to_eof(sock) == kind.busy
    other = tls("127.0.0.2")
    assert read_line(other).startswith(kind.greeting)
    for sock in [*held, other]:
        sock.close()


def test_real_clients_report_the_busy_reply(limited):
    smtp_port = limited.listen(smtp.make_factory)
    pop3_port = limited.listen(pop3.make_factory)
    imap_port = limited.listen(imap.make_factory)
    held = [connect(port) for port in (smtp_port, pop3_port, imap_port) for _ in range(2)]
    for sock in held:
        assert read_line(sock)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP("127.0.0.1", smtp_port, timeout=5)
    assert refused.value.smtp_code == 421
    with pytest.raises(poplib.error_proto, match="Too many connections"):
        poplib.POP3("127.0.0.1", pop3_port, timeout=5)
    with pytest.raises(imaplib.IMAP4.error, match="Too many connections"):
        imaplib.IMAP4("127.0.0.1", imap_port, timeout=5)
    for sock in held:
        sock.close()


def log_in(kind: Kind, port: int) -> None:
    """Log in as alice with a real client, then QUIT/LOGOUT."""
    if kind.name == "smtp":
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.login(ALICE, PASSWORD)
    elif kind.name == "pop3":
        client = poplib.POP3("127.0.0.1", port, timeout=5)
        client.user(ALICE)
        client.pass_(PASSWORD)
        client.quit()
    else:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=5)
        client.login(ALICE, PASSWORD)
        client.logout()


def session_events(events: list[dict], what: str) -> list[dict]:
    return [event for event in list(events) if event.get("session_event") == what]


def wait_for(events: list[dict], what: str, count: int) -> list[dict]:
    deadline = time.monotonic() + 5
    while len(found := session_events(events, what)) < count:
        assert time.monotonic() < deadline, f"no {what} event"
        time.sleep(0.02)
    return found


def test_session_start_and_end_are_logged_without_the_password(limited, kind, log_events):
    port = limited.listen(kind.make_factory)
    log_in(kind, port)
    [start] = wait_for(log_events, "start", 1)
    [end] = wait_for(log_events, "end", 1)
    assert start["protocol"] == end["protocol"] == kind.name
    assert start["listener"] == f"127.0.0.1:{port}"
    assert start["client"] == end["client"]
    assert start["client"].startswith("127.0.0.1:")
    assert start["tls"] is False
    assert end["user"] == ALICE
    assert end["how"] == "closed by server"
    assert 0 <= end["duration"] < 5
    assert f"user {ALICE}" in formatEvent(end)
    # An unauthenticated session that the client drops.
    sock = admitted(kind, port)
    reset(sock)
    _, dropped = wait_for(log_events, "end", 2)
    assert dropped["user"] is None
    assert "no login" in formatEvent(dropped)
    assert dropped["how"].startswith(("connection lost", "closed by client"))
    # A refusal is logged once, as such.
    held = [admitted(kind, port), admitted(kind, port)]
    assert_refused(kind, port)
    [refusal] = wait_for(log_events, "refused", 1)
    assert refusal["protocol"] == kind.name
    assert "127.0.0.1" in formatEvent(refusal)
    for sock in held:
        sock.close()
    wait_for(log_events, "end", 4)
    secrets = (PASSWORD, base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode())
    for event in list(log_events):
        text = formatEvent(event) + repr(event)
        assert not any(secret in text for secret in secrets), text
