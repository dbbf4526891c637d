"""RFC 3501's examples (sections 6.1 to 6.4 and 7) replayed over real sockets, one test per
example: the mailbox each example assumes is built first (folders, messages with the flags,
numbers and UIDs it shows), the client's lines are sent as the example has them, and the
server's lines compared byte for byte with the example's after ``normalise``, which replaces
only what is the server's own choice (see there).  Where mailgw legitimately answers otherwise
(an optional mechanism it does not offer, a policy, '.' as its hierarchy delimiter), the test
asserts mailgw's answer and its docstring says why."""

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


@pytest.fixture
def port(server) -> int:
    """Alice and an IMAP listener (plaintext login allowed, as the test config has it)."""
    server.add_user(ALICE, PASSWORD)
    return server.listen(make_factory)


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


def leave_only(server, *names: str) -> None:
    """Alice's folders are INBOX and ``names`` (the defaults every user gets removed)."""
    for name in DEFAULTS:
        server.store.delete_folder(ALICE, name)
    for name in names:
        server.store.create_folder(ALICE, name)


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
