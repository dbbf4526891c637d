"""``twistd --uid --gid mailgw``: a port below 1024 bound as root, then everything done as the
unprivileged user: files it creates belong to it, a root-only [tls] key is still served.

These tests run the real server as root and switch to ``nobody``/``nogroup``; they are skipped
when not run as root or when the machine has no such user.
"""

from __future__ import annotations

import grp
import os
import poplib
import pwd
import random
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from mailgw_process import BIN, ServerProcess, mailgw

from mailgw.tls import self_signed

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to bind a port below 1024")

ALICE = "alice@example.test"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def nobody() -> tuple[int, int]:
    """The (uid, gid) of the unprivileged user the server runs as."""
    try:
        return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no nobody/nogroup on this machine")


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory under /tmp that every user can traverse (pytest's own tmp_path is 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="mailgw-priv-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def free_privileged_port() -> int:
    """A loopback port below 1024 that nothing listens on (checked by binding it)."""
    candidates = list(range(600, 1000))
    random.shuffle(candidates)
    for port in candidates[:50]:
        try:
            with socket.create_server(("127.0.0.1", port)):
                return port
        except OSError:
            continue
    pytest.skip("no free port in 600-999 on 127.0.0.1")


def data_dir_for(home: Path, owner: tuple[int, int]) -> Path:
    """The data directory as an admin prepares it: ``install -d -o mail -g mail -m 0700``."""
    data = home / "data"
    data.mkdir(mode=0o700)
    os.chown(data, *owner)
    return data


def can_run_python(owner: tuple[int, int]) -> bool:
    """Can ``owner`` run this interpreter? (Not when it lives under a private /root.)"""
    try:
        probe = [sys.executable, "-c", ""]
        subprocess.run(probe, user=owner[0], group=owner[1], extra_groups=[], timeout=30)
    except PermissionError:
        return False
    return True


def add_user(config: Path, passwd: Path, owner: tuple[int, int]) -> None:
    """Add ALICE with the ``mailgw`` command so that the passwd-file belongs to ``owner``.

    An admin runs it as the server's user (``sudo -u mail mailgw ...``); where that user cannot
    run this interpreter, root runs it and hands the files over, as ``chown`` would.
    """
    as_owner = can_run_python(owner)
    added = mailgw(
        config,
        *("user", "add", ALICE, "--password-stdin"),
        stdin=PASSWORD + "\n",
        as_user=owner if as_owner else None,
    )
    assert added.returncode == 0, added.stderr
    if not as_owner:
        for path in (passwd, passwd.with_name(passwd.name + ".lock")):
            os.chown(path, *owner)


def write_ini(home: Path, data: Path, listen: dict, extra: str = "") -> Path:
    """A config file for a loopback server with its data and ports file in ``data``."""
    lines = "".join(f"{name} = {value}\n" for name, value in listen.items())
    path = home / "mailgw.ini"
    path.write_text(
        f"[mailgw]\ndata_dir = {data}\nhostname = mx.example.test\ndomains = example.test\n"
        f"ports_file = {data / 'ports.json'}\n\n[listen]\n{lines}\n"
        f"[auth]\nallow_plaintext = yes\n\n[guard]\ndelay_start = 0\ndelay_max = 0\n{extra}"
    )
    return path


def as_nobody(config: Path, owner: tuple[int, int]) -> ServerProcess:
    """``twistd -n --uid U --gid G mailgw --config FILE``, not yet started."""
    uid, gid = owner
    args = ("--uid", str(uid), "--gid", str(gid))
    return ServerProcess(config, twistd_args=args, ports_file=config.parent / "data/ports.json")


def process_uids(pid: int) -> list[int]:
    """The real, effective, saved and file-system uids of a running process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(value) for value in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


def owners(*paths: Path) -> set[tuple[int, int]]:
    """The (uid, gid) owning each of ``paths``."""
    return {(path.stat().st_uid, path.stat().st_gid) for path in paths}


def unverified() -> ssl.SSLContext:
    """A client TLS context that accepts any certificate and keeps the one served."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_binds_a_privileged_port_then_runs_as_nobody(home: Path, nobody: tuple) -> None:
    port = free_privileged_port()
    data = data_dir_for(home, nobody)
    listen = {"smtp": f"tcp:{port}:interface=127.0.0.1", "pop3s": "tcp:0:interface=127.0.0.1"}
    config = write_ini(home, data, listen)
    add_user(config, data / "passwd", nobody)
    server = as_nobody(config, nobody).start()
    try:
        assert server.ports["smtp"] == port
        assert process_uids(server.process.pid) == [nobody[0]] * 4
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            assert client.ehlo("client.example.test")[0] == 250
            message = b"Subject: hi\r\n\r\nhi\r\n"
            assert client.sendmail("bob@elsewhere.test", [ALICE], message) == {}
        pop = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], timeout=10, context=unverified())
        pop.user(ALICE)
        pop.pass_(PASSWORD)
        assert pop.stat()[0] == 1
        assert pop.retr(1)[1][-1] == b"hi"
        pop.quit()
        created = [data / "mail", data / "tmp", data / "tls", data / "ports.json"]
        created += [data / "passwd", *(data / "tls").iterdir(), *(data / "mail").rglob("*")]
        assert owners(*created) == {nobody}
        assert (data / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600
    finally:
        assert server.stop() == 0, server.log.read_text()
    assert not (data / "ports.json").exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    log = server.log.read_text()
    assert f"set uid/gid {nobody[0]}/{nobody[1]}" in log
    assert f"smtp listening on 127.0.0.1:{port}" in log
    assert f"add users with: sudo -u nobody mailgw --config {config} user add" in log


def test_a_root_only_tls_key_is_read_before_the_switch(home: Path, nobody: tuple) -> None:
    private = home / "private"
    private.mkdir(mode=0o700)  # like /etc/ssl/private: root only
    key, certificate = self_signed("mx.example.test")
    (private / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (private / "key.pem").write_bytes(key_pem)
    (private / "key.pem").chmod(0o600)
    data = data_dir_for(home, nobody)
    tls = f"\n[tls]\ncertificate = {private / 'cert.pem'}\nkey = {private / 'key.pem'}\n"
    config = write_ini(home, data, {"imaps": "tcp:0:interface=127.0.0.1"}, extra=tls)
    server = as_nobody(config, nobody).start()
    try:
        assert process_uids(server.process.pid) == [nobody[0]] * 4
        raw = socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=10)
        with unverified().wrap_socket(raw) as connection:
            served = connection.getpeercert(binary_form=True)
            assert connection.recv(1024).startswith(b"* OK")
        assert served == certificate.public_bytes(serialization.Encoding.DER)
        assert not (data / "tls").exists()
    finally:
        assert server.stop() == 0, server.log.read_text()


def test_a_data_dir_the_user_cannot_write_stops_start_up(home: Path, nobody: tuple) -> None:
    data = data_dir_for(home, (0, 0))  # left owned by root: the admin forgot to chown it
    config = write_ini(home, data, {"smtp": "tcp:0:interface=127.0.0.1"})
    uid, gid = nobody
    result = subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "--uid", str(uid), "--gid", str(gid)]
        + ["mailgw", "--config", str(config)],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr  # twistd logs its stderr once logging is set up
    assert f"mailgw: error: cannot remove {data / 'ports.json'}: Permission denied\n" in output
    assert "Traceback" not in output
    assert list(data.iterdir()) == []
