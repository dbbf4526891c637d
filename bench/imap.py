"""Benchmark: mailgw's IMAP against Dovecot's, on the same Maildirs, side by side.

Every figure issue 11 asks for, each as mailgw / Dovecot / ratio with the issue's target:

- client-like, on four users' INBOXes of 1,000 messages of 10 KB: bodies fetched as a client
  does (``FETCH i:j (BODY.PEEK[])`` in batches of 500) in MB/s with one client and with four at
  once (one process per user, started together); ``UID STORE 1:* +FLAGS.SILENT (\\Flagged)``
  (undone untimed); ``UID SEARCH UNSEEN``; the same bodies over ``COMPRESS DEFLATE`` (when
  announced); the servers' peak memory over this part;
- on 10,000- and 100,000-message INBOXes: ``SELECT INBOX`` on a fresh server process (*first*;
  each user has logged in once before, in a throwaway mailgw process, so that the creation of
  the SPECIAL-USE folders is not counted), ``UID FETCH 1:* (FLAGS)``, SELECT again (*second*,
  a new session each run), a NOOP after it; on the largest: ``UID FETCH 1:* (FLAGS)
  (CHANGEDSINCE m)`` after 10 changes made by another session (when CONDSTORE is announced),
  ``FETCH 1:1000 (ENVELOPE BODYSTRUCTURE)``, its last 1,000 bodies in batches of 500 in MB/s;
  ``SEARCH TEXT <word>`` on the 10,000 (the word is in 1 message of 100); peak memory again;
- memory per idle session: 500 sessions logged in with INBOX selected (the 1,000-message users),
  the server's memory growth / 500, on a fresh mailgw process.

The servers: mailgw as a real ``twistd -n mailgw`` process, and Debian's Dovecot
(``dovecot-imapd``) with its own minimal configuration on a free loopback port, serving a copy
of the same Maildirs (message files hard-linked, mailgw's index left out so that Dovecot builds
its own); both with their session limits raised for the idle sessions.  The client is the same
for both (``imap_client.py``): a raw socket, one command at a time.  Repeated figures are
medians over runs, the servers alternating; first SELECT and memory are measured once.

    .venv/bin/python bench/imap.py [--quick] [--runs R] [--dir DIR] [--json FILE]

Run as root, Dovecot's mail processes run as its ``dovecot`` user (it refuses root), so the
copies are given to that user.  ``--quick`` builds 10,000 messages at most and runs once; the
100,000-message figures are then measured on 10,000 (the targets are for 100,000).
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from imap_client import Client, IMAPError, session
from imap_report import Row, below, print_table, ratio_at_least, ratio_at_most, write_json
from imap_servers import (
    LIMITS_NOTE,
    DovecotIMAP,
    TreeSampler,
    pss_kb,
    start_mailgw,
    status_kb,
    tree,
)
from pop3 import (
    DOMAIN,
    DOVECOT,
    HOSTNAME,
    PASSWORD,
    MaildirStore,
    ServerProcess,
    argon2,
    build,
    copy_for_dovecot,
    in_processes,
    machine,
    retr_message,
    write_passwd,
)

BODY_USERS = [f"body{n}@{DOMAIN}" for n in range(4)]
BODY_MESSAGES = 1000
BATCH = 500
SEARCH_MESSAGES = 10_000
WORD = b"zanzibar"
CHANGES = 10
IDLE_SESSIONS = 500
_HIGHESTMODSEQ = re.compile(rb"\[HIGHESTMODSEQ (\d+)\]", re.IGNORECASE)


def folder_message(i: int) -> bytes:
    """Message ``i`` of a large folder: the headers ENVELOPE reads, every 10th multipart, and
    ``WORD`` in the body of every 100th."""
    head = (
        b"From: Sender %d <sender%d@remote.test>\r\nTo: User <user@bench.test>\r\n"
        b"Subject: message %d\r\nDate: Thu, 03 Dec 2026 12:00:00 +0000\r\n"
        b"Message-ID: <%d.big@remote.test>\r\nMIME-Version: 1.0\r\n" % (i, i, i, i)
    )
    text = b"body of message %d%s\r\n" % (i, b" " + WORD if i % 100 == 7 else b"")
    if i % 10 != 3:
        return head + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text
    return (
        head + b'Content-Type: multipart/alternative; boundary="b%d"\r\n\r\n--b%d\r\n'
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n%s--b%d\r\n"
        b"Content-Type: text/html; charset=us-ascii\r\n\r\n<p>%s</p>\r\n--b%d--\r\n"
        % (i, i, text, i, text.strip(), i)
    )


def fetch_bodies(client: Client, first: int, last: int) -> tuple[int, int]:
    """``FETCH i:j (BODY.PEEK[])`` of ``first``..``last`` in batches; (responses, octets)."""
    lines = octets = 0
    for start in range(first, last + 1, BATCH):
        got, size = client.command(f"FETCH {start}:{min(start + BATCH - 1, last)} (BODY.PEEK[])")
        lines, octets = lines + got, octets + size
    return lines, octets


def _fetch_worker(port: int, user: str, barrier, out) -> None:
    """Worker process: log in, wait for the others, fetch every body; report the times."""
    client = session(port, user)
    client.command("EXAMINE INBOX")
    barrier.wait()
    began = time.monotonic()
    lines, octets = fetch_bodies(client, 1, BODY_MESSAGES)
    ended = time.monotonic()
    client.close()
    out.put((began, ended, lines, octets))


def concurrent_bodies(port: int, users: list[str]) -> tuple[float, int, int]:
    """Every body of each user, one process per user at once: (MB/s overall, responses,
    octets)."""
    seconds, results = in_processes(_fetch_worker, port, users)
    octets = sum(r[3] for r in results)
    return octets / seconds / 1e6, sum(r[2] for r in results), octets


def mb_per_s(octets: int, seconds: float) -> float:
    """Message data rate."""
    return octets / seconds / 1e6


class Bench:
    """The measurements, on two running servers: ``ports`` and ``runs`` as given; what did not
    come out as expected is collected in ``problems``, how a figure was counted in ``notes``."""

    def __init__(self, ports: dict[str, int], runs: int) -> None:
        self.ports = ports
        self.runs = runs
        self.problems: list[str] = []
        self.notes: list[str] = []

    def rounds(self, times: int | None = None):
        """(server name, port) for each run, the servers' order alternating."""
        names = list(self.ports)
        for number in range(self.runs if times is None else times):
            for name in names if number % 2 == 0 else names[::-1]:
                yield name, self.ports[name]

    def expect(self, name: str, what: str, got: object, wanted: object) -> None:
        """Note a response that is not what both servers should give."""
        if got != wanted:
            self.problems.append(f"{name}: {what}: got {got}, expected {wanted}")

    def attempt(self, measure: Callable[..., Row | list[Row]], *args) -> list[Row]:
        """The rows of ``measure(*args)``; none if a server failed it (noted in ``problems``),
        so that one command a server gets wrong leaves the other figures."""
        try:
            rows = measure(*args)
        except (IMAPError, OSError) as error:
            self.problems.append(f"{measure.__name__} stopped: {error}")
            return []
        return rows if isinstance(rows, list) else [rows]

    def client_like(self) -> list[Row]:
        """Body batches (1 and 4 clients), STORE, SEARCH UNSEEN, COMPRESS=DEFLATE."""
        one = Row("bodies, 1 client, 1,000 x 10 KB", "MB/s", "higher", target=ratio_at_least(0.8))
        four = Row("bodies, 4 clients, 4 x 1,000 x 10 KB", "MB/s", "higher")
        four.target = ratio_at_least(0.8)
        store = Row("UID STORE 1:* +FLAGS.SILENT, 1,000", "ms", "lower", target=ratio_at_most(2))
        unseen = Row("UID SEARCH UNSEEN, 1,000", "ms", "lower", target=ratio_at_most(2))
        deflate = Row("COMPRESS=DEFLATE bodies, 1,000 x 10 KB", "MB/s", "higher")
        deflate.target = ratio_at_least(0.5)
        everything = BODY_MESSAGES * 10 * 1024
        for name, port in self.rounds():
            client = session(port, BODY_USERS[0])
            client.command("EXAMINE INBOX")
            started = time.perf_counter()
            lines, octets = fetch_bodies(client, 1, BODY_MESSAGES)
            one.add(name, mb_per_s(octets, time.perf_counter() - started))
            self.expect(name, "body FETCH", (lines, octets), (BODY_MESSAGES, everything))
            client.command("SELECT INBOX")
            store.add(name, 1000 * client.timed("UID STORE 1:* +FLAGS.SILENT (\\Flagged)")[0])
            client.command("UID STORE 1:* -FLAGS.SILENT (\\Flagged)")
            seconds = client.timed("UID SEARCH UNSEEN", keep=True)[0]
            unseen.add(name, 1000 * seconds)
            found = sum(len(line.split()) - 2 for line in client.untagged if b"SEARCH" in line)
            self.expect(name, "UID SEARCH UNSEEN hits", found, BODY_MESSAGES // 10)
            client.close()
            rate, lines, octets = concurrent_bodies(port, BODY_USERS)
            four.add(name, rate)
            self.expect(name, "4 clients' FETCH", (lines, octets), (4000, 4 * everything))
            client = session(port, BODY_USERS[1])
            if "COMPRESS=DEFLATE" not in client.capabilities():
                deflate.skip(name)
                client.close()
                continue
            client.compress()
            client.command("EXAMINE INBOX")
            started = time.perf_counter()
            lines, octets = fetch_bodies(client, 1, BODY_MESSAGES)
            deflate.add(name, mb_per_s(octets, time.perf_counter() - started))
            self.expect(name, "compressed FETCH", (lines, octets), (BODY_MESSAGES, everything))
            client.close()
        return [one, four, store, unseen, deflate]

    def big_folder(self, count: int, user: str, largest: bool) -> list[Row]:
        """SELECT (first, second), FLAGS fetch and NOOP on ``count`` messages; on the
        ``largest`` also CHANGEDSINCE, ENVELOPE BODYSTRUCTURE and body FETCH."""
        size = f"{count:,}"
        first = Row(f"first SELECT, {size}", "ms", "lower")
        second = Row(f"second SELECT, {size}", "ms", "lower")
        flags = Row(f"UID FETCH 1:* (FLAGS), {size}", "ms", "lower")
        noop = Row(f"NOOP, selected, {size}", "ms", "lower")
        if largest:
            second.target, flags.target = ratio_at_most(2), ratio_at_most(1.5)
        for name, port in self.rounds(1):
            client = session(port, user)
            first.add(name, 1000 * client.timed("SELECT INBOX")[0])
            seconds, lines, _ = client.timed("UID FETCH 1:* (FLAGS)")
            flags.add(name, 1000 * seconds)
            self.expect(name, f"FLAGS of {size}", lines, count)
            client.close()
        for name, port in self.rounds():
            client = session(port, user)
            second.add(name, 1000 * client.timed("SELECT INBOX")[0])
            flags.add(name, 1000 * client.timed("UID FETCH 1:* (FLAGS)")[0])
            noop.add(name, 1000 * client.timed("NOOP")[0])
            client.close()
        rows = [first, second, flags, noop]
        if largest:
            rows += [self.changed_since(count, user), *self.structure_and_bodies(count, user)]
        return rows

    def changed_since(self, count: int, user: str) -> Row:
        """Device A changes 10 messages' flags; device B reconnects and asks what changed."""
        row = Row(f"UID FETCH (FLAGS) (CHANGEDSINCE), {CHANGES} changes", "ms", "lower")
        row.target = below(10, "ms")
        changed = [1 + n * (count // CHANGES) for n in range(CHANGES)]
        for name, port in self.rounds():
            device_a = session(port, user)
            if "CONDSTORE" not in device_a.capabilities():
                row.skip(name)
                device_a.close()
                continue
            device_a.command("SELECT INBOX (CONDSTORE)", keep=True)
            modseq = [m for line in device_a.untagged for m in _HIGHESTMODSEQ.findall(line)]
            for number in changed:
                device_a.command(f"STORE {number} +FLAGS.SILENT (\\Flagged)")
            device_a.close()
            device_b = session(port, user)
            device_b.command("SELECT INBOX (CONDSTORE)")
            seconds, lines, _ = device_b.timed(
                f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {int(modseq[0]) if modseq else 1})"
            )
            row.add(name, 1000 * seconds)
            self.expect(name, "CHANGEDSINCE responses", (len(modseq), lines), (1, CHANGES))
            device_b.command(f"STORE {','.join(map(str, changed))} -FLAGS.SILENT (\\Flagged)")
            device_b.close()
        return row

    def structure_and_bodies(self, count: int, user: str) -> list[Row]:
        """``FETCH 1:1000 (ENVELOPE BODYSTRUCTURE)`` and the last 1,000 bodies."""
        structure = Row("FETCH 1:1000 (ENVELOPE BODYSTRUCTURE)", "ms", "lower")
        structure.target = ratio_at_most(2)
        bodies = Row(f"bodies, last 1,000 of {count:,}", "MB/s", "higher")
        bodies.target = ratio_at_least(0.8)
        for name, port in self.rounds():
            client = session(port, user)
            client.command("EXAMINE INBOX")
            seconds, lines, _ = client.timed("FETCH 1:1000 (ENVELOPE BODYSTRUCTURE)")
            structure.add(name, 1000 * seconds)
            self.expect(name, "ENVELOPE BODYSTRUCTURE responses", lines, 1000)
            started = time.perf_counter()
            lines, octets = fetch_bodies(client, count - 999, count)
            bodies.add(name, mb_per_s(octets, time.perf_counter() - started))
            self.expect(name, "bodies of the big folder", lines, 1000)
            client.close()
        return [structure, bodies]

    def search_text(self, user: str) -> Row:
        """``SEARCH TEXT <word>`` on the 10,000-message folder."""
        row = Row(f"SEARCH TEXT {WORD.decode()}, {SEARCH_MESSAGES:,}", "ms", "lower")
        row.target = ratio_at_most(3)
        for name, port in self.rounds():
            client = session(port, user)
            client.command("EXAMINE INBOX")
            row.add(name, 1000 * client.timed(f"SEARCH TEXT {WORD.decode()}", keep=True)[0])
            found = sum(len(line.split()) - 2 for line in client.untagged if b"SEARCH" in line)
            self.expect(name, "SEARCH TEXT hits", found, SEARCH_MESSAGES // 100)
            client.close()
        return row

    def idle_memory(self, base: Path, dovecot: DovecotIMAP) -> Row:
        """Memory per idle session on a fresh mailgw and on the running Dovecot (how it was
        counted: in ``notes``)."""
        row = Row(
            f"memory per idle session ({IDLE_SESSIONS})", "KB", "lower", target=below(100, "KB")
        )
        mailgw = start_mailgw(base, "idle")
        try:
            port = mailgw.ports["imap"]
            warm = [session(port, user) for user in BODY_USERS]  # the folders open, once each
            for client in warm:
                client.command("SELECT INBOX")
            pid = mailgw.process.pid
            before = status_kb(pid, "VmRSS")
            clients = open_idle(port)
            time.sleep(1)
            row.add("mailgw", (status_kb(pid, "VmRSS") - before) / IDLE_SESSIONS)
            for client in clients + warm:
                client.close()
        finally:
            mailgw.stop()
        old = tree(dovecot.pid)
        before = sum(pss_kb(pid) for pid in old)
        clients = open_idle(dovecot.port)
        time.sleep(1)
        now = tree(dovecot.pid)
        grown = sum(pss_kb(pid) for pid in now) - before
        workers = [pid for pid, name in now.items() if name == "imap" and pid not in old]
        rss = sum(status_kb(pid, "VmRSS") for pid in workers)
        for client in clients:
            client.close()
        row.add("Dovecot", grown / IDLE_SESSIONS)
        self.notes.append(
            f"idle sessions: {IDLE_SESSIONS} logged in, INBOX (1,000 messages) selected, the 4 body"
            " users in turn; mailgw: growth of its twistd's VmRSS / 500 (a fresh process, each"
            " folder opened once before); Dovecot: growth of the Pss sum over all its processes"
            f" / 500 ({len(workers)} new imap processes; their VmRSS summed / 500 would be"
            f" {rss / IDLE_SESSIONS:,.0f} KB, counting shared library pages once per process)"
        )
        return row


def open_idle(port: int) -> list[Client]:
    """IDLE_SESSIONS sessions, the body users in turn, each with INBOX selected."""
    clients = []
    for number in range(IDLE_SESSIONS):
        client = session(port, BODY_USERS[number % len(BODY_USERS)])
        client.command("SELECT INBOX")
        clients.append(client)
    return clients


def memory_row(label: str, mailgw: ServerProcess, sampler: TreeSampler, target) -> Row:
    """Peak memory so far: mailgw's VmHWM, Dovecot's sampled peak Pss sum (MB)."""
    row = Row(label, "MB", "lower", target=target)
    row.add("mailgw", status_kb(mailgw.process.pid, "VmHWM") / 1024)
    row.add("Dovecot", sampler.peaks()[0] / 1024)
    return row


def main() -> None:
    """Build, start both servers, measure, print the table (and write the JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10,000 messages at most, one run")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--dir", type=Path, help="where to build (kept for the next run)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if not Path(DOVECOT).exists():
        raise SystemExit(f"{DOVECOT} is missing: apt-get install dovecot-imapd")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the idle sessions' sockets
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # (both servers inherit it)
    if hard < 4 * IDLE_SESSIONS:
        raise SystemExit(f"RLIMIT_NOFILE {hard}: at least {4 * IDLE_SESSIONS} needed")
    runs = 1 if args.quick else args.runs
    sizes = [SEARCH_MESSAGES] if args.quick else [SEARCH_MESSAGES, 100_000]
    with tempfile.TemporaryDirectory(prefix="mailgw-bench-imap-") as scratch:
        base = args.dir or Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)  # Dovecot's auth and mail processes (not root) read and walk into it
        started = time.perf_counter()
        rows, header, notes = run(base, runs, sizes)
        notes.append(f"whole benchmark: {time.perf_counter() - started:.0f} s")
    header.append(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print_table(rows, header, notes)
    if args.json:
        write_json(args.json, rows, header, notes)


def prepare(base: Path, sizes: list[int]) -> tuple[dict[int, str], pwd.struct_passwd | None]:
    """Build the folders, the passwd files and Dovecot's copy; (big users, Dovecot's owner)."""
    data = base / "data"
    mail_dir = data / "mail"
    store = MaildirStore(mail_dir, data / "tmp", HOSTNAME)
    for user in BODY_USERS:
        build(store, user, BODY_MESSAGES, retr_message)
    big_users = {count: f"m{count}@{DOMAIN}" for count in sizes}
    for count, user in big_users.items():
        build(store, user, count, folder_message)
    hashed = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    everyone = [*BODY_USERS, *big_users.values()]
    write_passwd(data / "passwd", everyone, hashed)
    # A user's first login creates the SPECIAL-USE folders (and opens INBOX on the way): done
    # by a throwaway process, so that the measured first SELECT is a cold open of the folder.
    throwaway = start_mailgw(base, "prepare")
    for user in everyone:
        session(throwaway.ports["imap"], user).close()
    throwaway.stop()
    owner = pwd.getpwnam("dovecot") if os.getuid() == 0 else None
    copy_for_dovecot(mail_dir, base / "dovecot-mail", owner)
    write_passwd(base / "dovecot-passwd", everyone, hashed)
    return big_users, owner


def run(base: Path, runs: int, sizes: list[int]) -> tuple[list[Row], list[str], list[str]]:
    """Build, start both servers, measure; (rows, header, notes)."""
    big_users, owner = prepare(base, sizes)
    header = [
        machine(),
        f"medians of {runs} run{'s' if runs > 1 else ''}, servers alternating (first SELECT"
        f" and memory: one sample); load average at the start: {os.getloadavg()[0]:.1f}",
    ]
    mailgw = start_mailgw(base)
    dovecot = DovecotIMAP(base / "dovecot", base / "dovecot-mail", base / "dovecot-passwd", owner)
    dovecot.start()
    sampler = TreeSampler(dovecot.pid)
    sampler.start()
    bench = Bench({"mailgw": mailgw.ports["imap"], "Dovecot": dovecot.port}, runs)
    try:
        rows = bench.attempt(bench.client_like)
        rows.append(memory_row("peak memory, client-like part", mailgw, sampler, below(100, "MB")))
        for count, user in big_users.items():
            rows += bench.attempt(bench.big_folder, count, user, count == max(sizes))
        rows += bench.attempt(bench.search_text, big_users[SEARCH_MESSAGES])
        rows.append(memory_row("peak memory, whole run", mailgw, sampler, None))
        _, dovecot_rss, worker_hwm = sampler.peaks()
        sampler.stop()  # (500 idle Dovecot processes would make sampling them costly)
        mailgw.stop()
        rows += bench.attempt(bench.idle_memory, base, dovecot)
    finally:
        sampler.stop()
        mailgw.stop()
        dovecot.stop()
    notes = [
        "peak memory: mailgw = VmHWM of its twistd process; Dovecot = the highest sum, sampled"
        " every 0.25 s, of the Pss of its master and all its children (imap, imap-login, auth,"
        f" config, anvil, log...); their VmRSS summed: {dovecot_rss / 1024:.1f} MB at most,"
        f" the largest imap process's VmHWM {worker_hwm / 1024:.1f} MB",
        "4 clients: 4 users, a client process each, started together; MB/s over the whole",
        "COMPRESS=DEFLATE: MB/s of message data (uncompressed), zlib raw deflate in the client",
        *bench.notes,
        LIMITS_NOTE,
    ]
    if len(sizes) == 1:
        notes.append(f"--quick: the 100,000-message figures measured on {sizes[0]:,}")
    notes += [f"PROBLEM {problem}" for problem in bench.problems]
    return rows, header, notes


if __name__ == "__main__":
    main()
