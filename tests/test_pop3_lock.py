"""The exclusive POP3 maildrop (RFC 1939 section 4): one session at a time, never stuck.

Sessions run against a live server over the real Maildir store; SMTP and IMAP are the real
listeners, spoken to with smtplib and imaplib; the crash is a real ``twistd`` killed with SIGKILL.
"""

from __future__ import annotations

import base64
import dataclasses
import imaplib
import poplib
import smtplib

import pytest
from conftest import LiveServer, make_config
from mailgw_process import ServerProcess, mailgw, write_config
from test_pop3 import (
    ALICE,
    ONE,
    PASSWORD,
    TWO,
    client,
    expect_error,
    login,
    login_when_released,
    message_files,
    raw,
    read_to_eof,
    read_until,
    serve_alice,
)

from mailgw.imap import make_factory as imap_factory
from mailgw.pop3 import make_factory
from mailgw.smtp import make_factory as smtp_factory

IN_USE = "-ERR [IN-USE] maildrop already locked"


@pytest.fixture
def pop(server):
    """The live server with alice holding ONE and TWO, and a POP3 listener's port."""
    return serve_alice(server)


def test_second_login_gets_in_use_while_a_session_holds_the_maildrop(pop):
    holder = login(pop.pop3_port)
    second = client(pop.pop3_port)
    second.user(ALICE)
    assert expect_error(second.pass_, PASSWORD) == IN_USE
    expect_error(second.stat)  # still in AUTHORIZATION
    assert second.quit().startswith(b"+OK")
    assert holder.stat() == (2, len(ONE) + len(TWO))
    holder.quit()


def test_auth_plain_login_is_refused_the_same_way(pop):
    holder = login(pop.pop3_port)
    second = client(pop.pop3_port)
    response = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    assert expect_error(second._shortcmd, f"AUTH PLAIN {response}") == IN_USE
    holder.quit()
    assert second._shortcmd(f"AUTH PLAIN {response}").startswith(b"+OK")
    second.quit()


def test_lock_is_released_before_the_reply_to_quit(pop):
    first = login(pop.pop3_port)
    first.dele(1)
    assert first.quit().startswith(b"+OK")
    second = login(pop.pop3_port)
    assert second.stat() == (1, len(TWO))
    second.quit()


def test_lock_is_released_when_the_client_disconnects(pop):
    sock = raw(pop.pop3_port)
    sock.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nDELE 1\r\nNOOP\r\n".encode())
    assert read_until(sock, b"message 1 deleted\r\n+OK\r\n").count(b"+OK") == 4
    sock.close()
    box = login_when_released(pop.pop3_port)
    assert box.stat() == (2, len(ONE) + len(TWO))
    box.quit()


def test_lock_is_released_at_idle_timeout(pop):
    limits = dataclasses.replace(pop.context.limits, pop3_idle_timeout=0.5)
    port = pop.listen(lambda ctx: make_factory(dataclasses.replace(ctx, limits=limits)))
    sock = raw(port)
    sock.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
    wire = read_to_eof(sock)
    assert b"maildrop has 2 messages" in wire
    assert wire.endswith(b"-ERR Disconnected for inactivity\r\n")
    box = login_when_released(pop.pop3_port)
    assert box.stat()[0] == 2
    box.quit()


def test_smtp_delivery_goes_on_and_shows_at_the_next_login(pop):
    smtp_port = pop.listen(smtp_factory)
    holder = login(pop.pop3_port)
    new = b"From: dave@remote.test\r\nSubject: three\r\n\r\nwhile locked\r\n"
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        assert smtp.sendmail("dave@remote.test", [ALICE], new) == {}
    assert len(message_files(pop)) == 3
    assert holder.stat()[0] == 2
    holder.quit()
    again = login(pop.pop3_port)
    assert again.stat()[0] == 3
    _, lines, _ = again.retr(3)
    assert lines[-1] == b"while locked"
    again.quit()


def test_imap_expunge_during_a_session_is_reported_gone(pop):
    holder = login(pop.pop3_port)
    imap = imaplib.IMAP4("127.0.0.1", pop.listen(imap_factory), timeout=10)
    imap.login(ALICE, PASSWORD)
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "\\Deleted")
    assert imap.expunge()[0] == "OK"
    imap.logout()
    assert "removed" in expect_error(holder.retr, 1)
    assert "removed" in expect_error(holder.top, 1, 0)
    _, lines, _ = holder.retr(2)
    assert b"\r\n".join(lines) + b"\r\n" == TWO
    assert holder.noop().startswith(b"+OK")
    holder.quit()


def test_lock_excludes_another_server_process_and_dies_with_it(tmp_path):
    """Two mailgw processes on one store share the lock; SIGKILL of the holder frees it."""
    config = write_config(tmp_path, services=("pop3",))
    (tmp_path / "data").mkdir()
    assert mailgw(config, "user", "add", ALICE, "--password-stdin", stdin=PASSWORD).returncode == 0
    other = ServerProcess(config).start()
    here = LiveServer(make_config(tmp_path / "data"))
    try:
        here.store.folder(ALICE).append(ONE)
        holder = poplib.POP3("127.0.0.1", other.ports["pop3"], timeout=10)
        holder.user(ALICE)
        holder.pass_(PASSWORD)
        port = here.listen(make_factory)
        box = client(port)
        box.user(ALICE)
        assert expect_error(box.pass_, PASSWORD) == IN_USE
        other.kill()
        box.user(ALICE)
        assert box.pass_(PASSWORD).startswith(b"+OK")
        assert box.stat() == (1, len(ONE))
        box.quit()
    finally:
        other.kill()
        here.close()
