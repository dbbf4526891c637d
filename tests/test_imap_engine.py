"""mailgw's own IMAP engine: no Twisted IMAP left, per-state command tables, one command at a time,
UNSELECT, MULTIAPPEND, FETCH of every item shape and the BAD reasons, over real sockets."""

from __future__ import annotations

import ast
import base64
import imaplib
import os
import re
import socket
import time
from pathlib import Path

import pytest
from test_imap import ALICE, PASSWORD, connect, message, raw_session, read_until

import mailgw
from mailgw.imap import make_factory, session

PACKAGE = Path(mailgw.__file__).parent


@pytest.fixture
def port(server):
    """Alice and an IMAP listener."""
    server.add_user(ALICE, PASSWORD)
    return server.listen(make_factory)


@pytest.fixture
def inbox(server, port):
    """Alice's INBOX folder (IFolder) in the store."""
    return server.store.folder(ALICE)


def imported_modules(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, [names imported from it])`` for every import in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_no_twisted_imap_and_no_private_twisted_names_anywhere_in_mailgw():
    """Nothing in mailgw imports twisted.mail.imap4 (mailgw.imap nothing of twisted.mail at all),
    and no module imports a private Twisted name."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        in_imap = path.is_relative_to(PACKAGE / "imap")
        for module, names in imported_modules(path):
            if not module.startswith("twisted"):
                continue
            private = [n for n in names if n.startswith("_")] or module.split(".")[-1][:1] == "_"
            if (
                module.startswith("twisted.mail.imap4")
                or private
                or (in_imap and module.startswith("twisted.mail"))
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}: {module} {names}")
        if "imap4" in path.read_text() and in_imap:
            offenders.append(f"{path.relative_to(PACKAGE)} names imap4")
    assert offenders == []
    assert len(list((PACKAGE / "imap").rglob("*.py"))) > 10  # the walk did see the engine


def test_every_handled_command_is_a_wire_command_and_logout_works_everywhere():
    """The tables are explicit: command classes to handlers; CAPABILITY/NOOP/LOGOUT/ID in all."""
    for state, table in session.TABLES.items():
        assert all(isinstance(kind, type) and callable(h) for kind, h in table.items()), state
        for kind in (session.c.Capability, session.c.Noop, session.c.Logout, session.c.Id):
            assert kind in table, (state, kind)
    assert session.c.Fetch not in session.TABLES["auth"]
    assert session.c.Login not in session.TABLES["selected"]


def send(sock, line: bytes, tag: bytes) -> bytes:
    """Send one command line; return everything up to its tagged reply."""
    sock.sendall(line + b"\r\n")
    return read_until(sock, tag + b" ")


def last_line(reply: bytes) -> bytes:
    """The tagged line of a reply."""
    return reply.rstrip(b"\r\n").split(b"\r\n")[-1]


def test_commands_of_the_wrong_state_get_bad_saying_so(port, inbox):
    inbox.append(message("one"))
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    read_until(sock, b"* OK")
    assert last_line(send(sock, b"a SELECT INBOX", b"a")) == (
        b"a BAD SELECT is not valid in this state"
    )
    assert last_line(send(sock, b"b FETCH 1 FLAGS", b"b")).startswith(b"b BAD FETCH is not valid")
    send(sock, b"c LOGIN " + ALICE.encode() + b" " + PASSWORD.encode(), b"c")
    assert last_line(send(sock, b"d EXPUNGE", b"d")).startswith(b"d BAD EXPUNGE is not valid")
    send(sock, b"e SELECT INBOX", b"e")
    assert last_line(send(sock, b"f LOGIN x y", b"f")).startswith(b"f BAD LOGIN is not valid")
    assert last_line(send(sock, b"g STARTTLS", b"g")).startswith(b"g BAD STARTTLS is not valid")
    assert last_line(send(sock, b"h NOOP", b"h")) == b"h OK NOOP completed"
    sock.close()


def test_bad_replies_give_the_parsers_reason(port):
    sock = raw_session(port)
    send(sock, b"s SELECT INBOX", b"s")
    for line, reason in (
        (b"a FROBNICATE", b"unknown command FROBNICATE"),
        (b"b FETCH 1 (NONSENSE)", b"NONSENSE"),
        (b"c FETCH 0 (FLAGS)", b"0"),
        (b"d STORE 1 +FLAGS (\\Recent)", b"Recent"),
        (b"e SEARCH NOSUCHKEY", b"NOSUCHKEY"),
        (b"f SEARCH MODSEQ x", b"MODSEQ needs a mod-sequence"),
        (
            b"g UID FETCH 1 (FLAGS) (CHANGEDSINCE 5 VANISHED)",
            b"VANISHED needs UID FETCH and QRESYNC",
        ),
    ):
        tagged = last_line(send(sock, line, line[:1]))
        assert tagged.startswith(line[:1] + b" BAD "), tagged
        assert reason.lower() in tagged.lower(), (line, tagged)
    sock.sendall(b"(bad\r\n")
    assert read_until(sock, b"* BAD").startswith(b"* BAD ")
    sock.close()


def test_pipelined_commands_run_one_at_a_time_in_order(port, inbox):
    """Ten commands in one segment, some waiting for the store, answer in the order sent, each
    seeing the effect of the one before."""
    for n in range(3):
        inbox.append(message(f"m{n}"))
    sock = raw_session(port)
    data = message("appended")
    sock.sendall(
        b"p1 SELECT INBOX\r\np2 STORE 1 +FLAGS (\\Deleted)\r\np3 SEARCH DELETED\r\n"
        b"p4 EXPUNGE\r\np5 FETCH 1:* (UID)\r\np6 APPEND INBOX {%d+}\r\n%s\r\n"
        b"p7 NOOP\r\np8 SEARCH ALL\r\np9 CREATE Pipe\r\np10 STATUS Pipe (MESSAGES)\r\n"
        % (len(data), data)
    )
    reply = read_until(sock, b"p10 ")
    tags = [line.split(b" ")[0] for line in reply.split(b"\r\n") if line[:1] == b"p"]
    assert tags == [b"p%d" % n for n in range(1, 11)]
    assert b"* SEARCH 1\r\n" in reply and b"* 1 EXPUNGE\r\n" in reply
    assert re.search(rb"\* 1 FETCH \(UID 2\)\r\n\* 2 FETCH \(UID 3\)\r\np5 OK", reply)
    assert b"* 3 EXISTS\r\n" in reply and b"* SEARCH 1 2 3\r\n" in reply
    assert b'* STATUS "Pipe" (MESSAGES 0)' in reply
    sock.close()


def test_unselect_leaves_without_expunging(port, inbox):
    inbox.append(message("kept"))
    client = connect(port)
    assert "UNSELECT" in client.capabilities
    client.select("INBOX")
    client.store("1", "+FLAGS", "(\\Deleted)")
    assert client.unselect() == ("OK", [b"UNSELECT completed"])
    assert client.state == "AUTH"
    client.state = "SELECTED"  # imaplib would refuse to send it
    with pytest.raises(imaplib.IMAP4.error, match="FETCH is not valid in this state"):
        client.fetch("1", "(FLAGS)")
    client.state = "AUTH"
    assert client.select("INBOX") == ("OK", [b"1"])
    client.logout()


def test_multiappend_stores_every_message_in_order(port):
    sock = raw_session(port)
    first, second = message("first"), message("second")
    sock.sendall(
        b"a APPEND INBOX (\\Seen) {%d+}\r\n%s {%d+}\r\n%s\r\n"
        % (len(first), first, len(second), second)
    )
    reply = last_line(read_until(sock, b"a "))
    assert re.match(rb"a OK \[APPENDUID \d+ 1:2\] APPEND completed", reply), reply
    client = connect(port)
    client.select("INBOX")
    fetched = client.fetch("1:2", "(FLAGS BODY.PEEK[])")[1]
    assert [fetched[0][1], fetched[2][1]] == [first, second]
    assert b"\\Seen" in fetched[0][0] and b"\\Seen" not in fetched[2][0]
    client.logout()
    sock.close()


MIXED = (
    b"From: Ann <ann@remote.test>\r\nTo: alice@example.test\r\nSubject: parts\r\n"
    b"Date: Tue, 01 Oct 2024 10:00:00 +0000\r\nMessage-ID: <parts@remote.test>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello there.\r\n"
    b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode(b"\x00\x01binary\xff")
    + b"\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: b@remote.test\r\n"
    b"\r\nInner body.\r\n--XX--\r\n"
)


def test_fetch_of_every_item_shape(port, inbox):
    """Metadata, ENVELOPE, BODY/BODYSTRUCTURE, every BODY[section]<partial> shape, RFC822.*,
    BINARY and BINARY.SIZE, over imaplib; a non-PEEK section sets \\Seen and reports it."""
    uid = inbox.append(MIXED, internal_date=1700000000.0)
    header = MIXED[: MIXED.index(b"\r\n\r\n") + 4]
    client = connect(port)
    client.select("INBOX")
    typ, data = client.fetch(
        "1", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE)"
    )
    line = data[0]
    assert line.startswith(b"1 (UID %d FLAGS (\\Recent) INTERNALDATE " % uid)
    assert b"RFC822.SIZE %d " % len(MIXED) in line
    assert b'ENVELOPE ("Tue, 01 Oct 2024 10:00:00 +0000" "parts" (("Ann" NIL "ann"' in line
    assert b'BODY (("text" "plain" ("charset" "utf-8")' in line
    assert b'BODYSTRUCTURE (("text" "plain"' in line and b'"mixed" ("boundary" "XX")' in line
    sections = {
        "BODY.PEEK[]": MIXED,
        "BODY.PEEK[HEADER]": header,
        "BODY.PEEK[HEADER.FIELDS (subject FROM)]": (
            b"From: Ann <ann@remote.test>\r\nSubject: parts\r\n\r\n"
        ),
        "BODY.PEEK[HEADER.FIELDS.NOT (Content-Type MIME-Version Message-ID Date To)]": (
            b"From: Ann <ann@remote.test>\r\nSubject: parts\r\n\r\n"
        ),
        "BODY.PEEK[TEXT]<0.8>": b"preamble",
        "BODY.PEEK[1]": b"Hello there.",
        "BODY.PEEK[1.MIME]": b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
        "BODY.PEEK[3.HEADER]": b"Subject: inner\r\nFrom: b@remote.test\r\n\r\n",
        "BODY.PEEK[3.TEXT]": b"Inner body.",
        "BODY.PEEK[3.1]": b"Inner body.",
        "BODY.PEEK[4]": b"",
        "BODY.PEEK[]<5.3>": MIXED[5:8],
        "BODY.PEEK[]<99999.10>": b"",
        "BINARY.PEEK[1]": b"Hello there.",
        "RFC822.HEADER": header,
    }
    for item, expected in sections.items():
        typ, data = client.fetch("1", f"({item})")
        assert typ == "OK", item
        assert data[0][1] == expected, (item, data)
    typ, data = client.fetch("1", "(BINARY.SIZE[2] BINARY.SIZE[1])")
    assert b"BINARY.SIZE[2] 9 BINARY.SIZE[1] 12" in data[0]
    assert b"\\Seen" not in client.fetch("1", "(FLAGS)")[1][0]
    typ, data = client.fetch("1", "(RFC822.TEXT)")
    assert data[0][1] == MIXED[len(header) :]
    assert data[1] == b" FLAGS (\\Seen \\Recent))"
    typ, data = client.uid("FETCH", str(uid), "(RFC822)")
    assert data[0][1] == MIXED and data[1] == b" FLAGS (\\Seen \\Recent) UID %d)" % uid
    client.logout()


def test_binary_of_an_unknown_encoding_is_unknown_cte(port, inbox):
    odd = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-odd\r\n"
    inbox.append(b"Subject: odd\r\n" + odd + b"\r\nzz\r\n")
    client = connect(port)
    client.select("INBOX")
    typ, data = client._simple_command("FETCH", "1", "(BINARY.PEEK[1])")
    assert typ == "NO" and b"[UNKNOWN-CTE]" in data[-1]
    client.logout()


def test_idle_sees_what_another_program_does_to_the_maildir(server, port, inbox):
    """A flag set by renaming the file and a message written into new/ by another program (a
    mail reader, a delivery agent) reach an IDLE session within a few seconds."""
    inbox.append(message("on disk"), flags={"\\Seen"})  # in cur/, not \\Recent: no claim moves it
    time.sleep(0.05)  # the store sees a change by a directory's mtime: let the clock tick on
    sock = raw_session(port)
    send(sock, b"s SELECT INBOX", b"s")
    sock.sendall(b"i IDLE\r\n")
    assert read_until(sock, b"+").startswith(b"+ ")
    maildir = server.store.user_dir(ALICE)
    [path] = (maildir / "cur").iterdir()
    path.rename(path.with_name(path.name.split(":2,")[0] + ":2,FS"))
    (maildir / "new" / "1700000000.M1P1.elsewhere").write_bytes(message("dropped in"))
    sock.settimeout(2 * session.IDLE_CHECK_INTERVAL + 3)
    seen = b""
    while b"EXISTS\r\n" not in seen or b"FETCH" not in seen:  # told as the store notices
        seen += sock.recv(65536)
    assert b"* 1 FETCH (FLAGS (\\Flagged \\Seen))" in seen and b"* 2 EXISTS\r\n" in seen
    sock.sendall(b"DONE\r\n")
    assert last_line(read_until(sock, b"i ")) == b"i OK IDLE terminated"
    sock.close()


def test_fetch_of_files_not_as_listed_or_not_cached(server, port, inbox):
    """A bare-LF file another program wrote is sent with CRLF (the store's view of it), and a
    file evicted from the page cache is read all the same (in the worker thread)."""
    maildir = server.store.user_dir(ALICE)
    (maildir / "cur" / "1700000000.M1P1.elsewhere:2,S").write_bytes(b"Subject: lf\n\nbody\n")
    stored = message("evicted", "x" * 5000 + "\r\n")
    inbox.append(stored)
    for path in (maildir / "cur").iterdir():
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    client = connect(port)
    client.select("INBOX", readonly=True)
    typ, data = client.fetch("1:2", "(RFC822.SIZE BODY.PEEK[] ENVELOPE)")
    assert typ == "OK"
    crlf = b"Subject: lf\r\n\r\nbody\r\n"
    assert data[0][1] == crlf and b"RFC822.SIZE %d " % len(crlf) in data[0][0]
    assert data[2][1] == stored and b'"evicted"' in data[3]
    client.logout()
