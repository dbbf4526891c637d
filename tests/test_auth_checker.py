"""Logging in through twisted.cred: the checker behind the guard, the realm, the portal."""

from __future__ import annotations

import time

import pytest
from conftest import FAST_GUARD, in_reactor
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.mail import imap4, pop3, smtp

from mailgw.auth import (
    ClientCredentials,
    LoginGuard,
    MailRealm,
    NoAvatarFactory,
    PasswdFileUserDatabase,
    PasswordChecker,
    build_portal,
)
from mailgw.context import GuardSettings

ALICE = "alice@example.test"
IP = "192.0.2.1"
SETTINGS = GuardSettings(delay_start=2.0, delay_max=15.0, max_failures=3, block_seconds=60.0)


class Checked:
    """A synchronous run_in_thread that remembers which passwords were verified."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, fn, *args):
        self.calls.append(args[0])
        return defer.maybeDeferred(fn, *args)


@pytest.fixture(scope="module")
def users(tmp_path_factory) -> PasswdFileUserDatabase:
    db = PasswdFileUserDatabase(tmp_path_factory.mktemp("auth") / "passwd")
    db.add_user(ALICE, b"right")
    return db


@pytest.fixture
def log_lines():
    """Formatted twisted.logger events emitted during the test."""
    lines: list[str] = []

    def observer(event: dict) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


def _attempt(checker: PasswordChecker, clock: task.Clock, creds) -> tuple[float, object]:
    """Run one login on the fake clock; return (seconds until answered, result or Failure)."""
    results: list = []
    checker.requestAvatarId(creds).addBoth(results.append)
    waited = 0.0
    while not results:
        assert waited < 100, "never answered"
        clock.advance(0.25)
        waited += 0.25
    return waited, results[0]


def _checker(users, settings=SETTINGS):
    clock = task.Clock()
    run = Checked()
    guard = LoginGuard(settings, clock=clock)
    return PasswordChecker(users, guard, clock=clock, run_in_thread=run), clock, run, guard


def test_right_password_gives_the_canonical_address(users, log_lines) -> None:
    checker, clock, _, _ = _checker(users)
    waited, result = _attempt(checker, clock, ClientCredentials("Alice@EXAMPLE.test", b"right", IP))
    assert (waited, result) == (0.0, ALICE)  # answered at once
    assert any("succeeded" in line and ALICE in line and IP in line for line in log_lines)


def test_wrong_password_unknown_user_and_bad_name_look_the_same(users, log_lines) -> None:
    answers = []
    attempts = [(ALICE, b"Gu3ss-1"), ("nobody@example.test", b"right"), (b"\xff", b"Gu3ss-2")]
    for name, password in attempts:
        checker, clock, _, _ = _checker(users)
        waited, failure = _attempt(checker, clock, ClientCredentials(name, password, IP))
        assert failure.check(UnauthorizedLogin)
        answers.append((waited, str(failure.value)))
    assert answers == [(2.0, "Authentication failed")] * 3
    assert not any("Gu3ss" in line or "right" in line for line in log_lines)


def test_delays_grow_then_the_client_is_refused_unchecked(users, log_lines) -> None:
    checker, clock, run, guard = _checker(users)
    waits = []
    for _ in range(3):
        waited, failure = _attempt(checker, clock, ClientCredentials(ALICE, b"wrong", IP))
        waits.append(waited)
    assert waits == [2.0, 4.0, 8.0]
    assert guard.is_blocked(IP, ALICE)

    run.calls.clear()
    waited, failure = _attempt(checker, clock, ClientCredentials(ALICE, b"right", IP))
    assert failure.check(UnauthorizedLogin)
    assert (waited, str(failure.value)) == (8.0, "Authentication failed")
    assert run.calls == [], "a blocked attempt's password is never checked"
    assert any("blocked" in line for line in log_lines)

    clock.advance(60)
    assert _attempt(checker, clock, ClientCredentials(ALICE, b"right", IP))[1] == ALICE


def test_success_after_a_typo_is_delayed_once_then_forgiven(users) -> None:
    checker, clock, _, _ = _checker(users)
    assert _attempt(checker, clock, ClientCredentials(ALICE, b"typo", IP))[0] == 2.0
    assert _attempt(checker, clock, ClientCredentials(ALICE, b"right", IP)) == (2.0, ALICE)
    assert _attempt(checker, clock, ClientCredentials(ALICE, b"right", IP)) == (0.0, ALICE)


def test_plain_twisted_credentials_are_accepted(users) -> None:
    checker, clock, _, _ = _checker(users)
    assert _attempt(checker, clock, UsernamePassword(ALICE.encode(), b"right"))[1] == ALICE


def test_client_credentials_compare_in_constant_time_and_hide_the_password() -> None:
    creds = ClientCredentials("alice@example.test", b"s3cret", IP)
    assert creds.username == b"alice@example.test"
    assert creds.checkPassword(b"s3cret")
    assert not creds.checkPassword(b"s3cre")
    assert "s3cret" not in repr(creds)


def _realm_factories(logged_out: list) -> dict:
    def mailbox(address: str):
        return ("pop3 mailbox", address), lambda: logged_out.append(("pop3", address))

    def account(address: str):
        return ("imap account", address), lambda: logged_out.append(("imap", address))

    return {pop3.IMailbox: mailbox, imap4.IAccount: account}


def test_realm_hands_each_protocol_its_own_avatar() -> None:
    logged_out: list = []
    realm = MailRealm(_realm_factories(logged_out))
    iface, avatar, logout = realm.requestAvatar(ALICE, None, imap4.IAccount)
    assert (iface, avatar) == (imap4.IAccount, ("imap account", ALICE))
    iface, avatar, logout = realm.requestAvatar(
        ALICE.encode(), None, smtp.IMessageDelivery, pop3.IMailbox
    )
    assert (iface, avatar) == (pop3.IMailbox, ("pop3 mailbox", ALICE))
    logout()
    assert logged_out == [("pop3", ALICE)]
    with pytest.raises(NoAvatarFactory, match="IMessageDelivery"):
        realm.requestAvatar(ALICE, None, smtp.IMessageDelivery)


def test_portal_login_end_to_end_in_the_reactor(users) -> None:
    realm = MailRealm(_realm_factories([]))
    portal = build_portal(users, LoginGuard(FAST_GUARD), realm)

    def login(password: bytes, iface):
        d = portal.login(ClientCredentials(ALICE, password, IP), None, iface)
        return d.addErrback(lambda f: f.trap(UnauthorizedLogin) and "refused")

    assert in_reactor(login, b"right", imap4.IAccount)[:2] == (
        imap4.IAccount,
        ("imap account", ALICE),
    )
    assert in_reactor(login, b"wrong", pop3.IMailbox) == "refused"


def test_concurrent_logins_do_not_stall_the_reactor(users) -> None:
    checker = PasswordChecker(users, LoginGuard(FAST_GUARD))

    def burst():
        ticks: list[float] = []
        loop = task.LoopingCall(lambda: ticks.append(time.monotonic()))
        loop.start(0.01)
        attempts = [
            checker.requestAvatarId(
                ClientCredentials(ALICE, b"right" if i % 2 else b"wrong", f"10.0.0.{i}")
            )
            for i in range(20)
        ]

        def finished(results):
            loop.stop()
            ticks.append(time.monotonic())
            return results, ticks

        return defer.DeferredList(attempts, consumeErrors=True).addCallback(finished)

    started = time.monotonic()
    results, ticks = in_reactor(burst)
    elapsed = time.monotonic() - started
    assert [ok for ok, _ in results] == [i % 2 == 1 for i in range(20)]
    assert all(value == ALICE for ok, value in results if ok)
    assert all(value.check(UnauthorizedLogin) for ok, value in results if not ok)
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    # Hashing on the reactor thread would stop the ticks for the whole burst; in threads they
    # keep coming, up to the OS scheduler's hiccups on a busy machine.
    assert max(gaps) < min(0.5, elapsed / 4), f"the reactor stalled {max(gaps):.3f} s of {elapsed}"
