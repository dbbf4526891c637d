"""``mailgw testserver`` as another language's test suite uses it: a real subprocess, real clients.

The server's endpoints come from its first line of output; mail goes in with smtplib (STARTTLS
verified against the printed CA), and everything else goes through the HTTP JSON API with urllib,
as a curl-using shell script would.
"""

from __future__ import annotations

import base64
import imaplib
import json
import poplib
import shlex
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import pytest

MAILGW = Path(sys.executable).parent / "mailgw"
SERVICES = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")


@contextmanager
def running(*options: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``mailgw testserver`` with ``options``: the process and its first line of output.

    Killed at the end if the test has not stopped it."""
    process = subprocess.Popen(
        [str(MAILGW), "testserver", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        if not line:
            pytest.fail(f"mailgw testserver printed nothing: {process.stderr.read()}")
        yield process, line
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def terminate(process: subprocess.Popen, signum: int = signal.SIGTERM) -> int:
    """Send ``signum`` and return the exit status."""
    process.send_signal(signum)
    try:
        return process.wait(timeout=10)
    finally:
        process.stdout.close()
        process.stderr.close()


@pytest.fixture(scope="module")
def testserver():
    """The endpoints of one ``mailgw testserver --json`` shared by this module's tests."""
    with running("--json", "--user", "carol@example.test:carols-password") as (process, line):
        yield json.loads(line)
        assert terminate(process) == 0


def api(info: dict, method: str, path: str, body: object = None) -> tuple[int, object]:
    """Call the HTTP API; return the status and the decoded JSON (or raw bytes) answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(info["http_url"] + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            status, content_type, payload = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, content_type, payload = error.code, error.headers, error.read()
    if content_type.get_content_type() == "application/json":
        return status, json.loads(payload)
    return status, payload


def send(info: dict, recipients: list[str], subject: str) -> None:
    """Send one message over SMTP with STARTTLS, verifying the server against the CA file."""
    message = EmailMessage()
    message["From"] = "app@sender.test"
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message.set_content(f"This is {subject}.\n")
    context = ssl.create_default_context(cafile=info["cafile"])
    with smtplib.SMTP(info["host"], info["smtp_port"], timeout=10) as client:
        client.starttls(context=context)
        client.send_message(message, to_addrs=recipients)


def test_every_printed_endpoint_answers(testserver):
    assert set(testserver) == {f"{name}_port" for name in SERVICES} | {
        "host",
        "cafile",
        "data_dir",
        "http_url",
    }
    for name in SERVICES:
        socket.create_connection((testserver["host"], testserver[f"{name}_port"]), 5).close()
    assert Path(testserver["cafile"]).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert api(testserver, "GET", "") == (200, testserver)


def test_wait_returns_as_soon_as_the_mail_arrives(testserver):
    sender = threading.Timer(0.3, send, (testserver, ["dave@anywhere.test"], "long poll arrival"))
    started = time.monotonic()
    sender.start()
    try:
        status, answer = api(
            testserver, "POST", "wait", {"subject": "long poll arrival", "timeout": 10}
        )
    finally:
        sender.join()
    elapsed = time.monotonic() - started
    assert status == 200
    assert 0.3 <= elapsed < 2
    [message] = answer["messages"]
    assert message["envelope_from"] == "app@sender.test"
    assert message["envelope_to"] == ["dave@anywhere.test"]
    assert message["address"] == "dave@anywhere.test"

    status, listed = api(testserver, "GET", "messages?address=dave@anywhere.test")
    assert listed["messages"] == answer["messages"]
    status, raw = api(testserver, "GET", f"messages/dave@anywhere.test/INBOX/{message['uid']}")
    assert status == 200
    assert b"Subject: long poll arrival\r\n" in raw
    assert raw.endswith(b"This is long poll arrival.\r\n")
    status, described = api(
        testserver, "GET", f"messages/dave@anywhere.test/INBOX/{message['uid']}?format=json"
    )
    assert base64.b64decode(described["raw_base64"]) == raw


def test_wait_times_out_with_408_and_what_is_there(testserver):
    started = time.monotonic()
    status, answer = api(
        testserver, "POST", "wait", {"subject": "never sent", "count": 1, "timeout": 0.3}
    )
    assert status == 408
    assert time.monotonic() - started >= 0.3
    assert answer["messages"] == []
    assert "0 of 1" in answer["error"]


def test_added_user_logs_in_over_imap_and_reads_seeded_mail(testserver):
    assert api(
        testserver, "POST", "users", {"address": "erin@example.test", "password": "erins-pw"}
    ) == (200, {"address": "erin@example.test"})
    status, seeded = api(
        testserver,
        "POST",
        "deliver",
        {"address": "erin@example.test", "message": "Subject: seeded\n\nhello erin\n"},
    )
    assert status == 200
    context = ssl.create_default_context(cafile=testserver["cafile"])
    with imaplib.IMAP4(testserver["host"], testserver["imap_port"], timeout=10) as client:
        client.starttls(context)
        client.login("erin@example.test", "erins-pw")
        client.select("INBOX")
        typ, data = client.uid("FETCH", str(seeded["uid"]), "(BODY.PEEK[])")
        assert typ == "OK"
        assert data[0][1] == b"Subject: seeded\r\n\r\nhello erin\r\n"
        with pytest.raises(imaplib.IMAP4.error):
            client.login("erin@example.test", "wrong")


def test_seeded_base64_mail_is_read_over_pop3(testserver):
    message = b"Subject: binary\r\n\r\n\xe9t\xe9\r\n"
    status, _ = api(
        testserver,
        "POST",
        "deliver",
        {
            "address": "carol@example.test",
            "message_base64": base64.b64encode(message).decode(),
            "flags": ["\\Seen"],
        },
    )
    assert status == 200
    context = ssl.create_default_context(cafile=testserver["cafile"])
    client = poplib.POP3_SSL(testserver["host"], testserver["pop3s_port"], context=context)
    try:
        client.user("carol@example.test")
        client.pass_("carols-password")
        _, lines, _ = client.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == message
    finally:
        client.quit()


def test_smtp_fault_is_seen_by_smtplib_until_cleared(testserver):
    status, fault = api(
        testserver,
        "POST",
        "faults",
        {"protocol": "smtp", "step": "rcpt", "reply": "550 5.1.1 gone", "times": None},
    )
    assert status == 200
    _, listed = api(testserver, "GET", "faults")
    assert [entry["id"] for entry in listed["faults"]] == [fault["id"]]
    for _ in range(2):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            send(testserver, ["frank@example.test"], "refused")
        assert refused.value.recipients["frank@example.test"][0] == 550
    assert api(testserver, "GET", "faults")[1]["faults"][0]["hits"] == 2
    assert api(testserver, "DELETE", "faults") == (200, {})
    send(testserver, ["frank@example.test"], "accepted")
    status, answer = api(testserver, "POST", "wait", {"address": "frank@example.test"})
    assert [m["subject"] for m in answer["messages"]] == ["accepted"]


def test_clear_empties_every_mailbox(testserver):
    api(testserver, "POST", "deliver", {"address": "gina@example.test", "message": "x\n"})
    assert api(testserver, "GET", "messages")[1]["messages"]
    assert api(testserver, "POST", "clear") == (200, {})
    assert api(testserver, "GET", "messages") == (200, {"messages": []})


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("GET", "nowhere", None, 404, "no such resource"),
        ("DELETE", "messages", None, 405, "not allowed"),
        ("GET", "messages/nobody@example.test/INBOX/1", None, 404, "no message 1"),
        ("GET", "messages/nobody@example.test/INBOX/x", None, 400, "not a UID"),
        ("GET", "messages?address=no-at-sign", None, 400, "@"),
        ("POST", "wait", [], 400, "JSON object"),
        ("POST", "wait", {"count": "2"}, 400, "'count'"),
        ("POST", "wait", {"timeout": 10_000}, 400, "'timeout'"),
        ("POST", "users", {"address": "h@example.test"}, 400, "'password' is required"),
        ("POST", "users", {"address": "carol@example.test", "password": "p"}, 400, "exists"),
        ("POST", "deliver", {"address": "h@example.test", "message": 3}, 400, "string"),
        ("POST", "deliver", {"address": "h@example.test", "message_base64": "*"}, 400, "base64"),
        ("POST", "faults", {"protocol": "smtp", "step": "nope", "reply": "550"}, 400, "step"),
        ("POST", "faults", {"protocol": "smtp", "step": "rcpt", "color": 1}, 400, "color"),
    ],
)
def test_bad_requests_get_a_json_error(testserver, method, path, body, status, error):
    got_status, answer = api(testserver, method, path, body)
    assert got_status == status
    assert error in answer["error"]


def test_malformed_json_is_a_400(testserver):
    request = urllib.request.Request(testserver["http_url"] + "users", data=b"{", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400
    assert "not JSON" in json.loads(refused.value.read())["error"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_environment_output_and_clean_stop(signum):
    with running("--no-catch-all", "--domain", "other.test") as (process, line):
        lines = [line] + [process.stdout.readline() for _ in range(10)]
        variables = dict(shlex.split(entry)[0].split("=", 1) for entry in lines)
        assert list(variables) == [
            "MAILGW_HOST",
            *(f"MAILGW_{name.upper()}_PORT" for name in SERVICES),
            "MAILGW_CAFILE",
            "MAILGW_DATA_DIR",
            "MAILGW_HTTP_URL",
        ]
        data_dir = Path(variables["MAILGW_DATA_DIR"])
        assert data_dir.is_dir()
        info = {"http_url": variables["MAILGW_HTTP_URL"]}
        with smtplib.SMTP(variables["MAILGW_HOST"], int(variables["MAILGW_SMTP_PORT"])) as client:
            client.ehlo()
            client.mail("a@sender.test")
            code, _ = client.rcpt("stranger@example.test")
            assert code // 100 == 5  # example.test is not a local domain here, and no catch-all
        assert api(info, "GET", "messages") == (200, {"messages": []})
        assert terminate(process, signum) == 0
        assert not data_dir.exists()


def test_bad_user_option_is_a_usage_error():
    result = subprocess.run(
        [str(MAILGW), "testserver", "--user", "no-password"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "ADDRESS:PASSWORD" in result.stderr
    assert result.stdout == ""


def test_a_user_the_server_refuses_stops_it_with_status_1(tmp_path):
    result = subprocess.run(
        [str(MAILGW), "testserver", "--user", "no-at-sign:pw"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "mailgw: error: address must contain exactly one '@'"
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # the temporary data directory is gone
