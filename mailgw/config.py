"""mailgw's configuration: an INI file, validated whole before anything starts.

``Config`` is the one typed result every other part reads; ``load_config(path)`` builds it from a
file and ``default_config()`` from the embedded default used by a bare ``twistd mailgw``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mailgw.context import GuardSettings, Limits

#: Every listener mailgw knows, in start-up order.
SERVICES = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")

#: Listeners that speak TLS from the first byte (the others may offer STARTTLS/STLS).
IMPLICIT_TLS = frozenset({"submissions", "pop3s", "imaps"})


class ConfigError(Exception):
    """The configuration is unusable; the message names the file, the key and what is wrong."""


@dataclass(frozen=True)
class Config:
    """A validated configuration."""

    data_dir: Path
    hostname: str = "localhost"
    domains: tuple = ("localhost",)
    #: After every listener is bound, a JSON object {service: port} is written here.
    ports_file: Path | None = None
    #: service name -> Twisted endpoint string; a missing or empty one is disabled.
    listen: dict = field(default_factory=dict)
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    allow_plaintext: bool = False
    #: The user database (Dovecot passwd-file format); default ``data_dir/passwd``.
    passwd_file: Path | None = None
    limits: Limits = field(default_factory=Limits)
    guard: GuardSettings = field(default_factory=GuardSettings)
    #: The file this came from, for messages (None for the embedded default).
    source: Path | None = None

    @property
    def mail_dir(self) -> Path:
        """Where the users' Maildirs live."""
        return self.data_dir / "mail"

    @property
    def tmp_dir(self) -> Path:
        """Where messages being received are written (same file system as mail_dir)."""
        return self.data_dir / "tmp"

    @property
    def users_file(self) -> Path:
        """The passwd-file in force."""
        return self.passwd_file or self.data_dir / "passwd"
