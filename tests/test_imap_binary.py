"""BINARY (RFC 3516) over a real socket with imaplib: APPEND of literal8 (``~{n}``), FETCH
BINARY[part]<partial>, BINARY.PEEK, BINARY.SIZE, ``NO [UNKNOWN-CTE]`` and literal8 in
responses, and bad input answered with the connection still usable.

imaplib has no literal8, so ``~{n}`` commands are written with its ``send``/``readline``;
everything else goes through its commands and response parser (which reads a ``~{n}``
literal like a ``{n}`` one)."""

from __future__ import annotations

import imaplib

import pytest
from conftest import LiveServer, make_config
from test_imap import ALICE, PASSWORD, connect, message

from mailgw.context import Limits
from mailgw.imap import make_factory

#: Octets a text protocol would mangle: NUL, a bare CR, a bare LF, CRLF, 8-bit.
PAYLOAD = b"\x00\x01binary\rdata\nwith\r\nNUL\x00 and \xff\xfe" * 3


def binary_message(payload: bytes = PAYLOAD) -> bytes:
    """A multipart message: a base64 text part and a ``binary`` part holding ``payload``."""
    return (
        b"From: Bob <bob@elsewhere.test>\r\nSubject: binary\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"aGVsbG8gd29ybGQ=\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n"
        b"\r\n" + payload + b"\r\n--b--\r\n"
    )


def literal8_append(client: imaplib.IMAP4, data: bytes, tag: bytes = b"b1") -> bytes:
    """``APPEND INBOX ~{n}`` (synchronising) and the server's whole answer."""
    client.send(b"%s APPEND INBOX ~{%d}\r\n" % (tag, len(data)))
    assert client.readline().startswith(b"+ ")
    client.send(data + b"\r\n")
    return answer(client, tag)


def answer(client: imaplib.IMAP4, tag: bytes) -> bytes:
    """Lines read up to and including the one tagged ``tag``."""
    lines = []
    while not lines or not lines[-1].startswith(tag + b" "):
        lines.append(client.readline())
    return b"".join(lines)


def fetched(client: imaplib.IMAP4, items: str) -> tuple[bytes, bytes]:
    """FETCH 1 ``items`` of one literal: (what precedes the literal, its octets)."""
    typ, data = client.fetch("1", items)
    assert typ == "OK", data
    return data[0]


def seen(client: imaplib.IMAP4) -> bool:
    """Is message 1 \\Seen?"""
    typ, data = client.fetch("1", "(FLAGS)")
    return b"\\Seen" in data[0]


@pytest.fixture
def port(server):
    """Alice and an IMAP listener."""
    server.add_user(ALICE, PASSWORD)
    return server.listen(make_factory)


@pytest.fixture
def client(port):
    """A logged-in imaplib client with the binary message in INBOX, INBOX selected."""
    client = connect(port)
    reply = literal8_append(client, binary_message())
    assert b"b1 OK [APPENDUID " in reply, reply
    client.select("INBOX")
    yield client
    client.logout()


def test_binary_announced(port):
    client = connect(port)
    assert "BINARY" in client.capabilities
    client.logout()


def test_literal8_append_fetched_back_byte_exact(client):
    """The ``binary`` part comes back exactly as appended, as literal8 since it holds NUL;
    BINARY.SIZE is its decoded length; BODY[] of it holds no NUL (stored as base64)."""
    head, data = fetched(client, "(BINARY.PEEK[2])")
    assert data == PAYLOAD
    assert head.endswith(b"BINARY[2] ~{%d}" % len(PAYLOAD))
    typ, sizes = client.fetch("1", "(BINARY.SIZE[2] BINARY.SIZE[1])")
    assert b"BINARY.SIZE[2] %d" % len(PAYLOAD) in sizes[0]
    assert b"BINARY.SIZE[1] 11" in sizes[0]
    _, body = fetched(client, "(BODY.PEEK[2])")
    assert b"\x00" not in body and body.replace(b"\r\n", b"") != b""
    _, mime = fetched(client, "(BODY.PEEK[2.MIME])")
    assert b"Content-Transfer-Encoding: base64" in mime


def test_decoded_text_without_nul_is_a_plain_literal(client):
    head, data = fetched(client, "(BINARY.PEEK[1])")
    assert data == b"hello world"
    assert head.endswith(b"BINARY[1] {11}")


def test_binary_partial(client):
    head, data = fetched(client, "(BINARY.PEEK[2]<3.10>)")
    assert data == PAYLOAD[3:13]
    assert b"BINARY[2]<3> " in head
    _, beyond = fetched(client, "(BINARY.PEEK[2]<100000.10>)")
    assert beyond == b""


def test_binary_sets_seen_and_peek_does_not(client):
    fetched(client, "(BINARY.PEEK[2])")
    assert not seen(client)
    typ, data = client.fetch("1", "(BINARY[1])")
    assert typ == "OK" and data[0][1] == b"hello world"
    assert seen(client)


def test_whole_message_binary_relabels_decoded_parts(client):
    _, whole = fetched(client, "(BINARY.PEEK[])")
    assert PAYLOAD in whole and b"hello world" in whole
    assert b"base64" not in whole.lower()
    typ, sizes = client.fetch("1", "(BINARY.SIZE[])")
    assert b"BINARY.SIZE[] %d" % len(whole) in sizes[0]


def test_unknown_transfer_encoding_is_no_unknown_cte(port):
    """A part in an encoding the server cannot undo: NO [UNKNOWN-CTE] for BINARY and
    BINARY.SIZE; BODY still works and the connection stays usable."""
    client = connect(port)
    odd = message("uuencoded").replace(
        b"\r\n\r\n", b"\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n", 1
    )
    client.append("INBOX", None, None, odd)
    client.select("INBOX")
    for items in ("(BINARY.PEEK[1])", "(BINARY.SIZE[1])"):
        typ, data = client.fetch("1", items)
        assert typ == "NO" and data[0].startswith(b"[UNKNOWN-CTE]"), data
    _, body = fetched(client, "(BODY.PEEK[1])")
    assert body == b"Hello.\r\n"
    assert client.noop()[0] == "OK"
    client.logout()


def test_literal8_outside_append_is_bad_and_session_goes_on(port):
    client = connect(port)
    client.send(b"c1 CREATE ~{3}\r\n")
    assert client.readline().startswith(b"+ ")
    client.send(b"abc\r\n")
    assert answer(client, b"c1").startswith(b"c1 BAD")
    assert client.list()[0] == "OK"
    assert b"abc" not in b"".join(client.list()[1])
    client.select("INBOX")
    client.append("INBOX", None, None, message("plain"))
    for items in ("(BINARY[1.MIME])", "(BINARY.SIZE[1]<0.5>)", "(BINARY[1]<x>)"):
        with pytest.raises(imaplib.IMAP4.error, match="BAD"):
            client.fetch("1", items)
    assert client.noop()[0] == "OK"
    client.logout()


def test_literal8_over_the_append_limit_is_refused_without_continuation(tmp_path):
    """A ``~{n}`` over APPENDLIMIT gets a tagged BAD [TOOBIG] and no ``+``; nothing is
    stored, and the next command (an APPEND that fits) works."""
    server = LiveServer(make_config(tmp_path / "data", limits=Limits(message_size=1000)))
    try:
        server.add_user(ALICE, PASSWORD)
        client = connect(server.listen(make_factory))
        assert "APPENDLIMIT=1000" in client.capabilities
        client.send(b"d1 APPEND INBOX ~{5000}\r\n")
        reply = answer(client, b"d1")
        assert reply.startswith(b"d1 BAD [TOOBIG]"), reply
        reply = literal8_append(client, binary_message(b"\x00small"), tag=b"d2")
        assert b"d2 OK" in reply
        assert client.select("INBOX")[1] == [b"1"]
        assert fetched(client, "(BINARY.PEEK[2])")[1] == b"\x00small"
        client.logout()
    finally:
        server.close()


def test_multiappend_mixes_literal8_and_literal(port):
    """MULTIAPPEND with a ``{n}`` then a ``~{n}`` message: only the second is converted."""
    client = connect(port)
    plain = message("plain")
    binary = binary_message()
    client.send(b"e1 APPEND INBOX {%d}\r\n" % len(plain))
    assert client.readline().startswith(b"+ ")
    client.send(plain + b" ~{%d}\r\n" % len(binary))
    assert client.readline().startswith(b"+ ")
    client.send(binary + b"\r\n")
    assert b"e1 OK [APPENDUID " in answer(client, b"e1")
    client.select("INBOX")
    typ, data = client.fetch("1:2", "(BODY.PEEK[])")
    assert data[0][1] == plain
    typ, data = client.fetch("2", "(BINARY.PEEK[2])")
    assert data[0][1] == PAYLOAD
    client.logout()
