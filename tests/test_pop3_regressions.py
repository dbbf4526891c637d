"""One test per defect of ``twisted.mail.pop3`` (Twisted 26.10) that mailgw must not inherit.

Each test is named after the defect and shows mailgw's behaviour where Twisted's goes wrong.
"""

from __future__ import annotations

import dataclasses

import pytest
from test_pop3 import (
    ALICE,
    ONE,
    PASSWORD,
    TWO,
    client,
    expect_error,
    login,
    message_files,
    serve_alice,
    strict_server,
    unverified,
)
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.mail import pop3 as twisted_pop3

from mailgw.config import ConfigError, default_config, load_config
from mailgw.context import Limits
from mailgw.pop3 import make_factory


@pytest.fixture
def pop(server):
    """Plaintext allowed; alice holds ONE and TWO."""
    return serve_alice(server)


def test_no_stls(tmp_path):
    """Twisted's POP3 has no STLS; mailgw's offers it, and logs in under it."""
    strict = strict_server(tmp_path / "strict")
    try:
        box = client(strict.pop3_port)
        assert "STLS" in box.capa()
        assert box.stls(context=unverified()).startswith(b"+OK")
        box.user(ALICE)
        assert box.pass_(PASSWORD).startswith(b"+OK")
        _, lines, _ = box.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == ONE
        box.quit()
    finally:
        strict.close()


def test_no_maildrop_lock_lets_two_sessions_delete_the_same_message(pop):
    """With Twisted both sessions log in, both DELE 1, both QUIT: two messages gone."""
    first = login(pop.pop3_port)
    second = client(pop.pop3_port)
    second.user(ALICE)
    assert "[IN-USE]" in expect_error(second.pass_, PASSWORD)
    first.dele(1)
    first.quit()
    second.user(ALICE)
    second.pass_(PASSWORD)
    assert second.stat() == (1, len(TWO))
    second.dele(1)
    second.quit()
    assert message_files(pop) == []


def test_dele_0_deletes_the_last_message(pop):
    """Twisted takes message number 0 for the last message (Python's index -1)."""
    box = login(pop.pop3_port)
    for command in ("DELE 0", "RETR 0", "LIST 0", "UIDL 0", "TOP 0 1"):
        assert expect_error(box._shortcmd, command) == "-ERR Invalid message number"
    assert box.stat() == (2, len(ONE) + len(TWO))
    box.quit()
    assert sorted(path.read_bytes() for path in message_files(pop)) == sorted([ONE, TWO])


def test_deleted_message_is_moved_away_at_dele_instead_of_quit(pop):
    """Twisted renames a message into a trash folder at DELE, so a dropped session has already
    lost it; mailgw leaves it in place until UPDATE."""
    files = message_files(pop)
    box = login(pop.pop3_port)
    box.dele(1)
    assert message_files(pop) == files
    assert [info.uid for info in pop.store.folder(ALICE).messages()] == [1, 2]
    assert pop.store.list_folders(ALICE) == ["INBOX"]
    box.quit()
    assert [path.read_bytes() for path in message_files(pop)] == [TWO]


def test_idle_timeout_is_300_seconds(tmp_path):
    """Twisted's POP3 gives up after 300 s, below RFC 1939's 10 minutes; mailgw's default is 600 s,
    the configuration cannot go lower, and the limit in force is what the session applies."""
    assert twisted_pop3.POP3.timeOut == 300
    assert Limits().pop3_idle_timeout == 600
    assert default_config().limits.pop3_idle_timeout == 600
    config = tmp_path / "mailgw.ini"
    head = f"[mailgw]\ndata_dir = {tmp_path}\ndomains = example.test\nhostname = mx.example.test\n"
    head += "[limits]\n"
    config.write_text(head + "pop3_idle_timeout = 599\n")
    with pytest.raises(ConfigError, match="pop3_idle_timeout: must be at least 600"):
        load_config(config)
    config.write_text(head + "pop3_idle_timeout = 900\n")
    assert load_config(config).limits.pop3_idle_timeout == 900


@pytest.mark.parametrize("idle", [600.0, 900.0])
def test_the_configured_idle_timeout_is_what_a_session_waits(server, idle):
    """On a simulated clock: silent for just under the limit, still connected; at it, the
    session is told why and closed."""
    ctx = dataclasses.replace(
        server.context, limits=dataclasses.replace(server.context.limits, pop3_idle_timeout=idle)
    )
    session = make_factory(ctx).buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    clock = Clock()
    session.callLater = clock.callLater
    transport = StringTransport()
    session.makeConnection(transport)
    clock.advance(idle - 1)
    session.dataReceived(b"NOOP\r\n")
    clock.advance(idle - 1)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting
    assert transport.value().endswith(b"-ERR Disconnected for inactivity\r\n")


def test_client_syntax_errors_are_logged_as_server_failures(pop):
    """Twisted logs a wrong argument count as an unhandled error; mailgw answers -ERR only."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    bad = ["RETR", "RETR 1 2", "TOP 1", "LIST a b", "UIDL x", "DELE", "USER", "PASS", "QUIT now"]
    try:
        box = client(pop.pop3_port)
        for command in bad:
            expect_error(box._shortcmd, command)
        box.user(ALICE)
        box.pass_(PASSWORD)
        for command in bad:
            expect_error(box._shortcmd, command)
        assert box.stat()[0] == 2
        box.quit()
    finally:
        globalLogPublisher.removeObserver(events.append)
    serious = [e for e in events if "log_failure" in e or e.get("log_level") >= LogLevel.warn]
    assert serious == []
