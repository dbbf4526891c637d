"""SIGKILL during a stream of deliveries: every acknowledged message survives whole.

Nothing half-written is ever visible in new/ or cur/.
"""

from __future__ import annotations

import email
import hashlib
import poplib
import smtplib
import threading
import time

from mailgw_process import ServerProcess, mailgw, write_config

ALICE = "alice@example.test"
PASSWORD = "pw-for-crash-test"
CLIENTS = 3


def _message(tag: str) -> bytes:
    """A message whose body proves it is whole: a payload and its digest on the last line."""
    payload = b"".join(
        hashlib.sha256(f"{tag}/{i}".encode()).hexdigest().encode() + b"\r\n" for i in range(400)
    )
    digest = hashlib.sha256(payload).hexdigest().encode()
    return (
        b"From: load@elsewhere.test\r\nTo: "
        + ALICE.encode()
        + b"\r\nSubject: "
        + tag.encode()
        + b"\r\n\r\n"
        + payload
        + b"digest "
        + digest
        + b"\r\n"
    )


def _is_whole(data: bytes) -> bool:
    body = data.split(b"\r\n\r\n", 1)[1]
    payload, _, last = body.rpartition(b"digest ")
    return last.strip() == hashlib.sha256(payload).hexdigest().encode()


class Sender(threading.Thread):
    """Sends messages over one SMTP connection until told to stop or the server goes away.

    Keeps the tags the server acknowledged (in the shared ``acked``) and every error it met: how
    many, and the last one with when it came (before or after the kill), for the failure
    message."""

    def __init__(self, port: int, prefix: str, acked: list, stop: threading.Event) -> None:
        super().__init__(name=f"sender-{prefix}", daemon=True)
        self.port, self.prefix, self.acked, self.stop = port, prefix, acked, stop
        self.sent = 0
        self.errors = 0
        self.last_error: tuple[float, BaseException] | None = None
        self.killed_at: float | None = None

    def run(self) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
                while not self.stop.is_set():
                    tag = f"{self.prefix}-{self.sent}"
                    try:
                        smtp.sendmail("load@elsewhere.test", [ALICE], _message(tag))
                    except smtplib.SMTPResponseException as refused:  # not acked; go on
                        self._failed(refused)
                        continue
                    self.acked.append(tag)
                    self.sent += 1
        except (OSError, smtplib.SMTPException) as lost:
            self._failed(lost)  # the server was killed under us (or hung up before that)

    def _failed(self, error: BaseException) -> None:
        self.errors += 1
        self.last_error = (time.monotonic(), error)

    def report(self) -> str:
        """One line: what was sent, and the errors."""
        line = f"{self.name}: {self.sent} acked, {self.errors} error(s)"
        if self.last_error is not None:
            at, error = self.last_error
            when = ""
            if self.killed_at is not None:
                when = " before the kill" if at < self.killed_at else " after the kill"
            line += f"; last{when}: {error!r}"
        if self.is_alive():
            line += " (still running)"
        return line


def _diagnostics(server: ServerProcess, senders: list[Sender], lines: int = 60) -> str:
    """What to print when the test fails: the senders' errors and the end of the server's log."""
    try:
        log = server.log.read_text(errors="replace").splitlines()[-lines:]
    except OSError as error:
        log = [f"(no log: {error})"]
    return "\n".join(
        ["", "senders:", *(f"  {s.report()}" for s in senders), f"{server.log} (tail):", *log]
    )


def _read_back(port: int) -> list[bool]:
    """Over POP3: for each message in the maildrop, is it whole?"""
    pop = poplib.POP3("127.0.0.1", port, timeout=10)
    pop.user(ALICE)
    pop.pass_(PASSWORD)
    count, _ = pop.stat()
    whole = [_is_whole(b"\r\n".join(pop.retr(i)[1])) for i in range(1, count + 1)]
    pop.quit()
    return whole


def test_kill_during_deliveries_loses_nothing_acknowledged(tmp_path):
    """Three rounds of SIGKILL at different moments under load; every acked message stays whole."""
    config = write_config(tmp_path, services=("smtp", "pop3"))
    (tmp_path / "data").mkdir()
    assert mailgw(config, "user", "add", ALICE, "--password-stdin", stdin=PASSWORD).returncode == 0
    server = ServerProcess(config)
    acked: list[str] = []
    senders: list[Sender] = []
    for round_, wait_for in enumerate((5, 23, 41)):
        server.start()
        stop = threading.Event()
        batch = [
            Sender(server.ports["smtp"], f"r{round_}c{c}", acked, stop) for c in range(CLIENTS)
        ]
        senders += batch
        for sender in batch:
            sender.start()
        deadline = time.monotonic() + 30
        start_count = len(acked)
        while len(acked) - start_count < wait_for and time.monotonic() < deadline:
            time.sleep(0.001)
        killed_at = time.monotonic()
        server.kill()
        stop.set()
        for sender in batch:
            sender.killed_at = killed_at
            sender.join(timeout=15)
        got = len(acked) - start_count
        assert got >= wait_for, (
            f"round {round_}: the load never got going ({got} of {wait_for} acked in 30 s)"
            + _diagnostics(server, senders)
        )

    maildir = tmp_path / "data" / "mail" / "example.test" / "alice"
    files = [p for sub in ("new", "cur") for p in (maildir / sub).iterdir()]
    subjects = []
    for path in files:
        data = path.read_bytes()
        assert _is_whole(data), f"half-written message visible: {path.name}" + _diagnostics(
            server, senders
        )
        subjects.append(email.message_from_bytes(data)["Subject"])
    duplicates = sorted({s for s in subjects if subjects.count(s) > 1})
    assert not duplicates, f"stored twice: {duplicates}" + _diagnostics(server, senders)
    lost = sorted(set(acked) - set(subjects))
    assert not lost, f"lost: {lost}" + _diagnostics(server, senders)

    server.start()
    whole, failed = [], None
    try:
        whole = _read_back(server.ports["pop3"])
    except (OSError, poplib.error_proto) as error:
        failed = error
    finally:
        status = server.stop()
    assert failed is None, f"POP3 read back failed: {failed!r}" + _diagnostics(server, senders)
    assert len(whole) == len(files), (
        f"POP3 shows {len(whole)} messages, the maildir holds {len(files)}"
        + _diagnostics(server, senders)
    )
    assert all(whole), f"POP3 read back a broken message: {whole}" + _diagnostics(server, senders)
    assert status == 0, f"the server exited {status} on SIGTERM" + _diagnostics(server, senders)
