"""Interoperability with Dovecot: a Maildir written by mailgw, opened by a real Dovecot.

mailgw keeps Dovecot's own on-disk formats (Maildir++ folders, ``dovecot-uidlist`` for UIDs and
UIDVALIDITY, ``dovecot-keywords`` for keywords), so an administrator can point Dovecot at a
mailgw Maildir, or back.  The test fills alice's Maildir through mailgw (SMTP deliveries, IMAP
APPEND, STORE, CREATE, COPY), starts Debian's ``dovecot`` (dovecot-imapd) on loopback with a
configuration of its own over a copy of that Maildir, and compares what both servers answer
over IMAP: folders, UIDVALIDITY, UIDNEXT, and per UID the flags and the bytes of each message.

The copy belongs to a user Dovecot may run as (Dovecot serves no mail as root); Dovecot's
indexes go next to it, not into the Maildir.  Skipped only when ``dovecot`` is not installed.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LiveServer

from mailgw import imap, smtp

ALICE = "alice@example.test"
PASSWORD = "secret"
DOVECOT_USER = "alice"
#: Flags that are per session, not per message: never compared.
SESSION_FLAGS = {b"\\Recent"}


def dovecot_binary() -> str:
    """The dovecot binary, or skip the test."""
    path = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        pytest.skip("dovecot is not installed (CI installs dovecot-imapd from .ci/run)")
    return path


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Dovecot:
    """A Dovecot IMAP server on loopback serving ``maildir`` to any user with PASSWORD."""

    def __init__(self, root: Path, maildir: Path) -> None:
        self.binary = dovecot_binary()
        self.root = root
        self.port = free_port()
        if os.geteuid() == 0:
            internal, login = "dovecot", "dovenull"
            owner = pwd.getpwnam("dovecot")
        else:
            owner = pwd.getpwuid(os.geteuid())
            internal = login = owner.pw_name
        for path in (root, *root.rglob("*")):
            if os.geteuid() == 0 and not path.is_symlink():
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self.config = root / "dovecot.conf"
        self.config.write_text(
            f"base_dir = {root / 'run'}\nstate_dir = {root / 'state'}\n"
            f"log_path = {root / 'dovecot.log'}\n"
            "protocols = imap\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n"
            f"auth_mechanisms = plain\nfirst_valid_uid = {owner.pw_uid}\n"
            f"default_internal_user = {internal}\ndefault_login_user = {login}\n"
            f"mail_location = maildir:{maildir}:INDEX={root / 'index'}\n"
            f"passdb {{\n  driver = static\n  args = password={PASSWORD}\n}}\n"
            f"userdb {{\n  driver = static\n"
            f"  args = uid={owner.pw_uid} gid={owner.pw_gid} home={root / 'home'}\n}}\n"
            "service imap-login {\n  inet_listener imap {\n"
            f"    address = 127.0.0.1\n    port = {self.port}\n  }}\n"
            "  inet_listener imaps {\n    port = 0\n  }\n}\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> Dovecot:
        """Start Dovecot in the foreground and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited {self.process.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"dovecot did not listen in {timeout}s: {self.log()}"
                    ) from None
                time.sleep(0.05)

    def log(self) -> str:
        """Dovecot's log so far."""
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop the master process (it takes its children down) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


def snapshot(port: int, user: str) -> dict[str, dict]:
    """What an IMAP server shows of every folder: its UIDVALIDITY, UIDNEXT and, per UID, the
    flags (without \\Recent) and the message bytes, read with BODY.PEEK so nothing changes."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    client.login(user, PASSWORD)
    typ, listed = client.list()
    assert typ == "OK", listed
    names = sorted(re.match(rb'\(.*?\) (?:"."|NIL) "?(.*?)"?$', line).group(1) for line in listed)
    folders = {}
    for name in names:
        typ, exists = client.select(b'"' + name + b'"', readonly=True)
        assert typ == "OK", name
        validity = client.response("UIDVALIDITY")[1][0]
        uidnext = client.response("UIDNEXT")[1][0]
        messages = {}
        data = []
        if exists != [b"0"]:
            typ, data = client.fetch("1:*", "(UID FLAGS BODY.PEEK[])")
        for item in data:
            if not isinstance(item, tuple):
                continue
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).split()
            messages[uid] = (set(flags) - SESSION_FLAGS, item[1])
        folders[name.decode("ascii")] = {
            "uidvalidity": int(validity),
            "uidnext": int(uidnext),
            "messages": messages,
        }
    client.logout()
    return folders


def message(subject: str, body: str = "Hello.\r\n") -> bytes:
    """A small message with CRLF line endings."""
    return (
        f"From: Bob <bob@remote.test>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@remote.test>\r\n\r\n{body}"
    ).encode()


@pytest.fixture
def mailgw_server(server: LiveServer) -> Iterator[LiveServer]:
    """The live server with alice, an SMTP and an IMAP listener (``smtp_port``, ``imap_port``)."""
    server.add_user(ALICE, PASSWORD)
    server.smtp_port = server.listen(smtp.make_factory)
    server.imap_port = server.listen(imap.make_factory)
    yield server


@pytest.fixture
def dovecot_root() -> Iterator[Path]:
    """A directory Dovecot's unprivileged processes can reach (pytest's tmp_path is private)."""
    root = Path(tempfile.mkdtemp(prefix="mailgw-dovecot-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def serve_copy(server: LiveServer, root: Path) -> Dovecot:
    """Start Dovecot over a copy of alice's Maildir as mailgw left it."""
    user_dir = server.config.mail_dir / "example.test" / "alice"
    shutil.copytree(user_dir, root / "Maildir", symlinks=True)
    return Dovecot(root, root / "Maildir").start()


def test_dovecot_sees_the_same_folders_messages_flags_and_uids(mailgw_server, dovecot_root):
    dovecot_binary()
    port = mailgw_server.imap_port
    with smtplib.SMTP("127.0.0.1", mailgw_server.smtp_port, timeout=10) as sender:
        for n in range(3):
            sender.sendmail("bob@remote.test", [ALICE], message(f"smtp {n}", f"Body {n}.\r\n"))
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    client.login(ALICE, PASSWORD)
    appended = message("appended", "caf\u00e9 in 8bit\r\n.dot line\r\n").replace(
        b"caf\\u00e9", "caf\u00e9".encode()
    )
    typ, _ = client.append("INBOX", r"(\Flagged)", '"01-Oct-2024 10:00:00 +0200"', appended)
    assert typ == "OK"
    client.select("INBOX")
    assert client.store("1", "+FLAGS", r"(\Seen)")[0] == "OK"
    assert client.store("2", "+FLAGS", r"(\Answered \Draft)")[0] == "OK"
    assert client.store("3", "+FLAGS", r"(\Deleted $Label1 project-x)")[0] == "OK"
    assert client.create("Work")[0] == "OK"
    assert client.create("Work.2024")[0] == "OK"
    assert client.copy("1:2", "Work")[0] == "OK"
    assert client.append("Work.2024", r"(\Seen)", None, message("filed"))[0] == "OK"
    client.select("Work")
    client.store("1", "+FLAGS", r"(\Deleted)")
    assert client.expunge()[0] == "OK"  # Work: one expunged, so UIDNEXT is past the last UID.
    client.logout()

    ours = snapshot(port, ALICE)
    assert {"INBOX", "Work", "Work.2024"} <= set(ours)
    assert len(ours["INBOX"]["messages"]) == 4
    assert len(ours["Work"]["messages"]) == 1

    dovecot = serve_copy(mailgw_server, dovecot_root)
    try:
        theirs = snapshot(dovecot.port, DOVECOT_USER)
    except imaplib.IMAP4.error as error:
        time.sleep(0.5)
        pytest.fail(f"Dovecot failed: {error}\n{dovecot.log()}")
    finally:
        dovecot.stop()
    assert "Error" not in dovecot.log(), dovecot.log()
    assert sorted(theirs) == sorted(ours)
    for name in ours:
        assert theirs[name] == ours[name], name


def test_dovecot_sees_a_folder_with_a_non_ascii_name(mailgw_server, dovecot_root):
    """'Entwürfe' (modified UTF-7 'Entw&APw-rfe' on the wire) is one folder for both servers."""
    dovecot_binary()
    client = imaplib.IMAP4("127.0.0.1", mailgw_server.imap_port, timeout=10)
    client.login(ALICE, PASSWORD)
    assert client.create("Entw&APw-rfe")[0] == "OK"
    assert client.append("Entw&APw-rfe", None, None, message("draft"))[0] == "OK"
    client.logout()
    ours = snapshot(mailgw_server.imap_port, ALICE)
    assert "Entw&APw-rfe" in ours

    dovecot = serve_copy(mailgw_server, dovecot_root)
    try:
        theirs = snapshot(dovecot.port, DOVECOT_USER)
    finally:
        dovecot.stop()
    assert sorted(theirs) == sorted(ours)
    assert theirs["Entw&APw-rfe"] == ours["Entw&APw-rfe"]
