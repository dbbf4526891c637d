"""TLS: the generated certificate is kept and reused; only TLS 1.2+ is spoken, uncompressed."""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from conftest import in_reactor, make_config
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailgw.config import ConfigError
from mailgw.tls import generated_paths, load_or_create_tls, self_signed

# The stdlib marks TLS 1.0 and 1.1 deprecated; these tests use them on purpose, to see them refused.
pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")


def served_certificate(options) -> x509.Certificate:
    """The certificate a CertificateOptions presents."""
    return options.certificate


def test_generated_certificate_is_kept_and_reused(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    first = served_certificate(load_or_create_tls(config))
    cert_path, key_path = generated_paths(config)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.parent.stat().st_mode) == 0o700
    san = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mx.example.test" in san.get_values_for_type(x509.DNSName)
    key_before = key_path.read_bytes()
    second = served_certificate(load_or_create_tls(config))
    assert second == first
    assert key_path.read_bytes() == key_before
    assert x509.load_pem_x509_certificate(cert_path.read_bytes()) == first


def test_generated_certificate_follows_a_new_hostname(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    first = served_certificate(load_or_create_tls(config))
    renamed = dataclasses.replace(config, hostname="mail.example.test")
    second = served_certificate(load_or_create_tls(renamed))
    assert second != first
    san = second.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mail.example.test" in san.get_values_for_type(x509.DNSName)


def test_damaged_generated_files_are_replaced(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    load_or_create_tls(config)
    cert_path, key_path = generated_paths(config)
    key_path.write_text("garbage")
    served = served_certificate(load_or_create_tls(config))
    assert x509.load_pem_x509_certificate(cert_path.read_bytes()) == served
    assert serialization.load_pem_private_key(key_path.read_bytes(), None)


def test_a_start_killed_while_generating_does_not_stop_the_next(tmp_path: Path) -> None:
    """Killed between the key's rename and the certificate's (a new key beside the old
    certificate), with half-written temp files of the next pair: the next start makes a new
    pair and removes the dead start's temp files (one holds a private key)."""
    config = make_config(tmp_path / "data")
    load_or_create_tls(config)
    cert_path, key_path = generated_paths(config)
    new_key, _ = self_signed(config.hostname)
    key_path.write_bytes(
        new_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    temps = [path.with_name(f".{path.name}.{dead}.tmp") for path in (key_path, cert_path)]
    for temp in temps:
        temp.write_bytes(b"-----BEGIN ")
    served = served_certificate(load_or_create_tls(config))
    assert x509.load_pem_x509_certificate(cert_path.read_bytes()) == served
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert key.public_key() == served.public_key()
    assert not any(temp.exists() for temp in temps)


def test_configured_certificate_is_served_and_checked(tmp_path: Path) -> None:
    key, certificate = self_signed("mx.example.test")
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    config = make_config(tmp_path / "data", tls_certificate=cert_path, tls_key=key_path)
    assert served_certificate(load_or_create_tls(config)) == certificate
    assert not (tmp_path / "data" / "tls").exists()
    cert_path.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"\[tls\] certificate: .*server.crt holds no PEM"):
        load_or_create_tls(config)


def test_generated_certificate_cannot_be_written(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tls").write_text("a file where the directory should be")
    with pytest.raises(ConfigError, match=r"\[tls\] certificate: .*cannot write a generated"):
        load_or_create_tls(config)


def test_context_refuses_old_versions_and_compression(tmp_path: Path) -> None:
    context = load_or_create_tls(make_config(tmp_path / "data")).getContext()
    options = context.set_options(0)
    for flag in (SSL.OP_NO_COMPRESSION, SSL.OP_NO_SSLv3, SSL.OP_NO_TLSv1, SSL.OP_NO_TLSv1_1):
        assert options & flag == flag
    assert not options & SSL.OP_NO_TLSv1_2


class _Greeter(Protocol):
    """Says whether it runs over TLS, then waits."""

    def connectionMade(self) -> None:
        secure = ISSLTransport.providedBy(self.transport)
        self.transport.write(b"tls\r\n" if secure else b"plain\r\n")


@pytest.fixture
def tls_port(tmp_path: Path):
    """A loopback port speaking implicit TLS with mailgw's options, as the service wraps it."""
    options = load_or_create_tls(make_config(tmp_path / "data"))
    factory = TLSMemoryBIOFactory(options, False, Factory.forProtocol(_Greeter))
    port = in_reactor(serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen, factory)
    yield port.getHost().port
    in_reactor(port.stopListening)


def client_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A stdlib client context speaking only ``version``, any certificate accepted."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def handshake(port: int, version: ssl.TLSVersion) -> tuple[str, bytes]:
    """Connect with ``version``; return the negotiated version and the first line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client_context(version).wrap_socket(raw) as tls:
            assert tls.compression() is None
            return tls.version(), tls.recv(100)


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=lambda version: version.name
)
def test_tls_12_and_13_accepted(tls_port: int, version: ssl.TLSVersion) -> None:
    assert handshake(tls_port, version) == (version.name.replace("_", "."), b"tls\r\n")


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=lambda version: version.name
)
def test_tls_below_12_refused(tls_port: int, version: ssl.TLSVersion) -> None:
    with pytest.raises(ssl.SSLError):
        handshake(tls_port, version)
    assert handshake(tls_port, ssl.TLSVersion.TLSv1_2)[1] == b"tls\r\n"


def test_the_old_client_works_against_a_server_that_allows_it(tmp_path: Path) -> None:
    """Control: the refusal above is the server's doing, not a client unable to speak TLS 1.1."""
    key, certificate = self_signed("localhost")
    pem = tmp_path / "both.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + certificate.public_bytes(serialization.Encoding.PEM)
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pem)
    server_context.minimum_version = ssl.TLSVersion.TLSv1_1
    server_context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)

        def serve() -> None:
            connection, _ = listener.accept()
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.sendall(b"old\r\n")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        assert handshake(port, ssl.TLSVersion.TLSv1_1) == ("TLSv1.1", b"old\r\n")
        thread.join(5)
