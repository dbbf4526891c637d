"""The relay's SMTP client and MX lookup against real servers on loopback.

The next hop is played by aiosmtpd (``Smarthost``), an independent SMTP server, or for the
STARTTLS injection test by a raw socket server; DNS by a resolver the test controls.
"""

from __future__ import annotations

import asyncio
import io
import socket
import ssl
import threading

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from conftest import in_reactor
from twisted.internet import defer, reactor
from twisted.internet.error import DNSLookupError
from twisted.internet.ssl import Certificate
from twisted.logger import globalLogPublisher
from twisted.names import dns
from twisted.names.error import DNSNameError, DNSServerError

from mailgw.relay.client import ClientSettings, DotStuffer, Envelope, Outcome, deliver
from mailgw.relay.dns import Destination, RouteError, destinations, mail_hosts
from mailgw.testing.ca import make_certificates

MESSAGE = (
    b"From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: hello\r\n\r\n"
    b"first line\r\n.a line starting with a dot\r\n..two dots\r\n.\r\nlast\r\n"
)


class Smarthost:
    """An aiosmtpd server on an ephemeral loopback port, in its own thread and event loop.

    Messages it accepted are in ``messages`` as (sender, recipients, bytes); ``rcpt_replies``
    maps a recipient to the reply refusing it, ``data_replies`` are replies given to DATA (one
    per transaction, then 250)."""

    def __init__(self, auth: bool = False, **smtp_options) -> None:
        if auth:
            smtp_options["authenticator"] = self.authenticate
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.rcpt_replies: dict[str, str] = {}
        self.data_replies: list[str] = []
        self.logins: list[tuple[bytes, bytes]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def listen():
            make = lambda: SMTP(self, hostname="smarthost.test", **smtp_options)  # noqa: E731
            return await self.loop.create_server(make, "127.0.0.1", 0)

        self.server = asyncio.run_coroutine_threadsafe(listen(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        """Refuse the recipients named in ``rcpt_replies``."""
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        """Keep the message, unless a reply for DATA is waiting."""
        if self.data_replies:
            return self.data_replies.pop(0)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 queued"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        """Accept relay/relay-secret only."""
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        ok = auth_data == LoginPassword(b"relay", b"relay-secret")
        return AuthResult(success=ok, handled=False)

    def close(self) -> None:
        """Stop listening and end the thread."""
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def smarthost():
    """A plain aiosmtpd smarthost (no TLS, no AUTH)."""
    host = Smarthost()
    yield host
    host.close()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """(trusted CA as a Twisted Certificate, server context signed by it, one signed by another
    CA that the client does not trust)."""
    directory = tmp_path_factory.mktemp("certs")
    trusted, untrusted = make_certificates("localhost"), make_certificates("localhost")
    contexts = []
    for name, certs in (("trusted", trusted), ("untrusted", untrusted)):
        (directory / name).mkdir()
        _, cert, key = certs.write(directory / name)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        contexts.append(context)
    return Certificate.loadPEM(trusted.ca_pem), contexts[0], contexts[1]


class LogLines:
    """Twisted log lines emitted while in use."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict) -> None:
        from twisted.logger import formatEvent

        self.lines.append(formatEvent(event))

    def __enter__(self) -> LogLines:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc) -> None:
        globalLogPublisher.removeObserver(self)


def send(port: int, settings: ClientSettings, recipients=("bob@remote.test",), host="localhost"):
    """Run ``deliver`` to 127.0.0.1:port; return (results, recipients passed to on_accepted)."""
    accepted: list[list[str]] = []
    destination = Destination(host=host, port=port, address="127.0.0.1")
    envelope = Envelope("alice@example.test", tuple(recipients))

    def run():
        return defer.ensureDeferred(
            deliver(
                reactor,
                destination,
                settings,
                envelope,
                lambda: io.BytesIO(MESSAGE),
                accepted.append,
            )
        )

    return in_reactor(run), accepted


def test_plain_delivery_keeps_the_message_intact(smarthost):
    """Two recipients accepted; the message arrives byte for byte, dot lines included."""
    settings = ClientSettings(helo="mx.example.test", tls="none")
    results, accepted = send(smarthost.port, settings, ("bob@remote.test", "carol@remote.test"))
    assert [r.outcome for r in results] == [Outcome.DELIVERED, Outcome.DELIVERED]
    assert accepted == [["bob@remote.test", "carol@remote.test"]]
    sender, recipients, content = smarthost.messages[0]
    assert sender == "alice@example.test"
    assert recipients == ["bob@remote.test", "carol@remote.test"]
    assert content == MESSAGE


def test_per_recipient_results(smarthost):
    """4xx and 5xx at RCPT are temporary and permanent for that recipient only."""
    smarthost.rcpt_replies = {
        "busy@remote.test": "452 4.2.2 mailbox full",
        "gone@remote.test": "550 5.1.1 no such user",
    }
    settings = ClientSettings(helo="mx.example.test", tls="none")
    recipients = ("busy@remote.test", "bob@remote.test", "gone@remote.test")
    results, accepted = send(smarthost.port, settings, recipients)
    by_address = {r.recipient: r for r in results}
    assert by_address["busy@remote.test"].outcome is Outcome.TEMPORARY
    assert by_address["busy@remote.test"].code == 452
    assert by_address["gone@remote.test"].outcome is Outcome.PERMANENT
    assert "no such user" in by_address["gone@remote.test"].text
    assert by_address["bob@remote.test"].outcome is Outcome.DELIVERED
    assert accepted == [["bob@remote.test"]]
    assert smarthost.messages[0][1] == ["bob@remote.test"]


def test_data_refused_is_not_acknowledged(smarthost):
    """A 554 to the final dot: permanent, and on_accepted is never called."""
    smarthost.data_replies = ["554 5.6.0 content rejected"]
    results, accepted = send(smarthost.port, ClientSettings(helo="h.test", tls="none"))
    assert results[0].outcome is Outcome.PERMANENT and results[0].code == 554
    assert accepted == [] and smarthost.messages == []


def test_connection_refused_is_temporary():
    """Nobody listening: a temporary failure naming the destination."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results, accepted = send(port, ClientSettings(helo="h.test", tls="none"))
    assert results[0].outcome is Outcome.TEMPORARY and results[0].code == 0
    assert "cannot connect" in results[0].text and accepted == []


def test_starttls_required_but_not_offered(smarthost):
    """TLS required and the server offers none: nothing is sent, temporary failure."""
    results, _ = send(smarthost.port, ClientSettings(helo="h.test", tls="required"))
    assert results[0].outcome is Outcome.TEMPORARY
    assert "STARTTLS" in results[0].text and smarthost.messages == []


def test_starttls_with_a_verified_certificate_and_auth(certificates):
    """STARTTLS, certificate verified against the CA, AUTH to the smarthost, delivered."""
    trust, good, _ = certificates
    host = Smarthost(tls_context=good, require_starttls=True, auth=True)
    try:
        settings = ClientSettings(
            helo="h.test",
            tls="required",
            trust_root=trust,
            username="relay",
            password="relay-secret",
        )
        results, _ = send(host.port, settings)
        assert results[0].outcome is Outcome.DELIVERED
        assert host.logins == [(b"relay", b"relay-secret")]
        assert host.messages[0][2] == MESSAGE
    finally:
        host.close()


def test_wrong_password_keeps_the_message(certificates):
    """A refused login is a temporary failure (the configuration needs fixing), not a bounce."""
    trust, good, _ = certificates
    host = Smarthost(tls_context=good, require_starttls=True, auth=True)
    try:
        settings = ClientSettings(
            helo="h.test", tls="required", trust_root=trust, username="relay", password="bad"
        )
        results, _ = send(host.port, settings)
        assert results[0].outcome is Outcome.TEMPORARY
        assert "login as relay refused" in results[0].text and host.messages == []
    finally:
        host.close()


def test_untrusted_certificate_refused_and_logged(certificates):
    """A certificate from an unknown CA: no mail is sent, and the log says why."""
    trust, _, bad = certificates
    host = Smarthost(tls_context=bad, require_starttls=True)
    try:
        with LogLines() as log:
            results, accepted = send(
                host.port, ClientSettings(helo="h.test", tls="required", trust_root=trust)
            )
        assert results[0].outcome is Outcome.TEMPORARY and accepted == []
        assert "TLS with localhost failed" in results[0].text
        assert any("TLS with localhost failed" in line for line in log.lines)
        assert host.messages == []
    finally:
        host.close()


def test_wrong_host_name_refused(certificates):
    """A trusted certificate that does not name the host: refused like an untrusted one."""
    trust, good, _ = certificates
    host = Smarthost(tls_context=good, require_starttls=True)
    try:
        settings = ClientSettings(helo="h.test", tls="required", trust_root=trust)
        results, _ = send(host.port, settings, host="smarthost.elsewhere.test")
        assert results[0].outcome is Outcome.TEMPORARY and host.messages == []
    finally:
        host.close()


def test_bytes_after_starttls_220_are_discarded(tmp_path):
    """S3: a reply injected after '220' to STARTTLS is never read as the answer to EHLO."""
    certs = make_certificates("localhost")
    _, cert, key = certs.write(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve():
        conn, _ = listener.accept()
        conn.settimeout(10)
        reader = conn.makefile("rb")
        conn.sendall(b"220 evil.test ESMTP\r\n")
        seen.append(reader.readline())
        conn.sendall(b"250-evil.test\r\n250 STARTTLS\r\n")
        seen.append(reader.readline())
        conn.sendall(b"220 go ahead\r\n554 5.7.0 injected\r\n")
        tls = context.wrap_socket(conn, server_side=True)
        tls_reader = tls.makefile("rb")
        replies = [b"250 evil.test\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"]
        for reply in replies:
            seen.append(tls_reader.readline())
            tls.sendall(reply)
        while tls_reader.readline() != b".\r\n":
            pass
        tls.sendall(b"250 2.0.0 ok\r\n")
        seen.append(tls_reader.readline())
        tls.sendall(b"221 bye\r\n")
        tls.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        settings = ClientSettings(
            helo="h.test", tls="required", trust_root=Certificate.loadPEM(certs.ca_pem)
        )
        results, _ = send(listener.getsockname()[1], settings)
        thread.join(10)
    finally:
        listener.close()
    assert results[0].outcome is Outcome.DELIVERED, results[0].text
    assert seen[2].startswith(b"EHLO") and seen[-1] == b"QUIT\r\n"


def test_dot_stuffing_across_chunks():
    """A dot at a line start is doubled even when the CRLF ends the previous chunk or is split."""
    stuff = DotStuffer()
    out = b"".join(stuff(chunk) for chunk in (b".a\r", b"\n.b\r\n", b".c\r\nd", b"\r\n"))
    assert out + stuff.end() == b"..a\r\n..b\r\n..c\r\nd\r\n.\r\n"
    unterminated = DotStuffer()
    assert unterminated(b"no end") + unterminated.end() == b"no end\r\n.\r\n"


class FakeResolver:
    """Answers MX and address lookups from tables: ``mx`` {domain: [(preference, host)]},
    ``hosts`` {name: address}; a name in neither does not exist."""

    def __init__(self, mx: dict, hosts: dict, failing: frozenset = frozenset()) -> None:
        self.mx, self.hosts, self.failing = mx, hosts, failing

    def lookupMailExchange(self, name, timeout=None):
        """MX records of ``name``, as twisted.names returns them."""
        if name in self.failing:
            return defer.fail(DNSServerError(name))
        if name not in self.mx and name not in self.hosts:
            return defer.fail(DNSNameError(name))
        answers = [
            dns.RRHeader(name, dns.MX, payload=dns.Record_MX(preference, host))
            for preference, host in self.mx.get(name, [])
        ]
        return defer.succeed((answers, [], []))

    def getHostByName(self, name, timeout=None, effort=10):
        """The address of ``name``."""
        if name in self.hosts:
            return defer.succeed(self.hosts[name])
        return defer.fail(DNSLookupError(name))


def lookup(coroutine):
    """The result of a DNS coroutine (the fake resolver answers at once)."""
    result = []
    defer.ensureDeferred(coroutine).addBoth(result.append)
    return result[0].raiseException() if hasattr(result[0], "raiseException") else result[0]


def test_mx_hosts_by_preference_then_address_fallback():
    """MX hosts ordered by preference; a domain without MX is its own host; unresolvable MX
    hosts are left out."""
    resolver = FakeResolver(
        mx={"remote.test": [(20, "b.remote.test"), (5, "a.remote.test"), (30, "nowhere.test")]},
        hosts={"a.remote.test": "127.0.0.2", "b.remote.test": "127.0.0.1", "plain.test": "::1"},
    )
    hosts = lookup(mail_hosts(resolver, "Remote.Test"))
    assert hosts == ["a.remote.test", "b.remote.test", "nowhere.test"]
    hops = lookup(destinations(resolver, "remote.test", 2525))
    assert [(h.host, h.address, h.port) for h in hops] == [
        ("a.remote.test", "127.0.0.2", 2525),
        ("b.remote.test", "127.0.0.1", 2525),
    ]
    assert lookup(destinations(resolver, "plain.test")) == [Destination("plain.test", 25, "::1")]


@pytest.mark.parametrize(
    "domain, permanent, words",
    [
        ("[192.0.2.1]", True, "domain literal"),
        ("missing.test", True, "does not exist"),
        ("nullmx.test", True, "null MX"),
        ("servfail.test", False, "MX lookup"),
        ("bad..name", True, "not a valid domain"),
    ],
)
def test_route_errors(domain, permanent, words):
    """Literals, unknown domains and null MX are permanent; a DNS server failure temporary."""
    resolver = FakeResolver(
        mx={"nullmx.test": [(0, "")]}, hosts={}, failing=frozenset({"servfail.test"})
    )
    with pytest.raises(RouteError, match=words) as caught:
        lookup(destinations(resolver, domain))
    assert caught.value.permanent is permanent


@pytest.mark.parametrize("supported", [True, False])
def test_non_ascii_recipient_needs_smtputf8(supported):
    """A UTF-8 address goes out with SMTPUTF8 when offered; otherwise it fails for good
    (retrying cannot help) without touching the other recipients."""
    host = Smarthost(enable_SMTPUTF8=supported)
    try:
        settings = ClientSettings(helo="h.test", tls="none")
        results, _ = send(host.port, settings, ("bjørn@remote.test",))
        if supported:
            assert results[0].outcome is Outcome.DELIVERED
            assert host.messages[0][1] == ["bjørn@remote.test"]
        else:
            assert results[0].outcome is Outcome.PERMANENT and results[0].code == 553
            assert host.messages == []
    finally:
        host.close()
