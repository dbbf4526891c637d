"""The SMTP client that hands one queued message to one next hop.

``deliver(reactor, destination, settings, envelope, open_data, on_accepted)`` connects, says
EHLO, starts TLS when the settings require it or the server offers it (opportunistic), logs in
to a smarthost (AUTH PLAIN, else LOGIN; never before TLS unless TLS is turned off), sends MAIL
and one RCPT per recipient, and streams the message with dot-stuffing.  It returns one
``RecipientResult`` per recipient: 2xx delivered, 4xx temporary, 5xx permanent; a refused
connection, a timeout, a certificate that does not verify or a lost connection are temporary
failures of every recipient not yet delivered.

Two promises the scheduler relies on:

- bytes the server sends after its ``220`` to STARTTLS are discarded, never read as replies
  (SECURITY-CHECKLIST S3: a man in the middle cannot inject answers before the handshake);
- ``on_accepted`` is called as soon as the ``250`` to the final dot arrives, before anything else
  is done (even QUIT), so the acknowledgement is recorded before it can be lost.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory
from twisted.internet.ssl import CertificateOptions, TLSVersion, optionsForClientTLS
from twisted.logger import Logger
from twisted.protocols.basic import FileSender, LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from mailgw.relay.dns import Destination

log = Logger()

#: The longest reply line accepted from a server (RFC 5321 4.5.3.1.5: 512 octets).
MAX_REPLY_LINE = 2048
#: Seconds the server has to close its side after we close ours.
CLOSE_TIMEOUT = 5.0
#: Lines of one multi-line reply (an EHLO reply lists a few tens of extensions).
MAX_REPLY_LINES = 100


class Outcome(enum.Enum):
    """What became of one recipient."""

    DELIVERED = "delivered"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class RecipientResult:
    """The fate of one recipient at one next hop: the reply code (0 when the server never
    answered) and the server's text or the local reason."""

    recipient: str
    outcome: Outcome
    code: int
    text: str
    host: str


@dataclass(frozen=True)
class Envelope:
    """Who the message is from (``""`` for the null sender) and to, as ASCII address strings."""

    sender: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class ClientSettings:
    """How to talk to next hops: our EHLO name, TLS policy, login and time limits.

    ``tls`` is "required", "opportunistic" or "none"; ``verify`` checks the certificate with
    service-identity against ``trust_root`` (None: the platform's CA store)."""

    helo: str
    tls: str = "opportunistic"
    verify: bool = True
    trust_root: object | None = None
    username: str | None = None
    password: str | None = None
    #: Seconds to establish the TCP connection.
    connect_timeout: float = 30.0
    #: Seconds to wait for any reply (RFC 5321 4.5.3.2 allows 10 minutes after the final dot).
    reply_timeout: float = 300.0


class _Failed(Exception):
    """The session cannot go on: a temporary failure of every recipient without a result."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _outcome(code: int) -> Outcome:
    """2xx delivered, 5xx permanent, anything else (4xx, no answer) temporary."""
    if 200 <= code < 300:
        return Outcome.DELIVERED
    if 500 <= code < 600:
        return Outcome.PERMANENT
    return Outcome.TEMPORARY


class DotStuffer:
    """Turn message bytes into DATA payload: a '.' starting a line is doubled (RFC 5321
    4.5.2), across chunk boundaries; ``end()`` gives the terminating ``.`` line."""

    def __init__(self) -> None:
        self._at_line_start = True
        self._previous_cr = False

    def __call__(self, chunk: bytes) -> bytes:
        """The stuffed form of the next chunk."""
        if not chunk:
            return chunk
        if self._at_line_start and chunk.startswith(b"."):
            chunk = b"." + chunk
        elif self._previous_cr and chunk.startswith(b"\n."):
            chunk = b"\n.." + chunk[2:]
        chunk = chunk.replace(b"\r\n.", b"\r\n..")
        self._at_line_start = chunk.endswith(b"\r\n")
        self._previous_cr = chunk.endswith(b"\r")
        return chunk

    def end(self) -> bytes:
        """The bytes that end DATA (a CRLF first when the message does not end with one)."""
        return b".\r\n" if self._at_line_start else b"\r\n.\r\n"


class RelayProtocol(LineReceiver, TimeoutMixin):
    """One client session: replies are awaited with ``reply()``, the dialogue is driven by
    ``deliver``.  Knows nothing of queues."""

    delimiter = b"\r\n"
    MAX_LENGTH = MAX_REPLY_LINE

    def __init__(self, timeout: float, reactor: object) -> None:
        self._timeout = timeout
        self.callLater = reactor.callLater
        self._lines: list[bytes] = []
        self._replies: list[tuple[int, str]] = []
        self._waiting: defer.Deferred | None = None
        self._lost: Failure | None = None
        self.closed: defer.Deferred = defer.Deferred()
        #: STARTTLS was accepted and no reply has come through TLS yet.
        self.handshaking = False

    def connectionMade(self) -> None:
        """Start the reply timer (the greeting is awaited like any reply)."""
        self.setTimeout(self._timeout)

    def lineReceived(self, line: bytes) -> None:
        """Gather the lines of a reply; a reply that is not SMTP ends the session."""
        self.resetTimeout()
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
            self._abort(_Failed(f"not an SMTP reply: {line[:80]!r}"))
            return
        self._lines.append(line)
        if len(self._lines) > MAX_REPLY_LINES:
            self._abort(_Failed("reply too long"))
            return
        if line[3:4] == b"-":
            return
        code = int(line[:3])
        text = "\n".join(ln[4:].decode("utf-8", "replace") for ln in self._lines)
        self._lines = []
        self.handshaking = False
        self._replies.append((code, text))
        self._wake()

    def lineLengthExceeded(self, line: bytes) -> None:
        """A reply line longer than any SMTP server sends."""
        self._abort(_Failed("reply line too long"))

    def timeoutConnection(self) -> None:
        """No reply in time."""
        self._abort(_Failed(f"no reply within {self._timeout:g} seconds"))

    def _abort(self, reason: Exception) -> None:
        self._lost = Failure(reason)
        self.transport.abortConnection()
        self._wake()

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:
        """Fail the pending ``reply()``; fire ``closed``."""
        self.setTimeout(None)
        if self._lost is None:
            self._lost = reason
        self._wake()
        self.closed.callback(None)

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            return
        if self._replies:
            waiting.callback(self._replies.pop(0))
        elif self._lost is not None:
            waiting.errback(self._lost)

    def reply(self) -> defer.Deferred:
        """The next complete reply, ``(code, text)``; fails once the connection is gone."""
        self._waiting = defer.Deferred()
        if self._replies or self._lost is not None:
            self._wake()
        return self._waiting

    async def command(self, line: str | bytes) -> tuple[int, str]:
        """Send one command line and return its reply."""
        self.sendLine(line.encode("utf-8") if isinstance(line, str) else line)
        return await self.reply()

    def start_tls(self, options: object) -> None:
        """Discard whatever followed the 220 (S3), then switch the connection to TLS."""
        self.clearLineBuffer()
        self._lines = []
        self._replies = []
        self.handshaking = True
        self.transport.startTLS(options)

    async def send_data(self, data: object) -> None:
        """Stream a binary file as DATA payload, dot-stuffed, with the final ``.`` line."""
        stuffer = DotStuffer()

        def transform(chunk: bytes) -> bytes:
            self.resetTimeout()  # the server is reading: the timer runs only while it stalls
            return stuffer(chunk)

        await FileSender().beginFileTransfer(data, self.transport, transform)
        self.transport.write(stuffer.end())


def _tls_options(settings: ClientSettings, host: str) -> object:
    """Client TLS options: verifying ``host`` against the trust root, or not verifying."""
    if settings.verify:
        return optionsForClientTLS(
            host,
            trustRoot=settings.trust_root,
            extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2},
        )
    return CertificateOptions(verify=False, raiseMinimumTo=TLSVersion.TLSv1_2)


def _extensions(ehlo_text: str) -> dict[str, str]:
    """EHLO keywords (upper case) and their parameters; the first line is the greeting."""
    result = {}
    for line in ehlo_text.split("\n")[1:]:
        keyword, _, parameters = line.strip().partition(" ")
        if keyword:
            result[keyword.upper()] = parameters.upper()
    return result


async def _ehlo(protocol: RelayProtocol, helo: str) -> dict[str, str]:
    code, text = await protocol.command(f"EHLO {helo}")
    if code != 250:
        raise _Failed(f"EHLO refused: {code} {text}")
    return _extensions(text)


async def _login(protocol: RelayProtocol, settings: ClientSettings, mechanisms: str) -> None:
    """AUTH PLAIN, else AUTH LOGIN; a refusal is a temporary failure (a configuration fault)."""
    user, password = settings.username.encode(), (settings.password or "").encode()
    offered = mechanisms.split()
    if "PLAIN" in offered:
        token = base64.b64encode(b"\0" + user + b"\0" + password).decode("ascii")
        code, text = await protocol.command(b"AUTH PLAIN " + token.encode("ascii"))
    elif "LOGIN" in offered:
        code, text = await protocol.command(b"AUTH LOGIN")
        for secret in (user, password):
            if code != 334:
                break
            code, text = await protocol.command(base64.b64encode(secret))
    else:
        raise _Failed(f"the smarthost offers no AUTH PLAIN or LOGIN (only {mechanisms!r})")
    if code != 235:
        raise _Failed(f"login as {settings.username} refused: {code} {text}")


async def _session(
    protocol: RelayProtocol,
    destination: Destination,
    settings: ClientSettings,
    envelope: Envelope,
    open_data: Callable[[], object],
    on_accepted: Callable[[list[str]], object],
    results: dict[str, RecipientResult],
) -> None:
    """The dialogue; fills ``results`` as replies come, raises _Failed when it cannot go on."""
    host = destination.host

    def settle(recipient: str, code: int, text: str) -> None:
        results[recipient] = RecipientResult(recipient, _outcome(code), code, text, host)

    code, text = await protocol.reply()
    if code != 220:
        raise _Failed(f"greeting: {code} {text}")
    extensions = await _ehlo(protocol, settings.helo)
    if settings.tls != "none" and ("STARTTLS" in extensions or settings.tls == "required"):
        if "STARTTLS" not in extensions:
            raise _Failed(f"{host} offers no STARTTLS and TLS is required")
        code, text = await protocol.command("STARTTLS")
        if code != 220:
            raise _Failed(f"STARTTLS refused: {code} {text}")
        protocol.start_tls(_tls_options(settings, host))
        extensions = await _ehlo(protocol, settings.helo)
    if settings.username:
        secure = ISSLTransport.providedBy(protocol.transport)
        if not secure and settings.tls != "none":
            raise _Failed(f"{host}: no TLS, so the password is not sent")
        await _login(protocol, settings, extensions.get("AUTH", ""))
    body = " BODY=8BITMIME" if "8BITMIME" in extensions else ""
    if not all(address.isascii() for address in (envelope.sender, *envelope.recipients)):
        if "SMTPUTF8" not in extensions:
            for recipient in envelope.recipients:
                settle(recipient, 553, "5.6.7 the next hop cannot take non-ASCII addresses")
            return
        body += " SMTPUTF8"
    code, text = await protocol.command(f"MAIL FROM:<{envelope.sender}>{body}")
    if code != 250:
        for recipient in envelope.recipients:
            settle(recipient, code, f"MAIL FROM: {text}")
        return
    accepted = []
    for recipient in envelope.recipients:
        code, text = await protocol.command(f"RCPT TO:<{recipient}>")
        if code in (250, 251):
            accepted.append(recipient)
        else:
            settle(recipient, code, text)
    if not accepted:
        return
    code, text = await protocol.command("DATA")
    if code != 354:
        for recipient in accepted:
            settle(recipient, code, f"DATA: {text}")
        return
    with open_data() as data:
        await protocol.send_data(data)
    code, text = await protocol.reply()
    if code == 250:
        await defer.maybeDeferred(on_accepted, accepted)
    for recipient in accepted:
        settle(recipient, code, text)


async def deliver(
    reactor: object,
    destination: Destination,
    settings: ClientSettings,
    envelope: Envelope,
    open_data: Callable[[], object],
    on_accepted: Callable[[list[str]], object],
) -> list[RecipientResult]:
    """Send the message to ``destination``; return one RecipientResult per recipient.

    ``open_data()`` returns a binary file of the message (CRLF line ends); ``on_accepted`` is
    called with the recipients the server acknowledged, the moment it does.  Never raises for
    anything the network or the server does."""
    results: dict[str, RecipientResult] = {}
    protocol = RelayProtocol(settings.reply_timeout, reactor)
    endpoint = HostnameEndpoint(
        reactor, destination.address, destination.port, timeout=settings.connect_timeout
    )
    where = f"{destination.host}[{destination.address}]:{destination.port}"
    try:
        await endpoint.connect(Factory.forProtocol(lambda: protocol))
    except Exception as error:
        reason = f"cannot connect to {where}: {error}"
        log.warn("Relay: {reason}", reason=reason)
        return _fill(envelope, results, destination.host, reason)
    try:
        await _session(protocol, destination, settings, envelope, open_data, on_accepted, results)
        await protocol.command("QUIT")
    except _Failed as error:
        log.warn("Relay to {where}: {reason}", where=where, reason=error.text)
        _fill(envelope, results, destination.host, error.text)
        if protocol.transport.connected and not protocol.transport.disconnecting:
            protocol.sendLine(b"QUIT")
    except Exception as error:
        reason = f"connection to {where} lost: {error}"
        if protocol.handshaking:
            reason = f"TLS with {destination.host} failed (certificate not verified?): {error}"
        log.warn("Relay: {reason}", reason=reason)
        _fill(envelope, results, destination.host, reason)
    await _close(reactor, protocol)
    return [results[recipient] for recipient in envelope.recipients]


async def _close(reactor: object, protocol: RelayProtocol) -> None:
    """Close the connection; abort it if the server does not close its side in time (a TLS
    server may never answer our close alert)."""
    protocol.transport.loseConnection()
    if not protocol.closed.called:
        aborting = reactor.callLater(CLOSE_TIMEOUT, protocol.transport.abortConnection)
        await protocol.closed
        if aborting.active():
            aborting.cancel()


def _fill(envelope: Envelope, results: dict, host: str, text: str) -> list[RecipientResult]:
    """Give every recipient without a result a temporary failure for ``text``."""
    for recipient in envelope.recipients:
        if recipient not in results:
            results[recipient] = RecipientResult(recipient, Outcome.TEMPORARY, 0, text, host)
    return [results[recipient] for recipient in envelope.recipients]
