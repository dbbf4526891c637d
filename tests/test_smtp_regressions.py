"""One regression test per defect of ``twisted.mail.smtp`` (Twisted 26.10) that mailgw must not
inherit, each named after the defect.  Real sockets against a live server and store."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import LiveServer, make_config
from test_smtp import ALICE, BOB, BODY, Raw, connect, stored, tls_client_context

from mailgw.context import Limits
from mailgw.smtp import make_factory


@pytest.fixture
def strict(tmp_path):
    """A server that allows no password without TLS, with a 10 KiB message size limit."""
    limits = dataclasses.replace(Limits(), message_size=10 * 1024)
    srv = LiveServer(make_config(tmp_path / "data", allow_plaintext=False, limits=limits))
    srv.add_user(ALICE)
    srv.add_user(BOB)
    srv.port = srv.listen(make_factory)
    srv.submission_port = srv.listen(make_factory, submission=True)
    yield srv
    srv.close()


def test_twisted_advertises_no_size_8bitmime_pipelining_and_has_no_size_limit(strict):
    with connect(strict.port) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == str(10 * 1024)
        assert "8bitmime" in smtp.esmtp_features
        assert "pipelining" in smtp.esmtp_features
        code, text = smtp.docmd("MAIL", "FROM:<carol@remote.test> SIZE=20000")
        assert (code, text[:6]) == (552, b"5.3.4 ")
        smtp.mail("carol@remote.test")
        smtp.rcpt(ALICE)
        code, text = smtp.data(b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 11)
        assert (code, text[:6]) == (552, b"5.3.4 ")
        assert smtp.sendmail("carol@remote.test", [ALICE], BODY) == {}
    assert len(stored(strict, ALICE)) == 1
    assert list(strict.config.tmp_dir.iterdir()) == []


def test_twisted_offers_auth_before_tls_with_cram_md5_first(strict):
    with connect(strict.submission_port) as smtp:
        smtp.ehlo()
        assert "auth" not in smtp.esmtp_features
        code, text = smtp.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=")
        assert (code, text[:7]) == (538, b"5.7.11 ")
        smtp.starttls(context=tls_client_context())
        smtp.ehlo()
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert smtp.docmd("AUTH", "CRAM-MD5")[0] == 504
        assert smtp.login(ALICE, "secret")[0] == 235


def test_twisted_data_line_over_16_kib_drops_into_command_mode(strict):
    """A 20 KiB line, then lines that would be a second transaction if read as commands."""
    client = Raw(strict.port)
    client.send(
        b"EHLO client.remote.test\r\nMAIL FROM:<carol@remote.test>\r\n"
        b"RCPT TO:<alice@example.test>\r\nDATA\r\n"
    )
    assert client.codes(4) == [b"250", b"250", b"250", b"354"]
    client.send(
        b"Subject: long\r\n\r\n" + b"z" * 20 * 1024 + b"\r\n"
        b"RSET\r\nMAIL FROM:<mallory@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
        b"Subject: injected\r\n\r\nsmuggled\r\n.\r\nNOOP\r\n.\r\n"
    )
    replies = []
    try:
        while reply := client.reply():
            replies.append(reply)
    except ConnectionResetError:
        pass  # the server hung up with input unread: nothing more was answered
    client.close()
    assert len(replies) <= 1 and all(reply[0][:1] == b"5" for reply in replies), replies
    assert stored(strict, ALICE) == [] and stored(strict, BOB) == []
    assert list(strict.config.tmp_dir.iterdir()) == []


def test_twisted_answers_commands_pipelined_after_starttls_inside_tls(strict):
    client = Raw(strict.port)
    client.send(b"EHLO client.remote.test\r\n")
    client.reply()
    client.send(
        b"STARTTLS\r\nEHLO injected.test\r\nMAIL FROM:<mallory@remote.test>\r\n"
        b"RCPT TO:<alice@example.test>\r\nDATA\r\n"
    )
    assert client.reply() == [b"220 2.0.0 Ready to start TLS"]
    tls = tls_client_context().wrap_socket(client.sock, server_hostname="mx.example.test")
    tls.sendall(b"NOOP\r\n")
    assert tls.recv(1024) == b"250 2.0.0 OK\r\n", "no injected command may be answered"
    tls.sendall(b"MAIL FROM:<carol@remote.test>\r\n")
    assert tls.recv(1024).startswith(b"503 "), "the injected EHLO must not count"
    tls.close()
    assert stored(strict, ALICE) == []


def test_twisted_does_not_reset_session_state_after_starttls(tmp_path):
    """Logged in and mid-transaction before STARTTLS: all of it is forgotten after it."""
    srv = LiveServer(make_config(tmp_path / "data", allow_plaintext=True))
    srv.add_user(ALICE)
    try:
        port = srv.listen(make_factory, submission=True)
        with connect(port) as smtp:
            smtp.ehlo()
            smtp.login(ALICE, "secret")
            assert smtp.docmd("MAIL", "FROM:<alice@example.test>")[0] == 250
            smtp.starttls(context=tls_client_context())
            assert smtp.docmd("MAIL", "FROM:<alice@example.test>")[0] == 503, "EHLO first"
            assert smtp.docmd("RCPT", "TO:<alice@example.test>")[0] == 503
            smtp.ehlo()
            code, text = smtp.docmd("MAIL", "FROM:<alice@example.test>")
            assert (code, text) == (530, b"5.7.0 Authentication required")
            assert smtp.docmd("DATA")[0] == 503
            smtp.login(ALICE, "secret")
            assert smtp.sendmail(ALICE, [ALICE], BODY) == {}
    finally:
        srv.close()
    assert len(stored(srv, ALICE)) == 1
