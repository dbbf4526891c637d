"""The cost of logging in: verified credentials remembered, hashing on a bounded pool.

Through real servers (``MailServer`` in this process, ``twistd -n mailgw`` in another) and real
clients (poplib, imaplib), counting the calls of the real hashing function: a second login with
the same password does not hash again, a wrong or changed password is checked (and refused) at
once, and no more than ``hash_threads`` hashes ever run together.  The TTL, the LRU bound and
the guard's hold over cached logins are shown on the checker with a fake clock.
"""

from __future__ import annotations

import imaplib
import poplib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from mailgw_process import ServerProcess, mailgw, write_config
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, task

from mailgw.auth import (
    ClientCredentials,
    CredentialsCache,
    LoginGuard,
    PasswdFileUserDatabase,
    PasswordChecker,
    hashing,
)
from mailgw.config import ConfigError, load_config
from mailgw.context import GuardSettings
from mailgw.testing import MailServer

ALICE = "alice@example.test"
IP = "192.0.2.7"


class Hashes:
    """Wraps the real ``hashing.verify``: counts its calls and how many ran at once."""

    def __init__(self, real, pause: float = 0.0) -> None:
        self.real = real
        self.pause = pause
        self.calls = 0
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, *args):
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.pause)
            return self.real(*args)
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def hashes(monkeypatch) -> Hashes:
    """Every password check of the server counted (the dummy check for unknown users too)."""
    counter = Hashes(hashing.verify)
    monkeypatch.setattr(hashing, "verify", counter)
    return counter


@pytest.fixture
def pop_server():
    """A real in-process server with a POP3 listener and the default [auth] settings."""
    server = MailServer(services=("pop3",)).start()
    server.add_user(ALICE, "secret")
    yield server
    server.stop()


def pop_login(port: int, user: str, password: str) -> bool:
    """Log in over POP3 with poplib; True if accepted, False if refused."""
    box = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        box.user(user)
        try:
            box.pass_(password)
        except poplib.error_proto:
            return False
        return True
    finally:
        box.quit()


# -- through a real server ---------------------------------------------------------------------


def test_second_login_with_the_same_password_does_not_hash(pop_server, hashes):
    assert pop_login(pop_server.pop3_port, ALICE, "secret")
    assert hashes.calls == 1
    assert pop_login(pop_server.pop3_port, ALICE, "secret")
    assert pop_login(pop_server.pop3_port, ALICE.upper(), "secret")  # same canonical user
    assert hashes.calls == 1


def test_wrong_password_after_a_cached_success_is_refused_and_hashed(pop_server, hashes):
    assert pop_login(pop_server.pop3_port, ALICE, "secret")
    assert not pop_login(pop_server.pop3_port, ALICE, "secreT")
    assert not pop_login(pop_server.pop3_port, ALICE, "secret2")
    assert hashes.calls == 3
    # The failures evicted nothing: the right password is still answered from the cache.
    assert pop_login(pop_server.pop3_port, ALICE, "secret")
    assert hashes.calls == 3


def test_new_password_ends_the_cached_one_at_once(pop_server, hashes):
    assert pop_login(pop_server.pop3_port, ALICE, "secret")
    users = pop_server._context().users
    users.set_password(ALICE, b"brand new")
    assert not pop_login(pop_server.pop3_port, ALICE, "secret")
    assert pop_login(pop_server.pop3_port, ALICE, "brand new")
    assert hashes.calls == 3
    assert pop_login(pop_server.pop3_port, ALICE, "brand new")
    assert hashes.calls == 3


def test_removed_user_is_refused_at_once(pop_server, hashes):
    assert pop_login(pop_server.pop3_port, ALICE, "secret")
    pop_server._context().users.remove_user(ALICE)
    assert not pop_login(pop_server.pop3_port, ALICE, "secret")
    assert hashes.calls == 2  # the unknown user's dummy check


def test_concurrent_logins_never_hash_more_than_hash_threads_at_once(monkeypatch):
    counter = Hashes(hashing.verify, pause=0.2)
    monkeypatch.setattr(hashing, "verify", counter)
    users = [f"user{n}@example.test" for n in range(6)]
    with MailServer(services=("pop3",)) as server:
        for user in users:
            server.add_user(user, "pw")
        assert server._service.hashing.threads == 2
        with ThreadPoolExecutor(len(users)) as pool:
            results = list(pool.map(lambda u: pop_login(server.pop3_port, u, "pw"), users))
        assert len(_hashing_threads()) == 2
    assert _hashing_threads() == []  # stopped with the server
    assert results == [True] * len(users)
    assert counter.calls == len(users)
    assert counter.most <= 2


def _hashing_threads() -> list[str]:
    """The names of the hashing pool's live threads."""
    return [t.name for t in threading.enumerate() if "mailgw-hashing" in t.name]


# -- on the checker, with a fake clock ---------------------------------------------------------


class Synchronous:
    """A run_in_thread that runs the check at once and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fn, *args):
        self.calls += 1
        return defer.maybeDeferred(fn, *args)


@pytest.fixture(scope="module")
def users(tmp_path_factory) -> PasswdFileUserDatabase:
    """A passwd-file with Alice, her password hashed with mailgw's real {ARGON2ID}."""
    db = PasswdFileUserDatabase(tmp_path_factory.mktemp("cache") / "passwd")
    db.add_user(ALICE, b"secret")
    return db


def _checker(users, cache_ttl=60.0, cache_size=10, guard=None):
    clock = task.Clock()
    run = Synchronous()
    settings = GuardSettings(delay_start=2.0, delay_max=15.0, max_failures=3, block_seconds=60.0)
    guard = guard or LoginGuard(settings, clock=clock)
    cache = CredentialsCache(cache_ttl, cache_size, clock=clock)
    checker = PasswordChecker(users, guard, clock=clock, run_in_thread=run, cache=cache)
    return checker, clock, run, cache


def _attempt(checker, clock, password: bytes, ip: str = IP) -> tuple[float, object]:
    """One login on the fake clock: (seconds until answered, avatar id or Failure)."""
    results: list = []
    checker.requestAvatarId(ClientCredentials(ALICE, password, ip)).addBoth(results.append)
    waited = 0.0
    while not results:
        assert waited < 100, "never answered"
        clock.advance(0.25)
        waited += 0.25
    return waited, results[0]


def test_cached_login_expires_after_the_ttl(users):
    checker, clock, run, _ = _checker(users, cache_ttl=60.0)
    assert _attempt(checker, clock, b"secret")[1] == ALICE
    clock.advance(59)
    assert _attempt(checker, clock, b"secret")[1] == ALICE
    assert run.calls == 1
    clock.advance(1)
    assert _attempt(checker, clock, b"secret")[1] == ALICE
    assert run.calls == 2


@pytest.mark.parametrize("ttl, size", [(0.0, 10), (60.0, 0)])
def test_cache_disabled_by_zero_hashes_every_login(users, ttl, size):
    checker, clock, run, cache = _checker(users, cache_ttl=ttl, cache_size=size)
    for _ in range(3):
        assert _attempt(checker, clock, b"secret")[1] == ALICE
    assert run.calls == 3
    assert len(cache) == 0


def test_blocked_client_is_refused_even_with_a_cached_password(users):
    checker, clock, run, _ = _checker(users)
    assert _attempt(checker, clock, b"secret")[1] == ALICE
    for _ in range(3):
        assert _attempt(checker, clock, b"guess", ip="198.51.100.1")[1].check(UnauthorizedLogin)
    calls = run.calls
    result = _attempt(checker, clock, b"secret", ip="198.51.100.1")[1]
    assert result.check(UnauthorizedLogin)
    assert run.calls == calls


def test_cached_success_waits_for_the_guard_delay_as_any_success(users):
    checker, clock, run, _ = _checker(users)
    assert _attempt(checker, clock, b"secret")[1] == ALICE
    assert _attempt(checker, clock, b"wrong")[1].check(UnauthorizedLogin)
    waited, result = _attempt(checker, clock, b"secret")
    assert result == ALICE
    assert run.calls == 2  # answered from the cache...
    assert waited >= 2.0  # ...after the delay the failure earned


def test_lru_bound_drops_the_least_recently_used():
    clock = task.Clock()
    cache = CredentialsCache(60.0, 2, clock=clock)
    cache.add("a@example.test", b"pa", "{ARGON2ID}x")
    cache.add("b@example.test", b"pb", "{ARGON2ID}y")
    assert cache.verified("a@example.test", b"pa", "{ARGON2ID}x")  # a is now the most recent
    cache.add("c@example.test", b"pc", "{ARGON2ID}z")
    assert len(cache) == 2
    assert not cache.verified("b@example.test", b"pb", "{ARGON2ID}y")
    assert cache.verified("a@example.test", b"pa", "{ARGON2ID}x")
    assert cache.verified("c@example.test", b"pc", "{ARGON2ID}z")


def test_cache_matches_only_the_same_address_password_and_entry():
    cache = CredentialsCache(60.0, 10, clock=task.Clock())
    cache.add(ALICE, b"secret", "{ARGON2ID}one")
    assert cache.verified(ALICE, b"secret", "{ARGON2ID}one")
    assert not cache.verified(ALICE, b"secret", "{ARGON2ID}two")
    assert not cache.verified(ALICE, b"secre", "{ARGON2ID}one")
    assert not cache.verified("bob@example.test", b"secret", "{ARGON2ID}one")
    # Field boundaries count: moving a byte from the password to the entry is another key.
    cache.add(ALICE, b"ab", "c")
    assert not cache.verified(ALICE, b"a", "bc")


# -- configuration -----------------------------------------------------------------------------


def _config(tmp_path, auth: str):
    path = tmp_path / "mailgw.ini"
    path.write_text(f"[mailgw]\ndata_dir = data\ndomains = example.test\n\n[auth]\n{auth}\n")
    return load_config(path)


def test_auth_keys_are_read_and_zero_disables_the_cache(tmp_path):
    costs = _config(tmp_path, "cache_ttl = 600\ncache_size = 0\nhash_threads = 1").login_cost
    assert (costs.cache_ttl, costs.cache_size, costs.hash_threads) == (600.0, 0, 1)
    defaults = _config(tmp_path, "").login_cost
    assert (defaults.cache_ttl, defaults.cache_size, defaults.hash_threads) == (3600.0, 10_000, 2)


@pytest.mark.parametrize(
    "line, problem",
    [
        ("hash_threads = 0", "must be positive"),
        ("hash_threads = 1.5", "expected a whole number"),
        ("cache_size = -1", "must not be negative"),
        ("cache_ttl = forever", "expected a number"),
    ],
)
def test_bad_auth_values_are_refused(tmp_path, line, problem):
    with pytest.raises(ConfigError, match=problem):
        _config(tmp_path, line)


# -- end to end, the real twistd process -------------------------------------------------------


def test_twistd_second_login_is_fast_and_a_new_password_applies_at_once(tmp_path):
    config = write_config(tmp_path, services=("pop3", "imap"))
    added = mailgw(config, "user", "add", ALICE, "--password-stdin", stdin="first pw\n")
    assert added.returncode == 0, added.stderr
    server = ServerProcess(config).start()
    try:
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            assert pop_login(server.ports["pop3"], ALICE, "first pw")
            timings.append(time.perf_counter() - started)
        # The first login paid for Argon2id (about 165 ms here), the second did not.
        assert timings[1] < timings[0] / 2, timings
        with imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30) as imap:
            assert imap.login(ALICE, "first pw")[0] == "OK"
        changed = mailgw(config, "user", "passwd", ALICE, "--password-stdin", stdin="second\n")
        assert changed.returncode == 0, changed.stderr
        with imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30) as imap:
            with pytest.raises(imaplib.IMAP4.error):
                imap.login(ALICE, "first pw")
        assert not pop_login(server.ports["pop3"], ALICE, "first pw")
        assert pop_login(server.ports["pop3"], ALICE, "second")
    finally:
        server.stop()
