"""Real IMAP clients from Debian packages (mbsync from isync, getmail6) against a live server.

The server refuses passwords without TLS, so mbsync works over STARTTLS on the ``imap`` listener
or over implicit TLS on an ``imaps`` one, checking the certificate mailgw generated
(``data_dir/tls/cert.pem``, issued for ``mx.example.test``; mbsync accepts a server certificate
found in its ``CertificateFile``).  mbsync keeps a local Maildir in step with the account both
ways; its sync state shows that a second run changes nothing.

getmail6 (6.18) has no STARTTLS for IMAP: its ``SimpleIMAPRetriever`` sends LOGIN in clear, which
mailgw refuses on a listener that does not allow plaintext; it is tested over ``imaps``, and
over plain IMAP only where the configuration allows plaintext passwords.  CI installs both
clients through ``.ci/run``; a test is skipped only when its client binary is missing.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LiveServer, make_config
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailgw.imap import make_factory
from mailgw.tls import generated_paths

ALICE = "alice@example.test"
PASSWORD = "imap pass word"
HOSTNAME = "mx.example.test"
CLIENT_TIMEOUT = 60
#: What alice's INBOX holds: 8bit text, a message without body, one large enough to stream.
MESSAGES = [
    b"From: Bob <bob@remote.test>\r\nTo: alice@example.test\r\nSubject: first\r\n"
    b"Message-ID: <first@remote.test>\r\n\r\nHello.\r\ncaf\xc3\xa9\r\n",
    b"From: dave@remote.test\r\nSubject: no body\r\nMessage-ID: <empty@remote.test>\r\n\r\n",
    b"From: erin@remote.test\r\nSubject: large\r\nMessage-ID: <large@remote.test>\r\n\r\n"
    + b"".join(b"line %06d of a large message\r\n" % i for i in range(6000)),
]


def need(binary: str) -> str:
    """The path of a client binary, or skip the test when it is not installed."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (CI installs it from .ci/run's APT_PACKAGES)")
    return path


def start_server(data_dir: Path, allow_plaintext: bool) -> LiveServer:
    """A server where alice holds MESSAGES; ``imap_port`` offers STARTTLS, ``imaps_port`` is
    implicit TLS as on mailgw's imaps listener; ``cert`` is the generated certificate."""
    srv = LiveServer(make_config(data_dir, hostname=HOSTNAME, allow_plaintext=allow_plaintext))
    srv.add_user(ALICE, PASSWORD)
    inbox = srv.store.folder(ALICE)
    for message in MESSAGES:
        inbox.append(message)
    srv.imap_port = srv.listen(make_factory)
    srv.imaps_port = srv.listen(lambda ctx: TLSMemoryBIOFactory(ctx.tls, False, make_factory(ctx)))
    srv.cert = generated_paths(srv.config)[0]
    return srv


@pytest.fixture
def imap(tmp_path: Path) -> Iterator[LiveServer]:
    """A live server that refuses passwords without TLS."""
    srv = start_server(tmp_path / "data", allow_plaintext=False)
    yield srv
    srv.close()


def output(result: subprocess.CompletedProcess) -> str:
    """A client's stdout and stderr, for assertion messages."""
    return (result.stdout + result.stderr).decode(errors="replace")


def tls_client(server: LiveServer) -> imaplib.IMAP4_SSL:
    """A logged-in imaplib client over imaps that verifies the generated certificate."""
    context = ssl.create_default_context(cafile=str(server.cert))
    context.check_hostname = False  # imaplib names the server by its address, 127.0.0.1
    client = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=context, timeout=10)
    client.login(ALICE, PASSWORD)
    return client


def subject(message: bytes) -> bytes:
    """The Subject of a message."""
    return re.search(rb"^Subject: (.*?)\r?$", message, re.MULTILINE).group(1)


def server_state(server: LiveServer) -> dict[int, tuple[frozenset, bytes]]:
    """alice's INBOX as the store holds it: uid -> (flags, message)."""
    inbox = server.store.folder(ALICE)
    state = {}
    for info in inbox.messages():
        with inbox.open_message(info.uid) as handle:
            state[info.uid] = (frozenset(info.flags), handle.read())
    return state


def as_synced(local: bytes) -> bytes:
    """A message in mbsync's Maildir as it came from the server: CRLF line ends, without the
    ``X-TUID`` header mbsync adds to find the messages it copied."""
    lines = [line for line in local.split(b"\n") if not line.startswith(b"X-TUID: ")]
    return b"\r\n".join(lines)


# -- mbsync ------------------------------------------------------------------------------------


class Mbsync:
    """One mbsync setup for alice: a local Maildir tree kept in step with every folder."""

    def __init__(self, server: LiveServer, tmp_path: Path, *, implicit_tls: bool) -> None:
        self.binary = need("mbsync")
        self.local = tmp_path / "local"
        self.local.mkdir()
        self.rcfile = tmp_path / "mbsyncrc"
        port = server.imaps_port if implicit_tls else server.imap_port
        # No AuthMechs: mbsync picks LOGIN, which it refuses to send before TLS is up.
        self.rcfile.write_text(
            f"IMAPAccount mailgw\nHost 127.0.0.1\nPort {port}\nUser {ALICE}\n"
            f'Pass "{PASSWORD}"\nSSLType {"IMAPS" if implicit_tls else "STARTTLS"}\n'
            f"CertificateFile {server.cert}\nTimeout 20\n\n"
            "IMAPStore remote\nAccount mailgw\n\n"
            f"MaildirStore local\nPath {self.local}/\nInbox {self.local}/INBOX\n"
            "SubFolders Verbatim\n\n"
            "Channel sync\nFar :remote:\nNear :local:\nPatterns *\nSync All\n"
            "Create Both\nExpunge Both\nSyncState *\n"
        )
        self.rcfile.chmod(0o600)

    def run(self) -> None:
        """Synchronise every folder once; fail the test if mbsync reports an error."""
        result = subprocess.run(
            [self.binary, "--config", str(self.rcfile), "--all"],
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, output(result)
        assert b"rror" not in result.stdout + result.stderr, output(result)

    def files(self, folder: str = "INBOX") -> dict[bytes, Path]:
        """The local messages of ``folder`` by Subject (each test message has its own)."""
        found = {}
        for sub in ("new", "cur"):
            for path in (self.local / folder / sub).iterdir():
                found[subject(path.read_bytes())] = path
        return found

    def snapshot(self) -> dict[str, tuple[str, bytes]]:
        """Every local file of every folder, by path: (name, content)."""
        return {
            str(path.relative_to(self.local)): (path.name, path.read_bytes())
            for path in self.local.rglob("*")
            if path.is_file() and not path.name.startswith(".mbsyncstate")
        }


def info(path: Path) -> str:
    """The flag letters of a Maildir file name."""
    return path.name.rpartition(":2,")[2]


def set_local_flags(path: Path, letters: str) -> Path:
    """Change a local message's flags as a mail reader does: rename it into cur/ with new info."""
    base = path.name.partition(":2,")[0]
    target = path.parent.parent / "cur" / f"{base}:2,{''.join(sorted(letters))}"
    path.rename(target)
    return target


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "imaps"])
def test_mbsync_second_sync_changes_nothing(imap, tmp_path, implicit_tls):
    mbsync = Mbsync(imap, tmp_path, implicit_tls=implicit_tls)
    mbsync.run()
    before = server_state(imap)
    files = mbsync.files()
    assert sorted(files) == sorted(subject(data) for _, data in before.values())
    for _, data in before.values():
        assert as_synced(files[subject(data)].read_bytes()) == data
    assert before == {uid: (frozenset(), data) for uid, (_, data) in before.items()}

    local = mbsync.snapshot()
    mbsync.run()
    assert mbsync.snapshot() == local
    assert server_state(imap) == before
    client = tls_client(imap)
    assert client.select("INBOX")[0] == "OK"
    assert client.response("UIDNEXT")[1] == [str(max(before) + 1).encode()]
    client.logout()


def test_mbsync_carries_flags_both_ways(imap, tmp_path):
    mbsync = Mbsync(imap, tmp_path, implicit_tls=False)
    mbsync.run()
    first, second, third = sorted(server_state(imap))

    # Changed on the server (another device): arrives in the local file name.
    client = tls_client(imap)
    client.select("INBOX")
    assert client.uid("STORE", str(first), "+FLAGS", r"(\Flagged \Seen)")[0] == "OK"
    client.logout()
    mbsync.run()
    assert info(mbsync.files()[b"first"]) == "FS"
    assert info(mbsync.files()[b"no body"]) == ""

    # Changed locally (the mail reader renames the file): arrives on the server.
    set_local_flags(mbsync.files()[b"no body"], "RS")
    set_local_flags(mbsync.files()[b"first"], "S")
    mbsync.run()
    flags = {uid: flags for uid, (flags, _) in server_state(imap).items()}
    assert flags == {
        first: {"\\Seen"},
        second: {"\\Answered", "\\Seen"},
        third: frozenset(),
    }
    # Nothing moves back and forth afterwards.
    local = mbsync.snapshot()
    mbsync.run()
    assert mbsync.snapshot() == local


def test_mbsync_carries_new_messages_deletions_and_folders_both_ways(imap, tmp_path):
    mbsync = Mbsync(imap, tmp_path, implicit_tls=True)
    mbsync.run()
    uids = sorted(server_state(imap))

    # Written locally: a new message in INBOX, a new folder with a message, a deletion.
    written = b"From: alice@example.test\nSubject: written offline\n\nDraft text.\n"
    (mbsync.local / "INBOX" / "new" / "1700000000.local1.host:2,S").write_bytes(written)
    archive = mbsync.local / "Projects"
    for sub in ("new", "cur", "tmp"):
        (archive / sub).mkdir(parents=True)
    filed = b"From: bob@remote.test\nSubject: filed\n\nKeep this.\n"
    (archive / "cur" / "1700000001.local2.host:2,F").write_bytes(filed)
    set_local_flags(mbsync.files()[b"first"], "ST")
    # Delivered on the server meanwhile.
    late = b"From: frank@remote.test\r\nSubject: late\r\n\r\narrived between syncs\r\n"
    imap.store.folder(ALICE).append(late)
    mbsync.run()

    state = server_state(imap)
    assert uids[0] not in state
    # mbsync puts an X-TUID header into what it uploads, as into what it downloads.
    by_body = {as_synced(data.replace(b"\r\n", b"\n")): flags for flags, data in state.values()}
    assert by_body[written.replace(b"\n", b"\r\n")] == {"\\Seen"}
    archived = imap.store.folder(ALICE, "Projects")
    [message] = archived.messages()
    with archived.open_message(message.uid) as handle:
        assert as_synced(handle.read().replace(b"\r\n", b"\n")) == filed.replace(b"\n", b"\r\n")
    assert set(message.flags) == {"\\Flagged"}
    assert as_synced(mbsync.files()[b"late"].read_bytes()) == late

    # Deleted on the server: gone locally after the next sync.
    client = tls_client(imap)
    client.select("INBOX")
    client.uid("STORE", str(uids[1]), "+FLAGS", r"(\Deleted)")
    client.expunge()
    client.logout()
    mbsync.run()
    assert b"no body" not in mbsync.files()
    assert len(mbsync.files()) == len(server_state(imap))


# -- getmail -----------------------------------------------------------------------------------


@pytest.fixture
def maildir() -> Iterator[Path]:
    """An empty Maildir for getmail to deliver into.

    getmail refuses to write a Maildir as root; under root the Maildir belongs to ``nobody``
    (getmail's ``user`` setting) in a directory of its own that ``nobody`` can reach.
    """
    root = Path(tempfile.mkdtemp(prefix="mailgw-getmail-"))
    path = root / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True)
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        root.chmod(0o755)
        for directory in (path, *(path / sub for sub in ("new", "cur", "tmp"))):
            os.chown(directory, nobody.pw_uid, nobody.pw_gid)
    yield path
    shutil.rmtree(root)


class Getmail:
    """One getmail6 setup for alice's INBOX, delivering into ``maildir``."""

    def __init__(
        self, server: LiveServer, tmp_path: Path, maildir: Path, *, implicit_tls: bool, delete: bool
    ) -> None:
        self.binary = need("getmail")
        self.maildir = maildir
        self.state = tmp_path / "getmail-state"
        self.state.mkdir(mode=0o700)
        self.rcfile = self.state / "getmailrc"
        if implicit_tls:
            retriever = "SimpleIMAPSSLRetriever"
            port = server.imaps_port
            tls = f"ca_certs = {server.cert}\nssl_cert_hostname = {HOSTNAME}\n"
        else:
            retriever, port, tls = "SimpleIMAPRetriever", server.imap_port, ""
        user = "user = nobody\n" if os.geteuid() == 0 else ""
        self.rcfile.write_text(
            f"[retriever]\ntype = {retriever}\nserver = 127.0.0.1\nport = {port}\n"
            f"username = {ALICE}\npassword = {PASSWORD}\ntimeout = 20\n"
            f"record_mailbox = false\n{tls}\n"
            f"[destination]\ntype = Maildir\npath = {maildir}/\n{user}\n"
            f"[options]\nread_all = false\ndelete = {'true' if delete else 'false'}\n"
        )

    def run(self) -> subprocess.CompletedProcess:
        """Retrieve once."""
        return subprocess.run(
            [self.binary, "--getmaildir", str(self.state), "--rcfile", str(self.rcfile)],
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )

    def fetched(self) -> list[bytes]:
        """The messages delivered so far, without the trace headers getmail puts on top."""
        out = []
        for path in (self.maildir / "new").iterdir():
            data = path.read_bytes()
            assert data.startswith((b"Delivered-To:", b"Return-Path:", b"Received:")), data[:100]
            out.append(data[data.index(b"\nFrom: ") + 1 :])
        return sorted(out)


def as_delivered(messages: list[bytes]) -> list[bytes]:
    """Stored messages as getmail writes them: LF line ends, in a sorted list."""
    return sorted(message.replace(b"\r\n", b"\n") for message in messages)


@pytest.mark.parametrize("delete", [False, True], ids=["keep", "delete"])
def test_getmail_over_imaps_fetches_each_message_once(imap, tmp_path, maildir, delete):
    getmail = Getmail(imap, tmp_path, maildir, implicit_tls=True, delete=delete)
    first = getmail.run()
    assert first.returncode == 0, output(first)
    assert f"{len(MESSAGES)} messages" in output(first)
    assert getmail.fetched() == as_delivered(MESSAGES)
    left = server_state(imap)
    assert len(left) == (0 if delete else len(MESSAGES))
    # BODY.PEEK: what getmail leaves on the server is still unread.
    assert all(flags == frozenset() for flags, _ in left.values())

    imap.store.folder(ALICE).append(MESSAGES[0].replace(b"first", b"late"))
    second = getmail.run()
    assert second.returncode == 0, output(second)
    assert "1 messages" in output(second), output(second)
    assert len(getmail.fetched()) == len(MESSAGES) + 1


def test_getmail_without_tls_cannot_send_its_password(imap, tmp_path, maildir):
    """getmail6 has no STARTTLS for IMAP: its plaintext LOGIN is refused, nothing is fetched."""
    getmail = Getmail(imap, tmp_path, maildir, implicit_tls=False, delete=True)
    result = getmail.run()
    assert result.returncode != 0, output(result)
    assert "PRIVACYREQUIRED" in output(result)
    assert getmail.fetched() == []
    assert len(server_state(imap)) == len(MESSAGES)


def test_getmail_over_plain_imap_where_plaintext_is_allowed(tmp_path, maildir):
    srv = start_server(tmp_path / "data", allow_plaintext=True)
    try:
        getmail = Getmail(srv, tmp_path, maildir, implicit_tls=False, delete=True)
        result = getmail.run()
        assert result.returncode == 0, output(result)
        assert getmail.fetched() == as_delivered(MESSAGES)
        assert server_state(srv) == {}
    finally:
        srv.close()
