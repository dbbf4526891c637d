"""Real SMTP clients from Debian packages (swaks, msmtp) against a live server and the real store.

Each test runs the client binary as a subprocess, then reads the recipient's INBOX: the message
must be there byte for byte after the ``Return-Path:``/``Received:`` lines mailgw adds, or the
client must have been refused with the expected reply.  CI installs both through ``.ci/run``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import LiveServer, make_config, stored, without_trace

from mailgw.smtp import make_factory
from mailgw.tls import generated_paths

ALICE = "alice@example.test"
PASSWORD = "correct horse"
#: The DATA the clients send (line ends as swaks and msmtp put them on the wire: CRLF).
MESSAGE = (
    b"From: Carol <carol@remote.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Date: Tue, 01 Apr 2025 10:00:00 +0000\r\n"
    b"Message-ID: <client-test@remote.test>\r\n"
    b"Subject: from a real client\r\n"
    b"\r\n"
    b"Hello Alice,\r\n"
    b".a line starting with a dot\r\n"
    b"..two dots\r\n"
    b"caf\xc3\xa9 8bit\r\n"
)
CLIENT_TIMEOUT = 30
#: A server line in a swaks transcript: ``<-`` plain, ``<~`` under TLS, ``*`` marks an error.
_SERVER_LINE = re.compile(rb"^<[-~]\*?\s+(.*?)\r?$", re.M)


def need(binary: str) -> str:
    """The path of a client binary, or skip the test when it is not installed."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (CI installs it from .ci/run's APT_PACKAGES)")
    return path


@pytest.fixture
def tls_server(tmp_path: Path):
    """A live server that offers AUTH only under TLS, with user alice, an MX and a submission
    listener (ports in ``mx_port`` and ``submission_port``)."""
    srv = LiveServer(make_config(tmp_path / "data", allow_plaintext=False))
    srv.add_user(ALICE, PASSWORD)
    srv.mx_port = srv.listen(make_factory)
    srv.submission_port = srv.listen(make_factory, submission=True)
    yield srv
    srv.close()


def swaks(port: int, tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    """Run swaks against 127.0.0.1:port sending MESSAGE from carol to alice; return the result."""
    data = tmp_path / "message.eml"
    # swaks ends the DATA with "\r\n.": give it the message without its final line end.
    data.write_bytes(MESSAGE[:-2])
    command = [
        need("swaks"),
        "--server",
        "127.0.0.1",
        "--port",
        str(port),
        "--helo",
        "client.remote.test",
        "--from",
        "carol@remote.test",
        "--to",
        ALICE,
        "--data",
        f"@{data}",
        "--timeout",
        "20",
        *options,
    ]
    return subprocess.run(command, capture_output=True, timeout=CLIENT_TIMEOUT, check=False)


def server_lines(result: subprocess.CompletedProcess) -> list[bytes]:
    """The server's replies in a swaks transcript (lines swaks marks with ``<-`` or ``<~``)."""
    return [match.group(1) for match in _SERVER_LINE.finditer(result.stdout)]


def assert_delivered(server: LiveServer, result: subprocess.CompletedProcess) -> bytes:
    """Assert the client succeeded and alice got MESSAGE exactly; return the stored message."""
    assert result.returncode == 0, result.stdout.decode(errors="replace")
    [message] = stored(server, ALICE)
    assert without_trace(message) == MESSAGE
    return message


def test_swaks_plain_delivery_to_mx(tls_server, tmp_path):
    result = swaks(tls_server.mx_port, tmp_path)
    message = assert_delivered(tls_server, result)
    assert b"with ESMTP id " in message
    assert any(line.startswith(b"250 2.0.0 OK: queued as ") for line in server_lines(result))


def test_swaks_starttls_to_mx(tls_server, tmp_path):
    cert, _key = generated_paths(tls_server.config)
    result = swaks(
        tls_server.mx_port, tmp_path, "--tls", "--tls-verify", "--tls-ca-path", str(cert)
    )
    # swaks checks the certificate against the CA file but not the name: 127.0.0.1 is fine.
    message = assert_delivered(tls_server, result)
    assert b"with ESMTPS id " in message
    assert b"TLS started" in result.stdout


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_auth_over_starttls_on_submission(tls_server, tmp_path, mechanism):
    result = swaks(
        tls_server.submission_port,
        tmp_path,
        "--tls",
        "--auth",
        mechanism,
        "--auth-user",
        ALICE,
        "--auth-password",
        PASSWORD,
        "--from",
        ALICE,
    )
    message = assert_delivered(tls_server, result)
    assert message.startswith(b"Return-Path: <alice@example.test>\r\n")
    assert b"with ESMTPSA id " in message
    assert b"235 2.7.0 Authentication successful" in server_lines(result)


def test_swaks_wrong_password_is_refused(tls_server, tmp_path):
    result = swaks(
        tls_server.submission_port,
        tmp_path,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        ALICE,
        "--auth-password",
        "wrong",
        "--from",
        ALICE,
    )
    assert result.returncode != 0
    assert b"535 5.7.8 Authentication credentials invalid" in server_lines(result)
    assert stored(tls_server, ALICE) == []


def test_swaks_no_auth_offered_without_tls(tls_server, tmp_path):
    result = swaks(
        tls_server.submission_port,
        tmp_path,
        "--auth",
        "PLAIN",
        "--auth-user",
        ALICE,
        "--auth-password",
        PASSWORD,
        "--from",
        ALICE,
    )
    assert result.returncode != 0
    assert not any(line.startswith(b"250-AUTH") for line in server_lines(result))
    assert stored(tls_server, ALICE) == []


def test_swaks_pipelining(tls_server, tmp_path):
    result = swaks(tls_server.mx_port, tmp_path, "--pipeline")
    assert_delivered(tls_server, result)
    replies = server_lines(result)
    assert b"250-PIPELINING" in replies
    # MAIL, RCPT and DATA went out in one batch and got their three replies in order.
    start = replies.index(b"250 2.1.0 Sender OK")
    assert replies[start : start + 3] == [
        b"250 2.1.0 Sender OK",
        b"250 2.1.5 Recipient OK",
        b"354 End data with <CR><LF>.<CR><LF>",
    ]


def msmtprc(server: LiveServer, tmp_path: Path, sender: str, password: str) -> Path:
    """An msmtp configuration for the submission port: STARTTLS trusting the generated
    certificate, checked against the server's host name, and AUTH as alice."""
    cert, _key = generated_paths(server.config)
    rc = tmp_path / "msmtprc"
    rc.write_text(
        "\n".join(
            [
                "defaults",
                "syslog off",
                f"logfile {tmp_path / 'msmtp.log'}",
                "account submission",
                "host 127.0.0.1",
                f"port {server.submission_port}",
                "domain client.remote.test",
                "tls on",
                "tls_starttls on",
                f"tls_trust_file {cert}",
                f"tls_host_override {server.config.hostname}",
                "auth on",
                f"user {ALICE}",
                f"password {password}",
                f"from {sender}",
                "account default : submission",
                "",
            ]
        )
    )
    rc.chmod(0o600)
    return rc


def msmtp(rc: Path, message: bytes) -> subprocess.CompletedProcess:
    """Send ``message`` (CRLF or LF lines) to alice with msmtp and the configuration ``rc``."""
    return subprocess.run(
        [need("msmtp"), "-C", str(rc), ALICE],
        input=message,
        capture_output=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )


def test_msmtp_submission_starttls_and_auth(tls_server, tmp_path):
    rc = msmtprc(tls_server, tmp_path, ALICE, PASSWORD)
    result = msmtp(rc, MESSAGE)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    [message] = stored(tls_server, ALICE)
    assert without_trace(message) == MESSAGE
    assert message.startswith(b"Return-Path: <alice@example.test>\r\n")
    assert b"with ESMTPSA id " in message


def test_msmtp_sender_not_owned_is_refused(tls_server, tmp_path):
    rc = msmtprc(tls_server, tmp_path, "mallory@example.test", PASSWORD)
    result = msmtp(rc, MESSAGE)
    assert result.returncode != 0
    assert b"553 5.7.1" in result.stderr
    assert stored(tls_server, ALICE) == []


def test_msmtp_wrong_password_is_refused(tls_server, tmp_path):
    rc = msmtprc(tls_server, tmp_path, ALICE, "wrong")
    result = msmtp(rc, MESSAGE)
    assert result.returncode != 0
    assert b"535 5.7.8" in result.stderr
    assert stored(tls_server, ALICE) == []
