"""SIGKILL at every durable step of the outbound queue, of bounces and of passwd-file writes.

Each case starts the real server (``twistd -n mailgw``) with ``MAILGW_CRASH_AT=STEP``
(``mailgw.crashpoint``), or runs the real ``mailgw user add`` with it, drives the path until the
process kills itself at that step, checks that it died by SIGKILL and logged ``mailgw crash
point: STEP``, notes what the crash left on disk, restarts the server without the variable and
checks:

- a message acknowledged (250) for a remote recipient arrives at the next hop exactly once,
  and one not acknowledged at most once (it is either not queued, or queued whole and sent
  once: the client's retry would then be a duplicate, as RFC 5321 6.1 accepts);
- the restarted server removes what the crash left in the queue (an incomplete entry, a
  metadata rewrite's temp file, the killed process's files in ``tmp/``) and ``mailgw queue
  list`` lists the queue cleanly: no half-written entry is ever loaded;
- a refused message bounces to its (local) sender exactly once, and the refusing server is
  never asked again;
- after a crash in ``mailgw user add``, the passwd-file holds the old users or the old users
  and the new one, never a half line; every old user still logs in over POP3 and IMAP; the
  next ``mailgw user add`` works at once and leaves no temp file behind;
- the first SMTP delivery after the restart is answered within 1 s.

The paths and their steps (``mailgw.crashpoint.STEPS`` says what is on disk at each):

``submit``: submission of a message to carol@remote.test, crash at each step of the enqueue
    (``queue.message_written`` .. ``queue.enqueued``) and once the 250 is handed to the
    transport (``delivery.replied``); the next hop accepts everything after the restart.
``attempt``: the next hop answers 451 to RCPT, crash while recording the attempt
    (``queue.attempt_written``, ``attempt_renamed``, ``attempt_recorded``); from then on it
    accepts, and an entry whose attempt was recorded (due in 60 s) is made due by ``mailgw
    queue flush`` before the restart, to see it go once.
``deliver``: the next hop accepts, crash while removing the delivered entry
    (``queue.metadata_unlinked``, ``message_unlinked``, ``removed``).
``bounce``: the next hop answers 550 to RCPT, crash once the bounce is recorded, once it is
    in alice's INBOX, and while removing the entry after it (``queue.metadata_unlinked``).
``passwd``: ``mailgw user add carol`` with the server running, crash at
    ``passwd.temp_written``, ``renamed``, ``dir_synced``.

The table (path, step, acked, what the crash left, outcome after the restart, next delivery)
is printed by the last test: ``pytest tests/test_crash_points_queue.py -s`` (or ``-rA``).
"""

from __future__ import annotations

import collections
import contextlib
import imaplib
import io
import json
import os
import poplib
import signal
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import argon2
import pytest
from mailgw_process import ServerProcess, mailgw, write_config
from test_relay_client import Smarthost

from mailgw import cli
from mailgw.auth.passwd import parse_text
from mailgw.crashpoint import STEPS

ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORD = "pw-for-queue-crash-points"
HOST = "127.0.0.1"
CRASH_ENV = "MAILGW_CRASH_AT"
NEXT_DELIVERY_LIMIT = 1.0
CLIENT_ERRORS = (OSError, EOFError, smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto)

SUBMIT_STEPS = [
    "queue.message_written",
    "queue.metadata_written",
    "queue.message_renamed",
    "queue.metadata_renamed",
    "queue.enqueued",
    "delivery.replied",
]
#: The steps from which an unacknowledged submission is queued (and so sent once).
QUEUED_FROM = SUBMIT_STEPS.index("queue.metadata_renamed")
ATTEMPT_STEPS = ["queue.attempt_written", "queue.attempt_renamed", "queue.attempt_recorded"]
REMOVE_STEPS = ["queue.metadata_unlinked", "queue.message_unlinked", "queue.removed"]
BOUNCE_STEPS = ["bounce.recorded", "bounce.delivered", "queue.metadata_unlinked"]
PASSWD_STEPS = ["passwd.temp_written", "passwd.renamed", "passwd.dir_synced"]

#: Rows of the table, in the order the cases ran.
ROWS: list[tuple[str, ...]] = []


class NextHop(Smarthost):
    """The smarthost, counting the RCPTs it was asked per recipient."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: collections.Counter = collections.Counter()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.asked[address] += 1
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    def arrivals(self, tag: str) -> int:
        """How many messages with ``Subject: tag`` it accepted."""
        return sum(f"Subject: {tag}\r\n".encode() in data for _, _, data in self.messages)


@pytest.fixture(scope="module")
def hop():
    host = NextHop()
    yield host
    host.close()


@pytest.fixture(scope="module")
def passwd_lines() -> str:
    """alice and bob, with Argon2id hashes of the lowest cost (a login takes a millisecond)."""
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    return "".join(f"{user}:{{ARGON2ID}}{hasher.hash(PASSWORD)}\n" for user in (ALICE, BOB))


# -- one case


class Case:
    """One data directory and config, with the server relaying to ``hop``."""

    def __init__(self, tmp_path: Path, hop: NextHop, passwd_lines: str, step: str) -> None:
        assert step in STEPS, step
        self.step = step
        self.hop = hop
        self.data = tmp_path / "data"
        self.data.mkdir()
        fd = os.open(self.data / "passwd", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, passwd_lines.encode())
        os.close(fd)
        relay = f"\n[relay]\nsmarthost = {HOST}:{hop.port}\nsmarthost_tls = none\n"
        services = ("smtp", "submission", "pop3", "imap")
        self.config = write_config(tmp_path, services=services, extra=relay)
        self.server = ServerProcess(self.config)
        self.queue = self.data / "queue"
        self.tag = f"{step} {tmp_path.name}"
        self.rcpt = f"carol.{abs(hash(self.tag)) % 10**8}@remote.test"
        self.acked = False

    def start(self, crash: bool = False) -> None:
        self.server.start(env={CRASH_ENV: self.step if crash else ""})

    def submit(self) -> None:
        """alice submits a message for ``rcpt``; note whether it was acknowledged."""
        message = f"From: {ALICE}\r\nTo: {self.rcpt}\r\nSubject: {self.tag}\r\n\r\nhello\r\n"
        try:
            port = self.server.ports["submission"]
            with smtplib.SMTP(HOST, port, local_hostname="laptop.test", timeout=10) as smtp:
                smtp.login(ALICE, PASSWORD)
                smtp.sendmail(ALICE, [self.rcpt], message)
            self.acked = True
        except CLIENT_ERRORS:
            pass  # the server died under the client: not acknowledged

    def died_at_step(self) -> None:
        """Wait for the SIGKILL at ``step``; fail if it never comes."""
        try:
            status = self.server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.server.kill()
            pytest.fail(f"crash point {self.step} was never reached")
        log = self.server.log.read_text(errors="replace")
        assert status == -signal.SIGKILL, f"server exited {status}, not by SIGKILL:\n{log}"
        assert f"mailgw crash point: {self.step}\n" in log, log

    def leftovers(self) -> str:
        """What in the queue is not a complete entry, in words (for the table)."""
        msg = sorted(os.listdir(self.queue / "msg"))
        tmp = os.listdir(self.queue / "tmp")
        stems = {name[:-5] for name in msg if name.endswith(".json")}
        orphans = [n for n in msg if n.endswith(".eml") and n[:-4] not in stems]
        temps = [n for n in msg if n.endswith(".tmp")]
        found = {"in tmp/": tmp, "orphan .eml": orphans, "rewrite .tmp": temps}
        return ", ".join(f"{len(names)} {what}" for what, names in found.items() if names) or "-"

    def entries(self) -> list[str]:
        """The ids of the complete entries on disk (read without opening the queue)."""
        return [n[:-5] for n in os.listdir(self.queue / "msg") if n.endswith(".json")]

    def assert_queue_clean(self) -> None:
        """Nothing but complete entries is left: the server removed the crash's left-overs."""
        assert self.leftovers() == "-", f"left-overs not removed at start-up: {self.leftovers()}"
        listed = admin(self.config, "queue", "list")
        count = len(self.entries())
        last = "the queue is empty" if not count else f"{count} message"
        assert listed.splitlines()[-1].startswith(last), listed

    @contextlib.contextmanager
    def restarted(self) -> Iterator[float]:
        """Restart without the crash point, let the queue drain, time the next delivery.

        Yield that time with the server running; on leaving, the queue holds nothing but
        complete entries and the restart's log has no error; the server is stopped."""
        offset = len(self.server.log.read_bytes())
        self.start()
        try:
            wait_for(lambda: not self.entries())
            settle()
            took = self.next_delivery()
            self.assert_queue_clean()
            yield took
            text = self.server.log.read_bytes()[offset:].decode(errors="replace")
            for bad in ("Traceback", "Unhandled", "unreadable metadata", "cannot read the queue"):
                assert bad not in text, text
        finally:
            assert self.server.stop() == 0

    def next_delivery(self) -> float:
        """Seconds until the 250 of a local delivery over SMTP."""
        started = time.monotonic()
        with smtplib.SMTP(HOST, self.server.ports["smtp"], timeout=10) as smtp:
            smtp.sendmail("someone@elsewhere.test", [BOB], b"Subject: next\r\n\r\nnext\r\n")
        took = time.monotonic() - started
        assert took < NEXT_DELIVERY_LIMIT, f"the next delivery took {took:.2f}s"
        return took

    def record(self, path: str, left: str, outcome: str, took: float) -> None:
        acked = "250" if self.acked else "no"
        ROWS.append((path, self.step, acked, left, outcome, f"{took * 1000:.0f} ms"))
        print(f"{path} {self.step}: acked {acked}; left {left}; {outcome}")


def admin(config: Path, *args: str) -> str:
    """Run ``mailgw --config CONFIG ARGS`` (the admin command's code, in this process: it
    costs no interpreter start); return its output, failing unless it succeeds."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert cli.run(["--config", str(config), *args]) == 0
    return output.getvalue()


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def settle() -> None:
    """Give a second delivery, if the restarted server wrongly made one, time to arrive."""
    time.sleep(0.2)


def inbox_bounces(port: int, user: str = ALICE) -> int:
    """The bounces in ``user``'s INBOX, read over POP3 (which also proves the login)."""
    pop = poplib.POP3(HOST, port, timeout=10)
    try:
        pop.user(user)
        pop.pass_(PASSWORD)
        count, _ = pop.stat()
        tops = [b"\r\n".join(pop.top(i, 0)[1]) for i in range(1, count + 1)]
    finally:
        pop.quit()
    return sum(b"Subject: Undelivered Mail Returned to Sender" in top for top in tops)


# -- the paths


@pytest.mark.parametrize("step", SUBMIT_STEPS)
def test_submission(step, tmp_path, hop, passwd_lines):
    case = Case(tmp_path, hop, passwd_lines, step)
    case.start(crash=True)
    case.submit()
    case.died_at_step()
    left = case.leftovers()
    with case.restarted() as took:
        arrived = hop.arrivals(case.tag)
    expected = 1 if case.acked or SUBMIT_STEPS.index(step) >= QUEUED_FROM else 0
    assert arrived == expected, f"arrived {arrived} times"
    assert not case.entries()
    outcome = "sent once" if arrived else "not queued, nothing sent (client retries)"
    case.record("submit", left, outcome, took)


@pytest.mark.parametrize("step", ATTEMPT_STEPS)
def test_attempt_record(step, tmp_path, hop, passwd_lines):
    case = Case(tmp_path, hop, passwd_lines, step)
    hop.rcpt_replies[case.rcpt] = "451 4.7.1 greylisted, try again"
    case.start(crash=True)
    case.submit()
    assert case.acked
    case.died_at_step()
    left = case.leftovers()
    [entry_id] = case.entries()
    entry = json.loads((case.queue / "msg" / f"{entry_id}.json").read_text())
    assert entry["attempts"] in (0, 1), entry
    recorded = entry["attempts"] == 1
    if recorded:  # due in 60 s: make it due now (nothing else is left to recover here)
        assert "greylisted" in entry["last_error"] and left == "-", (entry, left)
        assert admin(case.config, "queue", "flush").startswith("1 message due now")
    assert hop.arrivals(case.tag) == 0
    del hop.rcpt_replies[case.rcpt]  # the next hop accepts from now on
    with case.restarted() as took:
        arrived = hop.arrivals(case.tag)
    assert arrived == 1, f"arrived {arrived} times"
    outcome = (
        "queued once with attempt 1 (due in 60 s); after flush sent once"
        if recorded
        else "old record in force, retried at start-up: sent once"
    )
    case.record("attempt", left, outcome, took)


@pytest.mark.parametrize("step", REMOVE_STEPS)
def test_removal_after_delivery(step, tmp_path, hop, passwd_lines):
    case = Case(tmp_path, hop, passwd_lines, step)
    case.start(crash=True)
    case.submit()
    assert case.acked
    case.died_at_step()
    left = case.leftovers()
    assert hop.arrivals(case.tag) == 1
    with case.restarted() as took:
        arrived = hop.arrivals(case.tag)
    assert arrived == 1 and not case.entries(), f"arrived {arrived} times"
    case.record("deliver", left, "gone from the queue, sent once (not again)", took)


@pytest.mark.parametrize("step", BOUNCE_STEPS)
def test_bounce(step, tmp_path, hop, passwd_lines):
    case = Case(tmp_path, hop, passwd_lines, step)
    hop.rcpt_replies[case.rcpt] = "550 5.1.1 no such user"
    case.start(crash=True)
    case.submit()
    assert case.acked
    case.died_at_step()
    left = case.leftovers()
    with case.restarted() as took:
        bounces = inbox_bounces(case.server.ports["pop3"])
    asked = hop.asked[case.rcpt]
    assert bounces == 1, f"{bounces} bounces"
    assert asked == 1, f"the refusing server was asked {asked} times"
    assert hop.arrivals(case.tag) == 0 and not case.entries()
    case.record("bounce", left, "one bounce in alice's INBOX, entry gone, 550 not re-asked", took)


def _users(passwd: Path) -> list[str]:
    """The users of the passwd-file; fail on any line that is not a whole user line."""
    lines = parse_text(passwd.read_text())
    assert all(line.entry is not None and line.error is None for line in lines), lines
    return [line.entry.user for line in lines]


def _logs_in(ports: dict, user: str, password: str) -> bool:
    pop = poplib.POP3(HOST, ports["pop3"], timeout=10)
    try:
        pop.user(user)
        pop.pass_(password)
    except poplib.error_proto:
        return False
    finally:
        pop.quit()
    imap = imaplib.IMAP4(HOST, ports["imap"], timeout=10)
    try:
        imap.login(user, password)
    except imaplib.IMAP4.error:
        return False
    imap.logout()
    return True


@pytest.mark.parametrize("step", PASSWD_STEPS)
def test_passwd_write(step, tmp_path, hop, passwd_lines):
    case = Case(tmp_path, hop, passwd_lines, step)
    carol, dave = "carol@example.test", "dave@example.test"
    passwd = case.data / "passwd"
    case.start()
    try:
        add = ("user", "add", carol, "--password-stdin")
        crashed = mailgw(case.config, *add, stdin="carol-pw\n", env={CRASH_ENV: step})
        assert crashed.returncode == -signal.SIGKILL, crashed
        assert f"mailgw crash point: {step}\n" in crashed.stderr, crashed.stderr
        temps = [n for n in os.listdir(case.data) if n.startswith(".passwd.")]
        left = f"{len(temps)} .passwd.*.tmp" if temps else "-"
        users = _users(passwd)
        assert users in ([ALICE, BOB], [ALICE, BOB, carol]), users
        assert _logs_in(case.server.ports, ALICE, PASSWORD)
        assert _logs_in(case.server.ports, BOB, PASSWORD)
        started = time.monotonic()
        added = mailgw(case.config, "user", "add", dave, "--password-stdin", stdin="dave-pw\n")
        assert added.returncode == 0, added.stderr
        assert time.monotonic() - started < 5, "the next write waited (a stale lock?)"
        assert _users(passwd) == [*users, dave]
        assert [n for n in os.listdir(case.data) if n.startswith(".passwd.")] == []
        assert _logs_in(case.server.ports, dave, "dave-pw")
        assert _logs_in(case.server.ports, carol, "carol-pw") == (carol in users)
        took = case.next_delivery()
    finally:
        assert case.server.stop() == 0
    has_carol = "old users + carol" if carol in users else "old users only"
    outcome = f"{has_carol}, all log in; next user add at once, temp removed"
    case.record("passwd", left, outcome, took)


def test_every_queue_bounce_and_passwd_step_has_a_case():
    """Each queue.*, bounce.* and passwd.* step of mailgw.crashpoint.STEPS is crashed at."""
    armed = {*SUBMIT_STEPS, *ATTEMPT_STEPS, *REMOVE_STEPS, *BOUNCE_STEPS, *PASSWD_STEPS}
    mine = {step for step in STEPS if step.startswith(("queue.", "bounce.", "passwd."))}
    assert mine <= armed, f"no case for {sorted(mine - armed)}"


def test_table_of_steps_and_outcomes():
    """Print the table of every case run in this session (``-s`` or ``-rA`` shows it)."""
    if not ROWS:
        pytest.skip("no crash case ran")
    header = ("path", "step", "acked", "left by the crash", "outcome after restart", "next")
    rows = [header, *ROWS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    print()
    print("\n".join(line.rstrip() for line in lines))
