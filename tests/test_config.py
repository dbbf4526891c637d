"""The configuration loader: every key, every error, the sample file and the embedded default."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from mailgw.config import SERVICES, ConfigError, default_config, load_config
from mailgw.context import GuardSettings, Limits
from mailgw.relay import RelaySettings
from mailgw.tls import self_signed

REPO = Path(__file__).resolve().parent.parent
BASE = "[mailgw]\ndata_dir = data\nhostname = mx.example.test\ndomains = example.test\n"


def write(directory: Path, text: str, name: str = "mailgw.ini") -> Path:
    """Write a config file and return its path."""
    path = directory / name
    path.write_text(text)
    return path


def write_pem_pair(directory: Path, hostname: str = "mx.example.test") -> tuple[Path, Path]:
    """A self-signed certificate and its key as PEM files; return (certificate, key)."""
    key, certificate = self_signed(hostname)
    cert_path, key_path = directory / f"{hostname}.crt", directory / f"{hostname}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_sample_file_loads_and_documents_every_key() -> None:
    sample = REPO / "etc" / "mailgw.ini"
    config = load_config(sample)
    assert config.hostname == "mail.example.org"
    assert config.domains == ("example.org", "example.net")
    assert set(config.listen) == set(SERVICES)
    assert config.data_dir == REPO / "etc" / "mailgw-data"
    assert config.limits == Limits() and config.guard == GuardSettings()
    text = sample.read_text()
    mailgw_keys = ["data_dir", "hostname", "domains", "ports_file", "passwd_file"]
    mailgw_keys += ["aliases_file", "postmaster", "recipient_delimiter"]
    for key in [*mailgw_keys, *SERVICES]:
        assert f"\n{key} =" in text or f"\n# {key} =" in text, key
    for key in ["certificate", "key", "allow_plaintext", "allow_plaintext_schemes"]:
        assert f"# {key} =" in text, key
    for key in [*Limits.__dataclass_fields__, *GuardSettings.__dataclass_fields__]:
        assert f"# {key} =" in text, key
    assert config.relay == RelaySettings()
    for key in RelaySettings.__dataclass_fields__:
        assert f"# {key} =" in text, key


def test_every_key_is_read(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    write_pem_pair(tmp_path / "certs")
    path = write(
        tmp_path,
        """
[mailgw]
data_dir = data
hostname = MX.Example.Test
domains = Example.TEST, other.test , example.test
ports_file = ports.json
passwd_file = users/passwd
aliases_file = users/aliases
postmaster = Hostmaster@Other.Test
recipient_delimiter = +-

[listen]
smtp = tcp:25
submission = tcp:587:interface=127.0.0.1
submissions = ssl:465:interface=127.0.0.1
pop3 = tcp6:110:interface=\\:\\:1
pop3s = unix:pop3s.sock
imap =
imaps = tcp:993

[tls]
certificate = certs/mx.example.test.crt
key = certs/mx.example.test.key

[auth]
allow_plaintext = yes
allow_plaintext_schemes = true

[limits]
message_size = 1000000
smtp_command_line = 1024
smtp_text_line = 2000
smtp_recipients = 50
session_errors = 5
smtp_idle_timeout = 301.5
smtp_data_timeout = 181
pop3_idle_timeout = 700
imap_idle_timeout = 1900
command_line = 4096
imap_literal_before_login = 1024
connections = 30
connections_per_ip = 3
smtp_connections_per_ip = 2
sessions_per_user_ip = 4
sessions_per_user = 8

[guard]
delay_start = 0
delay_max = 0
max_failures = 4
block_seconds = 60
""",
    )
    (tmp_path / "users").mkdir()
    config = load_config(path)
    assert config.data_dir == tmp_path / "data"
    assert config.hostname == "MX.Example.Test"
    assert config.domains == ("example.test", "other.test")
    assert config.ports_file == tmp_path / "ports.json"
    assert config.passwd_file == config.users_file == tmp_path / "users" / "passwd"
    assert config.aliases_file == tmp_path / "users" / "aliases", "need not exist yet"
    assert config.postmaster == "hostmaster@other.test"
    assert config.recipient_delimiter == "+-"
    assert config.listen == {
        "smtp": "tcp:25",
        "submission": "tcp:587:interface=127.0.0.1",
        "submissions": "ssl:465:interface=127.0.0.1",
        "pop3": "tcp6:110:interface=\\:\\:1",
        "pop3s": "unix:pop3s.sock",
        "imaps": "tcp:993",
    }
    assert config.tls_certificate == tmp_path / "certs" / "mx.example.test.crt"
    assert config.tls_key == tmp_path / "certs" / "mx.example.test.key"
    assert config.allow_plaintext and config.allow_plaintext_schemes
    assert config.limits == Limits(
        message_size=1000000,
        smtp_command_line=1024,
        smtp_text_line=2000,
        smtp_recipients=50,
        session_errors=5,
        smtp_idle_timeout=301.5,
        smtp_data_timeout=181.0,
        pop3_idle_timeout=700.0,
        imap_idle_timeout=1900.0,
        command_line=4096,
        imap_literal_before_login=1024,
        connections=30,
        connections_per_ip=3,
        smtp_connections_per_ip=2,
        sessions_per_user_ip=4,
        sessions_per_user=8,
    )
    assert isinstance(config.limits.message_size, int)
    assert isinstance(config.limits.pop3_idle_timeout, float)
    assert config.guard == GuardSettings(
        delay_start=0.0, delay_max=0.0, max_failures=4, block_seconds=60.0
    )
    assert config.source == path


def test_minimal_file_gets_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getfqdn", lambda: "host.example.test")
    config = load_config(write(tmp_path, "[mailgw]\ndata_dir = /srv/mail\ndomains = a.test\n"))
    assert config.hostname == "host.example.test"
    assert config.data_dir == Path("/srv/mail")
    assert config.listen == {} and config.ports_file is None
    assert config.users_file == Path("/srv/mail/passwd")
    assert config.tls_certificate is None and config.tls_key is None
    assert not config.allow_plaintext and not config.allow_plaintext_schemes
    assert config.limits == Limits() and config.guard == GuardSettings()
    assert config.aliases_file is None and config.postmaster is None
    assert config.recipient_delimiter == "+"
    assert config.relay == RelaySettings(smarthost=None, smarthost_tls="required")
    assert config.relay.verify_certificates and config.relay.max_age == 5 * 86400
    assert config.queue_dir == Path("/srv/mail/queue")


def test_connection_defaults_fit_an_office_behind_one_address() -> None:
    """Dovecot's 10 sessions per user and address, Postfix's 50 per client on the MX port, and
    room for an office behind one NAT address before login."""
    limits = Limits()
    assert (limits.sessions_per_user_ip, limits.sessions_per_user) == (10, 50)
    assert (limits.connections, limits.connections_per_ip) == (500, 200)
    assert limits.smtp_connections_per_ip == 50
    assert 15 * 5 <= limits.connections_per_ip  # fifteen Thunderbirds, five connections each


def test_unset_caps_are_lowered_to_the_limit_they_are_part_of(tmp_path: Path) -> None:
    text = BASE + "\n[limits]\nconnections = 40\nsessions_per_user = 4\n"
    limits = load_config(write(tmp_path, text)).limits
    assert limits.connections_per_ip == limits.smtp_connections_per_ip == 40
    assert limits.sessions_per_user_ip == 4


def test_empty_recipient_delimiter_disables_subaddresses(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE + "recipient_delimiter =\n"))
    assert config.recipient_delimiter == ""


def test_default_config_is_loopback_only_on_unprivileged_ports() -> None:
    config = default_config()
    assert config.data_dir == Path.cwd() / "mailgw-data"
    assert config.hostname == "localhost" and config.domains == ("localhost",)
    assert set(config.listen) == set(SERVICES)
    ports = {name: int(value.split(":")[1]) for name, value in config.listen.items()}
    assert ports == {
        "smtp": 2525,
        "submission": 2587,
        "submissions": 2465,
        "pop3": 1110,
        "pop3s": 1995,
        "imap": 1143,
        "imaps": 1993,
    }
    assert all(value.endswith(":interface=127.0.0.1") for value in config.listen.values())
    assert config.tls_certificate is None and not config.allow_plaintext


def assert_error(path: Path, where: str, *fragments: str) -> None:
    """load_config(path) fails with one line naming the file, ``where`` and each fragment."""
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    assert where in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("extra", "where", "fragment"),
    [
        ("[smtp]\nport = 25\n", "[smtp]", "unknown section"),
        ("[DEFAULT]\nhostname = x\n", "[DEFAULT]", "unknown section"),
        ("[listen]\nsmpt = tcp:25\n", "[listen] smpt", "unknown key"),
        ("[limits]\nmessage_sise = 10\n", "[limits] message_sise", "unknown key"),
        ("[listen]\nsmtp = tcp:http\n", "[listen] smtp", "invalid endpoint"),
        ("[listen]\nsmtp = bogus:25\n", "[listen] smtp", "Unknown endpoint type"),
        ("[listen]\nsmtp = 25\n", "[listen] smtp", "not an endpoint string"),
        ("[listen]\nsmtp = unix:\n", "[listen] smtp", "needs the socket's path"),
        ("[listen]\nsmtp = tcp:25:colour=red\n", "[listen] smtp", "colour"),
        ("[listen]\nimap = tcp:70000\n", "[listen] imap", "out of range"),
        ("[listen]\npop3 = tcp:110:interface=localhost\n", "[listen] pop3", "not an IP address"),
        ("[listen]\npop3 = tcp:110:interface=\\:\\:1\n", "[listen] pop3", "not an IPv4"),
        ("[listen]\nsmtp = ssl:25\n", "[listen] smtp", "implicit-TLS"),
        ("[listen]\nimaps = ssl:993:privateKey=k.pem\n", "[listen] imaps", "no TLS options"),
        ("[listen]\nimaps = stdio:\n", "[listen] imaps", "cannot be wrapped in TLS"),
        ("[listen]\nimaps = ssl:nine\n", "[listen] imaps", "invalid endpoint 'ssl:nine'"),
        ("[limits]\nmessage_size = big\n", "[limits] message_size", "whole number"),
        ("[limits]\nmessage_size = 1.5\n", "[limits] message_size", "whole number"),
        ("[limits]\nsmtp_recipients = 0\n", "[limits] smtp_recipients", "positive"),
        ("[limits]\nconnections = -3\n", "[limits] connections", "positive"),
        ("[limits]\nsmtp_idle_timeout = nan\n", "[limits] smtp_idle_timeout", "finite"),
        ("[limits]\nsmtp_idle_timeout = soon\n", "[limits] smtp_idle_timeout", "a number"),
        ("[limits]\npop3_idle_timeout = 599\n", "[limits] pop3_idle_timeout", "at least 600"),
        ("[limits]\nimap_idle_timeout = 1799\n", "[limits] imap_idle_timeout", "at least 1800"),
        ("[limits]\nsmtp_command_line = 100\n", "[limits] smtp_command_line", "at least 512"),
        (
            "[limits]\nconnections = 10\nconnections_per_ip = 11\n",
            "[limits] connections_per_ip",
            "must not exceed",
        ),
        (
            "[limits]\nconnections = 10\nsmtp_connections_per_ip = 11\n",
            "[limits] smtp_connections_per_ip",
            "must not exceed connections",
        ),
        (
            "[limits]\nsessions_per_user = 5\nsessions_per_user_ip = 6\n",
            "[limits] sessions_per_user_ip",
            "must not exceed sessions_per_user",
        ),
        ("[limits]\nsessions_per_user_ip = 0\n", "[limits] sessions_per_user_ip", "positive"),
        (
            "[limits]\nimap_connections_per_user = 20\n",
            "[limits] imap_connections_per_user",
            "unknown key",
        ),
        ("[guard]\ndelay_start = -1\n", "[guard] delay_start", "negative"),
        ("[guard]\nmax_failures = 0\n", "[guard] max_failures", "positive"),
        ("[guard]\nblock_seconds = 0\n", "[guard] block_seconds", "positive"),
        ("[guard]\ndelay_start = 5\ndelay_max = 1\n", "[guard] delay_max", "delay_start"),
        ("[auth]\nallow_plaintext = maybe\n", "[auth] allow_plaintext", "yes or no"),
        ("[tls]\ncertificate = missing.pem\n", "[tls] key", "required"),
        ("[tls]\nkey = missing.pem\n", "[tls] certificate", "required"),
        (
            "[tls]\ncertificate = missing.pem\nkey = missing.key\n",
            "[tls] certificate",
            "cannot read",
        ),
        ("ports_file = nowhere/ports.json\n", "[mailgw] ports_file", "does not exist"),
        ("passwd_file = nowhere/passwd\n", "[mailgw] passwd_file", "does not exist"),
        ("passwd_file = .\n", "[mailgw] passwd_file", "not a regular file"),
        ("ports_file = .\n", "[mailgw] ports_file", "is a directory"),
        ("aliases_file = nowhere/aliases\n", "[mailgw] aliases_file", "does not exist"),
        ("aliases_file = .\n", "[mailgw] aliases_file", "not a regular file"),
        ("postmaster = pm@elsewhere.test\n", "[mailgw] postmaster", "not in a local domain"),
        ("postmaster = postmaster\n", "[mailgw] postmaster", "exactly one '@'"),
        ("recipient_delimiter = +@\n", "[mailgw] recipient_delimiter", "'@' cannot separate"),
        ("[limits]\nsmtp_data_timeout = 179\n", "[limits] smtp_data_timeout", "at least 180"),
        ("[relay]\nsmarthost = relay.test\n", "[relay] smarthost", "host:port"),
        ("[relay]\nsmarthost = relay.test:0\n", "[relay] smarthost", "host:port"),
        ("[relay]\nsmarthost = relay.test:99999\n", "[relay] smarthost", "host:port"),
        ("[relay]\nsmarthost = bad_host:25\n", "[relay] smarthost", "'bad_host'"),
        ("[relay]\nsmarthost = [relay.test]:25\n", "[relay] smarthost", "not a host name"),
        ("[relay]\nsmarthost = a.test:25\nsmarthost_user = u\n", "smarthost_password", "req"),
        ("[relay]\nsmarthost_user = u\nsmarthost_password = p\n", "smarthost_user", "needs"),
        ("[relay]\nsmarthost_tls = maybe\n", "[relay] smarthost_tls", "opportunistic"),
        (
            "[relay]\nsmarthost = a.test:25\nsmarthost_user = u\nsmarthost_password = p\n"
            "smarthost_tls = none\n",
            "[relay] smarthost_tls",
            "in clear",
        ),
        ("[relay]\nverify_certificates = sure\n", "[relay] verify_certificates", "yes or no"),
        ("[relay]\nmax_age = 0\n", "[relay] max_age", "positive"),
        ("[relay]\nconcurrency_per_destination = 1.5\n", "[relay] concurrency", "whole"),
        ("[relay]\nsmart_host = a.test:25\n", "[relay] smart_host", "unknown key"),
    ],
)
def test_bad_values_name_file_section_key_and_problem(
    tmp_path: Path, extra: str, where: str, fragment: str
) -> None:
    assert_error(write(tmp_path, BASE + extra), where, fragment)


@pytest.mark.parametrize(
    ("mailgw_section", "where", "fragment"),
    [
        ("hostname = x\ndomains = a.test\n", "[mailgw] data_dir", "required"),
        ("data_dir = d\ndomains = , ,\n", "[mailgw] domains", "at least one"),
        ("data_dir = d\n", "[mailgw] domains", "at least one"),
        ("data_dir = d\ndomains = a.test, bad_domain\n", "[mailgw] domains", "'bad_domain'"),
        ("data_dir = d\ndomains = a.test\nhostname = -x-\n", "[mailgw] hostname", "not a valid"),
    ],
)
def test_bad_mailgw_section(tmp_path: Path, mailgw_section: str, where: str, fragment: str) -> None:
    assert_error(write(tmp_path, "[mailgw]\n" + mailgw_section), where, fragment)


def test_unusable_machine_name_asks_for_a_hostname(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "getfqdn", lambda: "build_box")
    path = write(tmp_path, "[mailgw]\ndata_dir = d\ndomains = a.test\n")
    assert_error(path, "[mailgw] hostname", "'build_box'", "set one")


def test_syntax_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate|already exists") as caught:
        load_config(write(tmp_path, BASE + "[listen]\nsmtp = tcp:25\nsmtp = tcp:26\n"))
    assert "\n" not in str(caught.value) and str(tmp_path) in str(caught.value)
    with pytest.raises(ConfigError, match="section header"):
        load_config(write(tmp_path, "data_dir = x\n"))


def test_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.ini: cannot read: No such file"):
        load_config(tmp_path / "nope.ini")
    (tmp_path / "binary.ini").write_bytes(b"[mailgw]\ndata_dir = \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "binary.ini")


def test_data_dir_that_is_a_file_or_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a directory")
    path = write(tmp_path, "[mailgw]\ndata_dir = plain\ndomains = a.test\n")
    assert_error(path, "[mailgw] data_dir", "is not a directory")
    path = write(tmp_path, "[mailgw]\ndata_dir = plain/sub/data\ndomains = a.test\n")
    assert_error(path, "[mailgw] data_dir", "cannot be created", "plain is not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_data_dir_without_write_permission(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        path = write(tmp_path, "[mailgw]\ndata_dir = locked\ndomains = a.test\n")
        assert_error(path, "[mailgw] data_dir", "not writable")
        path = write(tmp_path, "[mailgw]\ndata_dir = locked/new\ndomains = a.test\n")
        assert_error(path, "[mailgw] data_dir", "cannot be created")
    finally:
        locked.chmod(0o700)


def test_bad_certificate_files(tmp_path: Path) -> None:
    cert, key = write_pem_pair(tmp_path)
    other_cert, other_key = write_pem_pair(tmp_path, "other.example.test")
    (tmp_path / "junk.pem").write_text("hello\n")

    def tls(certificate: Path, private_key: Path) -> Path:
        return write(tmp_path, BASE + f"[tls]\ncertificate = {certificate}\nkey = {private_key}\n")

    assert_error(tls(tmp_path / "junk.pem", key), "[tls] certificate", "no PEM certificate")
    assert_error(tls(cert, tmp_path / "junk.pem"), "[tls] key", "no usable PEM private key")
    assert_error(tls(cert, other_key), "[tls] key", "is not the key of the certificate")
    assert_error(tls(cert, tmp_path / "gone.key"), "[tls] key", "cannot read", "gone.key")
    encrypted = tmp_path / "encrypted.key"
    private_key = serialization.load_pem_private_key(key.read_bytes(), None)
    encrypted.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    assert_error(tls(cert, encrypted), "[tls] key", "encrypted")
    assert load_config(tls(other_cert, other_key)).tls_key == other_key


def test_listener_ssl_and_empty_values(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "[listen]\nimaps = ssl:993\npop3s = ssl:995:backlog=5\nsmtp =\n")
    assert load_config(path).listen == {"imaps": "ssl:993", "pop3s": "ssl:995:backlog=5"}


def test_relay_section(tmp_path: Path) -> None:
    """A smarthost with AUTH and opportunistic TLS; an IPv6 smarthost; certificate checks off."""
    text = (
        "[relay]\nsmarthost = Relay.Example.Net:587\nsmarthost_user = gw@example.net\n"
        "smarthost_password = s3cret\nsmarthost_tls = Opportunistic\n"
        "verify_certificates = no\nmax_age = 3600\nconcurrency_per_destination = 2\n"
    )
    config = load_config(write(tmp_path, BASE + text))
    assert config.relay == RelaySettings(
        smarthost=("Relay.Example.Net", 587),
        smarthost_user="gw@example.net",
        smarthost_password="s3cret",
        smarthost_tls="opportunistic",
        verify_certificates=False,
        max_age=3600.0,
        concurrency_per_destination=2,
    )
    config = load_config(write(tmp_path, BASE + "[relay]\nsmarthost = [2001:db8::1]:25\n"))
    assert config.relay.smarthost == ("2001:db8::1", 25)
    config = load_config(write(tmp_path, BASE + "[relay]\nsmarthost = 192.0.2.7:2525\n"))
    assert config.relay.smarthost == ("192.0.2.7", 2525)
