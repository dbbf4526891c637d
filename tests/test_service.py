"""Service composition: every listener bound and greeting, the ports file, start-up failures, and
the real ``twistd -n mailgw`` process."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import in_reactor, make_config
from twisted.internet import reactor
from twisted.internet.task import deferLater

from mailgw.config import IMPLICIT_TLS, SERVICES, ConfigError, default_config
from mailgw.service import MailgwService, Options, StartupError, makeService

LOOPBACK = "tcp:0:interface=127.0.0.1"
TWISTD = Path(sys.executable).parent / "twistd"

#: What each service says first.
GREETINGS = {
    "smtp": b"220 ",
    "submission": b"220 ",
    "submissions": b"220 ",
    "pop3": b"+OK",
    "pop3s": b"+OK",
    "imap": b"* OK",
    "imaps": b"* OK",
}


def any_certificate() -> ssl.SSLContext:
    """A client TLS context that accepts the server's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def greeting(service: str, port: int) -> bytes:
    """Connect to ``port`` (through TLS for an implicit-TLS service); return the first line."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    if service in IMPLICIT_TLS:
        raw = any_certificate().wrap_socket(raw)
    with raw as connection:
        line = b""
        while not line.endswith(b"\n"):
            chunk = connection.recv(1024)
            if not chunk:
                break
            line += chunk
        return line


def mail_from_without_login(service: str, port: int) -> int:
    """The reply code to MAIL FROM, sent without logging in, on an SMTP-family listener."""
    if service in IMPLICIT_TLS:
        client = smtplib.SMTP_SSL("127.0.0.1", port, timeout=5, context=any_certificate())
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=5)
    with client:
        client.ehlo("client.example.test")
        return client.mail("someone@example.test")[0]


def refused(port: int) -> bool:
    """Is a connection to the loopback ``port`` refused?"""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def all_services_config(tmp_path: Path, **overrides):
    """A test Config listening for every service on an ephemeral loopback port."""
    settings = {
        "listen": {name: LOOPBACK for name in SERVICES},
        "ports_file": tmp_path / "ports.json",
    }
    return make_config(tmp_path / "data", **{**settings, **overrides})


def test_every_listener_binds_greets_and_stops(tmp_path: Path) -> None:
    config = all_services_config(tmp_path)
    service = MailgwService(config, reactor)
    in_reactor(service.startService)
    try:
        bound = in_reactor(lambda: service.ready)
        assert set(bound) == set(SERVICES)
        assert json.loads(config.ports_file.read_text()) == bound
        assert len(set(bound.values())) == 7
        for name, port in bound.items():
            assert greeting(name, port).startswith(GREETINGS[name]), name
        assert mail_from_without_login("smtp", bound["smtp"]) == 250
        assert mail_from_without_login("submission", bound["submission"]) == 530
        assert mail_from_without_login("submissions", bound["submissions"]) == 530
        assert not list(config.ports_file.parent.glob(".ports.json.*"))
    finally:
        in_reactor(service.stopService)
    assert not config.ports_file.exists()
    assert all(refused(port) for port in bound.values())


def test_implicit_tls_listener_refuses_plaintext(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", listen={"imaps": "ssl:0:interface=127.0.0.1"})
    service = MailgwService(config, reactor)
    in_reactor(service.startService)
    try:
        port = in_reactor(lambda: service.ready)["imaps"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.sendall(b"a CAPABILITY\r\n")
            answer = plain.recv(1024)
        assert b"OK" not in answer
        assert greeting("imaps", port).startswith(b"* OK")
    finally:
        in_reactor(service.stopService)


def test_a_port_in_use_stops_start_up(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        listen = {name: LOOPBACK for name in SERVICES}
        listen["pop3"] = f"tcp:{port}:interface=127.0.0.1"
        config = all_services_config(tmp_path, listen=listen)
        service = MailgwService(config, reactor)
        in_reactor(service.startService)
        with pytest.raises(StartupError, match=f"pop3 on tcp:{port}.*in use"):
            in_reactor(lambda: service.ready)
    assert not config.ports_file.exists()
    assert not service.running
    assert all(listener.port is None for listener in service)


def test_unwritable_ports_file_stops_start_up(tmp_path: Path) -> None:
    config = all_services_config(tmp_path, ports_file=tmp_path / "gone" / "ports.json")
    service = MailgwService(config, reactor)
    in_reactor(service.startService)
    with pytest.raises(StartupError, match=r"cannot write .*ports\.json: No such file"):
        in_reactor(lambda: service.ready)
    assert not service.running
    assert all(listener.port is None for listener in service)
    (tmp_path / "ports.json").mkdir()
    service = MailgwService(all_services_config(tmp_path), reactor)
    with pytest.raises(StartupError, match=r"cannot remove .*ports\.json: Is a directory"):
        in_reactor(service.startService)


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def test_bad_endpoint_or_data_dir_fails_and_leaves_nothing_bound(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", listen={"smtp": "tcp:nope"})
    with pytest.raises(ConfigError, match=r"\[listen\] smtp: invalid endpoint 'tcp:nope'"):
        in_reactor(MailgwService(config, reactor).startService)
    (tmp_path / "file").write_text("in the way")
    port = free_port()
    listen = {"smtp": f"tcp:{port}:interface=127.0.0.1"}
    config = make_config(tmp_path / "file" / "data", listen=listen)
    service = MailgwService(config, reactor)
    with pytest.raises(StartupError, match="Not a directory"):
        in_reactor(service.startService)
    in_reactor(lambda: deferLater(reactor, 0.05))  # stopListening closes on the next turn
    assert refused(port)
    assert not service.running


def test_listeners_bind_before_any_file_is_created(tmp_path: Path) -> None:
    """What twistd --uid relies on: privilegedStartService binds, and writes nothing."""
    config = make_config(
        tmp_path / "data", listen={"smtp": LOOPBACK, "imaps": LOOPBACK}, ports_file=None
    )
    service = MailgwService(config, reactor)
    in_reactor(service.privilegedStartService)
    try:
        ports = {listener.name: listener.port.getHost().port for listener in service}
        assert not config.data_dir.exists()
        # Accepted before start-up ended: closed at once, without a word.
        with socket.create_connection(("127.0.0.1", ports["smtp"]), timeout=5) as early:
            assert early.recv(1024) == b""
        in_reactor(service.startService)
        assert in_reactor(lambda: service.ready) == ports
        assert (config.data_dir / "tls" / "cert.pem").exists()
        assert greeting("smtp", ports["smtp"]).startswith(b"220 mx.example.test")
        assert greeting("imaps", ports["imaps"]).startswith(b"* OK")
    finally:
        in_reactor(service.stopService)
    assert all(refused(port) for port in ports.values())


def test_a_killed_servers_ports_file_and_its_temp_are_replaced(tmp_path: Path) -> None:
    """SIGKILL leaves the ports file of the dead server (and, killed while writing it, its
    temp file): the next start removes both before binding and writes its own."""
    config = make_config(tmp_path / "data", listen={"smtp": LOOPBACK}, ports_file=tmp_path / "p")
    child = [sys.executable, "-c", "import os; print(os.getpid())"]
    dead = subprocess.run(child, text=True, capture_output=True, check=True).stdout.strip()
    config.ports_file.write_text('{"smtp": 1}\n')
    temp = tmp_path / f".p.{dead}.tmp"
    temp.write_text('{"smtp": ')
    service = MailgwService(config, reactor)
    in_reactor(service.startService)
    try:
        bound = in_reactor(lambda: service.ready)
        assert json.loads(config.ports_file.read_text()) == bound != {"smtp": 1}
        assert not temp.exists()
    finally:
        in_reactor(service.stopService)


def test_a_stopped_service_starts_again_on_its_ports(tmp_path: Path) -> None:
    port = free_port()
    config = make_config(tmp_path / "data", listen={"smtp": f"tcp:{port}:interface=127.0.0.1"})
    service = MailgwService(config, reactor)
    for _ in range(2):
        in_reactor(service.startService)
        try:
            assert in_reactor(lambda: service.ready) == {"smtp": port}
            assert greeting("smtp", port).startswith(b"220 ")
        finally:
            in_reactor(service.stopService)
        assert refused(port)


def test_start_creates_private_data_directories(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", listen={"smtp": LOOPBACK})
    service = MailgwService(config, reactor)
    in_reactor(service.startService)
    try:
        in_reactor(lambda: service.ready)
        for directory in (config.data_dir, config.mail_dir, config.tmp_dir):
            assert directory.stat().st_mode & 0o777 == 0o700
        assert service.context.domains == frozenset({"example.test", "localhost"})
        assert service.context.allow_plaintext
    finally:
        in_reactor(service.stopService)


def test_make_service_without_config_uses_the_embedded_default() -> None:
    options = Options()
    options.parseOptions([])
    service = makeService(options)
    assert service.config == default_config()


def test_make_service_with_a_bad_config_exits_with_one_line(tmp_path: Path) -> None:
    options = Options()
    options.parseOptions(["--config", str(tmp_path / "missing.ini")])
    with pytest.raises(SystemExit, match=r"^mailgw: error: .*missing\.ini: cannot read"):
        makeService(options)


def write_ini(directory: Path, listen: dict) -> Path:
    """A config file for a loopback twistd; return its path."""
    lines = "".join(f"{name} = {value}\n" for name, value in listen.items())
    path = directory / "mailgw.ini"
    path.write_text(
        "[mailgw]\ndata_dir = data\nhostname = mx.example.test\ndomains = example.test\n"
        f"ports_file = ports.json\n\n[listen]\n{lines}"
    )
    return path


def twistd(config: Path, **kwargs) -> subprocess.Popen:
    """Start ``twistd -n mailgw --config FILE`` in the config's directory."""
    return subprocess.Popen(
        [str(TWISTD), "-n", "--pidfile=", "mailgw", "--config", str(config)],
        cwd=config.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def test_twistd_runs_the_server_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = write_ini(tmp_path, {name: LOOPBACK for name in SERVICES})
    ports_file = tmp_path / "ports.json"
    process = twistd(config)
    try:
        deadline = time.monotonic() + 30
        while not ports_file.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "twistd did not bind in 30 s"
            time.sleep(0.05)
        ports = json.loads(ports_file.read_text())
        assert set(ports) == set(SERVICES)
        assert greeting("smtp", ports["smtp"]).startswith(b"220 mx.example.test")
        assert greeting("imaps", ports["imaps"]).startswith(b"* OK")
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode in (0, -signal.SIGTERM)  # twistd ends itself with the signal
    log = stdout.decode()
    assert "Received SIGTERM, shutting down." in log
    assert f"smtp listening on 127.0.0.1:{ports['smtp']}" in log
    assert "no users yet" in log and "mailgw --config" in log and "user add ADDRESS" in log
    assert not ports_file.exists()
    assert (tmp_path / "data" / "tls" / "cert.pem").exists()


def test_twistd_with_a_bad_config_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    config = write_ini(tmp_path, {"smtp": "tcp:25:interface=nowhere"})
    result = subprocess.run(
        [str(TWISTD), "-n", "--pidfile=", "mailgw", "--config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"mailgw: error: {config}: [listen] smtp: interface 'nowhere' is not an IP address"
    ]
    assert "Traceback" not in result.stdout + result.stderr


def test_twistd_with_a_port_in_use_exits_non_zero(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        imap = f"tcp:{port}:interface=127.0.0.1"
        config = write_ini(tmp_path, {"smtp": LOOPBACK, "imap": imap})
        process = twistd(config)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode != 0
    output = (stdout + stderr).decode()
    assert f"cannot listen for imap on tcp:{port}" in output
    assert "Traceback" not in output
    assert not (tmp_path / "ports.json").exists()
