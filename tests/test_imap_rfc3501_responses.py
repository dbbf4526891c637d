"""RFC 3501's examples of section 7 (server responses) replayed over real sockets, one test per
example, as tests/test_imap_rfc3501.py replays those of section 6 (its sessions, helpers and
``normalise``; see its docstring for what is written mailgw's way).  The response examples of
7.2 to 7.4 are in ``test_7_2_to_7_4_response_examples`` or named there."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import LiveServer, make_config
from test_imap import ALICE, PASSWORD, message, read_until
from test_imap_rfc3501 import (
    Session,
    fill,
    folder,
    leave_only,
    lines,
    listening,
    normalise,
)

from mailgw.config import Limits
from mailgw.imap import make_factory


@pytest.fixture
def port(server) -> int:
    """Alice and an IMAP listener."""
    return listening(server)


@pytest.fixture
def imap(port):
    """A logged-in raw session."""
    session = Session(port)
    yield session
    session.sock.close()


# -- 7 server responses ----------------------------------------------------------------------


def test_7_1_1_ok_greeting_and_login(port):
    """7.1.1: the greeting is an untagged OK (mailgw's carries [CAPABILITY], RFC 3501 7.1);
    LOGIN is OK.  The example's [ALERT] is its server's message to the user about a shutdown:
    mailgw has nothing to alert, so sends none.  The example's user fred is an address here."""
    session = Session(port, login=False)
    assert normalise(session.greeting) == lines(b"* OK [CAPABILITY ...] IMAP4rev1 server ready")
    login = b"A001 LOGIN " + ALICE.encode() + b" " + PASSWORD.encode()
    assert session.run(login) == lines(b"A001 OK LOGIN Completed")


def test_7_1_2_no_when_the_store_fails(server, imap):
    """7.1.2: a COPY that works is OK; one the store cannot carry out is NO and nothing is
    copied.  The example's untagged NO warnings (a disk filling up) have no counterpart in
    mailgw, which does not watch the disk; its failure here is a real one of the store (the
    destination's uidlist is a directory) and is told with [SERVERBUG] (RFC 5530)."""
    fill(server.store.folder(ALICE), 200)
    owatagusiam = folder(server, "owatagusiam")
    blurdybloop = folder(server, "blurdybloop")
    imap.run(b"s SELECT INBOX")
    assert imap.run(b"A222 COPY 1:2 owatagusiam") == lines(
        b"A222 OK [COPYUID %d 1:2 1:2] COPY completed" % owatagusiam.uid_validity
    )
    uidlist = blurdybloop.path / "dovecot-uidlist"
    uidlist.unlink()
    uidlist.mkdir()
    assert imap.run(b"A223 COPY 3:200 blurdybloop") == lines(b"A223 NO [SERVERBUG] <text>")


def test_7_1_3_bad(port):
    """7.1.3: a command line too long and an empty line get untagged BAD (no tag can be
    trusted).  mailgw's BAD for the long line carries [TOOBIG] (RFC 4469) and, by its policy
    of closing a connection whose line is over its limit (``command_line``: the rest of such a
    line is not read, so it could not tell it from the next command), BYE follows; the empty
    line is replayed in a new session, which goes on.  The example's "Disk crash" BAD is its
    server's own trouble, which mailgw does not show."""
    first = Session(port)
    assert first.run(b"x" * 70000, until=b"* BYE") == lines(
        b"* BAD [TOOBIG] Command line too long", b"* BYE <text>"
    )
    imap = Session(port)
    imap.run(b"s SELECT INBOX")
    assert imap.run(b"", until=b"* BAD") == lines(b"* BAD Empty command line")
    assert imap.run(b"A443 EXPUNGE") == lines(b"A443 OK Expunge completed")


def test_7_1_4_no_preauth(port):
    """7.1.4: PREAUTH greets a connection already authenticated by outside means; mailgw
    authenticates every client itself, so it greets with OK and asks for a login."""
    session = Session(port, login=False)
    assert session.greeting.startswith(b"* OK ")
    assert session.run(b"a SELECT INBOX")[-1].startswith(b"a BAD ")


def test_7_1_5_bye_autologout(tmp_path):
    """7.1.5: BYE when the server closes the connection, here after idling too long
    (``imap_idle_timeout``, shortened for the test)."""
    config = make_config(tmp_path / "idle")
    config = dataclasses.replace(config, limits=Limits(imap_idle_timeout=0.5))
    srv = LiveServer(config)
    try:
        srv.add_user(ALICE, PASSWORD)
        session = Session(srv.listen(make_factory))
        assert normalise(read_until(session.sock, b"* BYE")) == lines(
            b"* BYE Autologout; idle for too long"
        )
        assert session.sock.recv(100) == b""
    finally:
        srv.close()


def test_7_2_1_capability_response(imap):
    """7.2.1: ``* CAPABILITY`` names IMAP4rev1 first; mailgw's list is its own (no GSSAPI, no
    XPIG-LATIN)."""
    answer = imap.send(b"c CAPABILITY")
    assert answer.startswith(b"* CAPABILITY IMAP4rev1 ")
    assert normalise(answer)[0] == b"* CAPABILITY ..."


def _noselect_parent(server, imap) -> bytes:
    leave_only(server, "Mail.foo.x", noselect=["Mail.foo"])
    return b'a LIST "" Mail.foo'


def _subscribed(server, imap) -> bytes:
    folder(server, "#news.comp.mail.misc")
    imap.run(b"s SUBSCRIBE #news.comp.mail.misc")
    return b'b LSUB "" #news.comp.mail.misc'


def _flagged(server, imap) -> bytes:
    fill(server.store.folder(ALICE), 6, Flagged={2, 3, 6})
    imap.run(b"s SELECT INBOX")
    return b"c SEARCH FLAGGED"


def _exists(server, imap) -> bytes:
    fill(server.store.folder(ALICE), 23)
    return b"d SELECT INBOX"


def _recent(server, imap) -> bytes:
    fill(server.store.folder(ALICE), 5, unclaimed=range(1, 6))
    return b"e SELECT INBOX"


def _expunged(server, imap) -> bytes:
    fill(server.store.folder(ALICE), 44, Deleted={44})
    imap.run(b"s SELECT INBOX")
    return b"f EXPUNGE"


def _sized(server, imap) -> bytes:
    inbox = server.store.folder(ALICE)
    fill(inbox, 22)
    inbox.append(message("big", "x" * (44827 - len(message("big", "")))), {"\\Seen"})
    imap.run(b"s SELECT INBOX")
    return b"g FETCH 23 (FLAGS RFC822.SIZE)"


@pytest.mark.parametrize(
    ("make", "answer"),
    [
        (_noselect_parent, b'* LIST (\\Noselect) "." "Mail.foo"'),
        (_subscribed, b'* LSUB () "." "#news.comp.mail.misc"'),
        (_flagged, b"* SEARCH 2 3 6"),
        (_exists, b"* 23 EXISTS"),
        (_recent, b"* 5 RECENT"),
        (_expunged, b"* 44 EXPUNGE"),
        (_sized, b"* 23 FETCH (FLAGS (\\Seen) RFC822.SIZE 44827)"),
    ],
    ids=[
        "7.2.2-list",
        "7.2.3-lsub",
        "7.2.5-search",
        "7.3.1-exists",
        "7.3.2-recent",
        "7.4.1-expunge",
        "7.4.2-fetch",
    ],
)
def test_7_2_to_7_4_response_examples(server, imap, make, answer):
    """7.2.2-7.4.2: each response example, from a command that gives it, in its answer
    (7.2.4's STATUS line is test_6_3_10's A043 answer, 7.2.6's FLAGS line test_6_3_1's).
    The LIST and LSUB examples' names are mailgw's (delimiter ".", names quoted)."""
    assert answer in imap.run(make(server, imap))


def test_7_5_continuation_and_a_literal_refused(port):
    """7.5: a synchronising literal is asked for with ``+``; a command that is BAD before
    its literal is refused at once, with no continuation (the literal is never sent).  The
    example's user FRED FOOBAR is Alice's address here.  mailgw's BAD for A044 says [TOOBIG]
    (its literal is over the limit an unknown command may have); a literal within the limit is
    asked for and the unknown command refused after it: mailgw frames a command whole before
    parsing it (the example's server refuses an unknown command before its literal in any
    case, which 7.5 allows but does not require)."""
    session = Session(port, login=False)
    user, password = ALICE.encode(), PASSWORD.encode()
    assert session.run(b"A001 LOGIN {%d}" % len(user), until=b"+") == lines(
        b"+ Ready for additional command text"
    )
    assert session.run(user + b" {%d}" % len(password), until=b"+") == lines(
        b"+ Ready for additional command text"
    )
    assert session.run(password, until=b"A001 ") == lines(b"A001 OK LOGIN completed")
    assert session.run(b"A044 BLURDYBLOOP {102856}") == lines(b"A044 BAD [TOOBIG] <text>")
    assert session.run(b"A045 BLURDYBLOOP {10}", until=b"+") == lines(b"+ <text>")
    assert session.run(b"0123456789", until=b"A045 ") == lines(
        b'A045 BAD No such command as "BLURDYBLOOP"'
    )
