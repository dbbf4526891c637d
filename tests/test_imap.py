"""IMAP4 as Python's imaplib sees it, over a real socket to the real store and login."""

from __future__ import annotations

import dataclasses
import imaplib
import re
import socket
from pathlib import Path

import pytest
from conftest import LiveServer, make_config

from mailgw.imap import make_factory

ALICE = "alice@example.test"
PASSWORD = "secret"


def message(subject: str, body: str = "Hello.\r\n") -> bytes:
    """A small RFC 5322 message with CRLF line endings."""
    return (
        f"From: Bob Sender <bob@elsewhere.test>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@elsewhere.test>\r\n"
        f"Date: Tue, 01 Oct 2024 10:00:00 +0000\r\n\r\n{body}"
    ).encode()


@pytest.fixture
def imap_server(server):
    """The live server with Alice and an IMAP listener; yields (server, port)."""
    server.add_user(ALICE, PASSWORD)
    port = server.listen(make_factory)
    yield server, port


@pytest.fixture
def inbox(imap_server):
    """Alice's INBOX folder (IFolder) in the store."""
    server, _ = imap_server
    return server.store.folder(ALICE)


def connect(port: int) -> imaplib.IMAP4:
    """A logged-in imaplib client."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    client.login(ALICE, PASSWORD)
    return client


def maildir_names(server, flags_only: bool = True) -> list[str]:
    """The file names in Alice's INBOX cur/ and new/."""
    root = Path(server.config.mail_dir) / "example.test" / "alice"
    return sorted(p.name for sub in ("cur", "new") for p in (root / sub).iterdir())


def info_letters(name: str) -> str:
    """The flag letters of a Maildir file name ('' if it has no info part)."""
    return name.split(":2,", 1)[1] if ":2," in name else ""


def untagged(client: imaplib.IMAP4, name: str) -> list:
    """Pop the untagged responses of one kind imaplib collected."""
    return client.response(name)[1]


# -- login ---------------------------------------------------------------------------------


def test_login_ok_and_bad(imap_server):
    """Good password logs in; a wrong one and an unknown user get the same NO."""
    _, port = imap_server
    client = connect(port)
    assert client.state == "AUTH"
    client.logout()
    for user, password in ((ALICE, "wrong"), ("nobody@example.test", PASSWORD)):
        client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(user, password)
        assert client.noop()[0] == "OK"
        client.logout()


def test_login_refused_without_tls_when_plaintext_not_allowed(tmp_path):
    """Plaintext not allowed and no TLS: LOGINDISABLED is advertised and LOGIN gets NO."""
    srv = LiveServer(make_config(tmp_path / "data", allow_plaintext=False))
    try:
        srv.add_user(ALICE, PASSWORD)
        port = srv.listen(make_factory)
        client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        assert "LOGINDISABLED" in client.capabilities
        typ, data = client._simple_command("LOGIN", ALICE, PASSWORD)
        assert typ == "NO"
        assert b"PRIVACYREQUIRED" in data[-1]
        client.logout()
    finally:
        srv.close()


def test_capability_lists_imap4rev1_without_logindisabled_when_allowed(imap_server):
    """With plaintext allowed (the test config) LOGIN is not disabled."""
    _, port = imap_server
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    typ, data = client.capability()
    assert typ == "OK"
    caps = data[0].split()
    assert b"IMAP4rev1" in caps and b"LOGINDISABLED" not in caps
    client.logout()


# -- folders -------------------------------------------------------------------------------


def test_list_shows_inbox_and_created_folders(imap_server):
    """LIST shows INBOX; CREATE adds folders that LIST then shows with the '.' delimiter."""
    _, port = imap_server
    client = connect(port)
    assert client.create("Projects")[0] == "OK"
    assert client.create("Projects.2024")[0] == "OK"
    assert client.create("Projects")[0] == "NO"
    typ, lines = client.list()
    assert typ == "OK"
    names = {line.rsplit(b" ", 1)[1].strip(b'"') for line in lines}
    special = {b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive"}
    assert names == {b"INBOX", b"Projects", b"Projects.2024"} | special
    assert all(b' "." ' in line for line in lines)
    typ, lines = client.list('""', "Projects.%")
    assert [line.rsplit(b" ", 1)[1].strip(b'"') for line in lines] == [b"Projects.2024"]
    assert client.create("../escape")[0] == "NO"
    client.logout()


def test_select_reports_exists_uidvalidity_uidnext(imap_server, inbox):
    """SELECT answers EXISTS, RECENT, FLAGS, UIDVALIDITY, UIDNEXT, PERMANENTFLAGS, UNSEEN."""
    _, port = imap_server
    inbox.append(message("one"), flags={"\\Seen"})
    second = inbox.append(message("two"))
    client = connect(port)
    typ, data = client.select("INBOX")
    assert (typ, data) == ("OK", [b"2"])
    assert untagged(client, "UIDVALIDITY") == [str(inbox.uid_validity).encode()]
    assert untagged(client, "UIDNEXT") == [str(second + 1).encode()]
    assert untagged(client, "UNSEEN") == [b"2"]
    assert b"\\Deleted" in untagged(client, "PERMANENTFLAGS")[0]
    assert client.select("Nowhere")[0] == "NO"
    client.logout()


def test_status_of_a_folder(imap_server, inbox):
    """STATUS counts messages without selecting."""
    _, port = imap_server
    inbox.append(message("one"))
    client = connect(port)
    typ, data = client.status("INBOX", "(MESSAGES UNSEEN UIDNEXT)")
    assert typ == "OK"
    assert re.search(rb"MESSAGES 1 UNSEEN 1 UIDNEXT \d+", data[0])
    client.logout()


# -- fetch ---------------------------------------------------------------------------------


def test_fetch_body_returns_exactly_the_stored_bytes(imap_server, inbox):
    """BODY[], BODY.PEEK[], RFC822 and BODY[HEADER] return the stored bytes exactly."""
    _, port = imap_server
    data = message("exact", "Line one.\r\n.leading dot\r\n\r\nLast line.\r\n")
    data = b"Received: from a\r\nReceived: from b\r\n" + data
    uid = inbox.append(data)
    client = connect(port)
    client.select("INBOX")
    typ, fetched = client.fetch("1", "(BODY.PEEK[] RFC822.SIZE UID)")
    assert typ == "OK"
    assert fetched[0][1] == data
    assert re.search(rb"^ RFC822.SIZE %d UID %d\)$" % (len(data), uid), fetched[1])
    header = data[: data.index(b"\r\n\r\n") + 4]
    typ, fetched = client.fetch("1", "(BODY.PEEK[HEADER])")
    assert fetched[0][1] == header
    typ, fetched = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT RECEIVED)])")
    assert fetched[0][1] == b"Received: from a\r\nReceived: from b\r\nSubject: exact\r\n\r\n"
    typ, fetched = client.fetch("1", "(BODY.PEEK[TEXT] BODY.PEEK[]<0.10>)")
    assert fetched[0][1] == data[len(header) :]
    assert fetched[1] == (b" BODY[]<0> {10}", data[:10])
    typ, fetched = client.uid("FETCH", str(uid), "(RFC822)")
    assert typ == "OK" and fetched[0][1] == data
    client.logout()


def test_fetch_metadata_and_envelope(imap_server, inbox):
    """FLAGS, INTERNALDATE, ENVELOPE and BODYSTRUCTURE describe the message."""
    _, port = imap_server
    inbox.append(message("meta data"), flags={"\\Flagged"}, internal_date=1700000000.0)
    client = connect(port)
    client.select("INBOX")
    typ, fetched = client.fetch("1", "(FLAGS INTERNALDATE ENVELOPE BODYSTRUCTURE)")
    assert typ == "OK"
    line = fetched[0]
    assert b"FLAGS (\\Flagged)" in line
    assert imaplib.Internaldate2tuple(line) is not None
    assert b'INTERNALDATE "14-Nov-2023 22:13:20 +0000"' in line
    assert b'"meta data"' in line
    assert b'(("Bob Sender" NIL "bob" "elsewhere.test"))' in line
    assert b'BODYSTRUCTURE ("TEXT" "PLAIN"' in line.upper()
    client.logout()


def test_body_peek_keeps_unseen_body_sets_seen(imap_server, inbox):
    """BODY.PEEK[] leaves the message unseen; BODY[] sets \\Seen (S in the file name)."""
    server, port = imap_server
    inbox.append(message("peek"))
    client = connect(port)
    client.select("INBOX")
    client.fetch("1", "(BODY.PEEK[])")
    assert [info_letters(n) for n in maildir_names(server)] == [""]
    assert b"\\Seen" not in client.fetch("1", "(FLAGS)")[1][0]
    typ, fetched = client.fetch("1", "(BODY[])")
    assert fetched[1] == b" FLAGS (\\Seen \\Recent))"
    assert [info_letters(n) for n in maildir_names(server)] == ["S"]
    client.logout()


def test_fetch_moves_message_out_of_new(imap_server, inbox):
    """A fetched message is no longer \\Recent for later sessions (moved from new/ to cur/)."""
    server, port = imap_server
    inbox.append(message("recent"))
    root = Path(server.config.mail_dir) / "example.test" / "alice"
    assert len(list((root / "new").iterdir())) == 1
    client = connect(port)
    client.select("INBOX")
    client.fetch("1", "(FLAGS)")
    client.logout()
    assert list((root / "new").iterdir()) == []
    client = connect(port)
    client.select("INBOX")
    assert untagged(client, "RECENT") == [b"0"]
    client.logout()


# -- store and expunge ---------------------------------------------------------------------


def test_store_flags_changes_file_name(imap_server, inbox):
    """STORE +FLAGS/-FLAGS/FLAGS and UID STORE change the Maildir info; .SILENT says nothing."""
    server, port = imap_server
    uid = inbox.append(message("flags"))
    client = connect(port)
    client.select("INBOX")
    typ, data = client.store("1", "+FLAGS", "(\\Flagged)")
    assert typ == "OK" and b"\\Flagged" in data[0]
    assert [info_letters(n) for n in maildir_names(server)] == ["F"]
    typ, data = client.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Seen \\Answered)")
    assert typ == "OK" and data == [None]
    assert [info_letters(n) for n in maildir_names(server)] == ["FRS"]
    client.store("1", "-FLAGS", "(\\Answered)")
    assert [info_letters(n) for n in maildir_names(server)] == ["FS"]
    client.store("1", "FLAGS", "(\\Draft)")
    assert [info_letters(n) for n in maildir_names(server)] == ["D"]
    client.logout()


def test_store_deleted_expunge_removes_file(imap_server, inbox):
    """\\Deleted + EXPUNGE removes the file; UID FETCH of it then finds nothing."""
    server, port = imap_server
    inbox.append(message("keep"))
    gone = inbox.append(message("drop"))
    client = connect(port)
    client.select("INBOX")
    client.store("2", "+FLAGS", "(\\Deleted)")
    typ, data = client.expunge()
    assert (typ, data) == ("OK", [b"2"])
    assert len(maildir_names(server)) == 1
    typ, data = client.uid("FETCH", str(gone), "(UID FLAGS)")
    assert typ == "OK" and data == [None]
    typ, data = client.fetch("1:*", "(UID)")
    assert len(data) == 1
    client.logout()


def test_close_expunges_silently(imap_server, inbox):
    """CLOSE removes \\Deleted messages and leaves the selected state."""
    server, port = imap_server
    inbox.append(message("drop"))
    client = connect(port)
    client.select("INBOX")
    client.store("1", "+FLAGS.SILENT", "(\\Deleted)")
    assert client.close()[0] == "OK"
    assert maildir_names(server) == []
    assert client.state == "AUTH"
    client.logout()


def test_uids_stable_across_sessions(imap_server, inbox):
    """The same messages have the same UIDs and UIDVALIDITY in a later session."""
    _, port = imap_server
    for n in range(3):
        inbox.append(message(f"m{n}"))
    seen = []
    for _ in range(2):
        client = connect(port)
        client.select("INBOX")
        validity = untagged(client, "UIDVALIDITY")
        typ, data = client.fetch("1:*", "(UID)")
        seen.append((validity, data))
        client.logout()
    assert seen[0] == seen[1]
    assert len(seen[0][1]) == 3


def test_examine_is_read_only(imap_server, inbox):
    """EXAMINE: STORE gets NO, BODY[] does not set \\Seen."""
    server, port = imap_server
    inbox.append(message("ro"))
    client = connect(port)
    assert client.select("INBOX", readonly=True)[0] == "OK"
    assert client.store("1", "+FLAGS", "(\\Seen)")[0] == "NO"
    client.fetch("1", "(BODY[])")
    assert [info_letters(n) for n in maildir_names(server)] == [""]
    client.logout()


# -- changes from elsewhere ------------------------------------------------------------------


def test_message_delivered_during_session_appears_after_noop(imap_server, inbox):
    """A message appended through the store while selected is announced (EXISTS) by NOOP."""
    _, port = imap_server
    inbox.append(message("first"))
    client = connect(port)
    client.select("INBOX")
    assert untagged(client, "EXISTS") == [b"1"]
    inbox.append(message("second"))
    typ, _ = client.noop()
    assert typ == "OK"
    assert untagged(client, "EXISTS") == [b"2"]
    typ, data = client.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert data[0][1] == b"Subject: second\r\n\r\n"
    client.logout()


def test_expunge_and_flags_from_another_session(imap_server, inbox):
    """Another session's flag change and expunge reach this one at NOOP, not during FETCH."""
    _, port = imap_server
    for n in range(3):
        inbox.append(message(f"m{n}"))
    watcher, actor = connect(port), connect(port)
    watcher.select("INBOX")
    actor.select("INBOX")
    actor.store("1", "+FLAGS", "(\\Deleted)")
    actor.store("3", "+FLAGS", "(\\Flagged)")
    actor.expunge()
    actor.logout()
    typ, data = watcher.fetch("1:*", "(UID)")
    assert typ == "OK"
    # Sequence numbers do not shift during FETCH: message 1 is gone but still counted.
    assert [line for line in data if b"UID" in line] == [b"2 (UID 2)", b"3 (UID 3)"]
    assert b"3 (FLAGS (\\Flagged \\Recent))" in data
    assert watcher.response("EXPUNGE")[1] == [None]
    watcher.noop()
    assert untagged(watcher, "EXPUNGE") == [b"1"]
    typ, data = watcher.fetch("1:*", "(UID)")
    assert data == [b"1 (UID 2)", b"2 (UID 3)"]
    watcher.logout()


def test_append_to_folder(imap_server):
    """APPEND stores the message byte for byte; APPEND to a missing folder asks to create it."""
    server, port = imap_server
    client = connect(port)
    data = message("appended")
    typ, _ = client.append("INBOX", "(\\Seen)", '"01-Oct-2024 10:00:00 +0200"', data)
    assert typ == "OK"
    client.select("INBOX")
    typ, fetched = client.fetch("1", "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert fetched[0][1] == data
    assert b"\\Seen" in fetched[0][0]
    assert b"01-Oct-2024 08:00:00 +0000" in fetched[0][0]
    typ, data = client.append("Nowhere", None, None, data)
    assert typ == "NO" and b"TRYCREATE" in data[0]
    client.logout()


# -- bad input -------------------------------------------------------------------------------


def raw_session(port: int) -> socket.socket:
    """A raw, logged-in connection (greeting read)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.recv(4096)
    sock.sendall(b"a LOGIN " + ALICE.encode() + b" " + PASSWORD.encode() + b"\r\n")
    assert b"a OK" in read_until(sock, b"a ")
    return sock


def read_until(sock: socket.socket, tag: bytes) -> bytes:
    """Read until a line starting with ``tag`` is complete."""
    data = b""
    while not re.search(rb"(^|\r\n)" + re.escape(tag) + rb"[^\r\n]*\r\n", data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_bad_commands_get_bad_and_session_goes_on(imap_server, inbox):
    """Unknown commands, bad syntax and wrong states get BAD; the session still works."""
    _, port = imap_server
    inbox.append(message("still here"))
    sock = raw_session(port)
    for line, tag in (
        (b"b FROBNICATE", b"b "),
        (b"c FETCH 1 (FLAGS)", b"c "),
        (b"d SELECT", b"d "),
        (b"e SELECT INBOX", b"e "),
        (b"f FETCH x:y (FLAGS)", b"f "),
        (b"g FETCH 1 (NONSENSE)", b"g "),
        (b"h STORE 1 +FLAGS (\\Seen", b"h "),
        (b"i UID EXPLODE 1", b"i "),
        (b"j NOOP", b"j "),
    ):
        sock.sendall(line + b"\r\n")
        reply = read_until(sock, tag)
        last = reply.strip().split(b"\r\n")[-1]
        expected = b"OK" if tag in (b"e ", b"j ") else b"BAD"
        assert last.startswith(tag + expected), (line, reply)
    sock.close()


def test_over_long_line_is_answered_before_disconnect(tmp_path):
    """A command line over the limit gets BAD then BYE, then the connection closes."""
    limits = dataclasses.replace(make_config(tmp_path).limits, command_line=1024)
    srv = LiveServer(make_config(tmp_path / "data", limits=limits))
    try:
        port = srv.listen(make_factory)
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.recv(4096)
        sock.sendall(b"a NOOP " + b"x" * 5000 + b"\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert b"* BAD [TOOBIG]" in data and b"* BYE" in data
        sock.close()
    finally:
        srv.close()


def test_pipelined_commands_answer_in_order(imap_server, inbox):
    """Commands sent in one segment are run one after another, replies in order."""
    server, port = imap_server
    inbox.append(message("pipelined"))
    sock = raw_session(port)
    sock.sendall(
        b"b SELECT INBOX\r\nc STORE 1 +FLAGS (\\Deleted)\r\nd EXPUNGE\r\n"
        b"e FETCH 1:* (UID)\r\nf NOOP\r\n"
    )
    reply = read_until(sock, b"f ")
    tags = [line.split(b" ")[0] for line in reply.split(b"\r\n") if line[:1] in b"bcdef"]
    assert [t for t in tags if t] == [b"b", b"c", b"d", b"e", b"f"]
    assert b"* 1 EXPUNGE" in reply
    assert maildir_names(server) == []
    sock.close()


def test_idle_timeout_logs_out(tmp_path):
    """A silent client is told BYE after the idle timeout and disconnected."""
    limits = dataclasses.replace(make_config(tmp_path).limits, imap_idle_timeout=0.5)
    srv = LiveServer(make_config(tmp_path / "data", limits=limits))
    try:
        port = srv.listen(make_factory)
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert b"* BYE" in data
        sock.close()
    finally:
        srv.close()


def test_search_always_answers(imap_server, inbox):
    """SEARCH and UID SEARCH list matches, and say "* SEARCH" even when nothing matches."""
    _, port = imap_server
    inbox.append(message("one"))
    uid = inbox.append(message("two"), flags={"\\Seen"})
    client = connect(port)
    client.select("INBOX")
    assert client.search(None, "UNSEEN") == ("OK", [b"1"])
    assert client.uid("SEARCH", "SEEN") == ("OK", [str(uid).encode()])
    assert client.search(None, "DELETED") == ("OK", [b""])
    client.logout()
