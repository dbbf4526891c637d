"""POP3 login: CAPA (RFC 2449), AUTH PLAIN (RFC 5034), no APOP, and the password-guessing guard.

poplib and raw sockets against a live server; the "strict" server refuses passwords before TLS,
as a real configuration does, the "pop" one allows them (as ``[auth] allow_plaintext = yes``).
"""

from __future__ import annotations

import base64
import poplib

import pytest
from test_pop3 import (
    ALICE,
    ONE,
    PASSWORD,
    TWO,
    client,
    expect_error,
    login,
    raw,
    read_to_eof,
    read_until,
    serve_alice,
    strict_server,
    unverified,
)
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailgw.context import GuardSettings
from mailgw.pop3 import make_factory
from mailgw.tls import load_or_create_tls

ALWAYS = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
IMPLEMENTATION = {"IMPLEMENTATION": ["mailgw"]}
LOGIN_OFFERED = {"USER": [], "SASL": ["PLAIN"]}


def capabilities(box: poplib.POP3) -> dict:
    return box.capa()


def expected(*extra: dict) -> dict:
    caps = {name: [] for name in ALWAYS}
    for more in extra:
        caps.update(more)
    caps.update(IMPLEMENTATION)
    return caps


def plain(authzid: str, user: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


@pytest.fixture
def pop(server):
    """Plaintext allowed on the plain port; STLS available."""
    return serve_alice(server)


@pytest.fixture
def strict(tmp_path):
    """Passwords only under TLS; STLS available."""
    srv = strict_server(tmp_path / "strict")
    yield srv
    srv.close()


# -- CAPA ---------------------------------------------------------------------------------------


def test_capa_before_tls_offers_stls_and_no_login(strict):
    box = client(strict.pop3_port)
    assert capabilities(box) == expected({"STLS": []})
    box.quit()


def test_capa_after_stls_offers_user_and_sasl_plain_and_no_stls(strict):
    box = client(strict.pop3_port)
    box.stls(context=unverified())
    assert capabilities(box) == expected(LOGIN_OFFERED)
    box.quit()


def test_capa_on_implicit_tls_offers_login_and_no_stls(strict):
    tls = load_or_create_tls(strict.config)
    port = strict.listen(lambda ctx: TLSMemoryBIOFactory(tls, False, make_factory(ctx)))
    box = poplib.POP3_SSL("127.0.0.1", port, context=unverified(), timeout=10)
    assert capabilities(box) == expected(LOGIN_OFFERED)
    box.quit()


def test_capa_with_plaintext_allowed_offers_login_and_stls(pop):
    box = client(pop.pop3_port)
    assert capabilities(box) == expected(LOGIN_OFFERED, {"STLS": []})
    box.quit()


def test_capa_after_login_lists_no_login_or_stls(pop):
    box = login(pop.pop3_port)
    assert capabilities(box) == expected()
    box.quit()


# -- AUTH PLAIN ---------------------------------------------------------------------------------


def test_auth_plain_with_initial_response_logs_in(pop):
    box = client(pop.pop3_port)
    reply = box._shortcmd("AUTH PLAIN " + plain("", ALICE, PASSWORD))
    assert reply == b"+OK %s's maildrop has 2 messages (%d octets)" % (
        ALICE.encode(),
        len(ONE) + len(TWO),
    )
    assert box.stat() == (2, len(ONE) + len(TWO))
    box.quit()


def test_auth_plain_after_an_empty_challenge_logs_in(pop):
    sock = raw(pop.pop3_port)
    sock.sendall(b"AUTH PLAIN\r\n")
    assert sock.recv(100) == b"+ \r\n"
    sock.sendall(plain(ALICE, ALICE, PASSWORD).encode() + b"\r\nSTAT\r\nQUIT\r\n")
    wire = read_to_eof(sock)
    assert wire.startswith(b"+OK alice@example.test's maildrop has 2 messages")
    assert b"\r\n+OK 2 %d\r\n" % (len(ONE) + len(TWO)) in wire


def test_auth_cancelled_with_star_leaves_the_session_in_authorization(pop):
    sock = raw(pop.pop3_port)
    sock.sendall(b"AUTH PLAIN\r\n")
    assert sock.recv(100) == b"+ \r\n"
    sock.sendall(b"*\r\nSTAT\r\nUSER " + ALICE.encode() + b"\r\nPASS " + PASSWORD.encode())
    sock.sendall(b"\r\nSTAT\r\nQUIT\r\n")
    replies = read_to_eof(sock).split(b"\r\n")
    assert replies[0] == b"-ERR Authentication cancelled"
    assert replies[1].startswith(b"-ERR")  # STAT before login
    assert replies[3].startswith(b"+OK alice@example.test's maildrop")
    assert replies[4] == b"+OK 2 %d" % (len(ONE) + len(TWO))


def test_auth_plain_wrong_password_gets_the_same_reply_as_pass(pop):
    box = client(pop.pop3_port)
    by_auth = expect_error(box._shortcmd, "AUTH PLAIN " + plain("", ALICE, "wrong"))
    box.user(ALICE)
    by_pass = expect_error(box.pass_, "wrong")
    assert by_auth == by_pass == "-ERR [AUTH] Authentication failed"
    assert box._shortcmd("AUTH PLAIN " + plain("", ALICE, PASSWORD)).startswith(b"+OK")
    box.quit()


MALFORMED = [
    "not base64!",
    base64.b64encode(b"no separators").decode(),
    base64.b64encode(b"\0\0password").decode(),
    base64.b64encode(f"\0{ALICE}\0".encode()).decode(),
    base64.b64encode(b"\0\xff\xfe\0password").decode(),
    "=",
]


def test_malformed_auth_plain_responses_get_err_and_the_session_goes_on(pop):
    box = client(pop.pop3_port)
    for response in MALFORMED:
        expect_error(box._shortcmd, "AUTH PLAIN " + response)
    assert box._shortcmd("AUTH PLAIN " + plain("", ALICE, PASSWORD)).startswith(b"+OK")
    box.quit()


def test_auth_plain_as_another_user_is_refused(pop):
    pop.add_user("bob@example.test", "bobs password")
    box = client(pop.pop3_port)
    reply = expect_error(
        box._shortcmd, "AUTH PLAIN " + plain(ALICE, "bob@example.test", "bobs password")
    )
    assert reply.startswith("-ERR [AUTH]")
    expect_error(box.stat)
    box.quit()


def test_unsupported_mechanisms_get_err(pop):
    box = client(pop.pop3_port)
    for mechanism in ("LOGIN", "CRAM-MD5", "GSSAPI", "X" * 41):
        expect_error(box._shortcmd, f"AUTH {mechanism}")
    box.user(ALICE)
    assert box.pass_(PASSWORD).startswith(b"+OK")
    box.quit()


def test_bare_auth_lists_the_mechanisms_usable_now(strict):
    sock = raw(strict.pop3_port)
    sock.sendall(b"AUTH\r\n")
    assert read_until(sock, b".\r\n") == b"+OK Mechanisms follow\r\n.\r\n"
    box = client(strict.pop3_port)
    box.stls(context=unverified())
    _, mechanisms, _ = box._longcmd("AUTH")
    assert mechanisms == [b"PLAIN"]
    box.quit()


def test_auth_plain_is_refused_before_tls_and_works_after_stls(strict):
    box = client(strict.pop3_port)
    reply = expect_error(box._shortcmd, "AUTH PLAIN " + plain("", ALICE, PASSWORD))
    assert reply.startswith("-ERR [AUTH] Plaintext authentication disallowed")
    sock = raw(strict.pop3_port)
    sock.sendall(b"AUTH PLAIN\r\n")
    assert sock.recv(1000).startswith(b"-ERR [AUTH]")  # no challenge to answer in the clear
    box.stls(context=unverified())
    assert box._shortcmd("AUTH PLAIN " + plain("", ALICE, PASSWORD)).startswith(b"+OK")
    assert box.stat() == (1, len(ONE))
    box.quit()


def test_auth_in_transaction_state_gets_err(pop):
    box = login(pop.pop3_port)
    expect_error(box._shortcmd, "AUTH PLAIN " + plain("", ALICE, PASSWORD))
    assert box.stat()[0] == 2
    box.quit()


def test_auth_payloads_and_passwords_are_never_logged(pop):
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        box = client(pop.pop3_port)
        wrong = plain("", ALICE, "guess-one")
        expect_error(box._shortcmd, "AUTH PLAIN " + wrong)
        right = plain("", ALICE, PASSWORD)
        box._shortcmd("AUTH PLAIN " + right)
        box.quit()
    finally:
        globalLogPublisher.removeObserver(events.append)
    logged = repr([(formatEvent(event), event) for event in events])
    for secret in ("guess-one", PASSWORD, wrong, right):
        assert secret not in logged


# -- APOP and the guard ---------------------------------------------------------------------------


def test_apop_is_not_offered(pop):
    box = client(pop.pop3_port)
    assert b"<" not in box.getwelcome()  # no APOP timestamp in the greeting
    assert "APOP" not in capabilities(box)
    with pytest.raises(poplib.error_proto, match="APOP not supported"):
        box.apop(ALICE, PASSWORD)
    expect_error(box._shortcmd, "APOP alice@example.test c4c9334bac560ecc979e58001b3e22fb")
    box.quit()


@pytest.fixture
def guarded(tmp_path):
    """A server whose guard blocks an account after 2 failures, for a minute."""
    guard = GuardSettings(delay_start=0.0, delay_max=0.0, max_failures=2, block_seconds=60.0)
    srv = strict_server(tmp_path / "guarded", guard=guard, allow_plaintext=True)
    yield srv
    srv.close()


def test_login_failures_by_pass_and_auth_go_through_the_guard(guarded):
    box = client(guarded.pop3_port)
    box.user(ALICE)
    expect_error(box.pass_, "guess 1")
    expect_error(box._shortcmd, "AUTH PLAIN " + plain("", ALICE, "guess 2"))
    box.user(ALICE)
    assert expect_error(box.pass_, PASSWORD) == "-ERR [AUTH] Authentication failed"
    reply = expect_error(box._shortcmd, "AUTH PLAIN " + plain("", ALICE, PASSWORD))
    assert reply == "-ERR [AUTH] Authentication failed"
    box.quit()
