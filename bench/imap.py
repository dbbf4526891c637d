"""Benchmark: mailgw's IMAP against Dovecot's, on the same Maildirs, side by side.

Builds the folders once (the helpers of ``bench/pop3.py``: message files written directly, then
indexed by mailgw's store), then measures:

- on 10,000- and 100,000-message INBOXes: the time of ``SELECT INBOX`` (from sending it to its
  tagged OK) on a fresh server process (first open: mailgw reads its index and lists the
  Maildir, Dovecot builds its index; each user has logged in once before, in a throwaway
  mailgw process, so that login's one-time folder creation is not counted), then of
  ``UID FETCH 1:* (UID FLAGS)`` in the same session, then of SELECT again on the same server
  (second open, a new session each run), and of a NOOP after it (what a client polling a
  selected folder pays);
- full-body throughput: ``FETCH 1:1000 BODY.PEEK[]`` of 1,000 messages of 10 KB in one session,
  in MB/s of message data.

The servers: mailgw as a real ``twistd -n mailgw`` process, and Debian's Dovecot
(``dovecot-imapd``) started here with its own minimal configuration on a free loopback port,
serving a copy of the same Maildirs (directories copied, message files hard-linked, mailgw's
index left out so that Dovecot builds its own).  The client is the same for both: a minimal
blocking IMAP client over a raw socket, one command at a time.  Every repeated figure is the
median over several runs, the servers alternating.

    .venv/bin/python bench/imap.py [--quick] [--runs R] [--dir DIR]

Run as root, Dovecot's mail processes run as its ``dovecot`` user (it refuses root), so the
copies are given to that user.  ``--quick`` builds 10,000 messages at most and runs once.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import socket
import statistics
import tempfile
import time
from pathlib import Path

from pop3 import (
    DOMAIN,
    DOVECOT,
    HOSTNAME,
    PASSWORD,
    TIMEOUT,
    Dovecot,
    MaildirStore,
    ServerProcess,
    argon2,
    build,
    copy_for_dovecot,
    machine,
    retr_message,
    small_message,
    write_passwd,
)

BODY_USER = f"body@{DOMAIN}"
BODY_MESSAGES = 1000
_LITERAL = re.compile(rb"\{(\d+)\}$")


class IMAPError(Exception):
    """The server answered NO or BAD, or closed the connection."""


class Client:
    """A minimal blocking IMAP client: raw bytes, literals skipped, little overhead."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.tags = 0
        self._line()

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise IMAPError("connection closed")
        self.buffer += chunk

    def command(self, text: str) -> tuple[int, int]:
        """Send a command, read up to its tagged OK; return (response lines, literal octets).

        Responses are parsed only as far as needed to find literals and the tagged reply."""
        self.tags += 1
        tag = b"b%d" % self.tags
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        lines = octets = 0
        buffer = self.buffer
        start = 0
        while True:
            end = buffer.find(b"\r\n", start)
            if end < 0:
                del buffer[:start]
                start = 0
                self._fill()
                continue
            line = buffer[start:end]
            start = end + 2
            if line.endswith(b"}"):
                size = int(_LITERAL.search(line).group(1))
                while len(buffer) < start + size:
                    del buffer[:start]
                    start = 0
                    self._fill()
                start += size
                octets += size
                continue
            if line.startswith(tag + b" "):
                del buffer[:start]
                if not line.startswith(tag + b" OK"):
                    raise IMAPError(line.decode(errors="replace"))
                return lines, octets
            lines += 1

    def timed(self, text: str) -> tuple[float, int, int]:
        """(seconds, lines, literal octets) of one command."""
        started = time.perf_counter()
        lines, octets = self.command(text)
        return time.perf_counter() - started, lines, octets

    def close(self) -> None:
        """LOGOUT if possible, then close."""
        try:
            self.command("LOGOUT")
        except (OSError, IMAPError):
            pass
        self.sock.close()


def session(port: int, user: str) -> Client:
    """A logged-in session."""
    client = Client(port)
    client.command(f'LOGIN "{user}" "{PASSWORD}"')
    return client


class DovecotIMAP(Dovecot):
    """bench/pop3.py's Dovecot, configured for IMAP instead of POP3."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        text = self.conf.read_text()
        for old, new in (
            ("protocols = pop3", "protocols = imap"),
            ("service pop3-login", "service imap-login"),
            ("inet_listener pop3 ", "inet_listener imap "),
            ("inet_listener pop3s", "inet_listener imaps"),
        ):
            if old not in text:
                raise SystemExit(f"bench/pop3.py's Dovecot configuration changed: no {old!r}")
            text = text.replace(old, new)
        self.conf.write_text(text + "mail_max_userip_connections = 100\n")


def start_mailgw(base: Path) -> ServerProcess:
    """``twistd -n mailgw`` with an imap listener on a free loopback port, data in base/data."""
    config = base / "mailgw-imap.ini"
    config.write_text(
        f"[mailgw]\ndata_dir = {base / 'data'}\nhostname = {HOSTNAME}\ndomains = {DOMAIN}\n"
        f"ports_file = {base / 'ports-imap.json'}\n\n"
        "[listen]\nimap = tcp:0:interface=127.0.0.1\n\n"
        "[auth]\nallow_plaintext = yes\n\n[guard]\ndelay_start = 0\ndelay_max = 0\n"
    )
    return ServerProcess(config, ports_file=base / "ports-imap.json").start(timeout=60)


def main() -> None:
    """Build, start both servers, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10,000 messages at most, one run")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--dir", type=Path, help="where to build (kept for the next run)")
    args = parser.parse_args()
    if not Path(DOVECOT).exists():
        raise SystemExit(f"{DOVECOT} is missing: apt-get install dovecot-imapd")
    runs = 1 if args.quick else args.runs
    big = [10_000] if args.quick else [10_000, 100_000]
    with tempfile.TemporaryDirectory(prefix="mailgw-bench-imap-") as scratch:
        base = args.dir or Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)  # Dovecot's auth and mail processes (not root) read and walk into it
        started = time.perf_counter()
        run(base, runs, big)
        print(f"(whole benchmark: {time.perf_counter() - started:.0f} s)")


def run(base: Path, runs: int, big: list[int]) -> None:
    """Build the folders, start both servers, measure, print."""
    data = base / "data"
    mail_dir = data / "mail"
    store = MaildirStore(mail_dir, data / "tmp", HOSTNAME)
    build(store, BODY_USER, BODY_MESSAGES, retr_message)
    big_users = {count: f"m{count}@{DOMAIN}" for count in big}
    for count, user in big_users.items():
        build(store, user, count, small_message)
    hashed = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    everyone = [BODY_USER, *big_users.values()]
    write_passwd(data / "passwd", everyone, hashed)
    # A user's first login creates the SPECIAL-USE folders (and opens INBOX on the way): done
    # by a throwaway process, so that the measured first SELECT is a cold open of the folder.
    prepare = start_mailgw(base)
    for user in everyone:
        session(prepare.ports["imap"], user).close()
    prepare.stop()
    owner = pwd.getpwnam("dovecot") if os.getuid() == 0 else None
    copy_for_dovecot(mail_dir, base / "dovecot-mail", owner)
    write_passwd(base / "dovecot-passwd", everyone, hashed)

    mailgw = start_mailgw(base)
    dovecot = DovecotIMAP(base / "dovecot", base / "dovecot-mail", base / "dovecot-passwd", owner)
    dovecot.start()
    ports = {"mailgw": mailgw.ports["imap"], "Dovecot": dovecot.port}
    rows = []
    try:
        for count, user in big_users.items():
            first: dict[str, list[float]] = {}
            fetch: dict[str, list[float]] = {name: [] for name in ports}
            for name, port in ports.items():
                client = session(port, user)
                first[name] = [client.timed("SELECT INBOX")[0]]
                seconds, lines, _ = client.timed("UID FETCH 1:* (UID FLAGS)")
                assert lines == count, (name, lines, count)
                fetch[name].append(seconds)
                client.close()
            rows.append((f"first SELECT, {count:,} msgs", "s", first, "lower is better"))
            again: dict[str, list[float]] = {name: [] for name in ports}
            noop: dict[str, list[float]] = {name: [] for name in ports}
            for _ in range(runs):
                for name, port in ports.items():
                    client = session(port, user)
                    again[name].append(client.timed("SELECT INBOX")[0])
                    fetch[name].append(client.timed("UID FETCH 1:* (UID FLAGS)")[0])
                    noop[name].append(client.timed("NOOP")[0])
                    client.close()
            rows.append((f"second SELECT, {count:,} msgs", "s", again, "lower is better"))
            rows.append((f"UID FETCH 1:* (UID FLAGS), {count:,}", "s", fetch, "lower is better"))
            rows.append((f"NOOP, selected, {count:,} msgs", "s", noop, "lower is better"))
        volume: dict[str, list[float]] = {name: [] for name in ports}
        octets = {}
        for _ in range(runs):
            for name, port in ports.items():
                client = session(port, BODY_USER)
                client.command("EXAMINE INBOX")
                seconds, lines, octets[name] = client.timed(f"FETCH 1:{BODY_MESSAGES} BODY.PEEK[]")
                assert lines == BODY_MESSAGES, (name, lines)
                volume[name].append(octets[name] / seconds / 1e6)
                client.close()
        assert octets["mailgw"] == octets["Dovecot"], octets
        rows.append(("FETCH 1:1000 BODY.PEEK[], 10 KB", "MB/s", volume, "higher is better"))
    finally:
        mailgw.stop()
        dovecot.stop()
    print(machine())
    print(f"medians of {runs} run{'s' if runs > 1 else ''} (first SELECT: one); same client")
    print(f"{'measurement':36} {'unit':>5} {'mailgw':>9} {'Dovecot':>9} {'ratio':>7}")
    for label, unit, values, better in rows:
        ours, theirs = statistics.median(values["mailgw"]), statistics.median(values["Dovecot"])
        print(f"{label:36} {unit:>5} {ours:9.4f} {theirs:9.4f} {ours / theirs:7.2f}  {better}")


if __name__ == "__main__":
    main()
