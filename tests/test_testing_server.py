"""mailgw.testing.MailServer: capture, seeding, modes, TLS, faults, and a clean stop."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import threading
from email.message import EmailMessage

import pytest

from mailgw.testing import MailServer
from tests.conftest import in_reactor


def _message(subject: str, to: str = "bob@example.test") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "app@example.org"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("hello\n")
    return message


@pytest.fixture(scope="module")
def shared():
    """One capture server for the tests that only send and read (cleared before each)."""
    with MailServer() as server:
        yield server


@pytest.fixture
def srv(shared):
    shared.clear()
    return shared


def test_app_sends_over_starttls_verified_against_cafile(srv):
    with smtplib.SMTP(srv.host, srv.smtp_port, timeout=5) as client:
        client.starttls(context=srv.ssl_context())
        client.send_message(_message("Welcome"), "app@example.org", ["bob@x.org", "eve@y.net"])
    found = srv.wait_for(2, subject="welcome")
    assert {m.address for m in found} == {"bob@x.org", "eve@y.net"}
    for message in found:
        assert message.envelope_from == "app@example.org"
        assert message.envelope_to == ["bob@x.org", "eve@y.net"]
        assert message.raw.startswith(b"Return-Path: <app@example.org>\r\n")
        assert message.get_content() == "hello\n"
    assert [m.address for m in srv.messages("eve@y.net")] == ["eve@y.net"]


def test_tls_refuses_a_client_that_trusts_another_ca(srv):
    import ssl

    with smtplib.SMTP(srv.host, srv.smtp_port, timeout=5) as client:
        with pytest.raises(ssl.SSLCertVerificationError):
            client.starttls(context=ssl.create_default_context())


def test_wait_for_times_out_listing_what_is_there(srv):
    srv.deliver("bob@example.test", _message("present"))
    with pytest.raises(TimeoutError, match="present"):
        srv.wait_for(subject="absent", timeout=0.2)


def test_wait_for_is_woken_by_a_delivery_from_another_thread(srv):
    def send():
        with smtplib.SMTP(srv.host, srv.smtp_port, timeout=5) as client:
            client.sendmail("a@b.org", ["late@c.org"], b"Subject: late\r\n\r\nx\r\n")

    timer = threading.Timer(0.2, send)
    timer.start()
    found = srv.wait_for(address="late@c.org", subject=lambda s: s == "late", timeout=5)
    timer.join()
    assert found[0].envelope_to == ["late@c.org"]


def test_reader_seeds_and_reads_over_imap_and_pop3_with_tls(srv):
    srv.add_user("reader@example.test", "pw")
    uid = srv.deliver("reader@example.test", _message("seeded"), flags=["\\Flagged"])
    srv.deliver("reader@example.test", b"Subject: archived\n\nold\n", folder="Archive")
    assert uid == 1
    with imaplib.IMAP4_SSL(srv.host, srv.imaps_port, ssl_context=srv.ssl_context()) as imap:
        imap.login("reader@example.test", "pw")
        imap.select("INBOX")
        _, data = imap.uid("FETCH", str(uid), "(FLAGS BODY[HEADER.FIELDS (SUBJECT)])")
        assert b"\\Flagged" in data[0][0] and b"seeded" in data[0][1]
        _, data = imap.select("Archive")
        assert data == [b"1"]
    with imaplib.IMAP4(srv.host, srv.imap_port) as imap:
        imap.starttls(srv.ssl_context())
        imap.login("reader@example.test", "pw")
    pop = poplib.POP3_SSL(srv.host, srv.pop3s_port, context=srv.ssl_context(), timeout=5)
    pop.user("reader@example.test")
    pop.pass_("pw")
    assert b"Subject: seeded" in b"\r\n".join(pop.retr(1)[1])
    pop.quit()
    [archived] = srv.messages("reader@example.test", folder="Archive")
    assert archived.raw.endswith(b"\r\n\r\nold\r\n") and archived.envelope_from is None


def test_clear_keeps_users_and_removes_messages_and_faults(srv):
    srv.add_user("keep@example.test", "pw")
    srv.deliver("keep@example.test", b"Subject: x\r\n\r\nx\r\n")
    srv.fault("smtp", "connect", reply="421 4.3.2 busy", times=None)
    srv.clear()
    assert srv.messages() == [] and srv.faults.active() == []
    with imaplib.IMAP4(srv.host, srv.imap_port) as imap:
        imap.login("keep@example.test", "pw")


def test_smtp_faults_as_smtplib_exceptions(srv):
    srv.fault("smtp", "connect", reply="421 4.3.2 try later")
    with pytest.raises(smtplib.SMTPConnectError):
        smtplib.SMTP(srv.host, srv.smtp_port, timeout=5)
    srv.fault("smtp", "mail", reply="451 4.3.0 later")
    srv.fault("smtp", "rcpt", reply="550 5.1.1 no", match="bob@")
    srv.fault("smtp", "data", reply="554 5.6.0 rejected")
    with smtplib.SMTP(srv.host, srv.smtp_port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("a@b.org", ["x@c.org"], b"\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@b.org", ["bob@c.org"], b"\r\n")
        with pytest.raises(smtplib.SMTPDataError):
            client.sendmail("a@b.org", ["carol@c.org"], b"\r\n")
        refused = client.sendmail("a@b.org", ["bob@c.org", "ann@c.org"], b"Subject: ok\r\n\r\n")
        assert refused == {}  # each fault acted once
    fault = srv.fault("smtp", "rcpt", drop=True, times=None)
    for _ in range(2):
        with pytest.raises(smtplib.SMTPServerDisconnected):
            with smtplib.SMTP(srv.host, srv.smtp_port, timeout=5) as client:
                client.sendmail("a@b.org", ["z@c.org"], b"\r\n")
    assert fault.hits == 2
    srv.clear_faults()
    assert sorted(m.address for m in srv.wait_for(2)) == ["ann@c.org", "bob@c.org"]


def test_smtp_latency_fault(srv):
    import time

    srv.fault("smtp", "connect", delay=0.3)
    started = time.monotonic()
    with smtplib.SMTP(srv.host, srv.smtp_port, timeout=5) as client:
        assert client.noop()[0] == 250
    assert time.monotonic() - started >= 0.3


def test_bad_fault_and_bad_input_are_refused(srv):
    with pytest.raises(ValueError, match="unknown fault step"):
        srv.fault("smtp", "helo", reply="500 x")
    with pytest.raises(ValueError, match="needs a reply"):
        srv.fault("smtp", "mail")
    with pytest.raises(ValueError, match="unknown fault step"):
        srv.fault("imap", "select", reply="NO")
    with pytest.raises(ValueError):
        srv.add_user("no-at-sign", "pw")
    with pytest.raises(ValueError):
        srv.add_user("a@example.test", "with:colon")
    with pytest.raises(ValueError, match="unknown services"):
        MailServer(services=("smtp", "nntp"))


def test_not_catch_all_and_auth_required():
    with MailServer(catch_all=False, auth_required=True, services=("smtp",)) as server:
        server.add_user("user@example.test", "pw")
        with smtplib.SMTP(server.host, server.smtp_port, timeout=5) as client:
            client.starttls(context=server.ssl_context())
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail("user@example.test", ["user@example.test"], b"\r\n")
            assert refused.value.smtp_code == 530
            client.login("user@example.test", "pw")
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.sendmail("user@example.test", ["nobody@example.test"], b"\r\n")
            client.sendmail("user@example.test", ["user@example.test"], b"Subject: me\r\n\r\n")
        assert server.wait_for(address="user@example.test")[0]["subject"] == "me"
        assert set(server.endpoints()) == {"smtp", "host", "cafile"}


def test_stop_leaves_no_port_thread_or_directory_behind():
    before = {t.ident for t in threading.enumerate()}
    server = MailServer().start()
    ports = [port for key, port in server.endpoints().items() if key not in ("host", "cafile")]
    data_dir = server.data_dir
    idle = socket.create_connection((server.host, server.imap_port), timeout=5)
    assert idle.recv(4096).startswith(b"* OK")
    server.stop()
    try:  # an open connection is closed by stop
        assert idle.recv(10) == b""
    except ConnectionResetError:
        pass
    idle.close()
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((server.host, port), timeout=1).close()
    assert not data_dir.exists()
    assert {t.ident for t in threading.enumerate()} <= before | _pool_threads()
    with pytest.raises(RuntimeError, match="not started"):
        server.messages()


def _pool_threads() -> set:
    return {t.ident for t in threading.enumerate() if t.name.startswith("PoolThread")}


def test_start_and_stop_in_reactor():
    server = MailServer(services=("smtp", "imap"))
    assert in_reactor(server.start_in_reactor) is server
    with smtplib.SMTP(server.host, server.smtp_port, timeout=5) as client:
        client.sendmail("a@b.org", ["t@c.org"], b"Subject: trial\r\n\r\n")
    assert server.wait_for(subject="trial")[0].address == "t@c.org"
    with pytest.raises(RuntimeError, match="reactor thread"):
        in_reactor(server.stop)
    in_reactor(server.stop_in_reactor)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.smtp_port or 1), timeout=1)


@pytest.mark.parametrize("service", ["smtp", "submissions"])
def test_start_returns_once_the_greeting_is_sent(service):
    """A delayed greeting (over implicit TLS too) holds start() back; then clients are greeted
    at once."""
    import time

    server = MailServer(services=(service,))
    fault = server.fault("smtp", "connect", delay=0.5)
    started = time.monotonic()
    with server:
        assert time.monotonic() - started >= 0.5 and fault.hits == 1
        port = server.endpoints()[service]
        with socket.create_connection((server.host, port), timeout=5) as raw:
            if service == "submissions":
                raw = server.ssl_context().wrap_socket(raw, server_hostname=server.host)
            raw.settimeout(0.2)
            assert raw.recv(4096).startswith(b"220 mx.example.test ESMTP")


def test_start_names_the_listener_that_does_not_greet_in_time():
    server = MailServer(services=("imap", "smtp"))
    server.fault("smtp", "connect", delay=2, times=None)
    with pytest.raises(TimeoutError, match=r"the smtp listener \(127\.0\.0\.1:\d+\) sent no gre"):
        server.start(timeout=0.3)
    assert server.data_dir is None and server.endpoints()["host"] == server.host
    assert set(server.endpoints()) == {"host", "cafile"}  # stopped: no listener left


def test_start_and_stop_log_no_failure():
    """No relay scheduler scans the queue a test server does not have."""
    from twisted.logger import globalLogPublisher

    failures: list = []

    def observe(event: dict) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        MailServer(services=("smtp",)).start().stop()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert failures == []
