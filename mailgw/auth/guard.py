"""The login guard: answers password guessing ever slower, then refuses it for a while.

Failures are counted per client IP and per account.  Once either has failed ``n`` times, every
answer to an attempt from that IP or for that account waits ``delay_start * 2**(n-1)`` seconds,
at most ``delay_max`` (2, 4, 8, 15 s with the defaults): the delay is the larger of the IP's and
the account's.  So failures from one IP never slow other IPs trying other accounts, but
guessing one account slows every IP trying that account.  After ``max_failures`` failures the IP
(or the account) is refused for ``block_seconds``.

Failures are forgotten ``block_seconds`` after the last one, which is also when a refusal ends.
A good login forgets the failures that IP made for that account (and only those), so a user who
mistyped is not slowed down later, while an attacker cannot reset its count for other accounts
by logging into its own.  Attempts from an unknown IP (``''``) count for the account only.

The tables are bounded: each keeps at most ``max_entries`` entries, evicting the oldest.  The
guard is not thread-safe: use it from the reactor thread (as the checker does).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from twisted.internet import reactor
from zope.interface import implementer

from mailgw.auth.interfaces import ILoginGuard
from mailgw.context import GuardSettings

#: Default bound on each table (IPs, accounts, IP-account pairs).
MAX_ENTRIES = 100_000


@dataclass
class _Failures:
    """Failures of one IP, account or pair, and when the last one happened."""

    count: int
    last: float


class _Table:
    """Failure counts by key, oldest update first, expiring and bounded."""

    def __init__(self, lifetime: float, max_entries: int) -> None:
        self._entries: OrderedDict = OrderedDict()
        self._lifetime = lifetime
        self._max_entries = max_entries

    def expire(self, now: float) -> None:
        """Drop entries whose last failure is ``lifetime`` old, and the oldest beyond the bound."""
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if now - oldest.last < self._lifetime and len(entries) <= self._max_entries:
                break
            entries.popitem(last=False)

    def count(self, key) -> int:
        """Failures counted for ``key`` (0 if none or forgotten)."""
        entry = self._entries.get(key)
        return entry.count if entry is not None else 0

    def add(self, key, now: float, count: int = 1) -> None:
        """Count ``count`` more failures for ``key``, now."""
        entry = self._entries.pop(key, None)
        total = (entry.count if entry is not None else 0) + count
        self._entries[key] = _Failures(total, now)
        self.expire(now)

    def forget(self, key, count: int | None = None) -> int:
        """Forget ``count`` failures of ``key`` (all if None); return how many were forgotten."""
        entry = self._entries.get(key)
        if entry is None:
            return 0
        if count is None or count >= entry.count:
            del self._entries[key]
            return entry.count
        entry.count -= count
        return count

    def __len__(self) -> int:
        """How many entries are kept."""
        return len(self._entries)


@implementer(ILoginGuard)
class LoginGuard:
    """ILoginGuard over in-memory tables; see the module docstring for the policy."""

    def __init__(self, settings: GuardSettings, clock=reactor, max_entries: int = MAX_ENTRIES):
        self.settings = settings
        self._clock = clock
        lifetime = settings.block_seconds
        self._by_ip = _Table(lifetime, max_entries)
        self._by_account = _Table(lifetime, max_entries)
        self._by_pair = _Table(lifetime, max_entries)

    def _counts(self, client_ip: str, account: str) -> tuple[int, int]:
        """Current failure counts of the IP and of the account."""
        now = self._clock.seconds()
        for table in (self._by_ip, self._by_account, self._by_pair):
            table.expire(now)
        ip_count = self._by_ip.count(client_ip) if client_ip else 0
        return ip_count, self._by_account.count(account)

    def delay_for(self, client_ip: str, account: str) -> float:
        """Seconds to wait before answering: 0 without failures, else doubling up to the cap."""
        failures = max(self._counts(client_ip, account))
        if failures == 0:
            return 0.0
        delay = self.settings.delay_start * 2.0 ** min(failures - 1, 64)
        return min(delay, self.settings.delay_max)

    def is_blocked(self, client_ip: str, account: str) -> bool:
        """Has this IP or this account failed ``max_failures`` times lately?"""
        return max(self._counts(client_ip, account)) >= self.settings.max_failures

    def record_failure(self, client_ip: str, account: str) -> None:
        """Count a failed attempt against the IP, the account and the pair."""
        now = self._clock.seconds()
        if client_ip:
            self._by_ip.add(client_ip, now)
            self._by_pair.add((client_ip, account), now)
        self._by_account.add(account, now)

    def record_success(self, client_ip: str, account: str) -> None:
        """Forget the failures this IP made for this account (all the account's if IP unknown)."""
        if not client_ip:
            self._by_account.forget(account)
            return
        forgotten = self._by_pair.forget((client_ip, account))
        if forgotten:
            self._by_ip.forget(client_ip, forgotten)
            self._by_account.forget(account, forgotten)

    def table_sizes(self) -> tuple[int, int, int]:
        """How many IPs, accounts and IP-account pairs have failures on record."""
        return len(self._by_ip), len(self._by_account), len(self._by_pair)
