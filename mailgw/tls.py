"""TLS for every listener: the certificate in force and a TLS 1.2+ context without compression.

The certificate is the one configured in ``[tls]``, or else a self-signed one for the host name
that is generated into ``data_dir/tls/`` on first start (key mode 0600) and reused afterwards;
it is generated again only when it has expired or no longer names the host.  Under
``twistd --uid`` the [tls] files are read as root (``load_configured_tls``) and a generated pair
is written after the switch, as the run-as user (``load_or_create_tls``).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger

from mailgw.config import Config, ConfigError
from mailgw.durable import remove_stale_temps

log = Logger()

#: Where a generated certificate and its key are kept, under the data directory.
GENERATED_DIR = "tls"
GENERATED_CERTIFICATE = "cert.pem"
GENERATED_KEY = "key.pem"
#: A generated certificate is valid this long.
GENERATED_VALIDITY = datetime.timedelta(days=3650)

#: Read at most this much of a PEM file (a certificate chain is a few kilobytes).
_MAX_PEM = 1024 * 1024


class TLSFileError(ValueError):
    """A certificate or key file is unusable; ``which`` says which ("certificate" or "key")."""

    def __init__(self, which: str, message: str) -> None:
        super().__init__(message)
        self.which = which


def read_pem_pair(certificate: Path, key: Path) -> tuple[object, list]:
    """Read a PEM certificate chain (leaf first) and its unencrypted private key.

    Return ``(private_key, [certificate, ...])`` as ``cryptography`` objects.  Raise
    TLSFileError when a file is unreadable, not PEM, encrypted, or the key does not match.
    """
    chain_data = _read(certificate, "certificate")
    try:
        chain = x509.load_pem_x509_certificates(chain_data)
    except ValueError:
        raise TLSFileError("certificate", f"{certificate} holds no PEM certificate") from None
    key_data = _read(key, "key")
    try:
        private_key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise TLSFileError("key", f"{key} is encrypted; mailgw needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TLSFileError("key", f"{key} holds no usable PEM private key") from None
    if _public_der(private_key) != _public_der(chain[0]):
        raise TLSFileError("key", f"{key} is not the key of the certificate in {certificate}")
    return private_key, chain


def _read(path: Path, which: str) -> bytes:
    """The start of a file, or TLSFileError saying why it cannot be read."""
    try:
        with path.open("rb") as stream:
            return stream.read(_MAX_PEM)
    except OSError as error:
        raise TLSFileError(which, f"cannot read {path}: {error.strerror or error}") from None


def _public_der(holder: object) -> bytes:
    """The DER SubjectPublicKeyInfo of a private key or certificate."""
    return holder.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def tls_options(private_key: object, chain: list) -> CertificateOptions:
    """Server TLS options for a key and certificate chain: TLS 1.2 or newer, no compression.

    The ``cryptography`` objects are handed to pyOpenSSL (>= 24.3) as they are: its own X509 and
    PKey wrappers are deprecated.  CertificateOptions always sets OP_NO_COMPRESSION.
    """
    return CertificateOptions(
        privateKey=private_key,
        certificate=chain[0],
        extraCertChain=list(chain[1:]),
        raiseMinimumTo=TLSVersion.TLSv1_2,
    )


def load_configured_tls(config: Config) -> CertificateOptions | None:
    """The TLS options from the [tls] files of ``config``, or None if it names none.

    Nothing is written.  ``twistd --uid`` calls this as root, before privileges are dropped, so
    the key may be readable by root only.  Raise ConfigError when a file is unusable.
    """
    if config.tls_certificate is None or config.tls_key is None:
        return None
    try:
        private_key, chain = read_pem_pair(config.tls_certificate, config.tls_key)
    except TLSFileError as error:
        source = config.source or "<configuration>"
        raise ConfigError(f"{source}: [tls] {error.which}: {error}") from None
    return tls_options(private_key, chain)


def load_or_create_tls(config: Config) -> CertificateOptions:
    """The TLS options for ``config``: its [tls] files, or the generated self-signed pair."""
    configured = load_configured_tls(config)
    if configured is not None:
        return configured
    return tls_options(*_generated_pair(config))


def generated_paths(config: Config) -> tuple[Path, Path]:
    """Where the generated (certificate, key) of ``config`` are kept."""
    directory = config.data_dir / GENERATED_DIR
    return directory / GENERATED_CERTIFICATE, directory / GENERATED_KEY


def _generated_pair(config: Config) -> tuple[object, list]:
    """Reuse the generated certificate if still good for the host name, else make a new one."""
    cert_path, key_path = generated_paths(config)
    if cert_path.exists() or key_path.exists():
        try:
            private_key, chain = read_pem_pair(cert_path, key_path)
        except TLSFileError as error:
            log.warn("Generating a new certificate: {problem}", problem=str(error))
        else:
            problem = _unsuitable(chain[0], config.hostname)
            if problem is None:
                return private_key, chain
            log.info("Generating a new certificate: {problem}", problem=problem)
    private_key, certificate = self_signed(config.hostname, config.domains)
    try:
        cert_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in (key_path, cert_path):
            remove_stale_temps(path)  # a killed start's temp files (one holds a private key)
        key_pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_atomically(key_path, key_pem, 0o600)
        _write_atomically(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as error:
        source = config.source or "<configuration>"
        raise ConfigError(
            f"{source}: [tls] certificate: none configured and cannot write a generated one "
            f"to {cert_path.parent}: {error.strerror or error}"
        ) from None
    log.info(
        "Generated a self-signed certificate for {hostname} in {path}; clients will warn about"
        " it until [tls] certificate and key name a certificate they trust",
        hostname=config.hostname,
        path=str(cert_path),
    )
    return private_key, [certificate]


def _unsuitable(certificate: x509.Certificate, hostname: str) -> str | None:
    """Why a generated certificate must be replaced, or None if it is still good."""
    if certificate.not_valid_after_utc <= datetime.datetime.now(datetime.UTC):
        return "the generated certificate has expired"
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return "the generated certificate names no host"
    if hostname.lower() not in [n.lower() for n in names.value.get_values_for_type(x509.DNSName)]:
        return f"the generated certificate is not for {hostname}"
    return None


def self_signed(hostname: str, domains: tuple = ()) -> tuple[object, x509.Certificate]:
    """A new ECDSA P-256 key and a self-signed server certificate for ``hostname`` (and domains)."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = list(dict.fromkeys([hostname.lower(), *domains]))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + GENERATED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(private_key, hashes.SHA256())
    )
    return private_key, certificate


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` through a temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
