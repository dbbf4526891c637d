"""RFC 3501's examples (sections 6.1 to 6.5 and 7) replayed over real sockets, one test per
example: the mailbox each example assumes is built first (folders, messages with the flags,
numbers, sizes and UIDs it shows: earlier UIDs are skipped as Dovecot's uidlist would have them,
``next_uid``), the client's lines are sent as the example has them, and the server's lines
compared byte for byte with the example's after ``normalise``, which replaces only what is the
server's own choice (see there).

mailgw's hierarchy delimiter is "." where the examples have "/", it sends mailbox names as
quoted strings, and its users are addresses, so the examples are written that way.  Where
mailgw legitimately answers otherwise (a mechanism it does not offer, GSSAPI; a policy, LOGIN
refused without TLS and a connection closed after an over-long line; extensions it announces,
which add HIGHESTMODSEQ, COPYUID and APPENDUID; no \\Noselect names of its own; responses in
another order, which RFC 3501 leaves free), the test asserts mailgw's answer and its docstring
says why.  No example of these sections is left out; section 7's are in
tests/test_imap_rfc3501_responses.py.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import ssl

import pytest
from conftest import LiveServer, make_config
from test_imap import ALICE, PASSWORD, message, read_until

from mailgw.imap import make_factory

#: The folders and subscriptions every new user gets (removed where an example lists folders).
DEFAULTS = ("Sent", "Drafts", "Trash", "Junk", "Archive")
#: What ``normalise`` puts where the server chooses the words.
TEXT = b"<text>"


def normalise(answer: bytes) -> list[bytes]:
    """The lines of ``answer`` with what RFC 3501 leaves to the server replaced: the
    human-readable text of status responses (tagged or untagged OK, NO, BAD, BYE, PREAUTH;
    the response code kept), the UIDVALIDITY value, the PERMANENTFLAGS list and the
    capability list (``* CAPABILITY`` and ``[CAPABILITY ...]``), each asserted on its own
    where a test cares, and the text of a command continuation request (``+ text``)."""
    out = []
    for line in answer.split(b"\r\n"):
        if not line:
            continue
        if line.startswith(b"+"):
            out.append(b"+ " + TEXT)
            continue
        line = re.sub(rb"\[UIDVALIDITY \d+\]", b"[UIDVALIDITY n]", line)
        line = re.sub(rb"\[PERMANENTFLAGS \([^)]*\)\]", b"[PERMANENTFLAGS (...)]", line)
        line = re.sub(rb"^\* CAPABILITY .*", b"* CAPABILITY ...", line)
        line = re.sub(rb"\[CAPABILITY [^\]]*\]", b"[CAPABILITY ...]", line)
        found = re.fullmatch(rb"(\S+ (?:OK|NO|BAD|BYE|PREAUTH))( \[[^\]]*\])?( .*)?", line)
        if found:
            line = found.group(1) + (found.group(2) or b"") + b" " + TEXT
        out.append(line)
    return out


def next_uid(folder, uid: int) -> None:
    """Make ``uid`` the next UID ``folder`` gives, as if the ones before had been used and
    expunged: the ``N`` of its Dovecot uidlist header, written as Dovecot would (a new file)."""
    path = folder.path / "dovecot-uidlist"
    header, rest = path.read_bytes().split(b"\n", 1)
    header = re.sub(rb" N\d+", b" N%d" % uid, header)
    temp = path.with_name("uidlist.new")
    temp.write_bytes(header + b"\n" + rest)
    os.replace(temp, path)


# -- sessions and mailboxes ------------------------------------------------------------------


def listening(server) -> int:
    """Add Alice to ``server`` and start an IMAP listener on it; its port."""
    server.add_user(ALICE, PASSWORD)
    return server.listen(make_factory)


@pytest.fixture
def port(server) -> int:
    """Alice and an IMAP listener (plaintext login allowed, as the test config has it)."""
    return listening(server)


@pytest.fixture
def strict(tmp_path):
    """A server where a password needs TLS (RFC 3501 6.2.3's recommended configuration)."""
    srv = LiveServer(make_config(tmp_path / "strict", allow_plaintext=False))
    srv.add_user(ALICE, PASSWORD)
    yield srv
    srv.close()


class Session:
    """A raw connection; ``run`` sends client lines and returns the normalised answer."""

    def __init__(self, port: int, login: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.greeting = read_until(self.sock, b"*")
        if login:
            assert self.run(b"l LOGIN " + ALICE.encode() + b" " + PASSWORD.encode())[-1] == (
                b"l OK " + TEXT
            )

    def send(self, *lines: bytes, until: bytes | None = None) -> bytes:
        """Send ``lines`` (pipelined, in one write) and read up to the tagged reply to the
        last (or up to a line starting with ``until``)."""
        self.sock.sendall(b"".join(line + b"\r\n" for line in lines))
        return read_until(self.sock, until or lines[-1].split(b" ", 1)[0] + b" ")

    def run(self, *lines: bytes, until: bytes | None = None) -> list[bytes]:
        """``send``, the answer normalised."""
        return normalise(self.send(*lines, until=until))

    def starttls(self) -> None:
        """Wrap the connection in TLS (after an OK to STARTTLS)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(self.sock)


@pytest.fixture
def imap(port):
    """A logged-in raw session."""
    session = Session(port)
    yield session
    session.sock.close()


def lines(*text: bytes) -> list[bytes]:
    """Expected lines, normalised as the answers are."""
    return normalise(b"".join(line + b"\r\n" for line in text))


def fill(folder, count: int, seen=(), unclaimed=(), **flags_of) -> None:
    """``count`` messages; those numbered in ``seen`` are \\Seen, the others in ``flags_of``
    (Deleted=..., Flagged=...) have that flag; all but those in ``unclaimed`` have been seen
    by an earlier session (so are not \\Recent)."""
    for n in range(1, count + 1):
        flags = {"\\" + name for name, numbers in flags_of.items() if n in numbers}
        folder.append(message(f"m{n}"), flags | ({"\\Seen"} if n in seen else set()))
    uids = [info.uid for info in folder.messages()]
    folder.mark_seen_by_client([uid for n, uid in enumerate(uids, 1) if n not in unclaimed])


def folder(server, name: str):
    """Alice's folder ``name``, created."""
    server.store.create_folder(ALICE, name)
    return server.store.folder(ALICE, name)


def leave_only(server, *names: str, noselect=()) -> None:
    """Alice's folders are INBOX and ``names`` (the defaults every user gets removed); the
    names in ``noselect`` are no folders, only parents of others (\\Noselect): creating a
    folder creates its parents, as RFC 3501 6.3.3 says a server SHOULD, so they are deleted."""
    for name in DEFAULTS:
        server.store.delete_folder(ALICE, name)
    for name in names:
        server.store.create_folder(ALICE, name)
    for name in noselect:
        server.store.delete_folder(ALICE, name)


def capabilities(answer: bytes) -> set[bytes]:
    """The capability names of the ``* CAPABILITY`` line in ``answer``."""
    found = re.search(rb"^\* CAPABILITY (.*?)\r$", answer, re.M)
    assert found, answer
    return set(found.group(1).split())


# -- 6.1 any state ---------------------------------------------------------------------------


def test_6_1_1_capability_before_and_after_starttls(strict):
    """6.1.1: CAPABILITY, STARTTLS, CAPABILITY again.  Before TLS mailgw (passwords only over
    TLS) lists STARTTLS and LOGINDISABLED, after it AUTH=PLAIN and neither; it has no GSSAPI
    (no Kerberos realm), so AUTH=GSSAPI is never listed."""
    session = Session(strict.listen(make_factory), login=False)
    answer = session.send(b"abcd CAPABILITY")
    assert normalise(answer) == lines(b"* CAPABILITY ...", b"abcd OK CAPABILITY completed")
    caps = capabilities(answer)
    assert {b"IMAP4rev1", b"STARTTLS", b"LOGINDISABLED"} <= caps and b"AUTH=GSSAPI" not in caps
    assert session.run(b"efgh STARTTLS") == lines(b"efgh OK STARTLS completed")
    session.starttls()
    answer = session.send(b"ijkl CAPABILITY")
    assert normalise(answer) == lines(b"* CAPABILITY ...", b"ijkl OK CAPABILITY completed")
    caps = capabilities(answer)
    assert {b"IMAP4rev1", b"AUTH=PLAIN"} <= caps
    assert not {b"STARTTLS", b"LOGINDISABLED", b"AUTH=GSSAPI"} & caps


def test_6_1_2_noop_reports_changes(server, imap):
    """6.1.2: NOOP with nothing new is a bare OK; after another program expunged message 22,
    delivered two messages and flagged message 14 \\Seen \\Deleted, NOOP tells all of it
    (message 1 was \\Recent already, so 3 RECENT).  mailgw sends the flag change before the
    new size, and lists flags in its own (sorted) order, where the RFC's example has them the
    other way round: neither order means anything (RFC 3501 7: "The client MUST be prepared to
    accept any response at all times"; a flag list is a set)."""
    inbox = server.store.folder(ALICE)
    fill(inbox, 22, unclaimed={1})
    imap.run(b"s SELECT INBOX")
    assert imap.run(b"a002 NOOP") == lines(b"a002 OK NOOP completed")
    inbox.expunge([22])
    inbox.append(message("new 1"))
    inbox.append(message("new 2"))
    inbox.set_flags(14, {"\\Seen", "\\Deleted"})
    assert imap.run(b"a047 NOOP") == lines(
        b"* 22 EXPUNGE",
        b"* 14 FETCH (FLAGS (\\Deleted \\Seen))",
        b"* 23 EXISTS",
        b"* 3 RECENT",
        b"a047 OK NOOP completed",
    )


def test_6_1_3_logout(imap):
    """6.1.3: BYE, then the tagged OK, then the server closes the connection."""
    assert imap.run(b"A023 LOGOUT") == lines(
        b"* BYE IMAP4rev1 Server logging out", b"A023 OK LOGOUT completed"
    )
    assert imap.sock.recv(100) == b""


# -- 6.2 not authenticated -------------------------------------------------------------------


def test_6_2_1_starttls_then_login(strict):
    """6.2.1: LOGINDISABLED before TLS, LOGIN after it.  The example's user "joe" is Alice's
    address here: mailgw's users are addresses."""
    session = Session(strict.listen(make_factory), login=False)
    answer = session.send(b"a001 CAPABILITY")
    assert normalise(answer) == lines(b"* CAPABILITY ...", b"a001 OK CAPABILITY completed")
    assert {b"STARTTLS", b"LOGINDISABLED"} <= capabilities(answer)
    assert session.run(b"a002 STARTTLS") == lines(b"a002 OK Begin TLS negotiation now")
    session.starttls()
    answer = session.send(b"a003 CAPABILITY")
    assert b"AUTH=PLAIN" in capabilities(answer)
    login = b"a004 LOGIN " + ALICE.encode() + b" " + PASSWORD.encode()
    assert session.run(login) == lines(b"a004 OK LOGIN completed")


def test_6_2_2_authenticate_gssapi_is_not_offered(port):
    """6.2.2: the example's mechanism, GSSAPI, needs Kerberos, which mailgw has not: it is
    refused with NO (RFC 3501 6.2.2: "NO - authenticate failure: unsupported authentication
    mechanism") and the session stays not authenticated."""
    session = Session(port, login=False)
    assert session.greeting.startswith(b"* OK ")
    assert session.run(b"A001 AUTHENTICATE GSSAPI") == lines(b"A001 NO [CANNOT] <text>")
    assert session.run(b"A002 SELECT INBOX")[-1].startswith(b"A002 BAD")


def test_6_2_2_authenticate_plain(port):
    """6.2.2 with the mechanism mailgw has, PLAIN (RFC 4616): an empty challenge, the
    client's base64 response, OK; and a client that cancels with ``*`` gets BAD."""
    session = Session(port, login=False)
    session.sock.sendall(b"A001 AUTHENTICATE PLAIN\r\n")
    assert read_until(session.sock, b"+") == b"+ \r\n"
    response = base64.b64encode(b"\0" + ALICE.encode() + b"\0" + PASSWORD.encode())
    assert session.run(response, until=b"A001 ") == lines(b"A001 OK AUTHENTICATE completed")
    other = Session(port, login=False)
    other.sock.sendall(b"A002 AUTHENTICATE PLAIN\r\n")
    read_until(other.sock, b"+")
    assert other.run(b"*", until=b"A002 ") == lines(b"A002 BAD <text>")


def test_6_2_3_login(server, port):
    """6.2.3: LOGIN user password, OK (user SMITH is an address here: mailgw's users are)."""
    server.add_user("smith@example.test", "SESAME")
    session = Session(port, login=False)
    assert session.run(b"a001 LOGIN smith@example.test SESAME") == lines(b"a001 OK LOGIN completed")


def test_6_2_3_login_refused_without_tls(strict):
    """6.2.3's note: a server MUST have a configuration where LOGIN is refused without TLS:
    mailgw's default (``allow_plaintext`` off) is it: LOGINDISABLED, and LOGIN gets NO."""
    session = Session(strict.listen(make_factory), login=False)
    login = b"a001 LOGIN " + ALICE.encode() + b" " + PASSWORD.encode()
    assert session.run(login) == lines(b"a001 NO [PRIVACYREQUIRED] <text>")


# -- 6.3 authenticated -------------------------------------------------------------------------


def test_6_3_1_select(server, imap):
    """6.3.1: 172 messages, 1 of them \\Recent, 12 the first unseen, UIDNEXT 4392.  mailgw
    announces CONDSTORE, so it adds HIGHESTMODSEQ (RFC 7162 3.1.2.1: on every SELECT)."""
    inbox = server.store.folder(ALICE)
    next_uid(inbox, 4392 - 172)
    fill(inbox, 172, seen=range(1, 12), unclaimed={172})
    assert imap.run(b"A142 SELECT INBOX") == lines(
        b"* 172 EXISTS",
        b"* 1 RECENT",
        b"* OK [UNSEEN 12] Message 12 is first unseen",
        b"* OK [UIDVALIDITY 3857529045] UIDs valid",
        b"* OK [UIDNEXT 4392] Predicted next UID",
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited",
        b"* OK [HIGHESTMODSEQ %d] Highest" % inbox.highest_modseq,
        b"A142 OK [READ-WRITE] SELECT completed",
    )


def test_6_3_2_examine(server, imap):
    """6.3.2: EXAMINE of blurdybloop, 17 messages, 2 \\Recent, 8 the first unseen: READ-ONLY
    and no permanent flags; HIGHESTMODSEQ added (CONDSTORE)."""
    blurdybloop = folder(server, "blurdybloop")
    next_uid(blurdybloop, 4392 - 17)
    fill(blurdybloop, 17, seen=range(1, 8), unclaimed={16, 17})
    assert imap.run(b"A932 EXAMINE blurdybloop") == lines(
        b"* 17 EXISTS",
        b"* 2 RECENT",
        b"* OK [UNSEEN 8] Message 8 is first unseen",
        b"* OK [UIDVALIDITY 3857529045] UIDs valid",
        b"* OK [UIDNEXT 4392] Predicted next UID",
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        b"* OK [PERMANENTFLAGS ()] No permanent flags permitted",
        b"* OK [HIGHESTMODSEQ %d] Highest" % blurdybloop.highest_modseq,
        b"A932 OK [READ-ONLY] EXAMINE completed",
    )
    assert b"\r\n* OK [PERMANENTFLAGS ()] " in imap.send(b"x EXAMINE blurdybloop")


def test_6_3_3_create(server, imap):
    """6.3.3: CREATE with a trailing delimiter makes the level (mailgw's delimiter is ".",
    the example's "/"), then a member in it."""
    leave_only(server)
    assert imap.run(b"A003 CREATE owatagusiam.") == lines(b"A003 OK CREATE completed")
    assert imap.run(b"A004 CREATE owatagusiam.blurdybloop") == lines(b"A004 OK CREATE completed")
    assert imap.run(b'l LIST "" owatagusiam*') == lines(
        b'* LIST () "." "owatagusiam"',
        b'* LIST () "." "owatagusiam.blurdybloop"',
        b"l OK LIST completed",
    )


def test_6_3_4_delete_first_example(server, imap):
    """6.3.4, first example: blurdybloop, foo (\\Noselect) and foo.bar.  mailgw keeps no
    \\Noselect name of its own: a name that is only the parent of a folder is listed
    \\Noselect while the folder exists, and is gone with it.  So DELETE foo is NO while
    foo.bar exists (as in the RFC, but because there is no such folder), and once foo.bar is
    deleted, foo is no longer listed and DELETE foo is NO, where the RFC's server, which kept
    foo as a \\Noselect name, answers OK."""
    leave_only(server, "blurdybloop", "foo.bar", noselect=["foo"])
    assert imap.run(b'A682 LIST "" *') == lines(
        b'* LIST () "." "INBOX"',
        b'* LIST () "." "blurdybloop"',
        b'* LIST (\\Noselect) "." "foo"',
        b'* LIST () "." "foo.bar"',
        b"A682 OK LIST completed",
    )
    assert imap.run(b"A683 DELETE blurdybloop") == lines(b"A683 OK DELETE completed")
    assert imap.run(b"A684 DELETE foo") == lines(b"A684 NO [NONEXISTENT] <text>")
    assert imap.run(b"A685 DELETE foo.bar") == lines(b"A685 OK DELETE Completed")
    assert imap.run(b'A686 LIST "" *') == lines(b'* LIST () "." "INBOX"', b"A686 OK LIST completed")
    assert imap.run(b"A687 DELETE foo") == lines(b"A687 NO [NONEXISTENT] <text>")


def test_6_3_4_delete_second_example(server, imap):
    """6.3.4, second example: deleting foo, which has an inferior and is no \\Noselect name,
    leaves foo.bar; foo is then listed \\Noselect (by %, as the parent of foo.bar)."""
    leave_only(server, "blurdybloop", "foo", "foo.bar")
    assert imap.run(b'A82 LIST "" *') == lines(
        b'* LIST () "." "INBOX"',
        b'* LIST () "." "blurdybloop"',
        b'* LIST () "." "foo"',
        b'* LIST () "." "foo.bar"',
        b"A82 OK LIST completed",
    )
    assert imap.run(b"A83 DELETE blurdybloop") == lines(b"A83 OK DELETE completed")
    assert imap.run(b"A84 DELETE foo") == lines(b"A84 OK DELETE Completed")
    assert imap.run(b'A85 LIST "" *') == lines(
        b'* LIST () "." "INBOX"',
        b'* LIST (\\Noselect) "." "foo"',
        b'* LIST () "." "foo.bar"',
        b"A85 OK LIST completed",
    )
    assert imap.run(b'A86 LIST "" %') == lines(
        b'* LIST () "." "INBOX"', b'* LIST (\\Noselect) "." "foo"', b"A86 OK LIST completed"
    )


def test_6_3_5_rename_with_inferiors(server, imap):
    """6.3.5, first example: RENAME renames a mailbox, and its inferiors with it.  The
    example's foo is a \\Noselect name; in mailgw such a name is no folder, only the parent of
    foo.bar (see the DELETE example), and renaming a name that is no mailbox is NO (6.3.5: "It
    is an error to attempt to rename from a mailbox name that does not exist").  With foo a
    folder, its inferior goes with it, as the example shows."""
    leave_only(server, "blurdybloop", "foo.bar", noselect=["foo"])
    assert imap.run(b"A683 RENAME blurdybloop sarasoop") == lines(b"A683 OK RENAME completed")
    assert imap.run(b"A684 RENAME foo zowie") == lines(b"A684 NO [NONEXISTENT] <text>")
    imap.run(b"c CREATE foo")
    assert imap.run(b"A684 RENAME foo zowie") == lines(b"A684 OK RENAME Completed")
    assert imap.run(b'A685 LIST "" *') == lines(
        b'* LIST () "." "INBOX"',
        b'* LIST () "." "sarasoop"',
        b'* LIST () "." "zowie"',
        b'* LIST () "." "zowie.bar"',
        b"A685 OK LIST completed",
    )


def test_6_3_5_rename_inbox(server, imap):
    """6.3.5, second example: RENAME INBOX moves its messages to the new mailbox and leaves
    INBOX, empty, and its inferiors where they were."""
    leave_only(server, "INBOX.bar")
    fill(server.store.folder(ALICE), 2)
    assert imap.run(b'Z432 LIST "" *') == lines(
        b'* LIST () "." "INBOX"', b'* LIST () "." "INBOX.bar"', b"Z432 OK LIST completed"
    )
    assert imap.run(b"Z433 RENAME INBOX old-mail") == lines(b"Z433 OK RENAME completed")
    assert imap.run(b'Z434 LIST "" *') == lines(
        b'* LIST () "." "INBOX"',
        b'* LIST () "." "INBOX.bar"',
        b'* LIST () "." "old-mail"',
        b"Z434 OK LIST completed",
    )
    assert len(server.store.folder(ALICE).messages()) == 0
    assert len(server.store.folder(ALICE, "old-mail").messages()) == 2


def test_6_3_6_and_6_3_7_subscribe_and_unsubscribe(server, imap):
    """6.3.6 and 6.3.7: SUBSCRIBE and UNSUBSCRIBE of a mailbox (the example's news group is a
    folder here), LSUB lists it until it is unsubscribed."""
    folder(server, "#news.comp.mail.mime")
    assert imap.run(b"A002 SUBSCRIBE #news.comp.mail.mime") == lines(b"A002 OK SUBSCRIBE completed")
    assert imap.run(b'l LSUB "" #news*') == lines(
        b'* LSUB () "." "#news.comp.mail.mime"', b"l OK LSUB completed"
    )
    assert imap.run(b"A002 UNSUBSCRIBE #news.comp.mail.mime") == lines(
        b"A002 OK UNSUBSCRIBE completed"
    )
    assert imap.run(b'l LSUB "" #news*') == lines(b"l OK LSUB completed")


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        (b'A101 LIST "" ""', b'* LIST (\\Noselect) "." ""'),
        (b'A102 LIST #news.comp.mail.misc ""', b'* LIST (\\Noselect) "." ""'),
        (b'A103 LIST /usr/staff/jones ""', b'* LIST (\\Noselect) "." ""'),
    ],
    ids=["A101", "A102", "A103"],
)
def test_6_3_8_list_of_the_empty_name(imap, command, answer):
    """6.3.8: an empty name asks for the delimiter and the reference's root.  mailgw's names
    have one namespace, with no prefix, so no reference is rooted and the root is always ""
    (which 6.3.8 allows: "The value returned as the root MAY be the empty string if the
    reference is non-rooted"), where the RFC's server has rooted #news. and / names."""
    assert imap.run(command) == lines(answer, command.split()[0] + b" OK LIST Completed")


def test_6_3_8_list_percent_under_a_reference(server, imap):
    """6.3.8 (A202): % under a reference lists one level; Mail.foo is only a parent, so
    \\Noselect.  The example's ~/Mail/ is Mail. here (mailgw's delimiter is ".", and it has
    no ~ for other users' mailboxes)."""
    leave_only(server, "Mail.foo.x", "Mail.meetings", noselect=["Mail.foo"])
    assert imap.run(b"A202 LIST Mail. %") == lines(
        b'* LIST (\\Noselect) "." "Mail.foo"',
        b'* LIST () "." "Mail.meetings"',
        b"A202 OK LIST completed",
    )


def test_6_3_9_lsub(server, imap):
    """6.3.9: LSUB lists subscribed names matching; with %, a name that has subscribed
    inferiors but is not subscribed itself is listed \\Noselect.  The news groups are
    folders here."""
    folder(server, "#news.comp.mail.mime")
    folder(server, "#news.comp.mail.misc")
    for name in (b"#news.comp.mail.mime", b"#news.comp.mail.misc"):
        imap.run(b"s SUBSCRIBE " + name)
    assert imap.run(b'A002 LSUB "#news." "comp.mail.*"') == lines(
        b'* LSUB () "." "#news.comp.mail.mime"',
        b'* LSUB () "." "#news.comp.mail.misc"',
        b"A002 OK LSUB completed",
    )
    assert imap.run(b'A003 LSUB "#news." "comp.%"') == lines(
        b'* LSUB (\\Noselect) "." "#news.comp.mail"', b"A003 OK LSUB completed"
    )


def test_6_3_10_status(server, imap):
    """6.3.10: STATUS of blurdybloop, 231 messages, UIDNEXT 44292.  mailgw gives the items in
    the order asked (UIDNEXT first), the example's server in its own: RFC 3501 sets no order
    (7.2.4: the response "returns ... the requested mailbox status information"), and asked
    in the example's order mailgw answers the example's line, its name quoted (A043)."""
    blurdybloop = folder(server, "blurdybloop")
    next_uid(blurdybloop, 44292 - 231)
    fill(blurdybloop, 231)
    assert imap.run(b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)") == lines(
        b'* STATUS "blurdybloop" (UIDNEXT 44292 MESSAGES 231)', b"A042 OK STATUS completed"
    )
    assert imap.run(b"A043 STATUS blurdybloop (MESSAGES UIDNEXT)") == lines(
        b'* STATUS "blurdybloop" (MESSAGES 231 UIDNEXT 44292)', b"A043 OK STATUS completed"
    )


APPENDED = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
    b"From: Fred Foobar <foobar@Blurdybloop.COM>\r\n"
    b"Subject: afternoon meeting\r\n"
    b"To: mooch@owatagu.siam.edu\r\n"
    b"Message-Id: <B27397-0100000@Blurdybloop.COM>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)


def test_6_3_11_append(server, imap):
    """6.3.11: APPEND with a synchronising literal of 310 octets: a continuation, then OK.
    mailgw's OK carries [APPENDUID] (UIDPLUS, which it announces).  The message is stored
    as sent, \\Seen."""
    saved = folder(server, "saved-messages")
    assert len(APPENDED) == 310
    assert imap.run(b"A003 APPEND saved-messages (\\Seen) {310}", until=b"+") == lines(
        b"+ Ready for literal data"
    )
    validity = b"%d" % saved.uid_validity
    assert imap.run(APPENDED, until=b"A003 ") == lines(
        b"A003 OK [APPENDUID " + validity + b" 1] APPEND completed"
    )
    (info,) = saved.messages()
    assert info.flags == {"\\Seen"}
    with saved.open_message(info.uid) as handle:
        assert handle.read() == APPENDED


# -- 6.4 selected ------------------------------------------------------------------------------


def test_6_4_1_check(server, imap):
    """6.4.1: CHECK is OK (mailgw's store is always checkpointed)."""
    imap.run(b"s SELECT INBOX")
    assert imap.run(b"FXXZ CHECK") == lines(b"FXXZ OK CHECK Completed")


def test_6_4_2_close_expunges_silently(server, imap):
    """6.4.2: CLOSE removes the \\Deleted messages without EXPUNGE responses."""
    inbox = server.store.folder(ALICE)
    fill(inbox, 3, Deleted={2})
    imap.run(b"s SELECT INBOX")
    assert imap.run(b"A341 CLOSE") == lines(b"A341 OK CLOSE completed")
    assert [info.uid for info in inbox.messages()] == [1, 3]


def test_6_4_3_expunge(server, imap):
    """6.4.3: messages 3, 4, 7 and 11 deleted.  Each EXPUNGE numbers the mailbox as it is
    after the ones before (7.4.1); the example's server expunges from the lowest (3, 3, 5, 8),
    mailgw from the highest, so each number is the message's number before the command (11,
    7, 4, 3): the same four messages; 7.4.1 describes both ("a 'higher to lower server' will
    send successive untagged EXPUNGE responses for message sequence numbers 9, 8, 7, 6, and
    5")."""
    inbox = server.store.folder(ALICE)
    fill(inbox, 12, Deleted={3, 4, 7, 11})
    imap.run(b"s SELECT INBOX")
    assert imap.run(b"A202 EXPUNGE") == lines(
        b"* 11 EXPUNGE",
        b"* 7 EXPUNGE",
        b"* 4 EXPUNGE",
        b"* 3 EXPUNGE",
        b"A202 OK EXPUNGE completed",
    )
    assert [info.uid for info in inbox.messages()] == [1, 2, 5, 6, 8, 9, 10, 12]


@pytest.fixture
def mailbox_882(server, imap):
    """882 messages selected: 2, 84 and 882 flagged (UIDs 14, 100, 1115), message 43 has the
    6 octets of UTF-8 "мат" in its body."""
    inbox = server.store.folder(ALICE)
    uids = {2: 14, 84: 100, 882: 1115}
    for n in range(1, 883):
        if n in uids:
            next_uid(inbox, uids[n])
        body = "мат\r\n" if n == 43 else "Hello.\r\n"
        inbox.append(message(f"m{n}", body), {"\\Flagged"} if n in uids else ())
    inbox.mark_seen_by_client([info.uid for info in inbox.messages()])
    imap.run(b"s SELECT INBOX")
    return imap


def test_6_4_4_search(mailbox_882):
    """6.4.4: SEARCH with several criteria, one that finds nothing, and one with a UTF-8
    literal (synchronising: a continuation first)."""
    imap = mailbox_882
    assert imap.run(b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == lines(
        b"* SEARCH 2 84 882", b"A282 OK SEARCH completed"
    )
    assert imap.run(b'A283 SEARCH TEXT "string not in mailbox"') == lines(
        b"* SEARCH", b"A283 OK SEARCH completed"
    )
    assert imap.run(b"A284 SEARCH CHARSET UTF-8 TEXT {6}", until=b"+") == lines(b"+ <text>")
    assert imap.run("мат".encode(), until=b"A284 ") == lines(
        b"* SEARCH 43", b"A284 OK SEARCH completed"
    )


def test_6_4_5_fetch(server, imap):
    """6.4.5: FETCH of FLAGS and two header fields of 2:4 (the example elides the answers:
    here they are whole).  BODY[...] sets \\Seen, so FLAGS already shows it; the fields come
    in the message's order (From before Date)."""
    fill(server.store.folder(ALICE), 4)
    imap.run(b"s SELECT INBOX")
    fields = b"From: Bob Sender <bob@elsewhere.test>\r\nDate: Tue, 01 Oct 2024 10:00:00 +0000\r\n"
    answer = imap.send(b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])")
    expected = b"".join(
        b"* %d FETCH (FLAGS (\\Seen) BODY[HEADER.FIELDS (DATE FROM)] {%d}\r\n%s\r\n)\r\n"
        % (n, len(fields) + 2, fields)
        for n in (2, 3, 4)
    )
    assert answer == expected + b"A654 OK FETCH completed\r\n"


def test_6_4_6_store(server, imap):
    """6.4.6: +FLAGS (\\Deleted) on 2:4; each message's flags after, sorted as the example
    happens to have them."""
    inbox = server.store.folder(ALICE)
    fill(inbox, 4, seen={2, 4}, Flagged={4})
    imap.run(b"s SELECT INBOX")
    assert imap.run(b"A003 STORE 2:4 +FLAGS (\\Deleted)") == lines(
        b"* 2 FETCH (FLAGS (\\Deleted \\Seen))",
        b"* 3 FETCH (FLAGS (\\Deleted))",
        b"* 4 FETCH (FLAGS (\\Deleted \\Flagged \\Seen))",
        b"A003 OK STORE completed",
    )


def test_6_4_7_copy(server, imap):
    """6.4.7: COPY 2:4 to MEETING; mailgw's OK carries [COPYUID] (UIDPLUS, announced)."""
    fill(server.store.folder(ALICE), 4)
    meeting = folder(server, "MEETING")
    imap.run(b"s SELECT INBOX")
    assert imap.run(b"A003 COPY 2:4 MEETING") == lines(
        b"A003 OK [COPYUID %d 2:4 1:3] COPY completed" % meeting.uid_validity
    )
    assert len(meeting.messages()) == 3


def test_6_4_8_uid_fetch(server, imap):
    """6.4.8: UID FETCH of a UID range: messages 23 to 25 have UIDs 4827313, 4827943 and
    4828442; UID is in every answer."""
    inbox = server.store.folder(ALICE)
    uids = {23: 4827313, 24: 4827943, 25: 4828442}
    for n in range(1, 26):
        if n in uids:
            next_uid(inbox, uids[n])
        inbox.append(message(f"m{n}"), {"\\Seen"})
    imap.run(b"s SELECT INBOX")
    assert imap.run(b"A999 UID FETCH 4827313:4828442 FLAGS") == lines(
        b"* 23 FETCH (FLAGS (\\Seen) UID 4827313)",
        b"* 24 FETCH (FLAGS (\\Seen) UID 4827943)",
        b"* 25 FETCH (FLAGS (\\Seen) UID 4828442)",
        b"A999 OK UID FETCH completed",
    )


def test_6_5_1_x_command_not_offered(imap):
    """6.5.1: XPIG-LATIN is the example of an experimental command; mailgw has none, so it
    is not in CAPABILITY and the command is BAD (6.5.1's server answers it)."""
    answer = imap.send(b"a441 CAPABILITY")
    assert b"XPIG-LATIN" not in capabilities(answer)
    assert imap.run(b"A442 XPIG-LATIN") == lines(b"A442 BAD <text>")
