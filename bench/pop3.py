"""Benchmark: mailgw's POP3 against Dovecot's, on the same Maildirs, side by side.

Builds the maildrops once (message files written directly, then indexed by mailgw's store):

- four users with 1,000 messages of 10 KB each, for RETR throughput: one session retrieving
  all 1,000 of its user's messages, then four sessions at once (four users, a process each)
  retrieving 1,000 each; messages/s and MB/s of message data over the whole run;
- users with 10,000 and 100,000 small messages: the time from connecting to having the whole
  UIDL listing (greeting, USER, PASS, STAT, UIDL), on a fresh connection each time, after one
  warm-up login (so that Dovecot's index exists and mailgw's process has read its own).

The servers: mailgw as a real ``twistd -n mailgw`` process, and Debian's Dovecot
(``dovecot-pop3d``) started here with its own minimal configuration on a free loopback port,
serving a copy of the same Maildirs (directories copied, message files hard-linked, mailgw's
index left out so that Dovecot builds its own).  Both check the same cheap {ARGON2ID} password
hash, so the login cost is the protocol's, not the hash's.  The client is the same for both:
a minimal blocking POP3 client, one command at a time (no pipelining), as fetchmail does.
Every figure is the median over several runs, the servers alternating.

    .venv/bin/python bench/pop3.py [--quick] [--runs R] [--dir DIR]

Run as root, Dovecot's mail processes run as its ``dovecot`` user (it refuses root), so the
copies are given to that user.  ``--quick`` builds 10,000 messages at most and runs once.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import argon2  # noqa: E402
from mailgw_process import ServerProcess  # noqa: E402

from mailgw.store import MaildirStore  # noqa: E402
from mailgw.store.files import unique_name  # noqa: E402

DOMAIN = "bench.test"
HOSTNAME = "mx.bench.test"
PASSWORD = "bench password"
RETR_USERS = [f"retr{n}@{DOMAIN}" for n in range(4)]
DOVECOT = "/usr/sbin/dovecot"
TIMEOUT = 120.0


# -- building the maildrops --------------------------------------------------------------------


def retr_message(i: int) -> bytes:
    """Message ``i`` of a RETR maildrop: 10 KB (10,240 octets), CRLF, some lines with dots."""
    head = (
        b"From: sender%d@remote.test\r\nTo: bench@bench.test\r\nSubject: message %d\r\n"
        b"Message-ID: <%d@remote.test>\r\n\r\n" % (i, i, i)
    )
    line = b"%s line of message %06d, 72 octets with its line end, padded out...\r\n"
    body = b"".join(line % (b"." if n % 9 == 0 else b"A", i) for n in range(150))
    text = head + body
    return text[: 10 * 1024 - 2] + b"\r\n"


def small_message(i: int) -> bytes:
    """Message ``i`` of a large maildrop."""
    return b"Subject: message %d\r\nFrom: a@remote.test\r\n\r\nbody %d\r\n" % (i, i)


def build(store: MaildirStore, address: str, count: int, make: Callable[[int], bytes]) -> None:
    """Give ``address`` an INBOX of ``count`` messages ``make(i)`` unless it has them already;
    write the files directly, then let a fresh store index them (as store_open.py does)."""
    inbox = store.user_dir(address)
    store.folder(address)
    existing = len(os.listdir(inbox / "new")) + len(os.listdir(inbox / "cur"))
    if existing == count:
        return
    if existing:
        raise SystemExit(f"{inbox} holds {existing} messages, not {count}: use another --dir")
    started = time.perf_counter()
    base = time.time() - count
    for i in range(count):
        data = make(i)
        key = unique_name(HOSTNAME, len(data), base + i)
        path = inbox / "new" / key if i % 10 == 0 else inbox / "cur" / f"{key}:2,S"
        with open(path, "xb") as f:
            f.write(data)
    indexed = len(MaildirStore(store.mail_dir, store.tmp_dir, HOSTNAME).folder(address).messages())
    assert indexed == count, (indexed, count)
    print(f"built {address}: {count} messages in {time.perf_counter() - started:.1f} s")


def copy_for_dovecot(mail_dir: Path, target: Path, owner: pwd.struct_passwd | None) -> None:
    """Copy the Maildirs (files hard-linked) without mailgw's index; give them to ``owner``."""
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(["cp", "-al", str(mail_dir), str(target)], check=True)
    for index in target.glob("*/*/dovecot-uidlist"):
        index.unlink()
    if owner is not None:
        subprocess.run(["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(target)], check=True)


# -- the servers -------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port free at the moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_passwd(path: Path, addresses: list[str], hashed: str) -> None:
    """A passwd-file both servers read: every user with the same {ARGON2ID} hash."""
    path.write_text("".join(f"{a}:{{ARGON2ID}}{hashed}\n" for a in addresses))
    path.chmod(0o644)


def start_mailgw(base: Path) -> ServerProcess:
    """``twistd -n mailgw`` with a pop3 listener on a free loopback port, data in base/data."""
    config = base / "mailgw.ini"
    config.write_text(
        f"[mailgw]\ndata_dir = {base / 'data'}\nhostname = {HOSTNAME}\ndomains = {DOMAIN}\n"
        f"ports_file = {base / 'ports.json'}\n\n"
        "[listen]\npop3 = tcp:0:interface=127.0.0.1\n\n"
        "[auth]\nallow_plaintext = yes\n\n[guard]\ndelay_start = 0\ndelay_max = 0\n"
    )
    return ServerProcess(config).start(timeout=60)


class Dovecot:
    """Dovecot's POP3 server on ``port``, configured and kept in ``base``."""

    def __init__(self, base: Path, mail_dir: Path, passwd: Path, owner: pwd.struct_passwd | None):
        self.base = base
        self.port = free_port()
        self.conf = base / "dovecot.conf"
        run = base / "run"
        run.mkdir(parents=True, exist_ok=True)
        (base / "state").mkdir(exist_ok=True)
        me = pwd.getpwuid(os.getuid())
        if owner is not None:
            internal, login, user = "dovecot", "dovenull", owner.pw_name
        else:
            internal = login = user = me.pw_name
        self.conf.write_text(
            f"""base_dir = {run}
state_dir = {base / "state"}
log_path = {base / "dovecot.log"}
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:{mail_dir}/%d/%n
passdb {{
  driver = passwd-file
  args = username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={user} gid={user} home={mail_dir}/%d/%n
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> Dovecot:
        """Start ``dovecot -F`` and wait until it answers."""
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.base / "dovecot.stderr", "wb"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"dovecot did not start:\n{(self.base / 'dovecot.stderr').read_text()}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM dovecot and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


# -- the client --------------------------------------------------------------------------------


class POP3Error(Exception):
    """The server answered -ERR or closed the connection."""


class Client:
    """A minimal blocking POP3 client: one command at a time, raw bytes, little overhead."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.status()

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            raise POP3Error("connection closed")
        self.buffer += chunk

    def status(self) -> bytes:
        """Read one status line; raise POP3Error on -ERR."""
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        if not line.startswith(b"+OK"):
            raise POP3Error(line.decode(errors="replace"))
        return line

    def command(self, line: str) -> bytes:
        """Send a command, return its status line."""
        self.sock.sendall(line.encode() + b"\r\n")
        return self.status()

    def multiline(self, line: str) -> bytes:
        """Send a command with a multi-line answer; return the body (still dot-stuffed),
        without the terminating line."""
        self.command(line)
        searched = 0
        while True:
            if self.buffer[:3] == b".\r\n":
                end, skip = 0, 3
                break
            end = self.buffer.find(b"\r\n.\r\n", searched)
            if end >= 0:
                end, skip = end + 2, end + 5
                break
            searched = max(len(self.buffer) - 4, 0)
            self._fill()
        body = bytes(self.buffer[:end])
        del self.buffer[:skip]
        return body

    def login(self, user: str) -> None:
        """USER and PASS."""
        self.command(f"USER {user}")
        self.command(f"PASS {PASSWORD}")

    def close(self) -> None:
        """QUIT if possible, then close."""
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.status()
        except (OSError, POP3Error):
            pass
        self.sock.close()


def login_stat_uidl(port: int, user: str) -> tuple[float, int, bytes]:
    """Seconds from connecting to the end of the UIDL listing; STAT's count; the listing."""
    started = time.perf_counter()
    client = Client(port)
    client.login(user)
    count = int(client.command("STAT").split()[1])
    listing = client.multiline("UIDL")
    elapsed = time.perf_counter() - started
    client.close()
    assert listing.count(b"\r\n") == count, (listing.count(b"\r\n"), count)
    return elapsed, count, listing


def _retrieve_all(port: int, user: str, start: multiprocessing.Barrier, out) -> None:
    """Worker process: log in, wait for the others, RETR every message; report the times."""
    client = Client(port)
    client.login(user)
    count = int(client.command("STAT").split()[1])
    start.wait()
    began = time.monotonic()
    octets = 0
    for number in range(1, count + 1):
        octets += len(client.multiline(f"RETR {number}"))
    ended = time.monotonic()
    client.close()
    out.put((began, ended, count, octets))


def in_processes(target, port: int, users: list[str]) -> tuple[float, list]:
    """Run ``target(port, user, barrier, out)`` in one forked process per user, all starting
    at one barrier, each putting ``(began, ended, ...)`` on ``out``.

    Return (seconds from the first start to the last end, the results)."""
    context = multiprocessing.get_context("fork")
    start = context.Barrier(len(users))
    out = context.Queue()
    workers = [context.Process(target=target, args=(port, user, start, out)) for user in users]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=TIMEOUT * 4) for _ in workers]
    for worker in workers:
        worker.join()
    return max(r[1] for r in results) - min(r[0] for r in results), results


def retr_throughput(port: int, users: list[str]) -> tuple[float, float, int]:
    """RETR every message of each user, one session (process) per user at once.

    Return (messages/s, MB/s, octets received) over the whole run."""
    seconds, results = in_processes(_retrieve_all, port, users)
    messages = sum(r[2] for r in results)
    octets = sum(r[3] for r in results)
    return messages / seconds, octets / seconds / 1e6, octets


# -- running and reporting ---------------------------------------------------------------------


def machine() -> str:
    """CPU, cores and versions."""
    import twisted

    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    dovecot = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True).stdout
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"Twisted {twisted.__version__}, Dovecot {dovecot.split()[0]}"
    )


def main() -> None:
    """Build, start both servers, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10,000 messages at most, one run")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--dir", type=Path, help="where to build (kept for the next run)")
    args = parser.parse_args()
    if not Path(DOVECOT).exists():
        raise SystemExit(f"{DOVECOT} is missing: apt-get install dovecot-pop3d")
    runs = 1 if args.quick else args.runs
    big = [10_000] if args.quick else [10_000, 100_000]
    with tempfile.TemporaryDirectory(prefix="mailgw-bench-pop3-") as scratch:
        base = args.dir or Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)  # Dovecot's auth and mail processes (not root) read and walk into it
        started = time.perf_counter()
        run(base, runs, big)
        print(f"(whole benchmark: {time.perf_counter() - started:.0f} s)")


def run(base: Path, runs: int, big: list[int]) -> None:
    """Build the maildrops, start both servers, measure, print."""
    data = base / "data"
    mail_dir = data / "mail"
    store = MaildirStore(mail_dir, data / "tmp", HOSTNAME)
    for user in RETR_USERS:
        build(store, user, 1000, retr_message)
    big_users = {count: f"m{count}@{DOMAIN}" for count in big}
    for count, user in big_users.items():
        build(store, user, count, small_message)
    hashed = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    everyone = [*RETR_USERS, *big_users.values()]
    write_passwd(data / "passwd", everyone, hashed)
    owner = pwd.getpwnam("dovecot") if os.getuid() == 0 else None
    copy_for_dovecot(mail_dir, base / "dovecot-mail", owner)
    write_passwd(base / "dovecot-passwd", everyone, hashed)

    mailgw = start_mailgw(base)
    dovecot = Dovecot(base / "dovecot", base / "dovecot-mail", base / "dovecot-passwd", owner)
    dovecot.start()
    ports = {"mailgw": mailgw.ports["pop3"], "Dovecot": dovecot.port}
    rows = []
    try:
        for count, user in big_users.items():
            first = {name: login_stat_uidl(port, user) for name, port in ports.items()}
            assert first["mailgw"][1] == first["Dovecot"][1] == count
            print(
                f"first login on {count:,} messages (Dovecot builds its index): "
                + ", ".join(f"{name} {result[0]:.2f} s" for name, result in first.items())
            )
            times = {name: [] for name in ports}
            for _ in range(runs):
                for name, port in ports.items():
                    times[name].append(login_stat_uidl(port, user)[0])
            rows.append(
                (f"login+STAT+UIDL, {count:,} msgs", "s", *medians(times), "lower is better")
            )
        for sessions in (1, 4):
            rates = {name: [] for name in ports}
            volume = {name: [] for name in ports}
            octets = {}
            for _ in range(runs):
                for name, port in ports.items():
                    per_second, mb, octets[name] = retr_throughput(port, RETR_USERS[:sessions])
                    rates[name].append(per_second)
                    volume[name].append(mb)
            assert octets["mailgw"] == octets["Dovecot"], octets
            label = f"RETR 10 KB, {sessions} session{'s' if sessions > 1 else ''}"
            rows.append((label, "msg/s", *medians(rates), "higher is better"))
            rows.append((label, "MB/s", *medians(volume), "higher is better"))
    finally:
        mailgw.stop()
        dovecot.stop()
    print(machine())
    print(f"medians of {runs} run{'s' if runs > 1 else ''}; same client for both servers")
    print(f"{'measurement':34} {'unit':>6} {'mailgw':>10} {'Dovecot':>10} {'ratio':>7}")
    for label, unit, ours, theirs, better in rows:
        print(f"{label:34} {unit:>6} {ours:10.3f} {theirs:10.3f} {ours / theirs:7.2f}  {better}")


def medians(values: dict[str, list[float]]) -> tuple[float, float]:
    """(mailgw's median, Dovecot's median)."""
    return statistics.median(values["mailgw"]), statistics.median(values["Dovecot"])


if __name__ == "__main__":
    main()
