"""What a login costs: a cache of verified credentials, and a bounded pool for hashing.

A password hash such as mailgw's ``{ARGON2ID}`` is slow and memory-hungry on purpose (see
``mailgw.auth.hashing``), so a client that polls, or opens five connections at once, would pay
it at every login.  As Dovecot's ``auth_cache`` does, a successful check is remembered for a
while: ``CredentialsCache`` keeps an HMAC-SHA256, under a key drawn at random when the process
starts, over the canonical address, the password and the user's password field in force.  A
later login with the same password, while that field is unchanged, is then answered without
hashing.  A changed password (a new line in the passwd-file) changes the key, so the old
password stops working at once; failures are never cached and never evict anything.  The
price: whoever can read the server's memory has the key too, and can test guesses against a
cached login at SHA-256 speed instead of Argon2id's, which is why entries expire
(``cache_ttl``) and ``cache_size = 0`` turns the cache off.

Hashing itself runs on ``HashingPool``, a thread pool of its own with ``hash_threads`` threads,
so at most that many hashes are computed at once, and the memory they take stays bounded by
the hash's memory cost times ``hash_threads`` however many clients log in together.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool


@dataclass(frozen=True)
class LoginCostSettings:
    """The [auth] keys bounding what logins cost: the cache, and hashes computed at once."""

    #: Seconds a verified login is remembered, counted from its check.  Dovecot's
    #: ``auth_cache_ttl`` is also one hour; 0 disables the cache.
    cache_ttl: float = 3600.0
    #: Verified logins (address and password pairs) remembered at most, the least recently
    #: used dropped first; about 200 bytes each.  0 disables the cache.
    cache_size: int = 10_000
    #: Password hashes computed at once (threads of the hashing pool).
    hash_threads: int = 2


def _field(value: bytes) -> bytes:
    """``value`` preceded by its length, so that no two field lists give the same message."""
    return struct.pack(">I", len(value)) + value


class CredentialsCache:
    """Logins verified lately, for ``ttl`` seconds each, at most ``size`` of them (LRU).

    Only digests are kept, never a password.  ``ttl`` or ``size`` 0 disables the cache (nothing
    is remembered).  Not thread-safe: use it from the reactor thread, as the checker does.
    """

    def __init__(self, ttl: float, size: int, clock=reactor) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._key = secrets.token_bytes(32)
        #: digest -> when the login was verified, least recently used first.
        self._entries: OrderedDict[bytes, float] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Does this cache remember anything?"""
        return self.ttl > 0 and self.size > 0

    def _digest(self, address: str, password: bytes, entry: str) -> bytes:
        """The keyed digest standing for this address, password and password field."""
        message = b"".join(_field(part) for part in (address.encode(), password, entry.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def verified(self, address: str, password: bytes, entry: str) -> bool:
        """Was this password checked against this very password field less than ``ttl`` ago?"""
        if not self.enabled:
            return False
        digest = self._digest(address, password, entry)
        checked = self._entries.get(digest)
        if checked is None:
            return False
        if self._clock.seconds() - checked >= self.ttl:
            del self._entries[digest]
            return False
        self._entries.move_to_end(digest)
        return True

    def add(self, address: str, password: bytes, entry: str) -> None:
        """Remember that this password matched this password field, now."""
        if not self.enabled:
            return
        now = self._clock.seconds()
        digest = self._digest(address, password, entry)
        self._entries[digest] = now
        self._entries.move_to_end(digest)
        entries = self._entries
        while entries and (
            len(entries) > self.size or now - next(iter(entries.values())) >= self.ttl
        ):
            entries.popitem(last=False)

    def __len__(self) -> int:
        """How many verified logins are remembered (expired ones may still be counted)."""
        return len(self._entries)


class HashingPool:
    """Runs password checks on ``threads`` threads of its own: at most that many at once.

    Calling the pool, ``pool(fn, *args)``, runs ``fn(*args)`` on one of its threads and returns
    a Deferred of the result, as ``deferToThread`` does; calls beyond ``threads`` wait their
    turn.  ``start`` and ``stop`` go with the server's; calls made before ``start`` wait for it.
    """

    def __init__(self, threads: int, reactor=reactor) -> None:
        self.threads = threads
        self._reactor = reactor
        self._pool = self._new_pool()

    def _new_pool(self) -> ThreadPool:
        """A ThreadPool of ``threads`` threads, created only as work arrives."""
        return ThreadPool(minthreads=0, maxthreads=self.threads, name="mailgw-hashing")

    def start(self) -> None:
        """Start the threads (a new pool after a stop)."""
        if self._pool.joined:
            self._pool = self._new_pool()
        self._pool.start()

    def stop(self) -> None:
        """Stop the threads, once the check each one is running has ended."""
        self._pool.stop()

    def __call__(self, fn: Callable, *args: object) -> Deferred:
        """A Deferred of ``fn(*args)``, run on one of the pool's threads."""
        return deferToThreadPool(self._reactor, self._pool, fn, *args)
