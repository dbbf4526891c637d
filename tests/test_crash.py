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


def _sender(port: int, prefix: str, acked: list, stop: threading.Event) -> None:
    n = 0
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            while not stop.is_set():
                tag = f"{prefix}-{n}"
                smtp.sendmail("load@elsewhere.test", [ALICE], _message(tag))
                acked.append(tag)
                n += 1
    except (OSError, smtplib.SMTPException):
        return  # the server was killed under us: only what was acknowledged counts


def test_kill_during_deliveries_loses_nothing_acknowledged(tmp_path):
    """Three rounds of SIGKILL at different moments under load; every acked message stays whole."""
    config = write_config(tmp_path, services=("smtp", "pop3"))
    (tmp_path / "data").mkdir()
    assert mailgw(config, "user", "add", ALICE, "--password-stdin", stdin=PASSWORD).returncode == 0
    server = ServerProcess(config)
    acked: list[str] = []
    for round_, wait_for in enumerate((5, 23, 41)):
        server.start()
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_sender, args=(server.ports["smtp"], f"r{round_}c{c}", acked, stop)
            )
            for c in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        start_count = len(acked)
        while len(acked) - start_count < wait_for and time.monotonic() < deadline:
            time.sleep(0.001)
        server.kill()
        stop.set()
        for t in threads:
            t.join(timeout=15)
        assert len(acked) - start_count >= wait_for, "the load never got going"

    maildir = tmp_path / "data" / "mail" / "example.test" / "alice"
    files = [p for sub in ("new", "cur") for p in (maildir / sub).iterdir()]
    subjects = []
    for path in files:
        data = path.read_bytes()
        assert _is_whole(data), f"half-written message visible: {path.name}"
        subjects.append(email.message_from_bytes(data)["Subject"])
    assert len(subjects) == len(set(subjects)), "a message was stored twice"
    assert set(acked) <= set(subjects), f"lost: {sorted(set(acked) - set(subjects))}"

    server.start()
    try:
        pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
        pop.user(ALICE)
        pop.pass_(PASSWORD)
        count, _ = pop.stat()
        assert count == len(files)
        whole = [_is_whole(b"\r\n".join(pop.retr(i)[1])) for i in range(1, count + 1)]
        assert all(whole)
        pop.quit()
    finally:
        assert server.stop() == 0
