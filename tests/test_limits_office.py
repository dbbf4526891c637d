"""Connection limits that fit an office behind one NAT address (issue 10), on real sockets.

Every client here connects from 127.0.0.1, as a whole office behind one NAT address reaches the
server from one address.  The servers run the default ``Limits`` unless a test says otherwise:
``connections_per_ip = 200`` per listener before login, ``smtp_connections_per_ip = 50`` on the
MX listener, and after login ``sessions_per_user_ip = 10`` POP3 and IMAP sessions (counted
together) of one user from one address.  Passwords are stored as {PLAIN} (the server allows
it for tests), so that hundreds of logins cost no Argon2 hash; one test needs a slow hash and
says why.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import LiveServer, in_reactor, make_config
from twisted.logger import globalLogPublisher

from mailgw import imap, pop3, smtp
from mailgw.context import Limits

PASSWORD = "office-Pa55word"
TIMEOUT = 10
#: The office: 100 people, all behind one address.
USERS = [f"user{n:03d}@example.test" for n in range(100)]
#: The half of them who read mail over IMAP (Thunderbird-like: two sessions each) and keep a
#: POP3 session open too; the other half only use POP3.
IMAP_USERS = USERS[:50]
ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"
SUBJECT = b"Subject: Staff meeting at ten"


def office_server(data_dir: Path, limits: Limits | None = None) -> LiveServer:
    """A LiveServer with ``limits`` (default: the defaults); every user has PASSWORD."""
    config = make_config(data_dir, allow_plaintext_schemes=True, limits=limits or Limits())
    data_dir.mkdir(parents=True)
    config.users_file.write_text(
        "".join(f"{user}:{{PLAIN}}{PASSWORD}\n" for user in [*USERS, ALICE, BOB])
    )
    return LiveServer(config)


@pytest.fixture
def office(tmp_path: Path):
    """A server with the default limits, its IMAP, POP3 and MX listeners' ports as attributes."""
    srv = office_server(tmp_path / "data")
    srv.imap_port = srv.listen(imap.make_factory)
    srv.pop3_port = srv.listen(pop3.make_factory)
    srv.smtp_port = srv.listen(smtp.make_factory)
    yield srv
    srv.close()


class IMAPFrom(imaplib.IMAP4):
    """imaplib's client, connecting from loopback address ``source``."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self._source = source
        super().__init__("127.0.0.1", port, timeout=TIMEOUT)

    def _create_socket(self, timeout):
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self._source, 0)
        )


def imap_login(port: int, user: str, source: str = "127.0.0.1") -> imaplib.IMAP4:
    """A logged-in IMAP session of ``user``."""
    client = IMAPFrom(port, source)
    client.login(user, PASSWORD)
    return client


def imap_refused(port: int, user: str, source: str = "127.0.0.1") -> str:
    """The NO an IMAP LOGIN of ``user`` gets (the test fails if it succeeds)."""
    client = IMAPFrom(port, source)
    try:
        with pytest.raises(imaplib.IMAP4.error) as refused:
            client.login(user, PASSWORD)
        return refused.value.args[0].decode()
    finally:
        client.shutdown()


def pop3_login(port: int, user: str) -> poplib.POP3:
    """A logged-in POP3 session of ``user``."""
    box = poplib.POP3("127.0.0.1", port, timeout=TIMEOUT)
    box.user(user)
    box.pass_(PASSWORD)
    return box


class Raw:
    """A raw connection from ``source``, with the server's first line read."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        address = ("127.0.0.1", port)
        self.sock = socket.create_connection(address, TIMEOUT, source_address=(source, 0))
        self.first_line = b""
        while not self.first_line.endswith(b"\n"):
            chunk = self.sock.recv(1)
            if not chunk:
                break
            self.first_line += chunk

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pop3_refused(port: int, user: str) -> bytes:
    """The -ERR line a POP3 login of ``user`` gets (the test fails if it succeeds)."""
    box = poplib.POP3("127.0.0.1", port, timeout=TIMEOUT)
    try:
        box.user(user)
        with pytest.raises(poplib.error_proto) as refused:
            box.pass_(PASSWORD)
        return refused.value.args[0]
    finally:
        box.close()


def imap_works(client: imaplib.IMAP4) -> None:
    """The session can SELECT INBOX and read the delivered message's subject."""
    status, data = client.select("INBOX")
    assert (status, data) == ("OK", [b"1"])
    status, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert status == "OK" and SUBJECT in data[0][1]


def pop3_works(box: poplib.POP3) -> None:
    """The maildrop holds the delivered message and RETR returns it."""
    assert box.stat()[0] == 1
    assert SUBJECT in box.retr(1)[1]


def user_sessions(server: LiveServer, user: str, peer_ip: str | None = None) -> int:
    """How many logged-in sessions the server counts for ``user`` (from ``peer_ip``)."""
    return in_reactor(server.context.user_sessions.count, user, peer_ip)


def eventually(check, seconds: float = 5.0):
    """``check()``'s result once it is truthy (the server notices closes asynchronously)."""
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.05)
    return result


def deliver(port: int, recipients: list[str]) -> None:
    """One message to every recipient, through the MX listener."""
    message = SUBJECT + b"\r\nFrom: boss@remote.test\r\n\r\nIn the big room.\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        assert client.sendmail("boss@remote.test", recipients, message) == {}


def reset(sock: socket.socket) -> None:
    """Close abruptly: the server sees a TCP RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def drop(session: imaplib.IMAP4 | poplib.POP3, abruptly: bool) -> None:
    """Close a client's connection without LOGOUT/QUIT: a FIN, or a RST if ``abruptly``."""
    session.file.close()  # else the socket's file keeps the descriptor open
    if abruptly:
        reset(session.sock)
    else:
        session.sock.close()


# -- an office behind one address -----------------------------------------------------------


def test_office_of_100_behind_one_address_holds_100_imap_and_100_pop3_sessions(office):
    """100 IMAP and 100 POP3 sessions from 127.0.0.1, all logged in at once and all working.

    IMAP: the 50 IMAP_USERS hold two sessions each (a mail client's usual pair: one for the
    INBOX, one for the other folders).  POP3 allows one session per maildrop (RFC 1939's
    exclusive lock), so 100 POP3 sessions need 100 users: the same 50, each with a POP3 session
    next to their two IMAP ones (three of their ten), and 50 colleagues who only use POP3.
    Every session sees the message delivered over SMTP before, while all 200 are open."""
    started = time.monotonic()
    deliver(office.smtp_port, USERS)
    with ThreadPoolExecutor(16) as pool:
        imap_sessions = list(
            pool.map(lambda user: imap_login(office.imap_port, user), IMAP_USERS * 2)
        )
        pop3_sessions = list(pool.map(lambda user: pop3_login(office.pop3_port, user), USERS))
        assert user_sessions(office, IMAP_USERS[0], "127.0.0.1") == 3
        assert user_sessions(office, USERS[-1], "127.0.0.1") == 1
        # All 200 are logged in now; each of them works.
        list(pool.map(imap_works, imap_sessions))
        list(pool.map(pop3_works, pop3_sessions))
        assert all(box.quit().startswith(b"+OK") for box in pop3_sessions)
        assert all(client.logout()[0] == "BYE" for client in imap_sessions)
    assert time.monotonic() - started < 20
    assert eventually(lambda: user_sessions(office, IMAP_USERS[0]) == 0)


# -- one user from one address: sessions_per_user_ip ----------------------------------------


def test_eleventh_imap_session_of_one_user_from_one_address_gets_no_limit(office):
    deliver(office.smtp_port, [ALICE, BOB])
    ten = [imap_login(office.imap_port, ALICE) for _ in range(10)]
    eleventh = IMAPFrom(office.imap_port)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[LIMIT\] Too many sessions for this user "):
        eleventh.login(ALICE, PASSWORD)
    assert eleventh.state == "NONAUTH"
    for client in ten:  # the ten go on
        imap_works(client)
    # Another user from the same address, and the same user from another address, log in.
    for client in (
        imap_login(office.imap_port, BOB),
        imap_login(office.imap_port, ALICE, "127.0.0.2"),
    ):
        imap_works(client)
        client.logout()
    # One of the ten logs out: the refused connection can now log in.
    ten.pop().logout()

    def logged_in() -> bool:
        try:
            eleventh.login(ALICE, PASSWORD)
        except imaplib.IMAP4.error:
            return False
        return True

    eventually(logged_in)
    imap_works(eleventh)
    for client in [*ten, eleventh]:
        client.logout()


def test_pop3_and_imap_count_together_and_pop3_over_the_limit_gets_in_use(office):
    """POP3 has one session per maildrop, so the per-user-address limit is counted over POP3
    and IMAP together: with ten IMAP sessions open, POP3 gets ``-ERR [IN-USE]`` (the limit's
    text, not the maildrop lock's); with nine IMAP and one POP3, IMAP gets ``NO [LIMIT]``."""
    deliver(office.smtp_port, [ALICE, BOB])
    ten = [imap_login(office.imap_port, ALICE) for _ in range(10)]
    refused = poplib.POP3("127.0.0.1", office.pop3_port, timeout=TIMEOUT)
    refused.user(ALICE)
    with pytest.raises(poplib.error_proto) as error:
        refused.pass_(PASSWORD)
    assert error.value.args[0].startswith(b"-ERR [IN-USE] Too many sessions for this user from")
    for client in ten:
        imap_works(client)
    bob = pop3_login(office.pop3_port, BOB)
    pop3_works(bob)
    bob.quit()
    ten.pop().logout()

    def logged_in() -> bool:
        try:
            refused.user(ALICE)
            refused.pass_(PASSWORD)
        except poplib.error_proto:
            return False
        return True

    eventually(logged_in)
    pop3_works(refused)
    assert imap_refused(office.imap_port, ALICE).startswith("[LIMIT] ")
    refused.quit()
    eventually(lambda: user_sessions(office, ALICE, "127.0.0.1") == 9)
    ten.append(imap_login(office.imap_port, ALICE))
    for client in ten:
        client.logout()


def test_per_user_cap_across_addresses(tmp_path: Path):
    """sessions_per_user bounds one user's sessions from all addresses together."""
    srv = office_server(tmp_path / "data", Limits(sessions_per_user_ip=2, sessions_per_user=3))
    try:
        port = srv.listen(imap.make_factory)
        held = [imap_login(port, ALICE), imap_login(port, ALICE)]
        assert imap_refused(port, ALICE) == (
            "[LIMIT] Too many sessions for this user from this address (2 at most)"
        )
        held.append(imap_login(port, ALICE, "127.0.0.2"))
        assert imap_refused(port, ALICE, "127.0.0.3") == (
            "[LIMIT] Too many sessions for this user (3 at most)"
        )
        held.append(imap_login(port, BOB, "127.0.0.3"))
        for client in held:
            client.logout()
    finally:
        srv.close()


def test_user_sessions_come_back_however_a_session_ends(office):
    """LOGOUT/QUIT, a close and a reset all give the login back, once."""
    for end in ("logout", "close", "reset"):
        held = [imap_login(office.imap_port, ALICE) for _ in range(9)]
        held.append(pop3_login(office.pop3_port, ALICE))
        assert user_sessions(office, ALICE, "127.0.0.1") == 10
        for session in held:
            if end != "logout":
                drop(session, abruptly=end == "reset")
            elif isinstance(session, poplib.POP3):
                session.quit()
            else:
                session.logout()
        eventually(lambda: user_sessions(office, ALICE) == 0)
    again = [imap_login(office.imap_port, ALICE) for _ in range(10)]
    for client in again:
        client.logout()


def test_pop3_login_to_a_locked_maildrop_gives_its_count_back(office):
    """A POP3 login admitted by the limits but refused by the maildrop lock counts nothing."""
    holder = pop3_login(office.pop3_port, ALICE)
    for _ in range(12):
        assert pop3_refused(office.pop3_port, ALICE) == b"-ERR [IN-USE] maildrop already locked"
    assert user_sessions(office, ALICE) == 1
    holder.quit()


def test_login_that_completes_after_the_client_left_is_not_counted(tmp_path: Path):
    """A client that sends LOGIN and resets at once is gone before the password check (a real
    Argon2id hash, checked in a thread) completes: that login must count nothing."""
    srv = office_server(tmp_path / "data")
    checked: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_format", "").startswith("Login succeeded"):
            checked.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        srv.add_user(CAROL, PASSWORD)  # Argon2id at its default cost
        imap_port, pop3_port = srv.listen(imap.make_factory), srv.listen(pop3.make_factory)
        user, password = CAROL.encode(), PASSWORD.encode()
        for _ in range(5):
            for port, login in (
                (imap_port, b"a LOGIN %s %s\r\n" % (user, password)),
                (pop3_port, b"USER %s\r\nPASS %s\r\n" % (user, password)),
            ):
                with Raw(port) as raw:
                    raw.sock.sendall(login)
                    reset(raw.sock)
        eventually(lambda: len(checked) == 10)  # every password was checked, and accepted
        time.sleep(0.2)  # the logins' callbacks run on the reactor right after
        assert user_sessions(srv, CAROL) == 0
        client = imap_login(imap_port, CAROL)
        assert user_sessions(srv, CAROL) == 1
        client.logout()
    finally:
        globalLogPublisher.removeObserver(observe)
        srv.close()


# -- before login: connections_per_ip and the MX listener's own cap --------------------------


def test_pre_login_cap_per_address_still_refuses(tmp_path: Path):
    srv = office_server(tmp_path / "data", Limits(connections=10, connections_per_ip=3))
    try:
        for make_factory, greeting, busy in (
            (imap.make_factory, b"* OK ", b"* BYE [UNAVAILABLE] Too many connections"),
            (pop3.make_factory, b"+OK ", b"-ERR [SYS/TEMP] Too many connections"),
        ):
            port = srv.listen(make_factory)
            held = [Raw(port) for _ in range(3)]
            assert all(sock.first_line.startswith(greeting) for sock in held)
            with Raw(port) as refused:
                assert refused.first_line.startswith(busy)
            other = Raw(port, "127.0.0.2")
            assert other.first_line.startswith(greeting)
            for sock in [*held, other]:
                sock.close()
    finally:
        srv.close()


def test_mx_listener_has_its_own_cap_and_submission_the_office_sized_one(office):
    """With the defaults: the MX listener takes 50 connections from one address and answers the
    51st 421; a submission listener takes 120 from that same address (an office's clients)."""
    submission_port = office.listen(smtp.make_factory, submission=True)
    mx = [Raw(office.smtp_port) for _ in range(50)]
    assert all(sock.first_line.startswith(b"220 ") for sock in mx)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP("127.0.0.1", office.smtp_port, timeout=TIMEOUT)
    assert refused.value.smtp_code == 421
    assert b"Too many connections" in refused.value.smtp_error
    submission = [Raw(submission_port) for _ in range(120)]
    assert all(sock.first_line.startswith(b"220 ") for sock in submission)
    with smtplib.SMTP(
        "127.0.0.1", office.smtp_port, timeout=TIMEOUT, source_address=("127.0.0.2", 0)
    ) as other:
        assert other.noop()[0] == 250
    mx.pop().close()
    deadline = time.monotonic() + 5
    while True:
        try:
            client = smtplib.SMTP("127.0.0.1", office.smtp_port, timeout=TIMEOUT)
            break
        except smtplib.SMTPConnectError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    client.quit()
    for sock in [*mx, *submission]:
        sock.close()


def test_mx_cap_set_small(tmp_path: Path):
    srv = office_server(tmp_path / "data", Limits(connections_per_ip=5, smtp_connections_per_ip=2))
    try:
        mx_port = srv.listen(smtp.make_factory)
        submission_port = srv.listen(smtp.make_factory, submission=True)
        held = [Raw(mx_port), Raw(mx_port)]
        with Raw(mx_port) as refused:
            assert refused.first_line.startswith(b"421 4.7.0 ")
        held += [Raw(submission_port) for _ in range(5)]
        assert all(sock.first_line.startswith(b"220 ") for sock in held)
        with Raw(submission_port) as refused:
            assert refused.first_line.startswith(b"421 4.7.0 ")
        for sock in held:
            sock.close()
    finally:
        srv.close()
