"""Benchmark: durable SMTP acceptance, mailgw against aiosmtpd + Maildir baselines.

All servers run as their own processes on loopback, side by side in one invocation:

- ``aiosmtpd``: aiosmtpd with a handler that writes each message into a Maildir the way a
  Python user would build it durably, as aiosmtpd's own ``Mailbox`` handler does (in the
  handler, so on the event loop): ``tmp/`` file, fsync, rename into ``new/``, fsync of ``new/``;
- ``aiosmtpd+thr``: the same handler run in a worker thread (``asyncio.to_thread``), so that
  the fsyncs of concurrent sessions overlap and do not stop the event loop: the stronger
  baseline;
- ``Postfix``: Debian's Postfix, a private instance started here (``bench/smtp_postfix.py``),
  delivering into a Maildir; its 250 comes once ``cleanup`` has fsync'd the queue file.  After
  each of its runs the bench waits, untimed, until it has delivered everything, so that its
  deliveries do not run during the next server's turn.  Needs root; skipped otherwise;
- ``mailgw``: a real ``twistd -n mailgw`` (its 250 comes only after the message file, its index
  line and its directory entry are on disk).

Clients: one asyncio process (this one), each client keeping one connection and sending its
messages one after another (MAIL, RCPT, DATA, wait for 250; no pipelining), the same client
code for every server.  For 2 KB and 100 KB messages at 1 and 16 clients, each configuration
runs for a fixed time per server, servers taking turns, several times; the table shows the
medians over the runs of messages/s and of the p50/p99 latency (MAIL sent to 250 received)
and the ratios of mailgw's messages/s to each baseline's, then issue 12's targets.

    .venv/bin/python bench/smtp.py [--quick] [--runs R] [--seconds S] [--dir DIR]
        [--baselines aiosmtpd,aiosmtpd+thr,Postfix] [--clients 1,16] [--sizes 2,100]

``--baselines=`` runs mailgw alone (its twistd's pid is printed, for ``py-spy`` or ``strace``).

Needs the ``bench`` extra (``pip install -e '.[bench]'``) for aiosmtpd, and ``postfix`` (Debian)
run as root for the Postfix baseline.  About 4 minutes; ``--quick`` (one 1.5 s run per
configuration) about 45 s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

sys.path.insert(0, str(ROOT / "bench"))

import smtp_postfix  # noqa: E402
from mailgw_process import ServerProcess, mailgw, write_config  # noqa: E402

SENDER = "load@sender.test"
RECIPIENT = "alice@example.test"


# -- the baseline servers (in a subprocess: ``smtp.py --serve-baseline MODE MAILDIR PORT_FILE``)

#: Baseline name -> does its handler store in a worker thread?
BASELINES = {"aiosmtpd": False, "aiosmtpd+thr": True}
ALL_BASELINES = (*BASELINES, "Postfix")


class MaildirHandler:
    """aiosmtpd handler: every message into ``maildir/new`` durably, then 250."""

    def __init__(self, maildir: Path, threaded: bool) -> None:
        self.maildir = maildir
        self.threaded = threaded
        self.hostname = platform.node().replace("/", "_").replace(":", "_")
        self._counter = itertools.count()
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        """Store the message; answer 250 only once it is on disk."""
        if self.threaded:
            await asyncio.to_thread(self.deliver, envelope.original_content)
        else:
            self.deliver(envelope.original_content)
        return "250 OK"

    def deliver(self, data: bytes) -> None:
        """tmp/ file, fsync, rename into new/, fsync new/ (the classic durable Maildir)."""
        name = f"{time.time_ns()}.P{os.getpid()}Q{next(self._counter)}.{self.hostname}"
        tmp = self.maildir / "tmp" / name
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.maildir / "new" / name)
        fd = os.open(self.maildir / "new", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def serve_baseline(mode: str, maildir: Path, port_file: Path) -> None:
    """Run the aiosmtpd baseline ``mode`` on an ephemeral loopback port until killed."""
    from aiosmtpd.smtp import SMTP

    async def main() -> None:
        handler = MaildirHandler(maildir, BASELINES[mode])
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="baseline.bench.test", ident="aiosmtpd"),
            "127.0.0.1",
            0,
        )
        port = server.sockets[0].getsockname()[1]
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.rename(port_file)
        await server.serve_forever()

    asyncio.run(main())


class BaselineProcess:
    """A baseline server in a subprocess of this script."""

    def __init__(self, mode: str, directory: Path) -> None:
        self.mode = mode
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 20.0) -> BaselineProcess:
        """Start it and wait for its port."""
        port_file = self.directory / "port"
        port_file.unlink(missing_ok=True)
        log = open(self.directory / "baseline.log", "ab")  # noqa: SIM115 (child keeps it)
        self.process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve-baseline",
                self.mode,
                str(self.directory / "Maildir"),
                str(port_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError((self.directory / "baseline.log").read_text())
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    def stop(self) -> None:
        """Stop it."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


# -- the client side


def make_message(size: int) -> bytes:
    """A plain-text message of about ``size`` octets, dot-stuffed, CRLF, ending with CRLF."""
    head = (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: benchmark\r\n"
        "Message-ID: <bench@sender.test>\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopqrst\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


class SMTPError(Exception):
    """The server answered something other than the expected reply code."""


async def _reply(reader: asyncio.StreamReader, expected: int) -> None:
    while True:
        line = await reader.readline()
        if len(line) < 4:
            raise SMTPError(f"connection closed or bad reply {line!r}")
        if line[3:4] != b"-":
            break
    if int(line[:3]) != expected:
        raise SMTPError(f"expected {expected}, got {line!r}")


async def client(
    port: int,
    message: bytes,
    warmup: int,
    start: asyncio.Event,
    deadline: list,
    latencies: list,
    ready: list,
) -> None:
    """One connection: send ``warmup`` messages, wait for ``start``, then send until deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _reply(reader, 220)
        writer.write(b"EHLO client.bench.test\r\n")
        await _reply(reader, 250)
        mail = f"MAIL FROM:<{SENDER}>\r\n".encode()
        rcpt = f"RCPT TO:<{RECIPIENT}>\r\n".encode()
        sent = 0
        while True:
            if sent == warmup:
                ready.append(1)
                await start.wait()
            if sent >= warmup and time.perf_counter() >= deadline[0]:
                break
            began = time.perf_counter()
            writer.write(mail)
            await _reply(reader, 250)
            writer.write(rcpt)
            await _reply(reader, 250)
            writer.write(b"DATA\r\n")
            await _reply(reader, 354)
            writer.write(message)
            writer.write(b".\r\n")
            await _reply(reader, 250)
            if sent >= warmup:
                latencies.append(time.perf_counter() - began)
            sent += 1
        writer.write(b"QUIT\r\n")
        await _reply(reader, 221)
    finally:
        writer.close()


@dataclass
class Result:
    """One run of one configuration against one server."""

    rate: float
    p50: float
    p99: float


async def run_load(port: int, message: bytes, clients: int, seconds: float) -> Result:
    """``clients`` connections sending ``message`` for ``seconds``; rate and latencies."""
    start = asyncio.Event()
    ready: list = []
    latencies: list = []
    deadline = [0.0]
    tasks = [
        asyncio.create_task(client(port, message, 2, start, deadline, latencies, ready))
        for _ in range(clients)
    ]
    while len(ready) < clients:
        done = [t for t in tasks if t.done()]
        for task in done:
            task.result()
        await asyncio.sleep(0.005)
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    latencies.sort()
    return Result(
        len(latencies) / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    )


# -- the benchmark


def machine() -> str:
    """CPU, cores, file system of the data, and versions."""
    import aiosmtpd

    import twisted

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"Twisted {twisted.__version__}, aiosmtpd {aiosmtpd.__version__}, "
        f"Postfix {smtp_postfix.version()}"
    )


def filesystem(path: Path) -> str:
    """The type and device of the file system holding ``path``."""
    out = subprocess.run(
        ["df", "--output=fstype,source", str(path)], capture_output=True, text=True
    ).stdout.split()
    return f"{out[2]} on {out[3]}" if len(out) >= 4 else "unknown"


def main() -> None:
    """Parse arguments, run both servers, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one short run per configuration")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (median)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    parser.add_argument("--dir", type=Path, help="where the servers keep their data")
    parser.add_argument(
        "--baselines",
        default=",".join(ALL_BASELINES),
        help="comma-separated baselines beside mailgw (empty: mailgw alone, to profile it)",
    )
    parser.add_argument("--clients", default="1,16", help="comma-separated client counts")
    parser.add_argument("--sizes", default="2,100", help="comma-separated message sizes in KB")
    parser.add_argument("--serve-baseline", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        mode, maildir, port_file = args.serve_baseline
        serve_baseline(mode, Path(maildir), Path(port_file))
        return
    if args.quick:
        args.runs, args.seconds = 1, 1.5
    chosen = [name for name in args.baselines.split(",") if name]
    if unknown := set(chosen) - set(ALL_BASELINES):
        parser.error(f"unknown baselines {sorted(unknown)}: choose from {', '.join(ALL_BASELINES)}")
    plan = Plan(
        args.runs,
        args.seconds,
        chosen,
        [(f"{kb} KB", kb * 1024) for kb in _numbers(parser, args.sizes)],
        _numbers(parser, args.clients),
    )
    base = Path(tempfile.mkdtemp(prefix="mailgw-bench-", dir=args.dir))
    base.chmod(0o755)  # Postfix's virtual(8) delivers as nobody under it
    try:
        bench(base, plan)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _numbers(parser: argparse.ArgumentParser, text: str) -> list[int]:
    try:
        numbers = [int(item) for item in text.split(",")]
    except ValueError:
        parser.error(f"not a comma-separated list of numbers: {text!r}")
    if any(n < 1 for n in numbers):
        parser.error(f"every number must be at least 1: {text!r}")
    return numbers


@dataclass
class Plan:
    """What to measure: runs per configuration, seconds per run, baselines, sizes, clients."""

    runs: int
    seconds: float
    baselines: list[str]
    sizes: list[tuple[str, int]]
    clients: list[int]


def bench(base: Path, plan: Plan) -> None:
    """Start the servers of ``plan`` under ``base`` and measure every configuration."""
    runs, seconds = plan.runs, plan.seconds
    (base / "mailgw" / "data").mkdir(parents=True)
    config = write_config(base / "mailgw", services=("smtp",))
    added = mailgw(config, "user", "add", RECIPIENT, "--password-stdin", stdin="bench")
    if added.returncode != 0:
        raise SystemExit(added.stderr)
    missing = smtp_postfix.available() if "Postfix" in plan.baselines else None
    wanted = "Postfix" in plan.baselines and not missing
    try:
        postfix = smtp_postfix.Postfix(base / "postfix", RECIPIENT) if wanted else None
    except RuntimeError as error:
        raise SystemExit(f"Postfix cannot run here: {error}") from None
    print(f"machine: {machine()}")
    print(f"data:    {base} ({filesystem(base)})")
    print(f"runs:    {runs} x {seconds:g} s per server and configuration, medians shown")
    print(f"load average at the start: {_load()}\n")
    if missing:
        print(f"Postfix left out: {missing}\n")
    baselines = []
    for mode in (m for m in BASELINES if m in plan.baselines):
        (base / mode).mkdir()
        baselines.append(BaselineProcess(mode, base / mode))
    server = ServerProcess(config)
    rows = []
    drained = 0.0
    try:
        for baseline in baselines:
            baseline.start()
        servers = [(b.mode, b.port) for b in baselines]
        if postfix is not None:
            servers.append(("Postfix", postfix.start().port))
        server.start()
        print(f"mailgw's twistd: pid {server.process.pid}\n", flush=True)
        servers.append(("mailgw", server.ports["smtp"]))
        for label, size in plan.sizes:
            message = make_message(size)
            for clients in plan.clients:
                results: dict[str, list[Result]] = {name: [] for name, _ in servers}
                for _ in range(runs):
                    for name, port in servers:
                        result = asyncio.run(run_load(port, message, clients, seconds))
                        results[name].append(result)
                        if name == "Postfix":
                            drained = max(drained, postfix.drain())
                rows.append((label, clients, {n: _median(r) for n, r in results.items()}))
    finally:
        for baseline in baselines:
            baseline.stop()
        if postfix is not None:
            postfix.stop()
        server.stop()
    _print_table(rows)
    if postfix is not None:
        print(f"Postfix: delivering its backlog after a run took at most {drained:.1f} s (untimed)")
    _print_targets(rows)
    print(f"load average at the end: {_load()}")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.rate for r in results),
        statistics.median(r.p50 for r in results),
        statistics.median(r.p99 for r in results),
    )


def _print_table(rows: list) -> None:
    print(
        f"{'size':>6} {'clients':>7}  {'server':<13} {'msg/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
        f"  {'mailgw/server':>13}"
    )
    for label, clients, by in rows:
        print("-" * 64)
        mailgw_rate = by["mailgw"].rate
        for name, result in by.items():
            ratio = f"{mailgw_rate / result.rate:>13.2f}" if name != "mailgw" else ""
            line = (
                f"{label:>6} {clients:>7}  {name:<13} {result.rate:>7.0f} {result.p50:>7.1f}"
                f" {result.p99:>7.1f}  {ratio}"
            )
            print(line.rstrip())
    print("\nmailgw/server: mailgw's messages/s divided by that server's")


#: Issue 12's targets: clients -> (server, least ratio of mailgw's messages/s to its).
TARGETS = {16: (("Postfix", 2.0), ("aiosmtpd+thr", 1.5)), 1: (("Postfix", 1.5),)}
P99_TARGET = 50.0  # ms, at 16 clients


def _print_targets(rows: list) -> None:
    print("\nissue 12's targets:")
    for label, clients, by in rows:
        if clients not in TARGETS or label not in ("2 KB", "100 KB"):
            continue
        mailgw_result = by["mailgw"]
        checks = [
            (
                f"{mailgw_result.rate / by[name].rate:.2f}x {name} (>= {least:g}x)",
                mailgw_result.rate / by[name].rate >= least,
            )
            for name, least in TARGETS[clients]
            if name in by
        ]
        if clients == 16:
            checks.append(
                (
                    f"p99 {mailgw_result.p99:.1f} ms (< {P99_TARGET:g})",
                    mailgw_result.p99 < P99_TARGET,
                )
            )
        text = "; ".join(f"{what} {'met' if met else 'NOT met'}" for what, met in checks)
        print(f"  {label:>6}, {clients:>2} client{'s' if clients > 1 else ' '}: {text}")


if __name__ == "__main__":
    main()
