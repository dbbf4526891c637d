"""SMTP reception end to end: smtplib and raw sockets against a live server and the real store."""

from __future__ import annotations

import base64
import dataclasses
import re
import smtplib
import socket
import ssl
import time
from pathlib import Path

import pytest
from conftest import LiveServer, make_config
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailgw.context import Limits
from mailgw.smtp import make_factory

ALICE = "alice@example.test"
BOB = "bob@example.test"
BODY = (
    b"From: Carol <carol@remote.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"Hello Alice,\r\n"
    b"\r\n"
    b".a line starting with a dot\r\n"
    b"..two dots\r\n"
    b"caf\xc3\xa9 8bit\r\n"
)


@pytest.fixture
def mx(server):
    """The live server with users alice and bob, and an MX listener's port in ``mx.port``."""
    server.add_user(ALICE)
    server.add_user(BOB)
    server.port = server.listen(make_factory)
    return server


@pytest.fixture
def live(tmp_path: Path):
    """Make LiveServers with config overrides (users alice and bob); close them afterwards."""
    made: list[LiveServer] = []

    def make(**overrides) -> LiveServer:
        srv = LiveServer(make_config(tmp_path / f"data{len(made)}", **overrides))
        made.append(srv)
        srv.add_user(ALICE)
        srv.add_user(BOB)
        return srv

    yield make
    for srv in made:
        srv.close()


def connect(port: int) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", port, local_hostname="client.remote.test", timeout=10)


def stored(server: LiveServer, address: str) -> list[bytes]:
    """Every message in the user's INBOX, as stored."""
    inbox = server.store.folder(address)
    out = []
    for info in inbox.messages():
        with inbox.open_message(info.uid) as handle:
            out.append(handle.read())
    return out


def split_trace(message: bytes) -> tuple[list[bytes], bytes]:
    """The Return-Path and Received header lines mailgw added (and, on submission, the missing
    Message-ID and Date), and the rest of the message."""
    added = []
    while message.startswith((b"Return-Path:", b"Received:", b"\t", b"Message-ID:", b"Date:")):
        line, message = message.split(b"\r\n", 1)
        added.append(line)
    return added, message


class Raw:
    """A raw client connection: bytes out, replies read line by line."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        assert self.reply()[0].startswith(b"220 ")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> list[bytes]:
        """One (possibly multi-line) reply, without CRLFs; [] at end of stream."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                return lines
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return lines

    def codes(self, count: int) -> list[bytes]:
        """The codes of the next ``count`` replies."""
        return [self.reply()[0][:3] for _ in range(count)]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_deliver_to_one_recipient(mx):
    with connect(mx.port) as smtp:
        code, _ = smtp.ehlo()
        assert code == 250
        smtp.mail("carol@remote.test")
        smtp.rcpt(ALICE)
        code, text = smtp.data(BODY)
    assert code == 250 and text.startswith(b"2.0.0 ")
    [message] = stored(mx, ALICE)
    added, rest = split_trace(message)
    assert rest == BODY
    assert added[0] == b"Return-Path: <carol@remote.test>"
    trace = b" ".join(added[1:])
    assert b"from client.remote.test (unknown [127.0.0.1])" in trace
    assert b"by mx.example.test (mailgw) with ESMTP id " in trace
    assert b"for <alice@example.test>;" in trace
    assert stored(mx, BOB) == []


def test_deliver_to_several_recipients_once_each(mx):
    with connect(mx.port) as smtp:
        refused = smtp.sendmail("carol@remote.test", [ALICE, BOB, "Alice@EXAMPLE.test"], BODY)
    assert refused == {}
    [for_alice] = stored(mx, ALICE)
    [for_bob] = stored(mx, BOB)
    assert for_alice == for_bob
    added, rest = split_trace(for_alice)
    assert rest == BODY
    assert b" for " not in b" ".join(added), "Bcc recipients must not be named"


def test_reply_comes_after_the_message_is_in_new(mx):
    new = mx.config.mail_dir / "example.test" / "alice" / "new"
    with connect(mx.port) as smtp:
        smtp.sendmail("carol@remote.test", [ALICE], BODY)
        assert len(list(new.iterdir())) == 1
    assert list(mx.config.tmp_dir.iterdir()) == []


def test_dot_stuffing_and_a_message_without_headers(mx):
    body = b"no header here\r\n.\r\n..\r\n. space\r\n"
    with connect(mx.port) as smtp:
        smtp.sendmail("", [ALICE], body)
    [message] = stored(mx, ALICE)
    added, rest = split_trace(message)
    assert added[0] == b"Return-Path: <>"
    assert rest == body


def test_unknown_local_user_is_refused_at_rcpt(mx):
    with connect(mx.port) as smtp:
        smtp.ehlo()
        smtp.mail("carol@remote.test")
        assert smtp.rcpt("nobody@example.test") == (
            550,
            b"5.1.1 Recipient address rejected: user unknown",
        )
        assert smtp.rcpt(ALICE)[0] == 250
        code, text = smtp.rcpt("postmaster@example.test")
        assert (code, text[:6]) == (451, b"4.3.5 "), "postmaster is never refused for good"
        mx.add_user("postmaster@example.test")
        assert smtp.rcpt("<Postmaster@Example.TEST>")[0] == 250
        assert smtp.rcpt("<postmaster>")[0] == 250
        assert smtp.data(BODY)[0] == 250
    assert len(stored(mx, "postmaster@example.test")) == 1


RELAY_ATTEMPTS = [
    "<someone@elsewhere.test>",
    "<alice%elsewhere.test@example.test>",
    '<"alice@elsewhere.test"@example.test>',
    "<@relay.test:alice@example.test>",
    "<@relay.test,@other.test:alice@example.test>",
    "<alice@example.test@evil.test>",
    "<elsewhere.test!alice@example.test>",
]


#: Relay tricks that are not refused as relaying but are no deliverable address either.
MALFORMED_OR_UNKNOWN = [
    ("<alice@[127.0.0.1]>", 501),
    ("<alice@[IPv6:::1]>", 501),
    ("<alice@example.test..>", 501),
    ("<alice@.example.test>", 501),
    ('<"alice..x"@example.test>', 550),
    ('<"a b"@example.test>', 550),
]
#: Odd spellings of alice's own address: delivered to her, never elsewhere.
ALICE_SPELLINGS = ["<alice@example.test.>", "<ALICE@EXAMPLE.TEST>", '<"alice"@example.test>']


def test_no_open_relay(mx):
    tricks = [
        *RELAY_ATTEMPTS,
        "<someone@elsewhere.test.>",
        "<SOMEONE@ELSEWHERE.TEST>",
        "<alice@example.test.elsewhere.test>",
        "<alice@example.test:someone@elsewhere.test>",
        '<"alice%elsewhere.test"@example.test>',
        "<alice%elsewhere.test>",
    ]
    with connect(mx.port) as smtp:
        smtp.ehlo()
        smtp.mail("carol@remote.test")
        for path in tricks:
            code, text = smtp.docmd("RCPT", f"TO:{path}")
            assert (code, text) == (554, b"5.7.1 Relay access denied"), path
        for path, expected in MALFORMED_OR_UNKNOWN:
            assert smtp.docmd("RCPT", f"TO:{path}")[0] == expected, path
        for path in ALICE_SPELLINGS:
            assert smtp.docmd("RCPT", f"TO:{path}")[0] == 250, path
        assert smtp.data(BODY)[0] == 250
    assert len(stored(mx, ALICE)) == 1
    assert [path.name for path in mx.config.mail_dir.iterdir()] == ["example.test"]
    assert [path.name for path in (mx.config.mail_dir / "example.test").iterdir()] == ["alice"]


def test_ehlo_lists_the_extensions(mx):
    with connect(mx.port) as smtp:
        code, text = smtp.ehlo()
    assert code == 250
    lines = text.split(b"\n")
    assert lines[0] == b"mx.example.test Hello [127.0.0.1]"
    assert lines[1:] == [
        b"PIPELINING",
        b"SIZE 26214400",
        b"8BITMIME",
        b"ENHANCEDSTATUSCODES",
        b"STARTTLS",
        b"AUTH PLAIN LOGIN",
    ]


def test_limits_on_size_recipients_and_text_lines(live):
    limits = Limits()
    srv = live(limits=dataclasses.replace(limits, message_size=2000, smtp_recipients=1))
    port = srv.listen(make_factory)
    with connect(port) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == "2000"
        code, text = smtp.docmd("MAIL", "FROM:<carol@remote.test> SIZE=2001")
        assert (code, text[:6]) == (552, b"5.3.4 ")
        smtp.docmd("MAIL", "FROM:<carol@remote.test> SIZE=100")
        smtp.rcpt(ALICE)
        assert smtp.rcpt(BOB) == (452, b"4.5.3 Too many recipients")
        code, text = smtp.data(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 40)
        assert (code, text[:6]) == (552, b"5.3.4 ")
        smtp.mail("carol@remote.test")
        smtp.rcpt(ALICE)
        code, text = smtp.data(b"Subject: long line\r\n\r\n" + b"x" * 1200 + b"\r\n")
        assert (code, text[:6]) == (500, b"5.5.2 ")
        assert smtp.sendmail("carol@remote.test", [ALICE], b"Subject: small\r\n\r\nok\r\n") == {}
    [message] = stored(srv, ALICE)
    assert message.endswith(b"Subject: small\r\n\r\nok\r\n")
    assert list(srv.config.tmp_dir.iterdir()) == []


def test_helo_session(mx):
    with connect(mx.port) as smtp:
        code, text = smtp.helo("old.remote.test")
        assert (code, text) == (250, b"mx.example.test")
        smtp.sendmail("carol@remote.test", [ALICE], BODY)
    added, _ = split_trace(stored(mx, ALICE)[0])
    assert b"from old.remote.test (unknown [127.0.0.1])" in added[1]
    assert b"with SMTP id" in b" ".join(added)


def test_rset_noop_vrfy_quit(mx):
    smtp = connect(mx.port)
    smtp.ehlo()
    assert smtp.noop() == (250, b"2.0.0 OK")
    assert smtp.verify(ALICE)[0] == 252
    assert smtp.verify("nobody@example.test") == smtp.verify(ALICE)
    smtp.mail("carol@remote.test")
    smtp.rcpt(ALICE)
    assert smtp.rset() == (250, b"2.0.0 Reset state")
    assert smtp.docmd("DATA")[0] == 503
    assert smtp.quit() == (221, b"2.0.0 Bye")
    assert stored(mx, ALICE) == []


BAD_COMMANDS = [
    (b"FOO bar", 500),
    (b"\x01\x02", 500),
    (b"\xff\xfe", 500),
    (b"MAIL", 501),
    (b"MAIL FROM:carol@remote.test", 501),
    (b"MAIL FROM:<carol@remote.test> SIZE=abc", 501),
    (b"MAIL FROM:<carol@remote.test> SIZE=999999999999999999999", 501),
    (b"MAIL FROM:<carol@remote.test> FROBNICATE=1", 555),
    (b"MAIL FROM:<carol>", 501),
    (b"MAIL FROM:<caf\xc3\xa9@remote.test>", 501),
    (b"RCPT TO:<alice@example.test>", 503),
    (b"DATA", 503),
    (b"EHLO", 501),
    (b"EHLO bad..name", 501),
    (b"VRFY", 501),
    (b"AUTH CRAM-MD5", 504),
]


def test_bad_commands_are_answered_and_the_session_goes_on(mx):
    with connect(mx.port) as smtp:
        smtp.ehlo()
        for command, code in BAD_COMMANDS:
            smtp.send(command + b"\r\n")
            assert smtp.getreply()[0] == code, command
        assert smtp.sendmail("carol@remote.test", [ALICE], BODY) == {}
    assert len(stored(mx, ALICE)) == 1


def test_overlong_command_line_is_refused_and_the_session_goes_on(mx):
    with connect(mx.port) as smtp:
        smtp.ehlo()
        assert smtp.docmd("NOOP " + "x" * 600) == (500, b"5.5.2 Line too long")
        assert smtp.noop()[0] == 250


def test_endless_line_is_answered_then_the_connection_closed(mx):
    client = Raw(mx.port)
    client.send(b"EHLO " + b"x" * 8000)
    assert client.reply() == [b"500 5.5.2 Line too long"]
    assert client.reply() == []
    client.close()


def test_bare_line_feeds_never_end_data(mx):
    client = Raw(mx.port)
    client.send(b"EHLO client.remote.test\r\n")
    client.reply()
    client.send(b"MAIL FROM:<carol@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert client.codes(3) == [b"250", b"250", b"354"]
    client.send(
        b"Subject: one\r\n\r\nhi\n.\nMAIL FROM:<x@remote.test>\r\nx\r.\r\ny\r\n.\n\r\n.\r\n"
    )
    assert client.codes(1) == [b"550"], "one reply, at <CRLF>.<CRLF>: refused for its bare LF"
    client.send(b"QUIT\r\n")
    assert client.reply() == [b"221 2.0.0 Bye"]
    client.close()
    assert stored(mx, ALICE) == []


def test_pipelined_transaction(mx):
    client = Raw(mx.port)
    client.send(
        b"EHLO client.remote.test\r\nMAIL FROM:<carol@remote.test>\r\n"
        b"RCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\n"
    )
    assert client.codes(5) == [b"250", b"250", b"250", b"550", b"354"]
    client.send(b"Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
    assert client.codes(3) == [b"250", b"250", b"221"]
    client.close()
    assert len(stored(mx, ALICE)) == 1


def test_store_failure_answers_451_and_leaves_nothing(mx):
    """bob's Maildir cannot be created (a file is in the way): no one gets a copy."""
    user_dir = mx.config.mail_dir / "example.test"
    user_dir.mkdir(parents=True, exist_ok=True)
    (user_dir / "bob").write_bytes(b"in the way")
    with connect(mx.port) as smtp:
        smtp.ehlo()
        smtp.mail("carol@remote.test")
        smtp.rcpt(ALICE)
        smtp.rcpt(BOB)
        assert smtp.data(BODY) == (451, b"4.3.0 Local error in processing, try again later")
        assert smtp.noop()[0] == 250
    assert stored(mx, ALICE) == []
    assert list(mx.config.tmp_dir.iterdir()) == []


def test_idle_client_is_told_and_disconnected(live):
    limits = dataclasses.replace(Limits(), smtp_idle_timeout=0.3)
    port = live(limits=limits).listen(make_factory)
    client = Raw(port)
    started = time.monotonic()
    assert client.reply() == [b"421 4.4.2 mx.example.test Idle timeout"]
    assert client.reply() == []
    assert time.monotonic() - started < 5
    client.close()


def test_silent_client_inside_data_is_told_and_disconnected(live):
    limits = dataclasses.replace(Limits(), smtp_data_timeout=0.3)
    srv = live(limits=limits)
    client = Raw(srv.listen(make_factory))
    client.send(b"HELO client.remote.test\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\n")
    assert client.codes(3) == [b"250", b"250", b"250"]
    time.sleep(0.5)
    client.send(b"DATA\r\n")
    assert client.codes(1) == [b"354"], "the DATA timeout holds only inside DATA"
    started = time.monotonic()
    client.send(b"Subject: slow\r\n")
    assert client.reply() == [b"421 4.4.2 mx.example.test DATA timeout"]
    assert client.reply() == []
    assert time.monotonic() - started < 5
    client.close()
    assert stored(srv, ALICE) == []
    assert list(srv.config.tmp_dir.iterdir()) == []


def test_too_many_errors_end_the_session(live):
    limits = dataclasses.replace(Limits(), session_errors=3)
    port = live(limits=limits).listen(make_factory)
    client = Raw(port)
    client.send(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n")
    assert client.codes(4) == [b"500", b"500", b"500", b"421"]
    assert client.reply() == []
    client.close()


# -- TLS and AUTH


def tls_client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_starttls_then_deliver(mx):
    with connect(mx.port) as smtp:
        smtp.ehlo()
        code, _ = smtp.starttls(context=tls_client_context())
        assert code == 220
        assert smtp.docmd("MAIL", "FROM:<carol@remote.test>")[0] == 503, "EHLO again first"
        smtp.ehlo()
        assert "starttls" not in smtp.esmtp_features
        assert smtp.docmd("STARTTLS")[0] == 503
        smtp.sendmail("carol@remote.test", [ALICE], BODY)
    added, rest = split_trace(stored(mx, ALICE)[0])
    assert rest == BODY
    assert b"with ESMTPS id" in b" ".join(added)


def test_no_auth_before_tls_without_plaintext(live):
    srv = live(allow_plaintext=False)
    port = srv.listen(make_factory, submission=True)
    with connect(port) as smtp:
        smtp.ehlo()
        assert "auth" not in smtp.esmtp_features
        code, text = smtp.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=")
        assert (code, text[:7]) == (538, b"5.7.11 ")
        assert smtp.docmd("MAIL", "FROM:<alice@example.test>")[0] == 530
        smtp.starttls(context=tls_client_context())
        smtp.ehlo()
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert smtp.login(ALICE, "secret")[0] == 235
        assert smtp.sendmail(ALICE, [BOB], BODY) == {}
    added, _ = split_trace(stored(srv, BOB)[0])
    assert b"with ESMTPSA id" in b" ".join(added)


def test_submission_needs_auth(mx):
    port = mx.listen(make_factory, submission=True)
    with connect(port) as smtp:
        smtp.ehlo()
        code, text = smtp.docmd("MAIL", "FROM:<alice@example.test>")
        assert (code, text) == (530, b"5.7.0 Authentication required")
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            smtp.login(ALICE, "wrong")
        assert failed.value.smtp_code == 535
        smtp.login(ALICE, "secret")
        assert smtp.docmd("AUTH", "PLAIN")[0] == 503
        code, text = smtp.docmd("MAIL", "FROM:<bob@example.test>")
        assert (code, text[:6]) == (553, b"5.7.1 ")
        smtp.docmd("MAIL", "FROM:<Alice@Example.Test>")
        assert smtp.docmd("RCPT", "TO:<someone@elsewhere.test>")[0] == 250  # queued
        assert smtp.rcpt(BOB)[0] == 250
        assert smtp.data(BODY)[0] == 250
    assert split_trace(stored(mx, BOB)[0])[1] == BODY


def test_auth_login_and_unknown_user_look_alike(mx):
    port = mx.listen(make_factory, submission=True)
    with connect(port) as smtp:
        smtp.ehlo()
        assert smtp.docmd("AUTH", "LOGIN") == (334, b"VXNlcm5hbWU6")
        assert smtp.docmd("bm9ib2R5QGV4YW1wbGUudGVzdA==") == (334, b"UGFzc3dvcmQ6")
        unknown = smtp.docmd("c2VjcmV0")
        assert smtp.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==") == unknown
        assert unknown == (535, b"5.7.8 Authentication credentials invalid")
        assert smtp.docmd("AUTH", "PLAIN") == (334, b"")
        assert smtp.docmd("not base64!")[0] == 501
        assert smtp.docmd("AUTH", "LOGIN")[0] == 334
        assert smtp.docmd("*")[0] == 501
        assert smtp.noop()[0] == 250
        smtp.user, smtp.password = ALICE, "secret"
        assert smtp.auth("LOGIN", smtp.auth_login)[0] == 235


def test_one_log_event_per_delivery_and_no_secrets(mx):
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    password = "s3cret-Pa55"
    mx.add_user("carol@example.test", password)
    port = mx.listen(make_factory, submission=True)
    try:
        with connect(port) as smtp:
            smtp.ehlo()
            smtp.login("carol@example.test", password)
            smtp.sendmail("carol@example.test", [ALICE, BOB], BODY)
    finally:
        globalLogPublisher.removeObserver(events.append)
    delivered = [event for event in events if "recipients" in event]
    assert len(delivered) == 1
    assert delivered[0]["recipients"] == "alice@example.test, bob@example.test"
    assert delivered[0]["size"] == len(BODY)
    assert delivered[0]["id"].encode() in stored(mx, ALICE)[0]
    payload = base64.b64encode(b"\0carol@example.test\0" + password.encode()).decode()
    for event in events:
        text = repr(event) + (formatEvent(event) or "")
        assert password not in text and payload not in text


RECEIVED_WITH_TLS_AND_AUTH = re.compile(
    rb"Received: from client\.remote\.test \(unknown \[127\.0\.0\.1\]\)\r\n"
    rb"\t\(using TLSv1\.[23] with cipher [A-Z0-9_-]+ \((\d+)/\1 bits\)\)\r\n"
    rb"\t\(Authenticated sender: bob@example\.test\)\r\n"
    rb"\tby mx\.example\.test \(mailgw\) with ESMTPSA id [0-9A-F]{16}\r\n"
    rb"\tfor <alice@example\.test>; [A-Z][a-z]{2}, [ 0-9]{1,2} [A-Z][a-z]{2} \d{4} "
    rb"\d\d:\d\d:\d\d [+-]\d{4}\r\n"
)


def test_implicit_tls_submission(live):
    srv = live(allow_plaintext=False)
    port = srv.listen(
        lambda ctx: TLSMemoryBIOFactory(ctx.tls, False, make_factory(ctx, submission=True))
    )
    with smtplib.SMTP_SSL(
        "127.0.0.1",
        port,
        local_hostname="client.remote.test",
        timeout=10,
        context=tls_client_context(),
    ) as smtp:
        smtp.ehlo()
        assert "starttls" not in smtp.esmtp_features
        assert smtp.docmd("STARTTLS") == (503, b"5.5.1 TLS already active")
        assert smtp.docmd("AUTH", "PLAIN =")[0] == 501
        smtp.login(BOB, "secret")
        smtp.sendmail(BOB, [ALICE], BODY)
    [message] = stored(srv, ALICE)
    added, rest = split_trace(message)
    assert rest == BODY
    header = message.split(b"\r\n", 1)[1]
    assert RECEIVED_WITH_TLS_AND_AUTH.match(header), header[:400]
