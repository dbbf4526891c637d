"""What every protocol factory is built from: the shared store, users, portal, TLS and limits.

Each protocol package exposes ``make_factory(ctx: ServerContext, ...) -> ServerFactory``.  The
service composition (``mailgw.service``) builds one ``ServerContext`` from the configuration and
hands it to every listener.  A session knows it runs under TLS (implicit or after STARTTLS) by
``ISSLTransport.providedBy(self.transport)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.cred.portal import Portal

from mailgw.sessions import UserSessions


@dataclass(frozen=True)
class Limits:
    """Every bound a client can run into, with safe defaults; each is a config key in [limits]."""

    #: Largest message accepted over SMTP (SIZE) and IMAP APPEND, in octets.
    message_size: int = 25 * 1024 * 1024
    #: SMTP command line length (RFC 5321 4.5.3.1.4: 512 octets with CRLF).
    smtp_command_line: int = 512
    #: SMTP text line length inside DATA (RFC 5321 4.5.3.1.6: 1000 octets with CRLF).
    smtp_text_line: int = 1000
    #: Recipients per SMTP transaction.
    smtp_recipients: int = 100
    #: Protocol errors in one session before the server hangs up.
    session_errors: int = 20
    #: Seconds of silence before an SMTP session is closed (RFC 5321 4.5.3.2: 5 minutes).
    smtp_idle_timeout: float = 300.0
    #: Seconds of silence inside DATA, between the 354 and the final dot, before the session is
    #: closed (RFC 5321 4.5.3.2: a client allows 3 minutes per data block, 10 for the reply).
    smtp_data_timeout: float = 600.0
    #: Seconds of silence before POP3 autologout (RFC 1939: at least 10 minutes).
    pop3_idle_timeout: float = 600.0
    #: Seconds of silence before IMAP autologout (RFC 3501: at least 30 minutes).
    imap_idle_timeout: float = 1800.0
    #: POP3/IMAP command line length in octets (Dovecot's ``imap_max_line_length``, also 64 KB:
    #: an ID with long values or a client's long UID set does not fit in 8 KB).
    command_line: int = 65536
    #: IMAP literal size before login.
    imap_literal_before_login: int = 8192
    #: POP3 and IMAP sessions logged in at once for one user from one client IP, all POP3 and
    #: IMAP listeners together (Dovecot's ``mail_max_userip_connections``, also 10).
    sessions_per_user_ip: int = 10
    #: POP3 and IMAP sessions logged in at once for one user from all addresses together, so
    #: that one account (a leaked password used from many addresses) cannot fill a listener.
    sessions_per_user: int = 50
    #: Connections at once per listener, in all and from one client IP (before any login): an
    #: office behind one NAT address needs the per-IP cap well above one user's needs.
    connections: int = 500
    connections_per_ip: int = 200
    #: Connections at once from one client IP on the MX listener (smtp, port 25), in place of
    #: ``connections_per_ip`` (Postfix's ``smtpd_client_connection_count_limit``, also 50).
    smtp_connections_per_ip: int = 50


@dataclass(frozen=True)
class GuardSettings:
    """The password-guessing guard: growing delay after failures, then refusal for a while."""

    #: Delay after the first failure, in seconds; doubles with each further failure.
    delay_start: float = 2.0
    #: The longest delay, in seconds.
    delay_max: float = 15.0
    #: Failures (per IP, or per account) after which attempts are refused.
    max_failures: int = 10
    #: Seconds a refusal lasts, and after which failures are forgotten.
    block_seconds: float = 300.0


@dataclass(frozen=True)
class ServerContext:
    """Everything a protocol factory needs; built once by the service composition."""

    hostname: str
    domains: frozenset
    store: object  # IMailStore
    users: object  # IUserDatabase
    portal: Portal
    #: ``twisted.internet.ssl.CertificateOptions`` for STARTTLS/STLS, or None without TLS.
    tls: object | None = None
    #: May passwords travel without TLS?  (config [auth] allow_plaintext; tests may say yes.)
    allow_plaintext: bool = False
    limits: Limits = field(default_factory=Limits)
    #: Who receives mail for a local address (``mailgw.recipients.Recipients``); None: users only.
    recipients: object | None = None
    #: The outbound queue (``mailgw.relay.queue.OutboundQueue``) that the submission services
    #: put mail for other domains into; None: such mail is refused (554 5.7.1).
    queue: object | None = None
    #: The logged-in POP3 and IMAP sessions, shared by all their listeners (per-user limits).
    user_sessions: UserSessions = field(default_factory=UserSessions)
    #: Testing only (``mailgw.testing``; no configuration key sets it): the fault table the
    #: protocols consult at each step.  None in production.
    faults: object | None = None
    #: Testing only: called in the reactor thread after each SMTP delivery with
    #: ``(envelope sender, [envelope recipients], {mailbox address: uid})``.
    on_delivery: object | None = None
