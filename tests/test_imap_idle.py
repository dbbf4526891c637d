"""IDLE and the consistency rules with two sessions open at once (RFC 2177, RFC 3501 7.4.1)."""

from __future__ import annotations

import poplib
import smtplib
import socket
import time

import pytest
from test_imap import ALICE, PASSWORD, connect, message, raw_session, read_until

from mailgw import pop3, smtp
from mailgw.imap import make_factory


@pytest.fixture
def ports(server):
    """Alice, and IMAP, SMTP and POP3 listeners on one store: {name: port}."""
    server.add_user(ALICE, PASSWORD)
    return {
        "imap": server.listen(make_factory),
        "smtp": server.listen(smtp.make_factory),
        "pop3": server.listen(pop3.make_factory),
    }


def idle_session(port: int) -> socket.socket:
    """A raw session with INBOX selected and IDLE running."""
    sock = raw_session(port)
    sock.sendall(b"s SELECT INBOX\r\n")
    read_until(sock, b"s ")
    sock.sendall(b"i IDLE\r\n")
    assert read_until(sock, b"+").startswith(b"+")
    return sock


def read_for(sock: socket.socket, marker: bytes, limit: float) -> bytes:
    """Read until ``marker`` shows up or ``limit`` seconds pass."""
    sock.settimeout(limit)
    data = b""
    deadline = time.monotonic() + limit
    while marker not in data and time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_smtp_delivery_reaches_idle_session_within_a_second(server, ports):
    """A message sent over SMTP shows up as EXISTS in an IDLE session in under one second."""
    sock = idle_session(ports["imap"])
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=10) as client:
        client.sendmail("bob@elsewhere.test", [ALICE], message("pushed"))
    data = read_for(sock, b"EXISTS", 5)
    assert b"* 1 EXISTS" in data
    assert time.monotonic() - started < 1.0
    sock.sendall(b"DONE\r\n")
    assert b"i OK" in read_until(sock, b"i ")
    sock.close()


def test_idle_sees_pop3_deletion_and_other_session_flags(server, ports):
    """A POP3 DELE and another IMAP session's STORE reach an IDLE session at once."""
    inbox = server.store.folder(ALICE)
    inbox.append(message("one"))
    inbox.append(message("two"))
    sock = idle_session(ports["imap"])
    other = connect(ports["imap"])
    other.select("INBOX")
    other.store("2", "+FLAGS", "\\Flagged")
    assert b"* 2 FETCH (FLAGS (\\Flagged" in read_for(sock, b"FETCH", 5)
    pop = poplib.POP3("127.0.0.1", ports["pop3"], timeout=10)
    pop.user(ALICE)
    pop.pass_(PASSWORD)
    pop.dele(1)
    pop.quit()
    assert b"* 1 EXPUNGE" in read_for(sock, b"EXPUNGE", 5)
    sock.sendall(b"DONE\r\n")
    read_until(sock, b"i ")
    other.logout()
    sock.close()


def test_no_expunge_during_fetch_store_search_plain_or_uid(server, ports):
    """Another session's expunge is held back during (UID) FETCH/STORE/SEARCH, told at NOOP."""
    inbox = server.store.folder(ALICE)
    for n in range(3):
        inbox.append(message(f"m{n}"))
    watcher = connect(ports["imap"])
    watcher.select("INBOX")
    other = connect(ports["imap"])
    other.select("INBOX")
    other.store("1", "+FLAGS", "\\Deleted")
    other.expunge()
    for command, args in (
        ("FETCH", ("1:*", "(FLAGS)")),
        ("STORE", ("3", "+FLAGS", "\\Seen")),
        ("SEARCH", ("ALL",)),
    ):
        for uid in (False, True):
            if uid:
                typ, _ = watcher.uid(command, *args)
            else:
                typ, _ = watcher._simple_command(command, *args)
            assert typ == "OK"
            assert watcher.response("EXPUNGE")[1] == [None], (command, uid)
    watcher.noop()
    assert watcher.response("EXPUNGE")[1] == [b"1"]
    assert watcher.search(None, "ALL")[1] == [b"1 2"]
    watcher.logout()
    other.logout()


def test_new_message_and_expunge_reported_at_noop(server, ports):
    """Without IDLE, a delivery and an expunge elsewhere appear at the next NOOP."""
    inbox = server.store.folder(ALICE)
    uid = inbox.append(message("old"))
    client = connect(ports["imap"])
    client.select("INBOX")
    inbox.append(message("new"))
    inbox.expunge([uid])
    client.noop()
    assert client.response("EXPUNGE")[1] == [b"1"]
    assert client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1].strip() == (
        b"Subject: new"
    )
    client.logout()


def test_idle_needs_done_and_refreshes_autologout(server, ports):
    """IDLE ends with DONE (anything else is BAD); an IDLE command counts as activity."""
    sock = idle_session(ports["imap"])
    sock.sendall(b"nonsense\r\n")
    assert b"i BAD" in read_until(sock, b"i ")
    sock.sendall(b"j IDLE\r\nDONE\r\n")
    assert b"j OK" in read_until(sock, b"j ")
    sock.close()


def test_recent_goes_to_exactly_one_session(server, ports):
    """Of two sessions selecting the folder, only the first sees the new message \\Recent."""
    server.store.folder(ALICE).append(message("fresh"))
    first, second = connect(ports["imap"]), connect(ports["imap"])
    first.select("INBOX")
    assert first.response("RECENT")[1] == [b"1"]
    second.select("INBOX")
    assert second.response("RECENT")[1] == [b"0"]
    server.store.folder(ALICE).append(message("later"))
    first.noop()
    second.noop()
    counts = [int(c.response("RECENT")[1][-1]) for c in (first, second)]
    assert sum(counts) == 2 and counts[0] >= 1
    first.logout()
    second.logout()
