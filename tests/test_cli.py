"""The ``mailgw`` admin command, run as the installed console script against a temporary config."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mailgw_process import write_config

from mailgw.auth import PasswdFileUserDatabase

MAILGW = Path(sys.executable).parent / "mailgw"
ALICE = "alice@example.test"
PASSWORD = "correct horse battery staple"


def run(*args: str, config: Path | None = None, stdin: bytes = b"", cwd: Path | None = None):
    """Run ``mailgw [--config CONFIG] ARGS``; check that it never prints a traceback."""
    command = [str(MAILGW)] + (["--config", str(config)] if config else []) + list(args)
    done = subprocess.run(command, input=stdin, capture_output=True, timeout=60, cwd=cwd)
    stderr = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, stderr
    return done.returncode, done.stdout.decode(), stderr


def assert_one_error_line(stderr: str) -> str:
    """The single ``mailgw: error: ...`` line stderr must consist of; return it."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("mailgw: error: "), stderr
    return lines[0]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration whose local domain is example.test."""
    return write_config(tmp_path)


def users_file(config: Path) -> Path:
    """The passwd-file of the configs written by write_config."""
    return config.parent / "data" / "passwd"


def listed(config: Path) -> list:
    """The users in the passwd-file, as the server would read it."""
    return PasswdFileUserDatabase(users_file(config)).users()


def add(config: Path, address: str = ALICE, password: str = PASSWORD):
    """``mailgw user add ADDRESS --password-stdin`` with ``password`` on stdin."""
    return run("user", "add", address, "--password-stdin", config=config, stdin=password.encode())


def test_add_list_passwd_del(config: Path) -> None:
    status, out, err = add(config, password=PASSWORD + "\n")
    assert (status, err) == (0, "")
    assert ALICE in out
    assert run("user", "list", config=config) == (0, f"{ALICE}\n", "")

    text = users_file(config).read_text()
    assert f"{ALICE}:{{ARGON2ID}}" in text
    assert PASSWORD not in text
    assert PasswdFileUserDatabase(users_file(config)).check_password(ALICE, PASSWORD.encode())

    status, _, err = run(
        "user", "passwd", ALICE, "--password-stdin", config=config, stdin=b"a new one\r\n"
    )
    assert (status, err) == (0, "")
    users = PasswdFileUserDatabase(users_file(config))
    assert users.check_password(ALICE, b"a new one")
    assert not users.check_password(ALICE, PASSWORD.encode())

    status, out, err = run("user", "del", ALICE, config=config)
    assert (status, err) == (0, "")
    assert run("user", "list", config=config) == (0, "", "")
    assert not PasswdFileUserDatabase(users_file(config)).exists(ALICE)


def test_addresses_are_canonical(config: Path) -> None:
    assert add(config, "Bob@Example.TEST")[0] == 0
    assert run("user", "list", config=config)[1] == "bob@example.test\n"
    assert add(config, "BOB@example.test")[0] == 1
    assert run("user", "del", "bob@EXAMPLE.test", config=config)[0] == 0


def test_duplicate_add_fails_and_keeps_the_password(config: Path) -> None:
    assert add(config)[0] == 0
    before = users_file(config).read_bytes()
    status, _, err = add(config, password="another password")
    assert status == 1
    assert "already exists" in assert_one_error_line(err)
    assert users_file(config).read_bytes() == before


@pytest.mark.parametrize(
    "args",
    [
        ("user", "del", "nobody@example.test"),
        ("user", "passwd", "nobody@example.test", "--password-stdin"),
    ],
)
def test_unknown_user_fails(config: Path, args: tuple) -> None:
    assert add(config)[0] == 0
    status, _, err = run(*args, config=config, stdin=b"whatever\n")
    assert status == 1
    assert "nobody@example.test: no such user" in assert_one_error_line(err)
    assert listed(config) == [ALICE]


@pytest.mark.parametrize("address", ["alice", "al:ice@example.test", "../x@example.test"])
def test_bad_address_is_refused(config: Path, address: str) -> None:
    status, _, err = add(config, address)
    assert status == 1
    assert_one_error_line(err)
    assert listed(config) == []


def test_foreign_domain_is_refused(config: Path) -> None:
    status, _, err = add(config, "alice@elsewhere.test")
    assert status == 1
    line = assert_one_error_line(err)
    assert "elsewhere.test" in line and "example.test" in line
    assert listed(config) == []


@pytest.mark.parametrize("stdin", [b"", b"\n", b"\r\n"])
def test_empty_password_is_refused(config: Path, stdin: bytes) -> None:
    status, _, err = run("user", "add", ALICE, "--password-stdin", config=config, stdin=stdin)
    assert status == 1
    assert "empty password" in assert_one_error_line(err)
    assert listed(config) == []


def run_in_terminal(args: list, answers: list, timeout: float = 30.0) -> tuple[int, str]:
    """Run ``mailgw ARGS`` on a new pseudo-terminal, typing each answer after each prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes mailgw, with the terminal as its controlling tty
        try:
            os.execv(MAILGW, [str(MAILGW), *args])
        finally:
            os._exit(127)
    output, pending = b"", list(answers)
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"mailgw did not finish on the terminal: {output!r}"
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child has exited and closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if pending and output.count(b"password: ") > len(answers) - len(pending):
                os.write(fd, pending.pop(0) + b"\n")
    finally:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = output.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    return os.waitstatus_to_exitcode(status), text


def test_password_is_asked_twice_at_a_terminal(config: Path) -> None:
    args = ["--config", str(config), "user", "add", ALICE]
    status, output = run_in_terminal(args, [b"one password", b"another password"])
    assert status == 1
    assert "mailgw: error: the passwords do not match" in output
    assert listed(config) == []

    status, output = run_in_terminal(args, [PASSWORD.encode()] * 2)
    assert status == 0, output
    assert PASSWORD not in output  # not echoed
    assert PasswdFileUserDatabase(users_file(config)).check_password(ALICE, PASSWORD.encode())


def test_password_needs_a_terminal_or_password_stdin(config: Path) -> None:
    status, _, err = run("user", "add", ALICE, config=config, stdin=PASSWORD.encode())
    assert status == 1
    assert "--password-stdin" in assert_one_error_line(err)
    assert listed(config) == []


def test_check_config_summarises_a_good_file(config: Path) -> None:
    status, out, err = run("check-config", config=config)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"OK: {config}"
    for service in ("smtp", "pop3", "imap"):
        assert f"  {service}: tcp:0:interface=127.0.0.1" in lines
    assert "  domains: example.test" in lines


def test_check_config_of_the_embedded_default(tmp_path: Path) -> None:
    status, out, err = run("check-config", cwd=tmp_path)
    assert (status, err) == (0, "")
    assert out.startswith("OK: <embedded default>\n")


@pytest.mark.parametrize(
    "text",
    [
        "this is not an INI file\n",
        "[mailgw]\ndata_dir = data\ndomains = example.test\n[listen]\nsmtp = nonsense:1:2\n",
        "[mailgw]\ndata_dir = data\ndomains = example.test\nmessage_size = 5\n",
    ],
)
def test_check_config_reports_a_bad_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.ini"
    path.write_text(text)
    status, out, err = run("check-config", config=path)
    assert (status, out) == (1, "")
    assert_one_error_line(err)


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ini"
    status, _, err = run("user", "list", config=missing)
    assert status == 1
    assert str(missing) in assert_one_error_line(err)


@pytest.mark.parametrize("args", [(), ("user", "frob"), ("user", "add")])
def test_usage_errors_are_one_line(config: Path, args: tuple) -> None:
    status, _, err = run(*args, config=config)
    assert status == 2
    assert "--help" in assert_one_error_line(err)


def test_a_broken_passwd_line_is_reported_not_fatal(config: Path) -> None:
    assert add(config)[0] == 0
    with users_file(config).open("a") as passwd:
        passwd.write("this line has no password field\n")
    status, out, err = run("user", "list", config=config)
    assert (status, out) == (0, f"{ALICE}\n")
    assert err.startswith("mailgw: warning: ") and "line 2" in err, err
