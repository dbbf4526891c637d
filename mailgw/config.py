"""mailgw's configuration: an INI file, validated whole before anything starts.

``Config`` is the one typed result every other part reads; ``load_config(path)`` builds it from a
file and ``default_config()`` from the embedded default used by a bare ``twistd mailgw``.  Every
key is documented in ``etc/mailgw.ini``.  A bad file raises ``ConfigError`` with one line:
``FILE: [section] key: what is wrong``.
"""

from __future__ import annotations

import configparser
import ipaddress
import math
import os
import re
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path

from mailgw.auth.cost import LoginCostSettings
from mailgw.context import GuardSettings, Limits
from mailgw.relay import SMARTHOST_TLS_MODES, RelaySettings

#: Every listener mailgw knows, in start-up order.
SERVICES = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")

#: Listeners that speak TLS from the first byte (the others may offer STARTTLS/STLS).
IMPLICIT_TLS = frozenset({"submissions", "pop3s", "imaps"})

#: Endpoint types an implicit-TLS listener may use: plain sockets that mailgw wraps in TLS itself.
#: ``ssl:`` is accepted too, without TLS options, and means ``tcp:`` wrapped the same way.
PLAIN_ENDPOINT_TYPES = frozenset({"tcp", "tcp6", "unix", "systemd"})

#: Twisted's ``ssl:`` endpoint options that mailgw's own TLS replaces.
_SSL_ONLY_OPTIONS = ("privateKey", "certKey", "sslmethod", "extraCertChain", "dhParameters")

#: The unprivileged loopback ports of the embedded default configuration.
DEFAULT_PORTS = {
    "smtp": 2525,
    "submission": 2587,
    "submissions": 2465,
    "pop3": 1110,
    "pop3s": 1995,
    "imap": 1143,
    "imaps": 1993,
}

#: Lower bounds of [limits] keys beyond "positive" (the RFCs' minimums).
LIMIT_MINIMUMS = {
    "smtp_command_line": 512,  # RFC 5321 4.5.3.1.4
    "smtp_text_line": 1000,  # RFC 5321 4.5.3.1.6
    "smtp_idle_timeout": 300,  # RFC 5321 4.5.3.2.7
    "smtp_data_timeout": 180,  # RFC 5321 4.5.3.2.4 (a client's data block timeout)
    "pop3_idle_timeout": 600,  # RFC 1939 3
    "imap_idle_timeout": 1800,  # RFC 3501 5.4
}

#: [limits] caps that cannot be more than another limit they are part of: per-IP connections
#: are part of a listener's connections, one user's sessions from one IP part of all of them.
CAPPED_BY = {
    "connections_per_ip": "connections",
    "smtp_connections_per_ip": "connections",
    "sessions_per_user_ip": "sessions_per_user",
}

#: Keys for which 0 is meaningful: [guard] delays (no delay), [auth] cache_ttl and cache_size
#: (no cache); every other number must be positive.
ZERO_ALLOWED = frozenset({"delay_start", "delay_max", "cache_ttl", "cache_size"})

_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

#: Characters that may separate a user from the detail of a subaddress (user+detail@domain).
DELIMITER_CHARACTERS = frozenset("+-_=.#~&$^*/?'{|}")


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
    #: May the passwd-file hold {PLAIN}/{CLEARTEXT} passwords? ([auth] allow_plaintext_schemes)
    allow_plaintext_schemes: bool = False
    #: The user database (Dovecot passwd-file format); default ``data_dir/passwd``.
    passwd_file: Path | None = None
    #: Aliases and catch-alls (``alias@domain: target, ...``); None for none.
    aliases_file: Path | None = None
    #: Who gets postmaster@ of a local domain that has no user or alias of that name.
    postmaster: str | None = None
    #: Characters separating a user from a subaddress detail ('' disables subaddresses).
    recipient_delimiter: str = "+"
    limits: Limits = field(default_factory=Limits)
    guard: GuardSettings = field(default_factory=GuardSettings)
    #: The verified-credentials cache and the hashing threads ([auth] cache_*, hash_threads).
    login_cost: LoginCostSettings = field(default_factory=LoginCostSettings)
    #: Outbound mail: smarthost or direct MX delivery, TLS, retries ([relay]).
    relay: RelaySettings = field(default_factory=RelaySettings)
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
    def queue_dir(self) -> Path:
        """The outbound queue (``mailgw.relay.queue``): messages for other servers."""
        return self.data_dir / "queue"

    @property
    def users_file(self) -> Path:
        """The passwd-file in force."""
        return self.passwd_file or self.data_dir / "passwd"


def default_config() -> Config:
    """The embedded default: data in ./mailgw-data/, localhost only, unprivileged ports."""
    return Config(
        data_dir=Path("mailgw-data").absolute(),
        hostname="localhost",
        domains=("localhost",),
        listen={name: f"tcp:{port}:interface=127.0.0.1" for name, port in DEFAULT_PORTS.items()},
    )


def server_endpoint(reactor: object, service: str, description: str) -> tuple[object, bool]:
    """Build the (unbound) server endpoint for ``service`` from a Twisted endpoint string.

    Return ``(endpoint, wrap_in_tls)``: implicit-TLS services get a plain endpoint that the
    caller wraps in mailgw's own TLS.  Raise ValueError, with a one-line reason, for a string
    Twisted cannot parse or one that does not suit the service.  Nothing is bound.
    """
    from twisted.internet.endpoints import serverFromString

    given = description
    kind = description.split(":", 1)[0].strip().lower()
    if ":" not in description:
        raise ValueError("not an endpoint string (expected e.g. tcp:25:interface=127.0.0.1)")
    if kind == "ssl":
        if service not in IMPLICIT_TLS:
            raise ValueError(
                "ssl: is for the implicit-TLS services (submissions, pop3s, imaps); "
                "this one offers STARTTLS on a plain tcp: endpoint"
            )
        if any(re.search(rf"(^|:){name}=", description) for name in _SSL_ONLY_OPTIONS):
            raise ValueError("ssl: here takes no TLS options: mailgw uses the [tls] certificate")
        description = "tcp:" + description.split(":", 1)[1]
        kind = "tcp"
    elif service in IMPLICIT_TLS and kind not in PLAIN_ENDPOINT_TYPES:
        raise ValueError(
            f"{kind}: cannot be wrapped in TLS; use tcp:, tcp6:, unix:, systemd: or ssl:"
        )
    try:
        endpoint = serverFromString(reactor, description)
    except Exception as error:  # any parser, including endpoint plugins, may raise anything
        raise ValueError(f"invalid endpoint {given!r}: {error}") from None
    _check_address(kind, endpoint)
    return endpoint, service in IMPLICIT_TLS


def _check_address(kind: str, endpoint: object) -> None:
    """Refuse a TCP port out of range, an interface of the wrong family, a UNIX socket unnamed."""
    if kind == "unix" and not getattr(endpoint, "_address", "x"):
        raise ValueError("unix: needs the socket's path (e.g. unix:/run/mailgw/smtp.sock)")
    if kind not in ("tcp", "tcp6"):
        return
    port = getattr(endpoint, "_port", 0)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    interface = getattr(endpoint, "_interface", "")
    if interface:
        try:
            address = ipaddress.ip_address(interface)
        except ValueError:
            raise ValueError(f"interface {interface!r} is not an IP address") from None
        if address.version != (4 if kind == "tcp" else 6):
            family = 4 if kind == "tcp" else 6
            raise ValueError(
                f"interface {interface!r} is not an IPv{family} address "
                "(tcp: is for IPv4, tcp6: for IPv6)"
            )


def load_config(path: Path) -> Config:
    """Read and validate the INI file ``path``; raise ConfigError naming the first problem."""
    path = Path(path)
    parser = configparser.ConfigParser(
        interpolation=None,
        delimiters=("=",),
        strict=True,
        empty_lines_in_values=False,
        # No magic [DEFAULT] section: it would be an unknown section like any other.
        default_section="\x00none",
    )
    try:
        with path.open(encoding="utf-8") as stream:
            parser.read_file(stream, source=str(path))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except configparser.Error as error:
        raise ConfigError(_one_line(f"{path}: {error}")) from None
    return _Reader(path, parser).config()


def _one_line(text: str) -> str:
    """Join a multi-line message into one line."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


#: Every section and key the loader knows.
_SCHEMA = {
    "mailgw": (
        "data_dir",
        "hostname",
        "domains",
        "ports_file",
        "passwd_file",
        "aliases_file",
        "postmaster",
        "recipient_delimiter",
    ),
    "listen": SERVICES,
    "tls": ("certificate", "key"),
    "auth": (
        "allow_plaintext",
        "allow_plaintext_schemes",
        *(f.name for f in fields(LoginCostSettings)),
    ),
    "limits": tuple(f.name for f in fields(Limits)),
    "guard": tuple(f.name for f in fields(GuardSettings)),
    "relay": tuple(f.name for f in fields(RelaySettings)),
}


class _Reader:
    """Typed access to one parsed file, with errors that say where."""

    def __init__(self, path: Path, parser: configparser.ConfigParser) -> None:
        self.path = path
        self.parser = parser
        self.base = path.absolute().parent

    def fail(self, section: str, key: str, problem: str) -> ConfigError:
        """The error for ``[section] key``."""
        return ConfigError(_one_line(f"{self.path}: [{section}] {key}: {problem}"))

    def raw(self, section: str, key: str) -> str:
        """The stripped value, '' when absent."""
        return self.parser.get(section, key, fallback="").strip()

    def path_value(self, section: str, key: str) -> Path | None:
        """A path, relative ones taken from the config file's directory; None when absent."""
        value = self.raw(section, key)
        if not value:
            return None
        return self.base / Path(value).expanduser()

    def boolean(self, section: str, key: str) -> bool:
        """yes/no (also true/false, on/off, 1/0); absent means no."""
        value = self.raw(section, key).lower()
        if not value:
            return False
        if value not in configparser.ConfigParser.BOOLEAN_STATES:
            raise self.fail(section, key, f"expected yes or no, not {value!r}")
        return configparser.ConfigParser.BOOLEAN_STATES[value]

    def number(self, section: str, key: str, default: float) -> float:
        """An int or float (as ``default`` is) in the key's range; ``default`` when absent."""
        value = self.raw(section, key)
        if not value:
            return default
        kind = type(default)
        try:
            number = kind(value)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise self.fail(section, key, f"expected {what}, not {value!r}") from None
        if not math.isfinite(number):
            raise self.fail(section, key, f"expected a finite number, not {value!r}")
        minimum = LIMIT_MINIMUMS.get(key)
        if minimum is not None and number < minimum:
            raise self.fail(section, key, f"must be at least {minimum}, not {value}")
        if key in ZERO_ALLOWED:
            if number < 0:
                raise self.fail(section, key, f"must not be negative, not {value}")
        elif number <= 0:
            raise self.fail(section, key, f"must be positive, not {value}")
        return number

    def config(self) -> Config:
        """Validate everything and build the Config."""
        self.check_names()
        data_dir = self.path_value("mailgw", "data_dir")
        if data_dir is None:
            raise self.fail("mailgw", "data_dir", "required (where mail and users are kept)")
        self.check_data_dir(data_dir)
        certificate, key = self.tls_files()
        domains = self.domains()
        return Config(
            data_dir=data_dir,
            hostname=self.hostname(),
            domains=domains,
            ports_file=self.ports_file(data_dir),
            listen=self.listen(),
            tls_certificate=certificate,
            tls_key=key,
            allow_plaintext=self.boolean("auth", "allow_plaintext"),
            allow_plaintext_schemes=self.boolean("auth", "allow_plaintext_schemes"),
            passwd_file=self.passwd_file(data_dir),
            aliases_file=self.aliases_file(),
            postmaster=self.postmaster(domains),
            recipient_delimiter=self.recipient_delimiter(),
            limits=self.limits(),
            guard=self.guard(),
            login_cost=self.login_cost(),
            relay=self.relay(),
            source=self.path,
        )

    def check_names(self) -> None:
        """Refuse unknown sections and keys (a typo must not be silently ignored)."""
        for section in self.parser.sections():
            if section not in _SCHEMA:
                known = ", ".join(f"[{name}]" for name in _SCHEMA)
                raise ConfigError(f"{self.path}: [{section}]: unknown section (known: {known})")
            for key in self.parser.options(section):
                if key not in _SCHEMA[section]:
                    known = ", ".join(_SCHEMA[section])
                    raise self.fail(section, key, f"unknown key (known: {known})")

    def check_data_dir(self, data_dir: Path) -> None:
        """The data directory must be a writable directory, or creatable."""
        if data_dir.exists():
            if not data_dir.is_dir():
                raise self.fail("mailgw", "data_dir", f"{data_dir} is not a directory")
            if not os.access(data_dir, os.W_OK | os.X_OK):
                raise self.fail("mailgw", "data_dir", f"{data_dir} is not writable")
            return
        parent = data_dir.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise self.fail("mailgw", "data_dir", f"cannot be created: {parent} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise self.fail("mailgw", "data_dir", f"cannot be created: {parent} is not writable")

    def hostname(self) -> str:
        """This server's name (greetings, Received: headers); default the machine's FQDN."""
        value = self.raw("mailgw", "hostname")
        if not value:
            value = socket.getfqdn()
            if not _is_domain(value.lower()):
                problem = f"this machine's name {value!r} is not a valid host name: set one"
                raise self.fail("mailgw", "hostname", problem)
        if not _is_domain(value.lower()):
            raise self.fail("mailgw", "hostname", f"{value!r} is not a valid host name")
        return value

    def domains(self) -> tuple:
        """The local mail domains, lower-cased, without duplicates; at least one."""
        names: list[str] = []
        for item in self.raw("mailgw", "domains").split(","):
            name = item.strip().lower()
            if not name:
                continue
            if not _is_domain(name):
                raise self.fail("mailgw", "domains", f"{item.strip()!r} is not a valid domain name")
            if name not in names:
                names.append(name)
        if not names:
            raise self.fail("mailgw", "domains", "at least one local domain is required")
        return tuple(names)

    def ports_file(self, data_dir: Path) -> Path | None:
        """Where the bound ports are written, if anywhere; its directory must exist."""
        path = self.path_value("mailgw", "ports_file")
        if path is None:
            return None
        if path.is_dir():
            raise self.fail("mailgw", "ports_file", f"{path} is a directory")
        if not path.parent.is_dir() and path.parent != data_dir:
            raise self.fail("mailgw", "ports_file", f"directory {path.parent} does not exist")
        return path

    def passwd_file(self, data_dir: Path) -> Path | None:
        """The user database file, if not the default; a readable file when it exists."""
        path = self.path_value("mailgw", "passwd_file")
        if path is None:
            return None
        if path.exists():
            if not path.is_file():
                raise self.fail("mailgw", "passwd_file", f"{path} is not a regular file")
            if not os.access(path, os.R_OK):
                raise self.fail("mailgw", "passwd_file", f"{path} is not readable")
        elif not path.parent.is_dir() and path.parent != data_dir:
            raise self.fail("mailgw", "passwd_file", f"directory {path.parent} does not exist")
        return path

    def aliases_file(self) -> Path | None:
        """The aliases file, if any: a readable file, or one to come in an existing directory."""
        path = self.path_value("mailgw", "aliases_file")
        if path is None:
            return None
        if path.exists():
            if not path.is_file():
                raise self.fail("mailgw", "aliases_file", f"{path} is not a regular file")
            if not os.access(path, os.R_OK):
                raise self.fail("mailgw", "aliases_file", f"{path} is not readable")
        elif not path.parent.is_dir():
            raise self.fail("mailgw", "aliases_file", f"directory {path.parent} does not exist")
        return path

    def postmaster(self, domains: tuple) -> str | None:
        """The address that gets postmaster@ mail: canonical, in a local domain."""
        from mailgw.auth.errors import InvalidAddress
        from mailgw.auth.passwd import canonical_address

        value = self.raw("mailgw", "postmaster")
        if not value:
            return None
        try:
            address = canonical_address(value)
        except InvalidAddress as error:
            raise self.fail("mailgw", "postmaster", str(error)) from None
        if address.partition("@")[2] not in domains:
            problem = f"{value!r} is not in a local domain (mailgw does not relay mail yet)"
            raise self.fail("mailgw", "postmaster", problem)
        return address

    def recipient_delimiter(self) -> str:
        """The subaddress separators; absent means '+', empty means none."""
        if not self.parser.has_option("mailgw", "recipient_delimiter"):
            return "+"
        value = self.raw("mailgw", "recipient_delimiter")
        bad = sorted(set(value) - DELIMITER_CHARACTERS)
        if bad:
            allowed = " ".join(sorted(DELIMITER_CHARACTERS))
            problem = f"{bad[0]!r} cannot separate a subaddress (use some of: {allowed})"
            raise self.fail("mailgw", "recipient_delimiter", problem)
        return value

    def listen(self) -> dict:
        """service -> endpoint string, for the enabled services, each checked by Twisted."""
        from twisted.internet import reactor

        listen = {}
        for service in SERVICES:
            description = self.raw("listen", service)
            if not description:
                continue
            try:
                server_endpoint(reactor, service, description)
            except ValueError as error:
                raise self.fail("listen", service, str(error)) from None
            listen[service] = description
        return listen

    def tls_files(self) -> tuple[Path | None, Path | None]:
        """The certificate and key paths: both or neither, readable PEM that belong together."""
        from mailgw.tls import TLSFileError, read_pem_pair

        certificate = self.path_value("tls", "certificate")
        key = self.path_value("tls", "key")
        if certificate is None and key is None:
            return None, None
        if certificate is None:
            raise self.fail("tls", "certificate", "required when [tls] key is set")
        if key is None:
            raise self.fail("tls", "key", "required when [tls] certificate is set")
        try:
            read_pem_pair(certificate, key)
        except TLSFileError as error:
            raise self.fail("tls", error.which, str(error)) from None
        return certificate, key

    def limits(self) -> Limits:
        """[limits], each key a Limits field, checked against its range; a cap set above the
        limit it is part of (CAPPED_BY) is refused, one left at its default is lowered to it."""
        values = {f.name: self.number("limits", f.name, f.default) for f in fields(Limits)}
        for key, bound in CAPPED_BY.items():
            if values[key] <= values[bound]:
                continue
            if self.raw("limits", key):
                raise self.fail("limits", key, f"must not exceed {bound}")
            values[key] = values[bound]
        return Limits(**values)

    def guard(self) -> GuardSettings:
        """[guard], each key a GuardSettings field; delays may be 0 (no delay)."""
        values = {f.name: self.number("guard", f.name, f.default) for f in fields(GuardSettings)}
        if values["delay_max"] < values["delay_start"]:
            raise self.fail("guard", "delay_max", "must not be less than delay_start")
        return GuardSettings(**values)

    def login_cost(self) -> LoginCostSettings:
        """[auth] cache_ttl, cache_size (0 disables the cache) and hash_threads (positive)."""
        values = {f.name: self.number("auth", f.name, f.default) for f in fields(LoginCostSettings)}
        return LoginCostSettings(**values)

    def relay(self) -> RelaySettings:
        """[relay]: the smarthost (host:port), its AUTH and TLS, certificate checks, retries."""
        defaults = RelaySettings()
        user = self.raw("relay", "smarthost_user") or None
        password = self.raw("relay", "smarthost_password") or None
        if (user is None) != (password is None):
            missing = "smarthost_password" if password is None else "smarthost_user"
            raise self.fail("relay", missing, "required when the other AUTH key is set")
        smarthost = self.smarthost()
        if user is not None and smarthost is None:
            raise self.fail("relay", "smarthost_user", "needs a smarthost")
        mode = self.raw("relay", "smarthost_tls").lower() or defaults.smarthost_tls
        if mode not in SMARTHOST_TLS_MODES:
            known = ", ".join(SMARTHOST_TLS_MODES)
            raise self.fail("relay", "smarthost_tls", f"expected one of {known}, not {mode!r}")
        if user is not None and mode == "none":
            problem = "must not be none with smarthost_user (the password would travel in clear)"
            raise self.fail("relay", "smarthost_tls", problem)
        verify = defaults.verify_certificates
        if self.raw("relay", "verify_certificates"):
            verify = self.boolean("relay", "verify_certificates")
        return RelaySettings(
            smarthost=smarthost,
            smarthost_user=user,
            smarthost_password=password,
            smarthost_tls=mode,
            verify_certificates=verify,
            max_age=self.number("relay", "max_age", defaults.max_age),
            concurrency_per_destination=self.number(
                "relay", "concurrency_per_destination", defaults.concurrency_per_destination
            ),
        )

    def smarthost(self) -> tuple[str, int] | None:
        """``host:port`` or ``[IPv6]:port`` as (host, port); None when absent."""
        value = self.raw("relay", "smarthost")
        if not value:
            return None
        host, colon, port = value.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            valid = _is_ip(host, 6)
        else:
            valid = _is_domain(host.lower()) or _is_ip(host, 4)
        if not colon or not port.isdigit() or not 0 < int(port) <= 65535:
            raise self.fail("relay", "smarthost", f"expected host:port, not {value!r}")
        if not valid:
            raise self.fail("relay", "smarthost", f"{host!r} is not a host name or IP address")
        return host, int(port)


def _is_ip(text: str, version: int) -> bool:
    """Is ``text`` an IP address of that version?"""
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _is_domain(name: str) -> bool:
    """Is ``name`` a syntactically valid (lower-case, ASCII) DNS name?"""
    labels = name.rstrip(".").split(".")
    return len(name) <= 253 and all(_DOMAIN_LABEL.match(label) for label in labels)
