"""POP3 end to end: poplib and raw sockets against a live server over the real Maildir store."""

from __future__ import annotations

import dataclasses
import poplib
import socket
import ssl
import time
from pathlib import Path

import pytest
from conftest import LiveServer, make_config
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailgw.pop3 import make_factory
from mailgw.tls import load_or_create_tls

ALICE = "alice@example.test"
PASSWORD = "Tr0ub4dor&3"
ONE = b"From: bob@example.test\r\nSubject: one\r\n\r\nHello Alice\r\n.dot line\r\n..two\r\n.\r\n"
TWO = b"From: carol@example.test\r\nSubject: two\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"


@pytest.fixture
def log_events():
    """Every event logged while the test runs."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def failures(events: list[dict]) -> list[str]:
    return [formatEvent(event) for event in events if "log_failure" in event]


def serve_alice(server: LiveServer) -> LiveServer:
    """Give ``server`` alice holding ONE and TWO, and a POP3 listener at ``server.pop3_port``."""
    server.add_user(ALICE, PASSWORD)
    inbox = server.store.folder(ALICE)
    inbox.append(ONE)
    inbox.append(TWO)
    server.pop3_port = server.listen(make_factory)
    return server


@pytest.fixture
def pop(server):
    """The live server with alice holding ONE and TWO, and a POP3 listener's port."""
    return serve_alice(server)


def client(port: int) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", port, timeout=10)


def login(port: int) -> poplib.POP3:
    box = client(port)
    box.user(ALICE)
    box.pass_(PASSWORD)
    return box


def login_when_released(port: int, seconds: float = 5.0) -> poplib.POP3:
    """Log in once the server has seen alice's previous session end and released her maildrop."""
    deadline = time.monotonic() + seconds
    while True:
        box = client(port)
        try:
            box.user(ALICE)
            box.pass_(PASSWORD)
            return box
        except poplib.error_proto as error:
            box.close()
            if b"[IN-USE]" not in error.args[0] or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def message_files(server: LiveServer) -> list[Path]:
    maildir = server.config.mail_dir / "example.test" / "alice"
    return sorted(p for sub in ("new", "cur") for p in (maildir / sub).iterdir())


def raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert sock.recv(1000).startswith(b"+OK")
    return sock


def read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while end not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def expect_error(call, *args) -> str:
    with pytest.raises(poplib.error_proto) as info:
        call(*args)
    reply = info.value.args[0]
    assert reply.startswith(b"-ERR")
    return reply.decode()


def test_login_and_stat_list_report_exact_crlf_sizes(pop):
    box = login(pop.pop3_port)
    assert box.stat() == (2, len(ONE) + len(TWO))
    _, listing, _ = box.list()
    assert listing == [b"1 %d" % len(ONE), b"2 %d" % len(TWO)]
    assert box.list(2) == b"+OK 2 %d" % len(TWO)
    box.quit()


def test_bare_lf_message_is_listed_and_sent_with_its_crlf_size(pop):
    pop.store.folder(ALICE).append(b"Subject: lf\n\nbody\n.dot\n")
    expected = b"Subject: lf\r\n\r\nbody\r\n.dot\r\n"
    box = login(pop.pop3_port)
    assert box.list(3) == b"+OK 3 %d" % len(expected)
    _, lines, _ = box.retr(3)
    assert b"\r\n".join(lines) + b"\r\n" == expected
    box.quit()


def test_unknown_user_and_wrong_password_get_the_same_reply(pop, log_events):
    box = client(pop.pop3_port)
    box.user(ALICE)
    wrong_password = expect_error(box.pass_, "not-it")
    box.user("nobody@example.test")
    unknown_user = expect_error(box.pass_, PASSWORD)
    assert wrong_password == unknown_user
    expect_error(box.stat)
    box.user(ALICE)
    assert box.pass_(PASSWORD).startswith(b"+OK")
    box.quit()
    logged = repr([(formatEvent(event), event) for event in log_events])
    assert "not-it" not in logged
    assert PASSWORD not in logged
    assert not failures(log_events)


def test_retr_returns_the_stored_bytes_dot_stuffed_on_the_wire(pop):
    sock = raw(pop.pop3_port)
    sock.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nRETR 1\r\nQUIT\r\n".encode())
    wire = read_to_eof(sock)
    status, _, body = wire.split(b"\r\n", 2)[2].partition(b"\r\n")
    assert status == b"+OK %d octets" % len(ONE)
    assert body.startswith(ONE.replace(b"\r\n.", b"\r\n..") + b".\r\n+OK ")
    box = login(pop.pop3_port)
    _, lines, _ = box.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == ONE


def test_large_message_streams_byte_identical(pop):
    line = b"." + b"x" * 75 + b"\r\n"
    big = b"Subject: big\r\n\r\n" + line * 40000
    pop.store.folder(ALICE).append(big)
    box = login(pop.pop3_port)
    _, lines, octets = box.retr(3)
    assert b"\r\n".join(lines) + b"\r\n" == big
    box.quit()


def test_uidl_is_stable_across_sessions_and_restarts(pop):
    first = login(pop.pop3_port)
    _, listing, _ = first.uidl()
    first.quit()
    second = login(pop.pop3_port)
    assert second.uidl()[1] == listing
    assert second.uidl(2) == b"+OK " + listing[1]
    second.quit()
    restarted = LiveServer(pop.config)
    try:
        third = login(restarted.listen(make_factory))
        assert third.uidl()[1] == listing
        third.quit()
    finally:
        restarted.close()
    uids = [entry.split()[1] for entry in listing]
    assert len(set(uids)) == 2
    assert all(1 <= len(uid) <= 70 and uid.isascii() and b" " not in uid for uid in uids)


def test_dele_then_quit_removes_the_file(pop):
    assert len(message_files(pop)) == 2
    box = login(pop.pop3_port)
    assert box.dele(1).startswith(b"+OK")
    assert box.stat() == (1, len(TWO))
    assert b"(1 message left)" in box.quit()
    files = message_files(pop)
    assert len(files) == 1
    assert files[0].read_bytes() == TWO
    again = login(pop.pop3_port)
    assert again.stat() == (1, len(TWO))
    again.quit()


def test_dele_then_dropped_connection_deletes_nothing(pop):
    sock = raw(pop.pop3_port)
    sock.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nDELE 1\r\nDELE 2\r\n".encode())
    assert read_until(sock, b"deleted\r\n+OK message 2 deleted\r\n").count(b"+OK") == 4
    sock.close()
    box = login_when_released(pop.pop3_port)
    assert len(message_files(pop)) == 2
    assert box.stat() == (2, len(ONE) + len(TWO))
    box.quit()


def test_rset_undeletes(pop):
    box = login(pop.pop3_port)
    box.dele(1)
    box.dele(2)
    assert box.stat() == (0, 0)
    assert box.rset().startswith(b"+OK")
    assert box.stat() == (2, len(ONE) + len(TWO))
    box.quit()
    assert len(message_files(pop)) == 2


def test_deleted_message_is_refused_everywhere(pop):
    box = login(pop.pop3_port)
    box.dele(1)
    expect_error(box.retr, 1)
    expect_error(box.list, 1)
    expect_error(box.uidl, 1)
    expect_error(box.top, 1, 0)
    expect_error(box.dele, 1)
    assert box.list()[1] == [b"2 %d" % len(TWO)]
    assert len(box.uidl()[1]) == 1
    box.quit()


def test_dele_zero_and_bad_numbers_are_refused_and_delete_nothing(pop):
    """Twisted's own POP3 takes DELE 0 for the last message."""
    box = login(pop.pop3_port)
    for bad in ("0", "-1", "3", "x", "1.0", "99999999999999999999"):
        expect_error(box.dele, bad)
        expect_error(box.retr, bad)
    expect_error(box.list, "0")
    assert box.stat() == (2, len(ONE) + len(TWO))
    box.quit()
    assert len(message_files(pop)) == 2


def test_top_sends_header_and_n_body_lines(pop):
    box = login(pop.pop3_port)
    _, lines, _ = box.top(2, 0)
    assert lines == [b"From: carol@example.test", b"Subject: two", b""]
    _, lines, _ = box.top(2, 2)
    assert lines[-2:] == [b"line 1", b"line 2"]
    expect_error(box.top, 2, -1)
    expect_error(box.top, 0, 1)
    box.quit()


def test_bad_and_out_of_state_commands_get_err_and_the_session_goes_on(pop, log_events):
    box = client(pop.pop3_port)
    expect_error(box._shortcmd, "STAT")
    expect_error(box._shortcmd, "RETR 1")
    expect_error(box._shortcmd, "XYZZY")
    expect_error(box.pass_, PASSWORD)  # PASS before USER
    box.user(ALICE)
    box.pass_(PASSWORD)
    expect_error(box.user, ALICE)
    expect_error(box._shortcmd, "STLS")
    expect_error(box._shortcmd, "STAT now")
    expect_error(box._shortcmd, "APOP alice 0123")
    assert box.noop().startswith(b"+OK")
    assert box.stat() == (2, len(ONE) + len(TWO))
    box.quit()
    assert not failures(log_events)


def test_bare_lf_client_is_understood_and_answered_with_crlf(pop):
    sock = raw(pop.pop3_port)
    sock.sendall(f"user {ALICE}\npass {PASSWORD}\nstat\nquit\n".encode())
    wire = read_to_eof(sock)
    assert b"\r\n+OK 2 %d\r\n" % (len(ONE) + len(TWO)) in wire
    assert wire.count(b"\r\n") == 4


def test_client_leaving_during_retr_breaks_nothing(pop, log_events):
    pop.store.folder(ALICE).append(b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n" * 100000)
    sock = raw(pop.pop3_port)
    sock.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nDELE 1\r\nRETR 3\r\n".encode())
    read_until(sock, b"octets\r\n")
    sock.close()
    box = login_when_released(pop.pop3_port)
    assert len(message_files(pop)) == 3
    assert box.stat()[0] == 3
    box.quit()
    assert not failures(log_events)


def test_too_many_errors_end_the_session(pop):
    sock = raw(pop.pop3_port)
    sock.sendall(b"BOGUS\r\n" * pop.context.limits.session_errors)
    replies = read_to_eof(sock).split(b"\r\n")
    assert replies.pop() == b""
    assert len(replies) == pop.context.limits.session_errors
    assert all(reply.startswith(b"-ERR ") for reply in replies)
    assert replies[-1] == b"-ERR Too many errors, closing connection"


def test_pipelined_commands_are_answered_in_order(pop):
    sock = raw(pop.pop3_port)
    commands = ["USER " + ALICE, "PASS " + PASSWORD, "STAT", "RETR 2", "LIST 1", "QUIT"]
    sock.sendall("".join(command + "\r\n" for command in commands).encode())
    wire = read_to_eof(sock)
    stat = b"+OK 2 %d\r\n" % (len(ONE) + len(TWO))
    retr = b"+OK %d octets\r\n" % len(TWO) + TWO + b".\r\n"
    assert stat + retr + b"+OK 1 %d\r\n" % len(ONE) in wire
    assert wire.endswith(b"(2 messages left)\r\n")


def test_message_expunged_elsewhere_gets_err_and_the_session_goes_on(pop):
    box = login(pop.pop3_port)
    inbox = pop.store.folder(ALICE)
    first_uid = inbox.messages()[0].uid
    assert inbox.expunge([first_uid]) == [first_uid]
    assert "removed" in expect_error(box.retr, 1)
    _, lines, _ = box.retr(2)
    assert b"\r\n".join(lines) + b"\r\n" == TWO
    box.dele(1)
    assert b"(1 message left)" in box.quit()


def test_message_whose_flags_changed_over_imap_is_still_retrieved(pop):
    """A flag change renames the file after the login's snapshot: RETR and TOP still find it."""
    box = login(pop.pop3_port)
    inbox = pop.store.folder(ALICE)
    inbox.set_flags(inbox.messages()[0].uid, {"\\Seen", "\\Flagged"})
    _, lines, _ = box.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == ONE
    _, lines, _ = box.top(1, 0)
    assert lines == [b"From: bob@example.test", b"Subject: one", b""]
    box.quit()


def test_message_delivered_with_lf_line_ends_is_sent_with_crlf(pop):
    """A file another delivery agent put in new/ with bare LF: sent with CRLF, octets exact."""
    text = b"From: dan@remote.test\nSubject: lf\n\nfirst\n.dot\n"
    folder = pop.store.folder(ALICE)
    (folder.path / "new" / "1700000000.M1P1.other").write_bytes(text)
    box = login(pop.pop3_port)
    crlf = text.replace(b"\n", b"\r\n")
    assert box.list(3) == b"+OK 3 %d" % len(crlf)
    _, lines, _ = box.retr(3)
    assert b"\r\n".join(lines) + b"\r\n" == crlf
    box.quit()


def test_many_pipelined_retrs_come_back_complete_and_in_order(pop):
    """More replies than the server queues up at once (FLUSH_OCTETS), asked for in one go."""
    inbox = pop.store.folder(ALICE)
    bodies = [
        b"Subject: %d\r\n\r\n" % n + (b".%06d" % n + b"y" * 70 + b"\r\n") * 700 for n in range(25)
    ]
    for body in bodies:
        inbox.append(body)
    sock = raw(pop.pop3_port)
    retrs = "".join(f"RETR {n}\r\n" for n in range(3, 28))
    sock.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n{retrs}QUIT\r\n".encode())
    wire = read_to_eof(sock)
    expected = b"".join(
        b"+OK %d octets\r\n" % len(body) + body.replace(b"\r\n.", b"\r\n..") + b".\r\n"
        for body in bodies
    )
    assert expected in wire
    assert wire.endswith(b"(27 messages left)\r\n")


def test_over_long_line_gets_err_then_disconnect(pop):
    sock = raw(pop.pop3_port)
    sock.sendall(b"USER " + b"a" * (pop.context.limits.command_line + 10))
    assert read_to_eof(sock) == b"-ERR Line too long\r\n"


def test_idle_session_is_logged_out_and_deletes_nothing(pop):
    limits = dataclasses.replace(pop.context.limits, pop3_idle_timeout=0.5)
    port = pop.listen(lambda ctx: make_factory(dataclasses.replace(ctx, limits=limits)))
    sock = raw(port)
    sock.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nDELE 1\r\n".encode())
    wire = read_to_eof(sock)
    assert wire.endswith(b"-ERR Disconnected for inactivity\r\n")
    assert len(message_files(pop)) == 2


def strict_server(data_dir: Path, **overrides) -> LiveServer:
    """A live server that refuses plaintext passwords, with TLS for STLS at ``pop3_port``;
    alice holds ONE.  ``overrides`` go to its Config."""
    srv = LiveServer(make_config(data_dir, **{"allow_plaintext": False, **overrides}))
    srv.add_user(ALICE, PASSWORD)
    srv.store.folder(ALICE).append(ONE)
    tls = load_or_create_tls(srv.config)
    srv.pop3_port = srv.listen(lambda ctx: make_factory(dataclasses.replace(ctx, tls=tls)))
    return srv


@pytest.fixture
def strict(tmp_path):
    """A live server that refuses plaintext passwords, with TLS for STLS."""
    srv = strict_server(tmp_path / "strict")
    yield srv
    srv.close()


def unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_plaintext_login_refused_without_tls(strict):
    box = client(strict.pop3_port)
    capabilities = box.capa()
    assert "USER" not in capabilities
    assert "STLS" in capabilities
    assert "[AUTH]" in expect_error(box.user, ALICE)
    assert "[AUTH]" in expect_error(box.pass_, PASSWORD)
    expect_error(box.stat)
    box.quit()


def test_stls_then_login_works(strict):
    box = client(strict.pop3_port)
    box.stls(context=unverified())
    capabilities = box.capa()
    assert "USER" in capabilities
    assert "STLS" not in capabilities
    box.user(ALICE)
    box.pass_(PASSWORD)
    assert box.stat() == (1, len(ONE))
    expect_error(box._shortcmd, "STLS")
    box.quit()


def test_implicit_tls_session_allows_login_and_streams_messages(strict):
    """As on the pop3s listener: TLS from the first byte, so USER is offered and no STLS."""
    tls = load_or_create_tls(strict.config)
    port = strict.listen(lambda ctx: TLSMemoryBIOFactory(tls, False, make_factory(ctx)))
    box = poplib.POP3_SSL("127.0.0.1", port, context=unverified(), timeout=10)
    capabilities = box.capa()
    assert "USER" in capabilities
    assert "STLS" not in capabilities
    box.user(ALICE)
    box.pass_(PASSWORD)
    _, lines, _ = box.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == ONE
    box.quit()


def test_commands_pipelined_after_stls_are_discarded(strict):
    """RFC 2595 section 4 / checklist S1: plaintext injected behind STLS is never executed."""
    sock = raw(strict.pop3_port)
    sock.sendall(b"STLS\r\nCAPA\r\n")
    assert sock.recv(1000).startswith(b"+OK Begin TLS")
    tls = unverified().wrap_socket(sock, server_hostname="mx.example.test")
    tls.sendall(b"QUIT\r\n")
    assert read_to_eof(tls) == b"+OK mx.example.test POP3 server signing off\r\n"
