"""Fault injection on POP3 and IMAP, seen by poplib and imaplib; ``when()`` for trial users."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import threading
import time

import pytest

from mailgw.testing import MailServer
from tests.conftest import in_reactor

USER = "reader@example.test"


@pytest.fixture(scope="module")
def shared():
    """One server for the module: a user with one message, faults cleared before each test."""
    with MailServer(services=("smtp", "pop3", "imap")) as server:
        server.add_user(USER, "pw")
        yield server


@pytest.fixture
def srv(shared):
    shared.clear()
    shared.deliver(USER, b"Subject: seeded\r\n\r\nbody\r\n")
    return shared


def _pop(srv: MailServer, login: bool = True) -> poplib.POP3:
    pop = poplib.POP3(srv.host, srv.pop3_port, timeout=5)
    if login:
        pop.user(USER)
        pop.pass_("pw")
    return pop


def _imap(srv: MailServer) -> imaplib.IMAP4:
    imap = imaplib.IMAP4(srv.host, srv.imap_port, timeout=5)
    imap.login(USER, "pw")
    imap.select("INBOX")
    return imap


def _elapsed(action) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def _read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


# -- POP3 -----------------------------------------------------------------------------------


def test_pop3_login_fault_default_reply_once_then_login_works(srv):
    fault = srv.fault("pop3", "login")
    pop = _pop(srv, login=False)
    pop.user(USER)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\] injected failure"):
        pop.pass_("pw")
    pop.user(USER)
    assert pop.pass_("pw").startswith(b"+OK")  # times=1: used up
    assert fault.hits == 1 and srv.faults.active() == []
    pop.quit()


def test_pop3_login_fault_matches_the_user_name(srv):
    srv.fault("pop3", "login", reply="-ERR [AUTH] go away", match="someone-else@")
    pop = _pop(srv)  # not matched: logs in
    pop.quit()
    srv.fault("pop3", "login", reply="-ERR [AUTH] go away", match="READER@")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] go away"):
        _pop(srv)


def test_pop3_command_fault_matches_the_command_for_n_times(srv):
    srv.fault("pop3", "command", match="RETR", reply="-ERR [SYS/PERM] gone", times=2)
    pop = _pop(srv)
    assert pop.stat() == (1, pop.stat()[1])  # STAT is not matched
    for _ in range(2):
        with pytest.raises(poplib.error_proto, match=r"\[SYS/PERM\] gone"):
            pop.retr(1)
    assert b"Subject: seeded" in pop.retr(1)[1]
    pop.quit()


def test_pop3_drop_is_seen_as_eof(srv):
    srv.fault("pop3", "command", match="RETR", drop=True)
    pop = _pop(srv)
    with pytest.raises(poplib.error_proto, match="EOF"):
        pop.retr(1)
    pop.close()
    srv.fault("pop3", "login", drop=True)
    with pytest.raises(poplib.error_proto, match="EOF"):
        _pop(srv)


def test_pop3_latency_then_the_real_answer(srv):
    srv.fault("pop3", "login", delay=0.3)
    pop = poplib.POP3(srv.host, srv.pop3_port, timeout=5)
    pop.user(USER)
    assert 0.3 <= _elapsed(lambda: pop.pass_("pw")) < 3
    srv.fault("pop3", "command", match="STAT", delay=0.3, times=None)
    for _ in range(2):
        started = time.monotonic()
        assert pop.stat()[0] == 1
        assert 0.3 <= time.monotonic() - started < 3
    pop.quit()


def test_pop3_commands_pipelined_behind_a_delay_keep_their_order(srv):
    fault = srv.fault("pop3", "command", match="STAT", delay=0.2)
    with socket.create_connection((srv.host, srv.pop3_port), timeout=5) as sock:
        assert sock.recv(4096).startswith(b"+OK")
        sock.sendall(f"USER {USER}\r\nPASS pw\r\n".encode())
        assert _read_until(sock, b"octets)\r\n").count(b"+OK") == 2
        sock.sendall(b"STAT\r\nNOOP\r\nQUIT\r\n")
        replies = _read_until(sock, b"signing off (1 message left)\r\n").split(b"\r\n")
    assert fault.hits == 1
    assert replies[0].startswith(b"+OK 1 ") and replies[1] == b"+OK"
    assert replies[2].startswith(b"+OK") and b"signing off" in replies[2]


def test_pop3_clear_faults(srv):
    srv.fault("pop3", "command", times=None)
    pop = _pop(srv, login=False)
    with pytest.raises(poplib.error_proto, match="injected failure"):
        pop.user(USER)
    srv.clear_faults()
    pop.user(USER)
    pop.pass_("pw")
    assert pop.stat()[0] == 1
    pop.quit()


# -- IMAP -----------------------------------------------------------------------------------


def test_imap_login_fault_default_reply_then_login_works(srv):
    srv.fault("imap", "login")
    with imaplib.IMAP4(srv.host, srv.imap_port, timeout=5) as imap:
        with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\] injected"):
            imap.login(USER, "pw")
        assert imap.login(USER, "pw")[0] == "OK"
    srv.fault("imap", "login", reply="NO [UNAVAILABLE] later", match="nobody@")
    with imaplib.IMAP4(srv.host, srv.imap_port, timeout=5) as imap:
        assert imap.login(USER, "pw")[0] == "OK"  # another user's fault


def test_imap_command_fault_matches_fetch_and_uid_fetch(srv):
    srv.fault("imap", "command", match="FETCH", times=2)
    with _imap(srv) as imap:
        assert imap.fetch("1", "(FLAGS)") == ("NO", [b"[UNAVAILABLE] injected failure"])
        assert imap.uid("FETCH", "1", "(FLAGS)")[0] == "NO"
        typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"seeded" in data[0][1]
        srv.fault("imap", "command", match="uid fetch", reply="BAD [CLIENTBUG] nope")
        assert imap.fetch("1", "(FLAGS)")[0] == "OK"  # plain FETCH is not "UID FETCH"
        with pytest.raises(imaplib.IMAP4.error, match=r"\[CLIENTBUG\] nope"):
            imap.uid("FETCH", "1", "(FLAGS)")


def test_imap_drop_is_seen_as_abort(srv):
    srv.fault("imap", "command", match="SELECT", drop=True)
    imap = imaplib.IMAP4(srv.host, srv.imap_port, timeout=5)
    imap.login(USER, "pw")
    with pytest.raises(imaplib.IMAP4.abort):
        imap.select("INBOX")
    imap.shutdown()
    srv.fault("imap", "login", drop=True)
    imap = imaplib.IMAP4(srv.host, srv.imap_port, timeout=5)
    with pytest.raises(imaplib.IMAP4.abort):
        imap.login(USER, "pw")
    imap.shutdown()


def test_imap_latency_then_the_real_answer(srv):
    srv.fault("imap", "login", delay=0.3)
    srv.fault("imap", "command", match="NOOP", delay=0.3, times=2)
    with imaplib.IMAP4(srv.host, srv.imap_port, timeout=5) as imap:
        assert 0.3 <= _elapsed(lambda: imap.login(USER, "pw")) < 3
        for _ in range(2):
            started = time.monotonic()
            assert imap.noop()[0] == "OK"
            assert 0.3 <= time.monotonic() - started < 3
        assert _elapsed(imap.noop) < 0.3


def test_imap_commands_pipelined_behind_a_delay_keep_their_order(srv):
    fault = srv.fault("imap", "command", match="SELECT", delay=0.2)
    with socket.create_connection((srv.host, srv.imap_port), timeout=5) as sock:
        assert sock.recv(4096).startswith(b"* OK")
        sock.sendall(f"a1 LOGIN {USER} pw\r\na2 SELECT INBOX\r\na3 FETCH 1 FLAGS\r\n".encode())
        replies = _read_until(sock, b"a3 OK FETCH completed\r\n")
    tagged = [line[:2] for line in replies.split(b"\r\n") if line[:1] == b"a"]
    assert tagged == [b"a1", b"a2", b"a3"] and fault.hits == 1
    assert b"* 1 FETCH (FLAGS" in replies and b"a2 OK [READ-WRITE]" in replies


def test_imap_clear_faults(srv):
    srv.fault("imap", "command", match="NOOP", times=None, reply="NO stop")
    with _imap(srv) as imap:
        assert imap.noop()[0] == "NO"
        srv.clear_faults()
        assert imap.noop()[0] == "OK"


# -- bad input ------------------------------------------------------------------------------


def test_bad_pop3_and_imap_faults_are_refused(srv):
    with pytest.raises(ValueError, match="starts with"):
        srv.fault("pop3", "command", reply="550 no")
    with pytest.raises(ValueError, match="starts with"):
        srv.fault("imap", "login", reply="* BYE no")
    with pytest.raises(ValueError, match="one line"):
        srv.fault("imap", "command", reply="NO a\r\n* BYE")
    with pytest.raises(ValueError, match="unknown fault step"):
        srv.fault("pop3", "retr")
    with pytest.raises(ValueError, match="times"):
        srv.fault("imap", "command", times=0)
    assert srv.faults.active() == []


# -- when(): wait_for as a Deferred on the reactor ------------------------------------------


def test_when_fires_on_delivery_and_times_out(srv):
    def send():
        with smtplib.SMTP(srv.host, srv.smtp_port, timeout=5) as client:
            client.sendmail("a@b.org", ["late@c.org"], b"Subject: awaited\r\n\r\nx\r\n")

    timer = threading.Timer(0.2, send)
    timer.start()
    found = in_reactor(srv.when, 1, 5, subject="awaited")
    timer.join()
    assert [m.address for m in found] == ["late@c.org"]
    assert in_reactor(srv.when, 1, 5, subject="awaited")[0].uid == found[0].uid  # already there
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="absent"):
        in_reactor(srv.when, 1, 0.2, subject="absent")
    assert 0.2 <= time.monotonic() - started < 3
