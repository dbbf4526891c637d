"""Several sessions on one mailbox at once: what one does, the others are told, when RFC 3501
allows it (section 7.4.1: never an EXPUNGE while answering FETCH, STORE or SEARCH).

Each test opens two or more real connections to one live server: IMAP sessions as raw sockets
(so the order of untagged and tagged responses is visible), deliveries over SMTP and deletions
over POP3 through their own listeners on the same store.  alice's password is stored as {PLAIN}
so that the many logins do not each cost an Argon2 hash.
"""

from __future__ import annotations

import poplib
import re
import smtplib
import socket
import time
from collections.abc import Iterator

import pytest
from conftest import LiveServer, make_config

from mailgw import imap, pop3, smtp

ALICE = "alice@example.test"
PASSWORD = "secret"


def message(subject: str) -> bytes:
    """A small message."""
    return f"From: bob@remote.test\r\nTo: {ALICE}\r\nSubject: {subject}\r\n\r\nText.\r\n".encode()


@pytest.fixture
def live(tmp_path) -> Iterator[LiveServer]:
    """A server with IMAP, SMTP and POP3 listeners (``imap_port``, ``smtp_port``, ``pop3_port``);
    alice's INBOX holds three messages."""
    config = make_config(tmp_path / "data", allow_plaintext_schemes=True)
    config.data_dir.mkdir(parents=True)
    config.users_file.write_text(f"{ALICE}:{{PLAIN}}{PASSWORD}\n")
    server = LiveServer(config)
    inbox = server.store.folder(ALICE)
    for n in range(1, 4):
        inbox.append(message(f"m{n}"))
    server.imap_port = server.listen(imap.make_factory)
    server.smtp_port = server.listen(smtp.make_factory)
    server.pop3_port = server.listen(pop3.make_factory)
    yield server
    server.close()


class Session:
    """A raw IMAP connection, logged in with INBOX selected; ``run`` returns a command's whole
    answer (untagged responses, then the tagged line) as bytes."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.count = 0
        self.pending = b""
        self.read_line()
        assert b" OK " in self.run(f"LOGIN {ALICE} {PASSWORD}")
        assert b" OK " in self.run("SELECT INBOX")

    def read_line(self) -> bytes:
        """One response line (with a literal's bytes, if it announces one)."""
        while b"\r\n" not in self.pending:
            chunk = self.sock.recv(65536)
            assert chunk, "the server hung up"
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\r\n")
        literal = re.search(rb"\{(\d+)\}$", line)
        if literal:
            size = int(literal.group(1))
            while len(self.pending) < size:
                self.pending += self.sock.recv(65536)
            line += b"\r\n" + self.pending[:size]
            self.pending = self.pending[size:]
            line += self.read_line()
        return line + b"\r\n"

    def run(self, command: str) -> bytes:
        """Send ``command`` and read until its tagged answer."""
        self.count += 1
        tag = b"t%d" % self.count
        self.sock.sendall(tag + b" " + command.encode() + b"\r\n")
        answer = b""
        while True:
            line = self.read_line()
            answer += line
            if line.startswith(tag + b" "):
                assert line.startswith(tag + b" OK"), answer
                return answer

    def close(self) -> None:
        """Log out."""
        self.run("LOGOUT")
        self.sock.close()


@pytest.fixture
def sessions(live) -> Iterator[tuple[Session, Session]]:
    """Two IMAP sessions of alice with INBOX selected."""
    first, second = Session(live.imap_port), Session(live.imap_port)
    yield first, second
    for session in (first, second):
        session.sock.close()


def untagged(answer: bytes, kind: bytes) -> list[bytes]:
    """The untagged responses of one kind (e.g. b"EXISTS", b"EXPUNGE", b"FETCH") in an answer."""
    return re.findall(rb"^\* (\d+ " + kind + rb".*?)\r$", answer, re.MULTILINE)


def test_smtp_delivery_shows_as_exists_at_noop(live, sessions):
    watcher, _ = sessions
    with smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=10) as client:
        client.sendmail("bob@remote.test", [ALICE], message("delivered"))
    answer = watcher.run("NOOP")
    assert untagged(answer, b"EXISTS") == [b"4 EXISTS"]
    fetched = watcher.run("FETCH 4 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: delivered" in fetched


def test_pop3_deletion_shows_as_expunge_at_noop(live, sessions):
    watcher, _ = sessions
    client = poplib.POP3("127.0.0.1", live.pop3_port, timeout=10)
    client.user(ALICE)
    client.pass_(PASSWORD)
    client.dele(2)
    client.quit()
    answer = watcher.run("NOOP")
    assert untagged(answer, b"EXPUNGE") == [b"2 EXPUNGE"]
    assert b"m2" not in watcher.run("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")


def test_flag_change_shows_as_fetch_in_the_other_session(sessions):
    actor, watcher = sessions
    actor.run("STORE 2 +FLAGS.SILENT (\\Flagged)")
    answer = watcher.run("NOOP")
    [fetch] = untagged(answer, b"FETCH")
    assert fetch.startswith(b"2 FETCH (") and b"\\Flagged" in fetch


@pytest.mark.parametrize(
    "command",
    ["FETCH 1:* (UID FLAGS)", "STORE 3 +FLAGS (\\Seen)", "SEARCH ALL"],
    ids=["fetch", "store", "search"],
)
def test_expunge_waits_until_a_command_that_allows_it(sessions, command):
    actor, watcher = sessions
    actor.run("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert untagged(actor.run("EXPUNGE"), b"EXPUNGE") == [b"1 EXPUNGE"]

    answer = watcher.run(command)
    assert untagged(answer, b"EXPUNGE") == [], answer
    if command.startswith("FETCH"):
        # The numbers have not shifted: message 1 is still counted, its UID gone.
        assert re.findall(rb"\* (\d+) FETCH \(UID (\d+)", answer) == [(b"2", b"2"), (b"3", b"3")]
    if command.startswith("SEARCH"):
        assert b"* SEARCH 2 3\r\n" in answer

    answer = watcher.run("NOOP")
    assert untagged(answer, b"EXPUNGE") == [b"1 EXPUNGE"]
    answer = watcher.run("FETCH 1:* (UID)")
    assert re.findall(rb"\* (\d+) FETCH \(UID (\d+)\)", answer) == [(b"1", b"2"), (b"2", b"3")]


def test_smtp_delivery_reaches_an_idle_session_within_a_second(live, sessions):
    watcher, _ = sessions
    watcher.sock.sendall(b"i IDLE\r\n")
    assert watcher.read_line().startswith(b"+ ")
    start = time.monotonic()
    with smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=10) as client:
        client.sendmail("bob@remote.test", [ALICE], message("pushed"))
    watcher.sock.settimeout(1.0)
    line = watcher.read_line()
    elapsed = time.monotonic() - start
    assert line == b"* 4 EXISTS\r\n"
    assert elapsed < 1.0
    watcher.sock.settimeout(10)
    watcher.sock.sendall(b"DONE\r\n")
    while not (line := watcher.read_line()).startswith(b"i "):
        pass
    assert line.startswith(b"i OK")
