"""IMAP4rev2 (RFC 9051) beside IMAP4rev1: what ENABLE IMAP4rev2 changes for a session, and
that a session which does not enable it sees IMAP4rev1 exactly as before."""

from __future__ import annotations

from imap_replay import ALICE, fill, message

from mailgw.imap import session as imap_session

#: The ``port`` and ``connect`` fixtures.
pytest_plugins = ("imap_replay_fixtures",)


def deliver(server, count: int) -> None:
    """``count`` new messages in INBOX, \\Recent for the first session to see them."""
    inbox = server.store.folder(ALICE)
    for n in range(count):
        inbox.append(message(f"new{n}"))


def test_rev1_session_keeps_recent_and_search_responses(connect, server):
    """A session that does not ENABLE IMAP4rev2 sees IMAP4rev1 as before, though CAPABILITY
    lists both: RECENT and [UNSEEN n] in SELECT, \\Recent in FLAGS, * SEARCH, no LIST line."""
    deliver(server, 2)
    client = connect(rev2=False)
    caps = client.send(b"c CAPABILITY")[0].split()
    assert caps[2:4] == [b"IMAP4rev1", b"IMAP4rev2"]
    selected = client.ok(b"s SELECT INBOX")
    assert b"* 2 RECENT" in selected and b"* OK [UNSEEN 1] First unseen" in selected
    assert not [line for line in selected if line.startswith(b"* LIST")]
    assert client.send(b"f FETCH 1 (FLAGS)")[0] == b"* 1 FETCH (FLAGS (\\Recent))"
    assert client.send(b"x SEARCH RECENT") == [b"* SEARCH 1 2", b"x OK SEARCH completed"]
    deliver(server, 1)
    assert client.send(b"n NOOP")[:2] == [b"* 3 EXISTS", b"* 3 RECENT"]


def test_rev2_session_shows_no_recent(connect, server):
    """After ENABLE IMAP4rev2: no RECENT response and no \\Recent flag, in SELECT, FETCH and
    for new mail; the messages it saw first are not \\Recent for a later session either."""
    deliver(server, 2)
    client = connect()
    selected = client.ok(b"s SELECT INBOX")
    assert not [line for line in selected if b"RECENT" in line or b"[UNSEEN " in line]
    assert client.send(b"f FETCH 1:* (FLAGS)")[:2] == [
        b"* 1 FETCH (FLAGS ())",
        b"* 2 FETCH (FLAGS ())",
    ]
    assert client.send(b"x SEARCH RECENT") == [b'* ESEARCH (TAG "x")', b"x OK SEARCH completed"]
    deliver(server, 1)
    assert client.send(b"n NOOP") == [b"* 3 EXISTS", b"n OK NOOP completed"]
    assert client.send(b"f FETCH 3 (FLAGS)")[0] == b"* 3 FETCH (FLAGS ())"
    later = connect(rev2=False)
    assert b"* 0 RECENT" in later.ok(b"s EXAMINE INBOX")


def test_rev2_search_answers_esearch_even_when_empty(connect, server):
    """RFC 9051 6.4.4: SEARCH and UID SEARCH answer ESEARCH (with the UID indicator), also
    when nothing matches; a rev1 session still gets * SEARCH."""
    fill(server.store.folder(ALICE), 3, lambda n: {"\\Seen"} if n == 2 else set())
    client, old = connect(), connect(rev2=False)
    client.ok(b"s SELECT INBOX")
    old.ok(b"s SELECT INBOX")
    assert client.send(b"a UID SEARCH UNSEEN")[0] == b'* ESEARCH (TAG "a") UID ALL 1,3'
    assert client.send(b"b SEARCH KEYWORD nothing")[0] == b'* ESEARCH (TAG "b")'
    assert old.send(b"a UID SEARCH UNSEEN")[0] == b"* SEARCH 1 3"
    assert old.send(b"b SEARCH KEYWORD nothing")[0] == b"* SEARCH"


def test_rev2_unsolicited_fetch_carries_uid(connect, server):
    """RFC 9051 7.5.2: a flag change made elsewhere reaches a rev2 session with UID; a rev1
    session gets FLAGS alone, as before."""
    fill(server.store.folder(ALICE), 3)
    rev2, rev1, other = connect(), connect(rev2=False), connect(rev2=False)
    for client in (rev2, rev1, other):
        client.ok(b"s SELECT INBOX")
    other.ok(b"t STORE 2 +FLAGS.SILENT (\\Seen)")
    assert rev2.send(b"n NOOP")[0] == b"* 2 FETCH (FLAGS (\\Seen) UID 2)"
    assert rev1.send(b"n NOOP")[0] == b"* 2 FETCH (FLAGS (\\Seen))"


def test_rev2_status_deleted_size_and_lsub(connect, server):
    """STATUS with DELETED and SIZE (RFC 9051 6.3.11), and the deprecated LSUB still answered."""
    uids = fill(server.store.folder(ALICE), 3, lambda n: {"\\Deleted"} if n != 1 else set())
    inbox = server.store.folder(ALICE)
    size = sum(inbox.get(uid).size for uid in uids)
    client = connect()
    assert client.send(b"s STATUS INBOX (MESSAGES DELETED SIZE)")[0] == (
        b'* STATUS "INBOX" (MESSAGES 3 DELETED 2 SIZE %d)' % size
    )
    assert client.send(b'l LSUB "" INBOX') == [b'* LSUB () "." "INBOX"', b"l OK LSUB completed"]


def test_enable_imap4rev2_in_the_selected_state_is_bad(connect, server):
    """ENABLE is valid only in the authenticated state: with a mailbox selected it is BAD and
    the session stays IMAP4rev1; before login too."""
    fill(server.store.folder(ALICE), 1)
    client = connect(rev2=False)
    client.ok(b"s SELECT INBOX")
    assert client.send(b"e ENABLE IMAP4rev2")[-1].startswith(b"e BAD ")
    assert client.send(b"x SEARCH ALL")[0] == b"* SEARCH 1"
    before = connect(login=False, rev2=False)
    assert before.send(b"e ENABLE IMAP4rev2")[-1].startswith(b"e BAD ")
    assert client.send(b"e ENABLE")[-1].startswith(b"e BAD ")


def test_enable_names_imap4rev2_in_any_case_once(connect):
    """Capability names are case-insensitive; * ENABLED spells IMAP4rev2 as CAPABILITY does,
    lists it once, and not again."""
    client = connect(rev2=False)
    assert client.send(b"e ENABLE imap4REV2 IMAP4rev2") == [
        b"* ENABLED IMAP4rev2",
        b"e OK ENABLE completed",
    ]
    assert client.send(b"f ENABLE IMAP4rev2")[0] == b"* ENABLED"


def test_imap4rev2_off_is_neither_announced_nor_enabled(connect, server, monkeypatch):
    """With ``IMAP4REV2`` off, CAPABILITY has no IMAP4rev2 and ENABLE IMAP4rev2 is ignored
    (RFC 5161: what the server does not offer is not enabled); the session stays rev1."""
    monkeypatch.setattr(imap_session, "IMAP4REV2", False)
    fill(server.store.folder(ALICE), 1)
    client = connect(rev2=False)
    assert b"IMAP4rev2" not in client.send(b"c CAPABILITY")[0]
    assert client.send(b"e ENABLE IMAP4rev2")[0] == b"* ENABLED"
    client.ok(b"s SELECT INBOX")
    assert client.send(b"x SEARCH ALL")[0] == b"* SEARCH 1"


def test_rev2_names_are_utf8(connect, server):
    """RFC 9051 5.1: a rev2 session is told mailbox names in UTF-8 (LIST, STATUS, SELECT's LIST
    line); a rev1 session in modified UTF-7, as before."""
    old = connect(rev2=False)
    old.ok(b"c CREATE Entw&APw-rfe")
    client = connect()
    name = "Entwürfe".encode()
    listed = b'* LIST () "." {%d}\r\n%s' % (len(name), name)
    assert b"\r\n".join(client.send(b'l LIST "" Entw*')) == listed + b"\r\nl OK LIST completed"
    assert b"\r\n".join(client.send(b's STATUS "' + name + b'" (MESSAGES)')) == (
        b"* STATUS {%d}\r\n%s (MESSAGES 0)\r\ns OK STATUS completed" % (len(name), name)
    )
    assert listed in b"\r\n".join(client.ok(b'x SELECT "' + name + b'"'))
    assert old.send(b'l LIST "" Entw*')[0] == b'* LIST () "." "Entw&APw-rfe"'


def test_rev2_names_from_the_client_are_utf8_taken_literally(connect, server):
    """RFC 9051 5.1: a rev2 client's mailbox names are UTF-8, so ``&`` is just a character
    (``R&D`` is a folder named so, not a broken modified UTF-7 escape); a rev1 client's
    ``R&D`` is still refused, and invalid UTF-8 from a rev2 client is BAD."""
    client = connect()
    client.ok(b"c CREATE R&D")
    assert client.send(b'l LIST "" R*')[0] == b'* LIST () "." "R&D"'
    old = connect(rev2=False)
    assert old.send(b'l LIST "" R*')[0] == b'* LIST () "." "R&-D"'
    assert old.send(b"c CREATE X&Y")[-1].startswith(b"c NO")
    assert client.send(b'b CREATE "\xff\xfe"')[-1].startswith(b"b BAD")
    assert client.send(b"n NOOP")[-1] == b"n OK NOOP completed"
