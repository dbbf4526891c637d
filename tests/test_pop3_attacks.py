"""POP3 under load and hostile input, against a live server over real loopback sockets.

- Fifty users download and delete their own mail at once while SMTP delivers more to them: each
  gets exactly its own messages, byte for byte, and nothing delivered meanwhile is lost or
  deleted with the messages of the session it arrived during.
- Fuzzed sessions (junk, NUL, over-long lines, unknown commands, every command in every state,
  STLS followed by plaintext, connections dropped mid-session) never hurt the server: after each
  case a fresh connection logs in and STAT agrees with the store.
- A mebibyte without a line end is answered and cut off long before the server has read it.
"""

from __future__ import annotations

import base64
import poplib
import select
import smtplib
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import argon2
import conftest
import pytest
from conftest import LiveServer, make_config, stored, without_trace
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from mailgw import pop3, smtp
from mailgw.context import Limits

ALICE = "alice@example.test"
PASSWORD = "fuzz me"
SOCKET_TIMEOUT = 10
#: An {ARGON2ID} hash of PASSWORD at a low cost, so that hundreds of logins take no time.
CHEAP_HASH = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)


def write_users(data_dir: Path, addresses: list[str]) -> None:
    """Write the passwd-file directly: every user has PASSWORD under CHEAP_HASH."""
    data_dir.mkdir(parents=True, exist_ok=True)
    passwd = data_dir / "passwd"
    passwd.write_text("".join(f"{address}:{{ARGON2ID}}{CHEAP_HASH}\n" for address in addresses))
    passwd.chmod(0o600)


def login(port: int, user: str) -> poplib.POP3:
    """A logged-in poplib session; a maildrop still held by a session that has just ended
    (``[IN-USE]`` while the server notices the disconnect) is retried for a few seconds."""
    deadline = time.monotonic() + 5
    while True:
        box = poplib.POP3("127.0.0.1", port, timeout=SOCKET_TIMEOUT)
        box.user(user)
        try:
            box.pass_(PASSWORD)
            return box
        except poplib.error_proto as error:
            box.close()
            if b"[IN-USE]" not in error.args[0] or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def retrieve(box: poplib.POP3, number: int) -> bytes:
    """RETR ``number`` as the octets of the message (poplib strips CRLF and unstuffs dots)."""
    _, lines, _ = box.retr(number)
    return b"".join(line + b"\r\n" for line in lines)


# -- fifty sessions at once --------------------------------------------------------------------

USERS = [f"user{n:02d}@example.test" for n in range(50)]
PRELOADED = 4
DELIVERED = 2


def preloaded(user: str, n: int) -> bytes:
    """Message ``n`` already in ``user``'s INBOX: a few lines to ~40 KB, dots first."""
    body = b"".join(
        b".%s line %d of %d, with some padding to make it longer\r\n" % (user.encode(), i, n)
        for i in range(1 + zlib.crc32(b"%s %d" % (user.encode(), n)) % 700)
    )
    return b"Subject: preloaded %d for %s\r\n\r\n" % (n, user.encode()) + body


def delivered(user: str, n: int) -> bytes:
    """Message ``n`` SMTP delivers to ``user`` while the sessions run."""
    head = b"Subject: delivered %d for %s\r\nMessage-ID: <d%d.%s>\r\n\r\n" % (
        n,
        user.encode(),
        n,
        user.encode(),
    )
    return head + b"".join(b"%05d %s\r\n" % (i, b"x" * 70) for i in range(1 + n * 40))


@pytest.fixture
def crowd(tmp_path: Path):
    """A server with the fifty USERS, each holding PRELOADED messages; POP3 and SMTP ports."""
    write_users(tmp_path / "data", USERS)
    limits = Limits(connections_per_ip=2 * len(USERS))
    srv = LiveServer(make_config(tmp_path / "data", limits=limits))
    for user in USERS:
        folder = srv.store.folder(user)
        for n in range(PRELOADED):
            folder.append(preloaded(user, n))
    srv.pop3_port = srv.listen(pop3.make_factory)
    srv.smtp_port = srv.listen(smtp.make_factory)
    yield srv
    srv.close()


def test_fifty_sessions_get_their_own_mail_while_smtp_delivers(crowd):
    all_logged_in = threading.Barrier(len(USERS) + 1, timeout=30)
    smtp_done = threading.Event()

    def session(user: str) -> list[bytes]:
        box = login(crowd.pop3_port, user)
        all_logged_in.wait()
        count, octets = box.stat()
        expected = [preloaded(user, n) for n in range(PRELOADED)]
        assert (count, octets) == (PRELOADED, sum(map(len, expected)))
        uids = [line.split()[1] for line in box.uidl()[1]]
        assert len(set(uids)) == PRELOADED
        assert [retrieve(box, n + 1) for n in range(PRELOADED)] == expected
        for n in range(PRELOADED):
            box.dele(n + 1)
        assert box.quit().startswith(b"+OK")
        assert smtp_done.wait(30)
        # What arrived during the first session is there now, and nothing else.
        box = login(crowd.pop3_port, user)
        assert box.stat()[0] == DELIVERED
        new_uids = [line.split()[1] for line in box.uidl()[1]]
        assert not set(new_uids) & set(uids)
        got = [retrieve(box, n + 1) for n in range(DELIVERED)]
        box.quit()
        return got

    def deliver(users: list[str]) -> None:
        with smtplib.SMTP("127.0.0.1", crowd.smtp_port, timeout=SOCKET_TIMEOUT) as client:
            for n in range(DELIVERED):
                for user in users:
                    assert client.sendmail("sender@remote.test", [user], delivered(user, n)) == {}

    started = time.monotonic()
    with ThreadPoolExecutor(len(USERS) + 4) as pool:
        sessions = {user: pool.submit(session, user) for user in USERS}
        all_logged_in.wait()
        senders = [pool.submit(deliver, USERS[i::4]) for i in range(4)]
        try:
            for sender in senders:
                sender.result()
        finally:
            smtp_done.set()
        results = {user: future.result() for user, future in sessions.items()}
    assert time.monotonic() - started < 30
    for user, messages in results.items():
        assert [without_trace(m) for m in messages] == [delivered(user, n) for n in range(2)]
        assert messages == stored(crowd, user)


# -- fuzzing -----------------------------------------------------------------------------------


@pytest.fixture
def pop(tmp_path: Path):
    """A server where alice holds three messages, with a POP3 listener's port in ``port``."""
    write_users(tmp_path / "data", [ALICE])
    srv = LiveServer(make_config(tmp_path / "data"))
    folder = srv.store.folder(ALICE)
    for n in range(3):
        folder.append(b"Subject: message %d\r\n\r\n.dotted\r\nbody %d\r\n" % (n, n))
    srv.port = srv.listen(pop3.make_factory)
    yield srv
    srv.close()


def probe(server: LiveServer) -> None:
    """A fresh connection logs alice in, and STAT agrees with the store."""
    box = login(server.port, ALICE)
    inbox = server.store.folder(ALICE)
    messages = inbox.messages()
    assert box.stat() == (len(messages), sum(info.size for info in messages))
    box.quit()


def test_a_mebibyte_without_line_end_is_answered_and_cut_off(pop):
    payload = b"USER " + b"x" * (1 << 20)
    sent = 0
    with socket.create_connection(("127.0.0.1", pop.port), timeout=SOCKET_TIMEOUT) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"+OK ")
        # 4 KiB at a time, looking for the reply after each: the server gets the time to read
        # and answer, which it must do long before the end (its line limit is 8 KiB).
        deadline = time.monotonic() + SOCKET_TIMEOUT
        while sent < len(payload) and time.monotonic() < deadline:
            if select.select([sock], [], [], 0.002)[0]:
                break
            try:
                sent += sock.send(payload[sent : sent + 4096])
            except (BrokenPipeError, ConnectionResetError):
                break
        assert sent < len(payload), "the server read the whole MiB without answering"
        assert reader.readline() == b"-ERR Line too long\r\n"
        try:
            assert reader.read() == b""
        except ConnectionResetError:
            pass  # closed with our unread bytes in its buffer: a reset is a close too
    probe(pop)


_PLAIN = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
#: Building blocks: every command with good and bad arguments, SASL, and junk.
_COMMANDS = [
    f"USER {ALICE}".encode(),
    f"PASS {PASSWORD}".encode(),
    b"USER",
    b"PASS",
    b"USER nobody@example.test",
    b"PASS wrong",
    b"APOP alice 0123456789abcdef0123456789abcdef",
    b"AUTH PLAIN",
    b"AUTH PLAIN " + _PLAIN,
    b"AUTH PLAIN ====",
    b"AUTH LOGIN",
    _PLAIN,
    b"*",
    b"CAPA",
    b"STAT",
    b"LIST",
    b"LIST 1",
    b"LIST 0",
    b"LIST 99999999999999999999",
    b"LIST -1",
    b"UIDL",
    b"UIDL 2",
    b"RETR 1",
    b"RETR 3",
    b"RETR 4",
    b"RETR",
    b"TOP 1 0",
    b"TOP 2 1",
    b"TOP 1",
    b"TOP 1 -1",
    b"DELE 1",
    b"DELE 0",
    b"DELE 2",
    b"RSET",
    b"NOOP",
    b"NOOP extra",
    b"QUIT now",
    b"stat",
    b"retr 2",
    b"LAST",
    b"STLS",
    b"XTND XMIT",
    b"RETR 1 " + b"1" * 60,
    b"",
    b" ",
    b"\x00\x00\x00",
    b"RETR\x001",
    b"USER \x00alice",
    b"\xff\xfe\xc3\x28",
    b".",
]
_line = st.one_of(
    st.sampled_from(_COMMANDS),
    st.binary(max_size=64),
    st.binary(max_size=16).map(lambda junk: b"X" * 600 + junk),
    st.binary(max_size=16).map(lambda junk: b"y" * 9000 + junk),
)
_line_end = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])
_session = st.lists(st.tuples(_line, _line_end).map(b"".join), max_size=12).map(b"".join)
#: What comes before the fuzzed lines: nothing (AUTHORIZATION), half a login, a whole login
#: (TRANSACTION), or STLS followed by plaintext (the TLS handshake fails).
_STATES = {
    "authorization": b"",
    "after USER": f"USER {ALICE}\r\n".encode(),
    "transaction": f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode(),
    "after STLS": b"STLS\r\n",
}


def fuzz_exchange(port: int, data: bytes, drop: bool) -> bytes:
    """Send ``data`` on a new connection; then drop it at once, or send QUIT and read the
    replies until the server closes.  Return what was read.

    After STLS the server waits for a TLS handshake: there our side is closed after the data,
    and the server, seeing the end of input, closes too."""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(data if drop else data + b"\r\nQUIT\r\n")
            if b"STLS" in data.upper():
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server hung up first; its replies are still to be read
        if drop:
            return b""
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received


def test_fuzzed_sessions_never_hurt_the_server(pop):
    probe(pop)
    ran = []

    # No shrinking: a case that hangs would be re-run for minutes; the failing input is printed.
    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(state=st.sampled_from(sorted(_STATES)), data=_session, drop=st.booleans())
    def case(state: str, data: bytes, drop: bool) -> None:
        before = len(pop.store.folder(ALICE).messages())
        wire = fuzz_exchange(pop.port, _STATES[state] + data, drop)
        if wire:
            assert wire.startswith(b"+OK ")
            assert wire.endswith(b"\r\n"), wire[-200:]
        if drop:
            # A session that never reached QUIT deletes nothing.
            assert len(pop.store.folder(ALICE).messages()) == before
        probe(pop)
        if not pop.store.folder(ALICE).messages():
            pop.store.folder(ALICE).append(b"Subject: refill\r\n\r\nmore\r\n")
        ran.append(state)

    started = time.monotonic()
    case()
    assert time.monotonic() - started < 20
    assert conftest.reactor_thread_alive()
    assert set(ran) == set(_STATES)
