"""One test per known defect of Twisted's ``IMAP4Server`` that mailgw must not inherit."""

from __future__ import annotations

import imaplib
import socket
import ssl

import pytest
from conftest import LiveServer, make_config
from test_imap import ALICE, PASSWORD, connect, message, raw_session, read_until

from mailgw.context import Limits
from mailgw.imap import make_factory


@pytest.fixture
def port(server):
    """Alice and an IMAP listener."""
    server.add_user(ALICE, PASSWORD)
    return server.listen(make_factory)


def test_starttls_pipelining(port):
    """Commands pipelined after STARTTLS are neither answered in plaintext nor inside TLS."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    read_until(raw, b"* OK")
    raw.sendall(b"a STARTTLS\r\nb LOGOUT\r\n")
    assert b"b " not in read_until(raw, b"a ")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    tls = context.wrap_socket(raw, server_hostname="mx.example.test")
    tls.sendall(b"c NOOP\r\n")
    reply = read_until(tls, b"c ")
    assert b"c OK" in reply and b"b " not in reply and b"BYE" not in reply
    tls.close()


def test_append_copy_missing_mailbox_trycreate(port):
    """APPEND and COPY to a missing mailbox get NO [TRYCREATE], not BAD Server error."""
    client = connect(port)
    typ, data = client.append("Missing", None, None, message("x"))
    assert typ == "NO" and data[0].startswith(b"[TRYCREATE]")
    client.append("INBOX", None, None, message("x"))
    client.select("INBOX")
    typ, data = client.copy("1", "Missing")
    assert typ == "NO" and data[0].startswith(b"[TRYCREATE]")
    client.logout()


def test_select_sends_uidnext_permanentflags_unseen(port):
    """SELECT reports UIDNEXT, PERMANENTFLAGS and UNSEEN."""
    client = connect(port)
    client.append("INBOX", "(\\Seen)", None, message("read"))
    client.append("INBOX", None, None, message("unread"))
    client.select("INBOX")
    assert client.response("UIDNEXT")[1] == [b"3"]
    assert client.response("UNSEEN")[1] == [b"2"]
    assert b"\\Deleted" in client.response("PERMANENTFLAGS")[1][0]
    client.logout()


def test_namespace_not_duplicated(port):
    """NAMESPACE lists the personal namespace once and no shared namespace twice."""
    client = connect(port)
    client._simple_command("NAMESPACE")
    assert client.response("NAMESPACE")[1] == [b'(("" ".")) NIL NIL']
    client.logout()


def test_uidplus_move_id_literal_plus_present(port):
    """CAPABILITY lists UIDPLUS, MOVE, ID and LITERAL+ (and APPENDLIMIT)."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    for name in ("UIDPLUS", "MOVE", "ID", "LITERAL+", "IDLE", "SPECIAL-USE"):
        assert name in client.capabilities
    assert any(cap.startswith("APPENDLIMIT=") for cap in client.capabilities)
    client.logout()


def test_uid_with_every_command(port):
    """UID goes with COPY, MOVE, FETCH, STORE, SEARCH and EXPUNGE."""
    client = connect(port)
    for subject in ("a", "b"):
        client.append("INBOX", None, None, message(subject))
    client.select("INBOX")
    assert client.uid("FETCH", "1", "(UID)")[0] == "OK"
    assert client.uid("STORE", "1", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert client.uid("SEARCH", "DELETED") == ("OK", [b"1"])
    assert client.uid("COPY", "1", "Archive")[0] == "OK"
    assert client.uid("EXPUNGE", "1")[0] == "OK"
    assert client.uid("MOVE", "2", "Trash")[0] == "OK"
    assert client.uid("SEARCH", "ALL") == ("OK", [b""])
    with pytest.raises(imaplib.IMAP4.error):
        client.uid("CHECK")
    client.logout()


def test_expunge_reaches_other_sessions(port):
    """An EXPUNGE in one session is announced to another that has the folder selected."""
    first, second = connect(port), connect(port)
    first.append("INBOX", "(\\Deleted)", None, message("doomed"))
    first.select("INBOX")
    second.select("INBOX")
    first.expunge()
    second.noop()
    assert second.response("EXPUNGE")[1] == [b"1"]
    first.logout()
    second.logout()


def test_append_size_limit(tmp_path):
    """APPEND of a literal over message_size is refused before any of it is read."""
    srv = LiveServer(make_config(tmp_path / "data", limits=Limits(message_size=1000)))
    try:
        srv.add_user(ALICE, PASSWORD)
        sock = raw_session(srv.listen(make_factory))
        assert b"APPENDLIMIT=1000" in (sock.sendall(b"c CAPABILITY\r\n") or read_until(sock, b"c "))
        sock.sendall(b"b APPEND INBOX {5000}\r\n")
        reply = read_until(sock, b"b ")
        assert b"b BAD [TOOBIG]" in reply and b"+ " not in reply
        sock.close()
    finally:
        srv.close()


def test_line_over_the_limit_gets_reply(port):
    """A command line over the limit (64 KB by default) is answered (BAD, BYE) before the
    connection closes."""
    sock = raw_session(port)
    sock.sendall(b"x NOOP " + b"a" * 70000 + b"\r\n")
    data = read_until(sock, b"* BYE")
    assert b"BAD" in data and b"BYE" in data
    sock.close()


def test_pipelined_commands_with_async_backend_answered_in_order(port):
    """twisted#9282: pipelined commands whose backend answers later still answer in order."""
    client = connect(port)
    for subject in ("a", "b", "c"):
        client.append("INBOX", None, None, message(subject))
    client.logout()
    sock = raw_session(port)
    sock.sendall(
        b"s SELECT INBOX\r\nf FETCH 1:* (FLAGS)\r\nt STORE 2 +FLAGS (\\Flagged)\r\n"
        b"q SEARCH FLAGGED\r\nn NOOP\r\n"
    )
    data = read_until(sock, b"n ")
    tags = [line.split()[0] for line in data.split(b"\r\n") if line and line[:1] != b"*"]
    assert tags == [b"s", b"f", b"t", b"q", b"n"]
    assert b"* SEARCH 2" in data
    sock.close()
