"""The login guard: delays that grow with failures, refusal for a while, bounded memory."""

from __future__ import annotations

from twisted.internet.task import Clock

from mailgw.auth import LoginGuard
from mailgw.context import GuardSettings

SETTINGS = GuardSettings(delay_start=2.0, delay_max=15.0, max_failures=10, block_seconds=300.0)
IP, OTHER_IP = "192.0.2.1", "198.51.100.7"
ALICE, BOB = "alice@example.test", "bob@example.test"


def test_delay_doubles_from_2_to_the_15_second_cap() -> None:
    guard = LoginGuard(SETTINGS, clock=Clock())
    assert guard.delay_for(IP, ALICE) == 0
    delays = []
    for _ in range(6):
        guard.record_failure(IP, ALICE)
        delays.append(guard.delay_for(IP, ALICE))
    assert delays == [2, 4, 8, 15, 15, 15]


def test_blocked_after_max_failures_then_released() -> None:
    clock = Clock()
    guard = LoginGuard(SETTINGS, clock=clock)
    for _ in range(9):
        guard.record_failure(IP, ALICE)
        clock.advance(1)
    assert not guard.is_blocked(IP, ALICE)
    guard.record_failure(IP, ALICE)
    assert guard.is_blocked(IP, ALICE)
    assert guard.is_blocked(IP, BOB), "the IP is refused for every account"
    assert guard.is_blocked(OTHER_IP, ALICE), "the account is refused from every IP"
    clock.advance(299)
    assert guard.is_blocked(IP, ALICE)
    clock.advance(1)
    assert not guard.is_blocked(IP, ALICE)
    assert guard.delay_for(IP, ALICE) == 0, "failures are forgotten with the block"


def test_failures_are_forgotten_after_a_quiet_period() -> None:
    clock = Clock()
    guard = LoginGuard(SETTINGS, clock=clock)
    guard.record_failure(IP, ALICE)
    guard.record_failure(IP, ALICE)
    clock.advance(299.0)
    assert guard.delay_for(IP, ALICE) == 4
    clock.advance(1.0)
    assert guard.delay_for(IP, ALICE) == 0


def test_one_ip_guessing_does_not_slow_other_ips_on_other_accounts() -> None:
    guard = LoginGuard(SETTINGS, clock=Clock())
    for _ in range(10):
        guard.record_failure(IP, ALICE)
    assert guard.delay_for(OTHER_IP, BOB) == 0
    assert not guard.is_blocked(OTHER_IP, BOB)
    # The delay is the larger of the IP's and the account's.
    guard.record_failure(OTHER_IP, BOB)
    assert guard.delay_for(OTHER_IP, BOB) == 2
    assert guard.delay_for(OTHER_IP, ALICE) == 15
    assert guard.delay_for(IP, BOB) == 15


def test_success_forgets_only_that_ips_failures_for_that_account() -> None:
    guard = LoginGuard(SETTINGS, clock=Clock())
    guard.record_failure(IP, ALICE)  # the user mistyped once
    guard.record_failure(IP, BOB)
    guard.record_failure(IP, BOB)
    guard.record_success(IP, ALICE)
    assert guard.delay_for(OTHER_IP, ALICE) == 0
    assert guard.delay_for(IP, ALICE) == 4, "the IP's failures for bob still count"

    guard.record_failure(OTHER_IP, ALICE)  # someone else guesses alice
    guard.record_success(IP, ALICE)
    assert guard.delay_for("203.0.113.9", ALICE) == 2, "a good login elsewhere does not reset it"


def test_unknown_ip_counts_for_the_account_only() -> None:
    guard = LoginGuard(SETTINGS, clock=Clock())
    guard.record_failure("", ALICE)
    assert guard.delay_for("", ALICE) == 2
    assert guard.delay_for("", BOB) == 0
    guard.record_success("", ALICE)
    assert guard.delay_for("", ALICE) == 0


def test_tables_are_bounded() -> None:
    clock = Clock()
    guard = LoginGuard(SETTINGS, clock=clock, max_entries=50)
    for i in range(1000):
        guard.record_failure(f"10.0.{i // 256}.{i % 256}", f"user{i}@example.test")
        clock.advance(0.01)
    assert all(size <= 50 for size in guard.table_sizes())
    assert guard.delay_for("10.0.3.231", "user999@example.test") == 2, "the newest are kept"
    assert guard.delay_for("10.0.0.0", "user0@example.test") == 0, "the oldest are evicted"
