"""IMAP extensions and the RFC 3501 commands added on top of Twisted, over real sockets."""

from __future__ import annotations

import base64
import dataclasses
import imaplib
import re
import socket
from pathlib import Path

import pytest
from conftest import LiveServer, make_config
from test_imap import ALICE, PASSWORD, connect, message, raw_session, read_until

from mailgw.context import Limits
from mailgw.imap import make_factory


@pytest.fixture
def port(server):
    """Alice and an IMAP listener."""
    server.add_user(ALICE, PASSWORD)
    return server.listen(make_factory)


def greeted(port: int) -> socket.socket:
    """A raw connection, not logged in, greeting read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    read_until(sock, b"* OK")
    return sock


def user_dir(server) -> Path:
    """Alice's Maildir."""
    return Path(server.config.mail_dir) / "example.test" / "alice"


def test_authenticate_plain_with_and_without_initial_response(port):
    """AUTHENTICATE PLAIN works after "+ " and with SASL-IR; a wrong password gets NO."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    assert "AUTH=PLAIN" in client.capabilities
    assert client.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORD}".encode())[0] == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()
    sock = greeted(port)
    bad = base64.b64encode(f"\0{ALICE}\0wrong".encode())
    sock.sendall(b"a AUTHENTICATE PLAIN " + bad + b"\r\n")
    assert b"a NO [AUTHENTICATIONFAILED]" in read_until(sock, b"a ")
    sock.sendall(b"b AUTHENTICATE PLAIN\r\n*\r\n")
    assert b"b BAD" in read_until(sock, b"b ")
    sock.sendall(b"c AUTHENTICATE PLAIN !!notbase64\r\n")
    assert b"c BAD" in read_until(sock, b"c ")
    sock.close()


def test_uidplus_appenduid_copyuid_uid_expunge(port):
    """APPENDUID and COPYUID name the new UIDs; UID EXPUNGE removes only the UIDs given."""
    client = connect(port)
    typ, data = client.append("INBOX", None, None, message("a"))
    validity, first = map(int, re.search(rb"APPENDUID (\d+) (\d+)", data[0]).groups())
    client.append("INBOX", None, None, message("b"))
    client.select("INBOX")
    assert int(client.response("UIDVALIDITY")[1][0]) == validity
    typ, data = client.uid("COPY", f"{first}:*", "Archive")
    assert typ == "OK"
    assert client.response("COPYUID")[1][0].split()[1:] == [b"1:2", b"1:2"]
    client.uid("STORE", "1:2", "+FLAGS", "(\\Deleted)")
    assert client.uid("EXPUNGE", "2")[0] == "OK"
    assert client.response("EXPUNGE")[1] == [b"2"]
    assert client.uid("SEARCH", "ALL")[1] == [b"1"]
    client.logout()


def test_move_and_copy_to_missing_mailbox(port):
    """MOVE answers COPYUID and EXPUNGE; COPY, MOVE and APPEND to a missing folder: TRYCREATE."""
    client = connect(port)
    for subject in ("a", "b", "c"):
        client.append("INBOX", "(\\Seen)", None, message(subject))
    client.select("INBOX")
    typ, data = client._simple_command("MOVE", "2", "Trash")
    assert typ == "OK"
    assert client.response("EXPUNGE")[1] == [b"2"]
    assert client.status("Trash", "(MESSAGES UNSEEN)")[1] == [b'"Trash" (MESSAGES 1 UNSEEN 0)']
    assert client.uid("MOVE", "3", "Junk")[0] == "OK"
    for typ, data in (
        client.copy("1", "Nowhere"),
        client._simple_command("MOVE", "1", "Nowhere"),
        client.append("Nowhere", None, None, message("x")),
    ):
        assert typ == "NO" and b"[TRYCREATE]" in data[-1]
    assert client.search(None, "ALL")[1] == [b"1"]
    client.logout()


def test_namespace_id_and_special_use(port, server):
    """NAMESPACE names one personal namespace; ID answers; new users get SPECIAL-USE folders."""
    client = connect(port)
    client._simple_command("NAMESPACE")
    assert client.response("NAMESPACE")[1] == [b'(("" ".")) NIL NIL']
    client.xatom("ID", '("name" "pytest")')
    assert b'"name" "mailgw"' in client.response("ID")[1][0]
    lines = client.list()[1]
    for name in ("Sent", "Drafts", "Trash", "Junk", "Archive"):
        assert any(
            f"\\{name})".encode() in line and line.endswith(f'"{name}"'.encode()) for line in lines
        ), name
    subscriptions = (user_dir(server) / "subscriptions").read_text().split()
    assert subscriptions == ["INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"]
    client.logout()


def test_literal_plus_and_literal_rules(port):
    """{n+} needs no continuation; bad sizes get BAD; an over-limit {n+} closes the session."""
    sock = raw_session(port)
    sock.sendall(b"a CREATE {6+}\r\nLitBox\r\n")
    assert b"a OK" in read_until(sock, b"a ")
    for n, spec in enumerate((b"{-1}", b"{abc}", b"{99999999999999999999}")):
        tag = b"b%d" % n
        sock.sendall(tag + b" CREATE " + spec + b"\r\n")
        reply = read_until(sock, tag + b" ")
        assert tag + b" BAD" in reply and b"+ " not in reply
    sock.sendall(b"c CREATE {999999+}\r\nb CAPABILITY\r\n")
    reply = read_until(sock, b"* BYE")
    assert b"BYE" in reply and b"CAPABILITY" not in reply
    sock.close()


def test_literal_before_login_refused_without_continuation(tmp_path):
    """Before login a literal over imap_literal_before_login gets BAD and no "+"."""
    limits = Limits(imap_literal_before_login=100)
    srv = LiveServer(make_config(tmp_path / "data", limits=limits))
    try:
        srv.add_user(ALICE, PASSWORD)
        sock = greeted(srv.listen(make_factory))
        sock.sendall(b"a LOGIN {500}\r\n")
        reply = read_until(sock, b"a ")
        assert b"a BAD" in reply and b"+ " not in reply
        sock.close()
    finally:
        srv.close()


def test_search_keys(port):
    """SEARCH with flags, headers, body, dates, sizes, sets, NOT and OR, plain and UID."""
    client = connect(port)
    client.append(
        "INBOX",
        "(\\Seen \\Flagged)",
        '"01-Feb-2024 10:00:00 +0000"',
        message("Quarterly report", "Numbers attached.\r\n"),
    )
    client.append(
        "INBOX", None, '"05-Mar-2024 10:00:00 +0000"', message("Lunch", "Pizza " * 200 + "\r\n")
    )
    client.select("INBOX")
    cases = {
        "ALL": b"1 2",
        "SEEN": b"1",
        "UNSEEN": b"2",
        "FLAGGED": b"1",
        "DELETED": b"",
        "FROM bob": b"1 2",
        f"TO {ALICE}": b"1 2",
        "SUBJECT quarterly": b"1",
        "BODY pizza": b"2",
        "TEXT report": b"1",
        'HEADER Message-ID "<Lunch@"': b"2",
        "SINCE 1-Mar-2024": b"2",
        "BEFORE 1-Mar-2024": b"1",
        "ON 1-Feb-2024": b"1",
        "LARGER 1000": b"2",
        "SMALLER 1000": b"1",
        "2": b"2",
        "1:*": b"1 2",
        "UID 1": b"1",
        "NOT SEEN": b"2",
        "OR FLAGGED BODY pizza": b"1 2",
        "(SEEN FLAGGED)": b"1",
    }
    for query, expected in cases.items():
        assert client.search(None, query) == ("OK", [expected]), query
    assert client.uid("SEARCH", "UNSEEN")[1] == [b"2"]
    assert client.search("UTF-8", "SUBJECT", "lunch")[1] == [b"2"]
    typ, data = client._simple_command("SEARCH", "CHARSET", "KOI8-R", "ALL")
    assert typ == "NO" and b"BADCHARSET" in data[-1]
    for bad in ("NOSUCHKEY", "(SEEN", "SINCE yesterday", "LARGER many"):
        with pytest.raises(imaplib.IMAP4.error):
            client.search(None, bad)
    client.logout()


def test_subscriptions_rename_inbox_delete_status(port, server):
    """LSUB follows SUBSCRIBE/UNSUBSCRIBE; RENAME INBOX moves its messages; DELETE; STATUS."""
    client = connect(port)
    client.append("INBOX", None, None, message("keep me"))
    assert client.unsubscribe("Junk")[0] == "OK"
    assert client.unsubscribe("Junk")[0] == "NO"
    assert client.subscribe("Future")[0] == "OK"
    lsub = client.lsub()[1]
    assert not any(line.endswith(b'"Junk"') for line in lsub)
    assert any(b"\\Noselect" in line and line.endswith(b'"Future"') for line in lsub)
    assert "Future" in (user_dir(server) / "subscriptions").read_text().split()
    assert client.rename("INBOX", "Old") == ("OK", [b"RENAME done"])
    status = client.status("Old", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)")[1][0]
    assert re.match(rb'"Old" \(MESSAGES 1 RECENT 1 UIDNEXT 2 UIDVALIDITY \d+ UNSEEN 1\)', status)
    assert client.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 0)']
    assert client.delete("Old")[0] == "OK"
    assert client.status("Old", "(MESSAGES)")[0] == "NO"
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        client.status("INBOX", "(BOGUS)")
    client.logout()


def test_keywords_kept_and_permanentflags_allow_new_ones(port):
    """A custom keyword survives a new session; PERMANENTFLAGS has \\*."""
    client = connect(port)
    client.append("INBOX", None, None, message("tagged"))
    client.select("INBOX")
    assert b"\\*" in client.response("PERMANENTFLAGS")[1][0]
    client.store("1", "+FLAGS", "($Label1 Work)")
    client.logout()
    client = connect(port)
    client.select("INBOX")
    flags = client.fetch("1", "(FLAGS)")[1][0]
    assert b"$Label1" in flags and b"Work" in flags
    assert client.search(None, "KEYWORD Work")[1] == [b"1"]
    assert b"$Label1" in client.response("FLAGS")[1][0]
    client.logout()


def test_names_leaving_the_store_are_refused(port, server):
    """.., /, new/cur/tmp levels get NO; modified UTF-7 names are decoded at the edge."""
    client = connect(port)
    for name in ("..", "../x", "a/b", "a..b", "new", "x.cur", "tmp"):
        assert client.create(name)[0] == "NO", name
    # RFC 3501 9: "%" is a list-wildcard, not an ASTRING-CHAR, so the name goes quoted (imaplib
    # sends its argument as is; unquoted it is BAD).
    assert client.create('"%2e%2e"')[0] == "OK"
    assert client.create("Caf&AOk-")[0] == "OK"
    assert (user_dir(server) / ".Caf&AOk-").is_dir()  # modified UTF-7 on disk, as Dovecot keeps it
    assert any(line.endswith(b'"Caf&AOk-"') for line in client.list()[1])
    client.logout()


def test_sequence_numbers_beyond_the_mailbox_get_bad(port):
    """FETCH/STORE/COPY of a sequence number that does not exist is BAD; a UID is just absent."""
    client = connect(port)
    client.append("INBOX", None, None, message("only"))
    client.select("INBOX")
    for command, args in (
        ("FETCH", ("2", "(FLAGS)")),
        ("STORE", ("1:3", "+FLAGS", "\\Seen")),
        ("COPY", ("5", "Archive")),
    ):
        with pytest.raises(imaplib.IMAP4.error, match="out of range"):
            client._simple_command(command, *args)
    assert client.uid("FETCH", "99", "(FLAGS)") == ("OK", [None])
    client.logout()


def test_sessions_per_user_limit(tmp_path):
    """One session more than sessions_per_user gets NO [LIMIT]; after a logout it works."""
    config = make_config(tmp_path / "data")
    limits = Limits(sessions_per_user=2, sessions_per_user_ip=2)
    srv = LiveServer(dataclasses.replace(config, limits=limits))
    try:
        srv.add_user(ALICE, PASSWORD)
        port = srv.listen(make_factory)
        first, second = connect(port), connect(port)
        third = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        with pytest.raises(imaplib.IMAP4.error, match="LIMIT"):
            third.login(ALICE, PASSWORD)
        first.logout()
        for _ in range(50):
            try:
                third.login(ALICE, PASSWORD)
                break
            except imaplib.IMAP4.error:
                continue
        assert third.state == "AUTH"
        second.logout()
        third.logout()
    finally:
        srv.close()
