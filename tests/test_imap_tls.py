"""IMAP STARTTLS: login only after TLS, and nothing sent before the handshake runs inside it."""

from __future__ import annotations

import imaplib
import socket
import ssl

import pytest
from conftest import LiveServer, make_config

from mailgw.imap import make_factory

ALICE = "alice@example.test"
PASSWORD = "secret"


@pytest.fixture
def strict_server(tmp_path):
    """A server where passwords need TLS; yields its IMAP port."""
    srv = LiveServer(make_config(tmp_path / "data", allow_plaintext=False))
    srv.add_user(ALICE, PASSWORD)
    yield srv.listen(make_factory)
    srv.close()


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _read_line_with(sock, marker: bytes) -> bytes:
    data = b""
    while marker not in data or not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_starttls_then_login(strict_server):
    """After STARTTLS, LOGINDISABLED is gone and LOGIN succeeds."""
    client = imaplib.IMAP4("127.0.0.1", strict_server, timeout=10)
    assert "STARTTLS" in client.capabilities and "LOGINDISABLED" in client.capabilities
    typ, _ = client.starttls(_client_context())
    assert typ == "OK"
    assert "LOGINDISABLED" not in client.capabilities
    assert "STARTTLS" not in client.capabilities
    assert client.login(ALICE, PASSWORD)[0] == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()


def test_commands_pipelined_after_starttls_are_discarded(strict_server):
    """'a STARTTLS\\r\\nb NOOP\\r\\n' in one segment: b is never run, in plaintext or in TLS."""
    raw = socket.create_connection(("127.0.0.1", strict_server), timeout=10)
    _read_line_with(raw, b"* OK")
    raw.sendall(b"a STARTTLS\r\nb NOOP\r\n")
    reply = _read_line_with(raw, b"a OK")
    assert reply.startswith(b"a OK") and b"b " not in reply
    tls = _client_context().wrap_socket(raw, server_hostname="mx.example.test")
    tls.sendall(b"c CAPABILITY\r\n")
    reply = _read_line_with(tls, b"c OK")
    assert b"b OK" not in reply and b"b BAD" not in reply
    assert b"LOGINDISABLED" not in reply
    tls.close()
