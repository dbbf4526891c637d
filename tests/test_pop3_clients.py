"""Real POP3 clients from Debian packages (fetchmail, getmail6) against a live server.

The server refuses passwords without TLS, so every successful download below went over STLS on
the ``pop3`` listener or over implicit TLS on a ``pop3s`` one, and each client checks the
certificate against the one mailgw generated (``data_dir/tls/cert.pem``, issued for the host
name ``mx.example.test``).  What the clients deliver is compared with the store byte for byte,
after the trace headers the client itself puts on top and with the line ends it writes (LF).

getmail6 (6.18) has no STLS: on the ``pop3`` listener it can only send its password in clear,
which mailgw refuses; it is tested over ``pop3s``.  CI installs both clients through
``.ci/run``; a test is skipped only when its client binary is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LiveServer, make_config, stored
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailgw.pop3 import make_factory
from mailgw.tls import generated_paths

ALICE = "alice@example.test"
PASSWORD = "pop the 'quoted' word"
HOSTNAME = "mx.example.test"
CLIENT_TIMEOUT = 60
#: What the store holds for alice: dots opening lines, 8bit text, bare LF line ends (stored as
#: CRLF), a message without body, and one large enough to be streamed in many chunks.
MESSAGES = [
    b"From: Bob <bob@remote.test>\r\nTo: alice@example.test\r\nSubject: dots\r\n"
    b"Message-ID: <dots@remote.test>\r\n\r\n.one dot\r\n..two dots\r\n.\r\ncaf\xc3\xa9\r\n",
    b"From: carol@remote.test\nSubject: bare LF\nMessage-ID: <lf@remote.test>\n\nline\n.\n",
    b"From: dave@remote.test\r\nSubject: no body\r\nMessage-ID: <empty@remote.test>\r\n\r\n",
    b"From: erin@remote.test\r\nSubject: large\r\nMessage-ID: <large@remote.test>\r\n\r\n"
    + b"".join(b".line %06d of a large message, dot first\r\n" % i for i in range(6000)),
]
#: Headers a POP3 client adds on top of what it downloads.
CLIENT_TRACE = (b"Received:", b"Return-Path:", b"Delivered-To:")


def need(binary: str) -> str:
    """The path of a client binary, or skip the test when it is not installed."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (CI installs it from .ci/run's APT_PACKAGES)")
    return path


@pytest.fixture
def pop(tmp_path: Path) -> Iterator[LiveServer]:
    """A server refusing plaintext passwords; alice holds MESSAGES; ``pop3_port`` offers STLS,
    ``pop3s_port`` is implicit TLS as on mailgw's pop3s listener; ``cert`` is the certificate."""
    srv = LiveServer(make_config(tmp_path / "data", hostname=HOSTNAME, allow_plaintext=False))
    srv.add_user(ALICE, PASSWORD)
    inbox = srv.store.folder(ALICE)
    for message in MESSAGES:
        inbox.append(message)
    srv.pop3_port = srv.listen(make_factory)
    srv.pop3s_port = srv.listen(lambda ctx: TLSMemoryBIOFactory(ctx.tls, False, make_factory(ctx)))
    srv.cert = generated_paths(srv.config)[0]
    yield srv
    srv.close()


def as_delivered(message: bytes) -> bytes:
    """A stored message as a client writes it to a local file: LF line ends."""
    return message.replace(b"\r\n", b"\n")


def original_part(delivered: bytes) -> bytes:
    """The downloaded message without the client's trace headers; at least one must be there."""
    lines = delivered.splitlines(keepends=True)
    start = 0
    while start < len(lines) and (
        lines[start].startswith(CLIENT_TRACE) or (start and lines[start][:1] in (b" ", b"\t"))
    ):
        start += 1
    assert start > 0, delivered[:200]
    return b"".join(lines[start:])


def assert_same_messages(files: list[Path], expected: list[bytes]) -> None:
    """The files hold exactly the ``expected`` messages (in any order), as delivered."""
    got = sorted(original_part(path.read_bytes()) for path in files)
    assert got == sorted(as_delivered(message) for message in expected)


# -- fetchmail ---------------------------------------------------------------------------------


class Fetchmail:
    """One fetchmail setup for alice: rcfile, private home, UID file, MDA writing to ``out``."""

    def __init__(self, server: LiveServer, tmp_path: Path, *, implicit_tls: bool, keep: bool):
        self.binary = need("fetchmail")
        self.home = tmp_path / "fetchmail-home"
        self.home.mkdir(mode=0o700)
        self.out = tmp_path / "fetched"
        self.out.mkdir()
        port = server.pop3s_port if implicit_tls else server.pop3_port
        self.rcfile = self.home / "fetchmailrc"
        # "sslproto TLS1.2+" without "ssl": fetchmail must upgrade with STLS or give up.
        self.rcfile.write_text(
            "set no syslog\n"
            f"poll 127.0.0.1 with proto POP3 port {port} timeout 20 uidl\n"
            f'  user "{ALICE}" there with password "{PASSWORD}"\n'
            f'  {"ssl " if implicit_tls else ""}sslproto "TLS1.2+" sslcertck'
            f' sslcertfile "{server.cert}" sslcommonname "{HOSTNAME}"\n'
            f"  {'keep' if keep else 'nokeep'}\n"
            f'  mda "cat > {self.out}/message-$$"\n'
        )
        self.rcfile.chmod(0o600)

    def run(self) -> subprocess.CompletedProcess:
        """Poll once; fetchmail exits 0 when it delivered mail, 1 when there was none."""
        return subprocess.run(
            [
                self.binary,
                "--fetchmailrc",
                str(self.rcfile),
                "--idfile",
                str(self.home / "fetchids"),
                "--pidfile",
                str(self.home / "fetchmail.pid"),
                "--nodetach",
            ],
            env={**os.environ, "FETCHMAILHOME": str(self.home), "HOME": str(self.home)},
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )

    def fetched(self) -> list[Path]:
        """The messages delivered so far."""
        return sorted(self.out.iterdir())


def output(result: subprocess.CompletedProcess) -> str:
    """A client's stdout and stderr, for assertion messages."""
    return (result.stdout + result.stderr).decode(errors="replace")


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["stls", "pop3s"])
def test_fetchmail_keep_fetches_each_message_once_by_uidl(pop, tmp_path, implicit_tls):
    fetchmail = Fetchmail(pop, tmp_path, implicit_tls=implicit_tls, keep=True)
    first = fetchmail.run()
    assert first.returncode == 0, output(first)
    assert_same_messages(fetchmail.fetched(), MESSAGES)
    assert len(stored(pop, ALICE)) == len(MESSAGES)

    second = fetchmail.run()
    assert second.returncode == 1, output(second)
    assert f"{len(MESSAGES)} messages ({len(MESSAGES)} seen)" in output(second)
    assert len(fetchmail.fetched()) == len(MESSAGES)

    # Only the message that arrived since is new to the client.
    late = b"From: frank@remote.test\r\nSubject: late\r\n\r\narrived between polls\r\n"
    pop.store.folder(ALICE).append(late)
    third = fetchmail.run()
    assert third.returncode == 0, output(third)
    assert_same_messages(fetchmail.fetched(), [*MESSAGES, late])


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["stls", "pop3s"])
def test_fetchmail_without_keep_empties_the_maildrop(pop, tmp_path, implicit_tls):
    fetchmail = Fetchmail(pop, tmp_path, implicit_tls=implicit_tls, keep=False)
    first = fetchmail.run()
    assert first.returncode == 0, output(first)
    assert_same_messages(fetchmail.fetched(), MESSAGES)
    assert stored(pop, ALICE) == []
    inbox = pop.config.mail_dir / "example.test" / "alice"
    assert [p for sub in ("new", "cur") for p in (inbox / sub).iterdir()] == []

    second = fetchmail.run()
    assert second.returncode == 1, output(second)
    assert len(fetchmail.fetched()) == len(MESSAGES)


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
    """One getmail6 setup for alice over pop3s, delivering into ``maildir``."""

    def __init__(
        self,
        server: LiveServer,
        tmp_path: Path,
        maildir: Path,
        *,
        delete: bool,
        retriever: str = "SimplePOP3SSLRetriever",
        cert_hostname: str = HOSTNAME,
    ) -> None:
        self.binary = need("getmail")
        self.maildir = maildir
        self.state = tmp_path / "getmail-state"
        self.state.mkdir(mode=0o700)
        self.rcfile = self.state / "getmailrc"
        port = server.pop3s_port if "SSL" in retriever else server.pop3_port
        tls = f"ca_certs = {server.cert}\nssl_cert_hostname = {cert_hostname}\n"
        user = "user = nobody\n" if os.geteuid() == 0 else ""
        self.rcfile.write_text(
            f"[retriever]\ntype = {retriever}\nserver = 127.0.0.1\nport = {port}\n"
            f"username = {ALICE}\npassword = {PASSWORD}\ntimeout = 20\n"
            f"{tls if 'SSL' in retriever else ''}\n"
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

    def fetched(self) -> list[Path]:
        """The messages delivered so far."""
        return sorted((self.maildir / "new").iterdir())


@pytest.mark.parametrize("delete", [False, True], ids=["keep", "delete"])
def test_getmail_over_pop3s_fetches_each_message_once(pop, tmp_path, maildir, delete):
    getmail = Getmail(pop, tmp_path, maildir, delete=delete)
    first = getmail.run()
    assert first.returncode == 0, output(first)
    assert f"{len(MESSAGES)} messages" in output(first)
    assert_same_messages(getmail.fetched(), MESSAGES)
    assert all(b"with POP3-SSL" in path.read_bytes() for path in getmail.fetched())
    assert len(stored(pop, ALICE)) == (0 if delete else len(MESSAGES))

    second = getmail.run()
    assert second.returncode == 0, output(second)
    assert "0 messages" in output(second)
    assert len(getmail.fetched()) == len(MESSAGES)


def test_getmail_refuses_a_certificate_for_another_host(pop, tmp_path, maildir):
    getmail = Getmail(pop, tmp_path, maildir, delete=True, cert_hostname="mail.elsewhere.test")
    result = getmail.run()
    assert result.returncode != 0, output(result)
    assert getmail.fetched() == []
    assert len(stored(pop, ALICE)) == len(MESSAGES)


def test_getmail_without_tls_cannot_send_its_password(pop, tmp_path, maildir):
    """getmail6 has no STLS: on the plain listener its USER is refused before any password."""
    getmail = Getmail(pop, tmp_path, maildir, delete=True, retriever="SimplePOP3Retriever")
    result = getmail.run()
    assert result.returncode != 0, output(result)
    assert "[AUTH] Plaintext authentication disallowed" in output(result)
    assert getmail.fetched() == []
    assert len(stored(pop, ALICE)) == len(MESSAGES)
