"""RFC 1939 rule by rule, one rule per test, and the example session of its section 10.

The rules are the issue's "Protocol" list; rules already shown in ``test_pop3.py`` (deleted
messages refused everywhere, RSET, dropped connections and idle sessions deleting nothing,
exact CRLF sizes, dot-stuffing, TOP, UIDL stable across restarts, STLS injection) are not
repeated here.  The lock is in ``test_pop3_lock.py``, CAPA and AUTH in ``test_pop3_auth.py``.
"""

from __future__ import annotations

import os
import re
import socket
import time

import pytest
from test_pop3 import (
    ALICE,
    ONE,
    PASSWORD,
    TWO,
    client,
    expect_error,
    login,
    message_files,
    raw,
    read_to_eof,
    read_until,
    serve_alice,
)

from mailgw.pop3 import make_factory


@pytest.fixture
def pop(server):
    """Plaintext allowed; alice holds ONE and TWO."""
    return serve_alice(server)


def sized(subject: str, octets: int, body_start: bytes = b"") -> bytes:
    """A message of exactly ``octets`` octets (CRLF line ends)."""
    head = f"From: mrose@dbc.mtview.ca.us\r\nSubject: {subject}\r\n\r\n".encode() + body_start
    message = head + b"x" * (octets - len(head) - 2) + b"\r\n"
    assert len(message) == octets
    return message


def exchange(sock, command: bytes, multiline: bool = False) -> bytes:
    sock.sendall(command + b"\r\n")
    return read_until(sock, b"\r\n.\r\n" if multiline else b"\r\n")


def test_rfc1939_example_session(server):
    """Section 10 with USER/PASS for APOP: same commands, same reply forms, same octet counts."""
    first = sized("first", 120)
    second = sized("second", 200, body_start=b".signature dot\r\n")
    server.add_user(ALICE, PASSWORD)
    inbox = server.store.folder(ALICE)
    inbox.append(first)
    inbox.append(second)
    sock = raw(server.listen(make_factory))
    assert exchange(sock, b"USER " + ALICE.encode()).startswith(b"+OK")
    greeting = exchange(sock, b"PASS " + PASSWORD.encode())
    assert greeting == b"+OK alice@example.test's maildrop has 2 messages (320 octets)\r\n"
    assert exchange(sock, b"STAT") == b"+OK 2 320\r\n"
    listing = exchange(sock, b"LIST", multiline=True)
    assert listing == b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n"
    assert exchange(sock, b"RETR 1", multiline=True) == b"+OK 120 octets\r\n" + first + b".\r\n"
    assert exchange(sock, b"DELE 1") == b"+OK message 1 deleted\r\n"
    stuffed = second.replace(b"\r\n.sig", b"\r\n..sig")
    assert exchange(sock, b"RETR 2", multiline=True) == b"+OK 200 octets\r\n" + stuffed + b".\r\n"
    assert exchange(sock, b"DELE 2") == b"+OK message 2 deleted\r\n"
    sock.sendall(b"QUIT\r\n")
    assert read_to_eof(sock) == b"+OK mx.example.test POP3 server signing off (maildrop empty)\r\n"
    assert inbox.messages() == ()


# -- states ---------------------------------------------------------------------------------------


def test_greeting_is_one_ok_line(pop):
    sock = socket.create_connection(("127.0.0.1", pop.pop3_port), timeout=10)
    sock.sendall(b"QUIT\r\n")
    greeting, quit_reply, end = read_to_eof(sock).split(b"\r\n")
    assert re.fullmatch(rb"\+OK [\x21-\x7e][\x20-\x7e]*", greeting)
    assert quit_reply.startswith(b"+OK")
    assert end == b""


def test_transaction_commands_before_login_get_err_and_the_session_goes_on(pop):
    box = client(pop.pop3_port)
    for command in ("STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1"):
        expect_error(box._shortcmd, command)
    expect_error(box._shortcmd, "UIDL")
    box.user(ALICE)
    assert box.pass_(PASSWORD).startswith(b"+OK")
    box.quit()


def test_authorization_commands_after_login_get_err_and_the_session_goes_on(pop):
    box = login(pop.pop3_port)
    for command in (f"USER {ALICE}", f"PASS {PASSWORD}", "STLS", "AUTH PLAIN"):
        assert "not valid in this state" in expect_error(box._shortcmd, command)
    assert box.stat()[0] == 2
    box.quit()


def test_unknown_commands_get_err_and_the_session_goes_on(pop):
    box = client(pop.pop3_port)
    for command in ("XYZZY", "HELO there", "RETRX 1", "LAST", "APOP a b", "\u00e9"):
        assert expect_error(box._shortcmd, command) == "-ERR Unknown command"
    box.user(ALICE)
    box.pass_(PASSWORD)
    assert expect_error(box._shortcmd, "LAST") == "-ERR Unknown command"
    assert box.stat()[0] == 2
    box.quit()


def test_bad_or_missing_arguments_get_err_and_the_session_goes_on(pop):
    box = login(pop.pop3_port)
    bad = ["RETR", "RETR one", "RETR 1 2", "DELE", "TOP 1", "TOP 1 x", "TOP 1 -1", "LIST 1 2"]
    bad += ["UIDL -1", "STAT 1", "NOOP x", "RSET 1", "QUIT 1", "CAPA x", "LIST 3", "RETR 3"]
    for command in bad:
        expect_error(box._shortcmd, command)
    assert box.stat() == (2, len(ONE) + len(TWO))
    box.quit()


def test_arguments_over_40_characters_get_err(pop):
    long_user = "a" * 28 + "@example.test"  # 41 characters
    box = client(pop.pop3_port)
    assert "40 characters" in expect_error(box.user, long_user)
    assert box.user(long_user[1:]).startswith(b"+OK")  # 40 is fine
    box.user(ALICE)
    box.pass_(PASSWORD)
    for command in ("RETR " + "0" * 40 + "1", "TOP 1 " + "1" * 41, "NOOP " + "x" * 41):
        assert "40 characters" in expect_error(box._shortcmd, command)
    assert box.noop().startswith(b"+OK")
    box.quit()


def test_a_long_password_is_not_cut_by_the_argument_limit(pop):
    """PASS takes the rest of the line (RFC 1939 section 7); generated passwords are long."""
    passphrase = "correct horse battery staple " * 3
    pop.add_user("bob@example.test", passphrase)
    box = client(pop.pop3_port)
    box.user("bob@example.test")
    assert box.pass_(passphrase).startswith(b"+OK")
    box.quit()


def test_quit_in_authorization_enters_no_update(pop):
    sock = raw(pop.pop3_port)
    sock.sendall(b"USER " + ALICE.encode() + b"\r\nQUIT\r\n")
    assert read_to_eof(sock).endswith(b"+OK mx.example.test POP3 server signing off\r\n")
    assert len(message_files(pop)) == 2


# -- UPDATE ---------------------------------------------------------------------------------------


def test_deletions_are_fsynced_before_the_reply_to_quit(pop, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.05)  # a reply sent before the fsync would arrive before it is recorded
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    box = login(pop.pop3_port)
    box.dele(1)
    doomed = next(path for path in message_files(pop) if path.read_bytes() == ONE)
    monkeypatch.setattr(os, "fsync", slow_fsync)
    assert box.quit().startswith(b"+OK")
    assert not doomed.exists()
    assert str(doomed.parent) in synced


def test_quit_reply_says_how_many_messages_are_left(pop):
    box = login(pop.pop3_port)
    box.dele(2)
    assert box.quit() == b"+OK mx.example.test POP3 server signing off (1 message left)"
    box = login(pop.pop3_port)
    box.dele(1)
    assert box.quit() == b"+OK mx.example.test POP3 server signing off (maildrop empty)"


def test_session_ended_for_errors_in_transaction_deletes_nothing(pop):
    sock = raw(pop.pop3_port)
    sock.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nDELE 1\r\nDELE 2\r\n".encode())
    sock.sendall(b"BOGUS\r\n" * pop.context.limits.session_errors)
    assert read_to_eof(sock).endswith(b"-ERR Too many errors, closing connection\r\n")
    assert len(message_files(pop)) == 2


def test_over_long_line_in_transaction_deletes_nothing(pop):
    sock = raw(pop.pop3_port)
    sock.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nDELE 1\r\n".encode())
    sock.sendall(b"NOOP " + b"x" * pop.context.limits.command_line)
    assert read_to_eof(sock).endswith(b"-ERR Line too long\r\n")
    assert len(message_files(pop)) == 2


# -- sizes and UIDL -------------------------------------------------------------------------------


def test_greeting_after_pass_counts_the_exact_octets(pop):
    pop.store.folder(ALICE).append(b"Subject: lf\n\n.body\n")
    box = client(pop.pop3_port)
    box.user(ALICE)
    total = len(ONE) + len(TWO) + len(b"Subject: lf\r\n\r\n.body\r\n")
    assert box.pass_(PASSWORD) == b"+OK %s's maildrop has 3 messages (%d octets)" % (
        ALICE.encode(),
        total,
    )
    box.quit()


def test_uidl_matches_the_store_identity_of_each_message(pop):
    inbox = pop.store.folder(ALICE)
    box = login(pop.pop3_port)
    _, listing, _ = box.uidl()
    box.quit()
    expected = [
        b"%d %d.%d" % (n, inbox.uid_validity, info.uid)
        for n, info in enumerate(inbox.messages(), 1)
    ]
    assert listing == expected


def test_uidl_of_a_deleted_message_is_never_reused(pop):
    box = login(pop.pop3_port)
    _, before, _ = box.uidl()
    box.dele(2)
    box.quit()
    pop.store.folder(ALICE).append(TWO)
    box = login(pop.pop3_port)
    _, after, _ = box.uidl()
    box.quit()
    assert after[0] == before[0]
    assert after[1].split()[1] not in {line.split()[1] for line in before}
    ids = [line.split()[1] for line in after]
    assert all(re.fullmatch(rb"[\x21-\x7e]{1,70}", uid) for uid in ids)


def test_poplib_sees_the_multiline_terminator_on_every_listing(pop):
    box = login(pop.pop3_port)
    for response in (box.list(), box.uidl(), box.retr(1), box.top(2, 1), box._longcmd("CAPA")):
        assert response[0].startswith(b"+OK")
    box.dele(1)
    box.dele(2)
    assert box.list()[:2] == (b"+OK 0 messages (0 octets)", [])
    assert box.uidl()[1] == []
    box.quit()
