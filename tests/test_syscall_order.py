"""The system calls of the real server, as strace sees them: durable first, reply after.

``twistd -n mailgw`` runs under ``strace -f``; one SMTP delivery, one POP3 DELE + QUIT and one
IMAP STORE \\Deleted + EXPUNGE go through it, and the trace must show, for each, the file written
and fsync'd, its link, rename or unlink, the fsync of its directory (an fd opened O_DIRECTORY on
it) and, for a delivery, its index line written and fsync'd, all finished before the reply is
written to the client's socket.

strace -f writes one file in time order across threads; a call another thread interrupts is
split into ``<unfinished ...>`` and ``<... resumed>`` lines, which the parser joins again.  The
fds are those of one process (threads share them), so the latest ``openat`` that returned an fd
says what a later call on that fd refers to.
"""

from __future__ import annotations

import codecs
import imaplib
import os
import poplib
import re
import shutil
import signal
import smtplib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from mailgw_process import ServerProcess, mailgw, write_config

ALICE = "alice@example.test"
PASSWORD = "pw-for-strace"
TRACED = (
    "openat,write,writev,pwrite64,fsync,fdatasync,link,linkat,rename,renameat,renameat2,"
    "unlink,unlinkat,sendto,sendmsg"
)
SENDS = ("write", "writev", "sendto", "sendmsg")
FSYNCS = ("fsync", "fdatasync")


def _strace() -> str:
    """strace's path, or skip: not installed, or ptrace not permitted (a container's seccomp)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (Debian package strace)")
    probe = subprocess.run(
        [strace, "-f", "-o", os.devnull, "true"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here (ptrace not permitted?): {probe.stderr.strip()}")
    return strace


# -- the trace --------------------------------------------------------------------------------

_LINE = re.compile(r"(\d+) +\d\d:\d\d:\d\d\.\d+ (.*)")
_CALL = re.compile(r"(\w+)\((.*)\) += (.*)")
_UNFINISHED = re.compile(r"(\w+)\((.*) <unfinished \.\.\.>")
_RESUMED = re.compile(r"<\.\.\. (\w+) resumed>(.*)\) += (.*)")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FD = re.compile(r"(\d+)<(.*?)>")


@dataclass
class Call:
    """One completed system call: made at line ``begun``, returned at line ``line``."""

    begun: int
    line: int
    pid: int
    name: str
    args: str
    result: str

    def strings(self) -> list[bytes]:
        """Its string arguments (paths, data), unescaped (each at most strace's ``-s``)."""
        return [codecs.escape_decode(s.encode())[0] for s in _STRING.findall(self.args)]

    def fd(self) -> tuple[int, str] | None:
        """Its first argument as (fd, what -yy says it is: a path or ``TCP:[...]``)."""
        match = _FD.match(self.args)
        return (int(match[1]), match[2]) if match else None

    def returned_fd(self) -> tuple[int, str] | None:
        """The fd it returned (openat), with its path."""
        match = _FD.match(self.result)
        return (int(match[1]), match[2]) if match else None

    def __str__(self) -> str:
        return f"line {self.line}: {self.pid} {self.name}({self.args[:160]}) = {self.result}"


def parse(text: str) -> list[Call]:
    """The completed calls of an ``strace -f -tt`` output, in the order they returned."""
    calls, pending = [], {}
    for number, line in enumerate(text.splitlines()):
        match = _LINE.fullmatch(line)
        if match is None:
            continue
        pid, rest = int(match[1]), match[2]
        if unfinished := _UNFINISHED.fullmatch(rest):
            pending[pid] = (unfinished[1], unfinished[2], number)
        elif resumed := _RESUMED.fullmatch(rest):
            name, head, begun = pending.pop(pid, (resumed[1], "", number))
            calls.append(Call(begun, number, pid, name, head + resumed[2], resumed[3]))
        elif call := _CALL.fullmatch(rest):
            calls.append(Call(number, number, pid, call[1], call[2], call[3]))
    return calls


class Trace:
    """Questions about a parsed trace."""

    def __init__(self, calls: list[Call]) -> None:
        self.calls = calls

    def first(self, what: str, match, after: int = -1) -> Call:
        """The first call returning after line ``after`` for which ``match(call)``; fail if none."""
        for call in self.calls:
            if call.line > after and match(call):
                return call
        raise AssertionError(f"the trace has no {what} after line {after}")

    def opening(self, call: Call) -> Call | None:
        """The openat that returned the fd ``call`` works on, the latest before it."""
        fd = call.fd()
        found = None
        for other in self.calls:
            if other.line >= call.begun:
                break
            returned = other.returned_fd()
            if other.name == "openat" and returned and fd and returned[0] == fd[0]:
                found = other
        return found

    def on_file(self, call: Call, path: Path, directory: bool = False) -> bool:
        """Is ``call``'s fd one opened on ``path`` (with O_DIRECTORY if ``directory``)?"""
        opened = self.opening(call)
        if opened is None or opened.returned_fd()[1] != str(path):
            return False
        return not directory or "O_DIRECTORY" in opened.args

    def reply(self, text: bytes, after: int = -1) -> Call:
        """The first write to a TCP socket carrying ``text``."""
        return self.first(
            f"reply {text!r} sent",
            lambda c: (
                c.name in SENDS
                and (c.fd() or (0, ""))[1].startswith("TCP:")
                and any(text in s for s in c.strings())
            ),
            after,
        )

    def dir_synced(self, directory: Path, after: int) -> Call:
        """The first fsync of ``directory`` (an fd opened on it with O_DIRECTORY)."""
        return self.first(
            f"fsync of {directory}",
            lambda c: c.name in FSYNCS and self.on_file(c, directory, directory=True),
            after,
        )


def in_order(*steps: tuple[str, Call]) -> None:
    """Each step returned before the next one was made."""
    for (name, call), (next_name, next_call) in zip(steps, steps[1:], strict=False):
        assert call.line < next_call.begun, f"{name} ({call}) not before {next_name} ({next_call})"


# -- the test ---------------------------------------------------------------------------------


def _children(wrapper: subprocess.Popen) -> list[int]:
    """The traced twistd (strace's child), to signal: signals sent to strace are blocked."""
    try:
        return [
            int(pid)
            for pid in Path(f"/proc/{wrapper.pid}/task/{wrapper.pid}/children").read_text().split()
        ]
    except OSError:
        return []


def _stop(server: ServerProcess) -> None:
    """SIGTERM twistd, then wait for strace to write the rest of the trace and exit."""
    if server.process is None or server.process.poll() is not None:
        return
    try:
        for pid in _children(server.process):
            os.kill(pid, signal.SIGTERM)
        server.process.wait(timeout=20)
    finally:
        if server.process.poll() is None:  # never leave a detached twistd behind
            for pid in _children(server.process):
                os.kill(pid, signal.SIGKILL)
            server.process.kill()
            server.process.wait(timeout=10)


def _only_file(directory: Path) -> Path:
    [path] = list(directory.iterdir())
    return path


def test_durable_steps_come_before_the_reply(tmp_path):
    """SMTP DATA, POP3 DELE + QUIT, IMAP STORE + EXPUNGE: on disk for good before the reply."""
    strace = _strace()
    tmp_path = tmp_path.resolve()  # as -yy shows the paths of fds
    config = write_config(tmp_path, services=("smtp", "pop3", "imap"))
    (tmp_path / "data").mkdir()
    assert mailgw(config, "user", "add", ALICE, "--password-stdin", stdin=PASSWORD).returncode == 0
    trace_file = tmp_path / "strace.txt"
    wrapper = (strace, "-f", "-tt", "-yy", "-s", "200", "-e", f"trace={TRACED}", "-o")
    server = ServerProcess(config, wrapper=(*wrapper, str(trace_file)))
    inbox = tmp_path / "data" / "mail" / "example.test" / "alice"
    new, cur = inbox / "new", inbox / "cur"
    try:
        server.start()
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
            client.sendmail("a@elsewhere.test", [ALICE], b"Subject: one\r\n\r\nby SMTP\r\n")
        delivered = _only_file(new)
        size = delivered.stat().st_size

        pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
        pop.user(ALICE)
        pop.pass_(PASSWORD)
        pop.dele(1)
        pop.quit()
        assert not delivered.exists()

        imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
        imap.login(ALICE, PASSWORD)
        imap.append("INBOX", None, None, b"Subject: two\r\n\r\nby APPEND\r\n")
        imap.select("INBOX")
        assert imap.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
        flagged = _only_file(cur)
        assert flagged.name.endswith("T"), flagged
        assert imap.expunge()[0] == "OK"
        imap.logout()
        assert not flagged.exists()
    finally:
        _stop(server)
    trace = Trace(parse(trace_file.read_text(errors="replace")))

    # SMTP: the spool file written and fsync'd, linked into new/, indexed, new/ fsync'd; 250.
    link = trace.first(
        f"link to {delivered}",
        lambda c: c.name in ("link", "linkat") and c.strings()[-1] == os.fsencode(delivered),
    )
    spool = Path(os.fsdecode(link.strings()[0]))
    writes = [c for c in trace.calls if c.name == "write" and trace.on_file(c, spool)]
    assert writes and sum(int(c.result) for c in writes) == size, writes
    file_synced = trace.first(
        f"fsync of {spool}",
        lambda c: c.name in FSYNCS and trace.on_file(c, spool),
        after=writes[-1].line,
    )
    uidlist = inbox / "dovecot-uidlist"
    indexed = trace.first(
        "the index line written",
        lambda c: (
            c.name == "write"
            and trace.on_file(c, uidlist)
            and os.fsencode(delivered.name) in c.strings()[0]
        ),
    )
    index_synced = trace.first(
        "fsync of the index",
        lambda c: c.name in FSYNCS and trace.on_file(c, uidlist),
        after=indexed.line,
    )
    new_synced = trace.dir_synced(new, after=link.line)
    accepted = trace.reply(b"250 2.0.0 OK: queued as ")
    in_order(("the last data write", writes[-1]), ("its fsync", file_synced), ("link", link))
    in_order(("link", link), ("the fsync of new/", new_synced), ("250", accepted))
    in_order(("index line", indexed), ("its fsync", index_synced), ("250", accepted))

    # POP3 QUIT after DELE: the file unlinked, new/ fsync'd; then +OK.
    unlink = trace.first(
        f"unlink of {delivered}",
        lambda c: c.name in ("unlink", "unlinkat") and c.strings()[0] == os.fsencode(delivered),
    )
    signed_off = trace.reply(b"POP3 server signing off")
    assert signed_off.strings()[0].startswith(b"+OK ")
    new_synced = trace.dir_synced(new, after=unlink.line)
    in_order(("unlink", unlink), ("the fsync of new/", new_synced), ("+OK", signed_off))

    # IMAP STORE \Deleted: renamed to ...:2,T in cur/, cur/ fsync'd; then OK.  EXPUNGE: the
    # file unlinked, cur/ fsync'd; then OK.
    renamed = trace.first(
        f"rename to {flagged}",
        lambda c: c.name.startswith("rename") and c.strings()[-1] == os.fsencode(flagged),
    )
    stored = trace.reply(b" OK STORE completed")
    cur_synced = trace.dir_synced(cur, after=renamed.line)
    in_order(("rename", renamed), ("the fsync of cur/", cur_synced), ("STORE OK", stored))
    expunged = trace.first(
        f"unlink of {flagged}",
        lambda c: c.name in ("unlink", "unlinkat") and c.strings()[0] == os.fsencode(flagged),
    )
    completed = trace.reply(b" OK EXPUNGE completed")
    cur_synced = trace.dir_synced(cur, after=expunged.line)
    in_order(("unlink", expunged), ("the fsync of cur/", cur_synced), ("EXPUNGE OK", completed))
