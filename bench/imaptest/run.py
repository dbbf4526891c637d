"""Dovecot's imaptest against mailgw's IMAP and against Dovecot's, side by side.

Runs (a) imaptest's compliance scripts, one imaptest process per script (``test=FILE``), each
giving passed, FAILED (with imaptest's failure report) or skipped (a capability in the script's
``capabilities:`` header is not announced after login, or it needs ``user2``); and (b) a stress
run: ``clients`` random sessions for ``--stress`` seconds, imaptest checking every reply against
its model of the mailbox, reporting its errors grouped by message.

The servers: mailgw as a real ``twistd -n mailgw`` process (plaintext login allowed on
loopback) and Debian's Dovecot started here privately (``bench/imap.py``'s configuration), each
with the users imaptest needs: ``imaptest`` and ``imaptest2`` (``user``/``user2`` of the
multi-client scripts; the scripts work in a ``imaptest`` folder they create) and ``stress1`` to
``stressN``.  Dovecot is the baseline: it must pass every script it does not skip and have no
stress errors, which validates the harness.

    bench/imaptest/build.sh /work/.mirror/dovecot+imaptest/repo
    .venv/bin/python bench/imaptest/run.py [--imaptest PATH] [--tests DIR]
        [--against mailgw|dovecot|both] [--stress SECONDS] [--dir DIR] [--mailgw-src DIR]
"""

from __future__ import annotations

import argparse
import collections
import imaplib
import os
import pwd
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from imap_servers import DovecotIMAP, start_mailgw  # noqa: E402
from pop3 import DOMAIN, DOVECOT, PASSWORD, argon2, machine, write_passwd  # noqa: E402

USER = f"imaptest@{DOMAIN}"
USER2 = f"imaptest2@{DOMAIN}"
STRESS_CLIENTS = 10
STRESS_USERS = [f"stress{n}@{DOMAIN}" for n in range(1, STRESS_CLIENTS + 1)]
SCRIPT_TIMEOUT = 120.0
REPORT_LINES = 40  # of one script's failure report, in the printed report
_SUMMARY = re.compile(rb"(\d+) test groups: (\d+) failed, (\d+) skipped")
_COMMANDS = re.compile(rb": (\d+)/(\d+) individual commands failed")
# imaptest's stress errors: "Error: user[n]: what: detail" (the client and detail vary)
_MBOX_FROM = re.compile(rb"^From ", re.MULTILINE)
_MESSAGE_ID = re.compile(rb"^message-id:.*\n(?:[ \t].*\n)*", re.IGNORECASE | re.MULTILINE)
_STRESS_ERROR = re.compile(r"^Error: (?:[^ \[]+\[\d+\]: )?(.*)$")


class Result:
    """One compliance script's outcome on one server: passed, FAILED, skipped or ERROR."""

    def __init__(self, status: str, report: str = "") -> None:
        self.status = status
        self.report = report


def scripts(tests: Path) -> list[Path]:
    """imaptest's compliance scripts in ``tests``: every file but the .mbox sources."""
    return sorted(p for p in tests.iterdir() if p.is_file() and p.suffix != ".mbox")


def run_script(imaptest: Path, port: int, script: Path) -> Result:
    """Run one script against the server on ``port``; classify imaptest's own verdict."""
    command = [str(imaptest), "host=127.0.0.1", f"port={port}", f"user={USER}"]
    command += [f"user2={USER2}", f"pass={PASSWORD}", f"test={script}"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired as timeout:
        output = (timeout.stderr or b"").decode(errors="replace")
        return Result("ERROR", f"no verdict in {SCRIPT_TIMEOUT:.0f} s\n{output}")
    report = done.stderr.decode(errors="replace").strip()
    summary = _SUMMARY.search(done.stdout)
    if summary is None:
        return Result("ERROR", f"exit {done.returncode}, no summary\n{report}")
    if int(summary.group(2)):
        return Result("FAILED", report)
    # this imaptest counts a skipped script as neither failed nor skipped: it ran no command
    if not sum(int(total) for _, total in _COMMANDS.findall(done.stdout)):
        return Result("skipped")
    return Result("passed")


def required_capabilities(script: Path) -> list[str]:
    """The capabilities a script's header requires (imaptest skips it unless all announced)."""
    for line in script.read_bytes().split(b"\n"):
        if not line.strip():
            break
        key, _, value = line.decode(errors="replace").partition(":")
        if key.strip().lower() == "capabilities":
            return value.upper().split()
    return []


def announced(port: int) -> list[str]:
    """The capabilities the server announces after login: those imaptest checks."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.login(USER, PASSWORD)
        return client.capability()[1][0].decode().upper().split()
    finally:
        client.logout()


def stress_mbox(tests: Path, target: Path) -> Path:
    """One mbox of every message the scripts use, for the stress run's APPENDs, each given a
    Message-ID of its own: imaptest keys what it remembers of a message (ENVELOPE,
    BODYSTRUCTURE, sizes) by Message-ID, and the scripts' mboxes reuse a few."""
    count = 0
    with open(target, "wb") as out:
        for source in sorted(tests.glob("*.mbox")):
            for message in _MBOX_FROM.split(source.read_bytes())[1:]:
                separator, rest = message.split(b"\n", 1)
                head, blank, body = rest.partition(b"\n\n")
                head = _MESSAGE_ID.sub(b"", head + b"\n")
                count += 1
                out.write(b"From %s\nMessage-ID: <stress%d@imaptest>\n" % (separator, count))
                out.write(head + blank[1:] + body.rstrip(b"\n") + b"\n\n")
    return target


class Stress:
    """A stress run's outcome: imaptest's exit status, its errors counted by kind (numbers
    replaced by N, but in command names), and its totals of commands sent per command."""

    def __init__(self, status: int, errors: collections.Counter, totals: str) -> None:
        self.status = status
        self.errors = errors
        self.totals = totals


def stress(imaptest: Path, port: int, seconds: int, mbox: Path) -> Stress:
    """A random-command run of STRESS_CLIENTS sessions on STRESS_USERS for ``seconds``."""
    command = [str(imaptest), "host=127.0.0.1", f"port={port}", f"user=stress%d@{DOMAIN}"]
    command += [f"users={STRESS_CLIENTS}", f"pass={PASSWORD}", f"clients={STRESS_CLIENTS}"]
    command += [f"secs={seconds}", f"mbox={mbox}", "msgs=50"]
    done = subprocess.run(command, capture_output=True, timeout=seconds + 120)
    errors: collections.Counter = collections.Counter()
    for line in done.stderr.decode(errors="replace").splitlines():
        if line.startswith(("Error:", "Panic:", "Fatal:")):
            match = _STRESS_ERROR.match(line)
            kind = (match.group(1) if match else line).partition(": * ")[0]  # not the reply
            errors[re.sub(r"(?<![A-Z])\d+", "N", kind)[:160]] += 1
    stdout = done.stdout.decode(errors="replace")
    totals = stdout.rpartition("Totals:\n")[2].strip("\n") or "(no totals)"
    return Stress(done.returncode, errors, totals)


class Servers:
    """mailgw and/or Dovecot on loopback ports, each with imaptest's users, in ``base``."""

    def __init__(self, base: Path, against: str) -> None:
        self.base = base
        self.names = ["mailgw", "dovecot"] if against == "both" else [against]
        self.ports: dict[str, int] = {}
        self._running: list = []

    def __enter__(self) -> Servers:
        users = [USER, USER2, *STRESS_USERS]
        hashed = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
        if "mailgw" in self.names:
            (self.base / "data").mkdir(exist_ok=True)
            write_passwd(self.base / "data" / "passwd", users, hashed)
            mailgw = start_mailgw(self.base)
            self._running.append(mailgw)
            self.ports["mailgw"] = mailgw.ports["imap"]
        if "dovecot" in self.names:
            if not Path(DOVECOT).exists():
                raise SystemExit(f"{DOVECOT} is missing: apt-get install dovecot-imapd")
            owner = pwd.getpwnam("dovecot") if os.getuid() == 0 else None
            mail = self.base / "dovecot-mail"
            mail.mkdir(exist_ok=True)
            if owner is not None:
                os.chown(mail, owner.pw_uid, owner.pw_gid)
            write_passwd(self.base / "dovecot-passwd", users, hashed)
            dovecot = DovecotIMAP(self.base / "dovecot", mail, self.base / "dovecot-passwd", owner)
            self._running.append(dovecot.start())
            self.ports["dovecot"] = dovecot.port
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._running:
            server.stop()


def report(
    results: dict[str, dict[str, Result]],
    required: dict[str, list[str]],
    capabilities: dict[str, list[str]],
    stressed: dict[str, Stress],
) -> str:
    """The table (script -> verdict per server, and what its header requires), the totals, the
    capabilities each server lacks for its skipped scripts, the failures and the stress runs."""
    names = list(results)
    lines = [f"{'script':32}" + "".join(f" {name:>9}" for name in names) + "  requires"]
    for script, needs in required.items():
        verdicts = "".join(f" {results[name][script].status:>9}" for name in names)
        lines.append(f"{script:32}{verdicts}  {' '.join(needs)}".rstrip())
    for name in names:
        counts = collections.Counter(r.status for r in results[name].values())
        lines += ["", f"{name}: " + ", ".join(f"{counts[s]} {s}" for s in sorted(counts))]
        lines.append(f"  announces after login: {' '.join(capabilities[name])}")
        lacking: dict[str, list[str]] = collections.defaultdict(list)
        for script, needs in required.items():
            if results[name][script].status == "skipped":
                for capability in needs:
                    if capability not in capabilities[name]:
                        lacking[capability].append(script)
        for capability, skipped in sorted(lacking.items()):
            lines.append(f"  skipped, {capability} not announced: {' '.join(skipped)}")
    for name in names:
        for script, result in results[name].items():
            if result.report:
                shown = result.report.splitlines()
                if len(shown) > REPORT_LINES:
                    cut = len(shown) - REPORT_LINES
                    shown[REPORT_LINES:] = [f"(... {cut} more lines of imaptest's report)"]
                lines += ["", f"--- {name}: {script} {result.status}", *shown]
    for name, run in stressed.items():
        total = sum(run.errors.values())
        lines += ["", f"--- stress on {name}: {total} errors (imaptest exit {run.status})"]
        lines += [f"{count:6} {kind}" for kind, count in run.errors.most_common()]
        lines += ["commands sent:", run.totals]
    return "\n".join(lines)


def imaptest_version(imaptest: Path) -> str:
    """The version build.sh recorded beside the binary (0.0.0+COMMIT), or "unknown"."""
    recorded = imaptest.parent / "imaptest.version"
    return recorded.read_text().strip() if recorded.exists() else "unknown"


def main() -> None:
    """Start the servers, run the scripts and the stress run, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--imaptest", type=Path, default=HERE / "build" / "imaptest")
    parser.add_argument("--tests", type=Path, default=HERE / "build" / "tests")
    parser.add_argument("--against", choices=["mailgw", "dovecot", "both"], default="both")
    parser.add_argument("--stress", type=int, default=30, help="seconds of stress (0: none)")
    parser.add_argument("--dir", type=Path, help="where the servers keep their data")
    parser.add_argument(
        "--mailgw-src",
        type=Path,
        help="run the mailgw of this source tree (e.g. a git archive of a commit), not this one",
    )
    args = parser.parse_args()
    if args.mailgw_src is not None:
        # twistd (a child, given this environment) imports mailgw from here before the checkout
        os.environ["PYTHONPATH"] = str(args.mailgw_src.resolve())
    if not args.imaptest.exists():
        raise SystemExit(f"{args.imaptest} is missing: run bench/imaptest/build.sh first")
    with tempfile.TemporaryDirectory(prefix="mailgw-imaptest-") as scratch:
        base = args.dir or Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)  # Dovecot's processes (not root) walk into it
        started = time.perf_counter()
        found = scripts(args.tests)
        required = {script.name: required_capabilities(script) for script in found}
        with Servers(base, args.against) as servers:
            capabilities = {name: announced(port) for name, port in servers.ports.items()}
            results = {
                name: {script.name: run_script(args.imaptest, port, script) for script in found}
                for name, port in servers.ports.items()
            }
            stressed = {}
            if args.stress > 0:
                mbox = stress_mbox(args.tests, base / "stress.mbox")
                for name, port in servers.ports.items():
                    stressed[name] = stress(args.imaptest, port, args.stress, mbox)
        print(machine())
        print(f"imaptest {imaptest_version(args.imaptest)}, {time.strftime('%Y-%m-%d')}")
        print(report(results, required, capabilities, stressed))
        print(f"(whole run: {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
