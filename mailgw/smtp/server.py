"""The ESMTP server protocol and its factory.

Reuses ``twisted.mail.smtp.ESMTP`` for the connection life cycle (greeting, ``TimeoutMixin`` idle
timer, STARTTLS capability detection, cred logout on disconnect) and replaces its command
handling, because Twisted's falls short for a mail gateway:

- commands are looked up in an explicit table, not by ``do_``/``ext_`` name reflection;
- input is read by ``dataReceived`` here, so that a command waiting on a thread (AUTH, the DATA
  commit) holds back the pipelined commands after it, the read buffer is thrown away at STARTTLS,
  and an over-long line is answered before the disconnect (Twisted's ``LineOnlyReceiver`` drops
  the connection silently);
- every reply carries an RFC 3463 enhanced status code (``mailgw.smtp.replies``);
- addresses are parsed strictly (``mailgw.smtp.parsing``), and DATA is streamed once into the
  store (``mailgw.smtp.delivery.MessageWriter``) with 250 sent only after the commit;
- EHLO advertises PIPELINING, SIZE, 8BITMIME and ENHANCEDSTATUSCODES, AUTH (PLAIN and LOGIN,
  never CRAM-MD5) only under TLS, and the session is reset by STARTTLS (Twisted 26.10 does none
  of this; ``tests/test_smtp_regressions.py`` holds one test per defect);
- inside DATA the idle timer is ``smtp_data_timeout``, not ``smtp_idle_timeout``.

SMTPUTF8 (RFC 6531) is not offered: addresses are ASCII, and a non-ASCII one gets 501.
"""

from __future__ import annotations

import base64
import itertools
import secrets
from collections import deque
from functools import partial

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IPushProducer, ISSLTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.mail.smtp import ESMTP, IMessageDelivery
from twisted.python.failure import Failure
from zope.interface import implementer

from mailgw.auth import ClientCredentials
from mailgw.context import ServerContext
from mailgw.crashpoint import crash_point
from mailgw.recipients import Recipients
from mailgw.relay.queue import QueueError
from mailgw.sessions import BUSY_TEXT, SessionTracker, TrackedSession
from mailgw.smtp import replies, sasl
from mailgw.smtp.delivery import Delivery, MessageWriter, Session
from mailgw.smtp.parsing import (
    CommandError,
    MailCommand,
    parse_helo,
    parse_mail,
    parse_rcpt,
    split_command,
)
from mailgw.smtp.replies import Reply
from mailgw.store.interfaces import StoreError

_log = Logger()

#: A line with no CRLF after this many times the largest line limit ends the connection.
_HARD_LINE_FACTOR = 4


#: SMTP commands at which a test may inject a fault (mailgw.testing.faults), by step name.
_FAULT_STEPS = {b"MAIL": "mail", b"RCPT": "rcpt", b"DATA": "data"}


@implementer(IPushProducer, IHandshakeListener)
class SMTPServer(ESMTP):
    """One SMTP session: MX reception, or submission (``submission=True``: AUTH before MAIL)."""

    def __init__(
        self, context: ServerContext, tracked: TrackedSession, submission: bool = False
    ) -> None:
        super().__init__(chal={}, contextFactory=context.tls)
        self.context = context
        self.tracked = tracked
        self.submission = submission
        limits = context.limits
        self.host = context.hostname
        self.timeout = limits.smtp_idle_timeout
        self.MAX_LENGTH = max(limits.smtp_command_line, limits.smtp_text_line) * _HARD_LINE_FACTOR
        self.portal = context.portal
        self.delivery = Delivery()
        self._buffer = b""
        self._lines: deque[bytes] = deque()
        self._draining = False
        self._waiting: Deferred | None = None
        self._lost = False
        #: The transport paused us: the client is not reading its replies.
        self._output_full = False
        self._errors = 0
        self._helo_name: str | None = None
        self._extended = False
        self._client_ip = ""
        self._mail: MailCommand | None = None
        #: The envelope recipients as given, and the users they resolved to (no duplicates).
        self._recipients: dict[str, None] = {}
        self._users: dict[str, None] = {}
        #: The recipients in other domains (submission after AUTH), for the outbound queue.
        self._remote: dict[str, None] = {}
        self._writer: MessageWriter | None = None
        self._exchange: sasl.Exchange | None = None
        self._commands = {
            b"EHLO": self.do_EHLO,
            b"HELO": self.do_HELO,
            b"MAIL": self.do_MAIL,
            b"RCPT": self.do_RCPT,
            b"DATA": self.do_DATA,
            b"RSET": self.do_RSET,
            b"NOOP": self.do_NOOP,
            b"QUIT": self.do_QUIT,
            b"VRFY": self.do_VRFY,
            b"STARTTLS": self.do_STARTTLS,
            b"AUTH": self.do_AUTH,
        }

    # -- connection life cycle

    @property
    def secure(self) -> bool:
        """Does this session run over TLS (implicit, or after STARTTLS)?"""
        return ISSLTransport.providedBy(self.transport)

    def greeting(self) -> bytes:
        """The text of the 220 greeting."""
        return f"{self.context.hostname} ESMTP mailgw".encode("ascii")

    def connectionMade(self) -> None:
        """Greet the client and start the idle timer."""
        self.tracked.connected(self.transport)
        self._client_ip = str(getattr(self.transport.getPeer(), "host", ""))
        self.delivery = Delivery().bind(self._session())
        if not self.secure:  # under implicit TLS: once the handshake is done
            self.transport.registerProducer(self, True)
        fault = self._fault("connect", self._client_ip)
        if fault is None:
            super().connectionMade()
        else:
            self._act(fault, super().connectionMade)

    def handshakeCompleted(self) -> None:
        """TLS is up: from now on a full write buffer may pause reading (see pauseProducing).

        Not before: the TLS layer pauses its producer while it holds replies written before the
        handshake, and the handshake itself needs the reading that the pause would stop."""
        if not self._lost and not self.transport.disconnecting:
            self.transport.registerProducer(self, True)

    def connectionLost(self, reason: Failure) -> None:
        """Throw away a message being received; log out."""
        self._lost = True
        self.tracked.ended(reason)
        self._abort_transaction()
        super().connectionLost(reason)

    def timeoutConnection(self) -> None:
        """Say goodbye after ``smtp_idle_timeout`` (in DATA ``smtp_data_timeout``) seconds."""
        what = "DATA timeout" if self._writer is not None else "Idle timeout"
        self.tracked.closing(what.lower())
        self.reply(replies.SERVICE_CLOSING.with_text(f"{self.context.hostname} {what}"))
        self._abort_transaction()
        self._hang_up()

    # -- input

    def dataReceived(self, data: bytes) -> None:
        """Split input into lines and run them in order, holding them while a command waits."""
        lines = (self._buffer + data).split(b"\r\n")
        self._buffer = lines.pop()
        self._lines.extend(lines)
        self._drain()
        if len(self._buffer) > self.MAX_LENGTH:
            self.lineLengthExceeded(self._buffer)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line too long to keep: answer, then hang up (we cannot find the next command)."""
        self._buffer = b""
        self._lines.clear()
        self._abort_transaction()
        self.reply(replies.LINE_TOO_LONG)
        self._hang_up()

    def lineReceived(self, line: bytes) -> None:
        """Handle one line: DATA text, an AUTH response or a command."""
        self.resetTimeout()
        if len(line) > self.MAX_LENGTH:
            self.lineLengthExceeded(line)
            return
        try:
            if self._writer is not None:
                result = self._data_line(line)
            elif self._exchange is not None:
                result = self._auth_line(line)
            else:
                result = self._command(line)
        except CommandError as error:
            self.reply(error.reply)
            return
        if isinstance(result, Deferred):
            self._wait(result)

    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            while (
                self._lines
                and self._waiting is None
                and not self._output_full
                and not self.transport.disconnecting
            ):
                if self._writer is None or not self._data_block():
                    self.lineReceived(self._lines.popleft())
        finally:
            self._draining = False

    def _data_block(self) -> bool:
        """Hand the queued DATA lines before the end-of-data line to the writer in one call;
        False if there are fewer than two or they need the line-by-line path."""
        lines = self._lines
        end = lines.index(b".") if b"." in lines else len(lines)
        if end < 2 or not self._writer.feed_lines(list(itertools.islice(lines, end))):
            return False
        for _ in range(end):
            lines.popleft()
        self.resetTimeout()
        return True

    def _wait(self, result: Deferred) -> None:
        """Hold further input (and the idle timer) until ``result`` fires."""
        self._waiting = result
        self.transport.pauseProducing()
        self.setTimeout(None)
        result.addBoth(self._resume)

    def _resume(self, result: object) -> None:
        self._waiting = None
        if isinstance(result, Failure):
            _log.failure("SMTP command failed", result)
            self.reply(replies.LOCAL_ERROR)
        if not self._lost and not self.transport.disconnecting:
            self.setTimeout(self.timeout)
            if not self._output_full:
                self.transport.resumeProducing()
                self._drain()

    def _command(self, line: bytes) -> Deferred | None:
        if len(line) > self.context.limits.smtp_command_line - 2:
            raise CommandError(replies.LINE_TOO_LONG)
        verb, argument = split_command(line)
        handler = self._commands.get(verb)
        if handler is None:
            raise CommandError(replies.UNRECOGNIZED)
        fault = self._fault(_FAULT_STEPS.get(verb), argument.decode("latin-1"))
        if fault is not None:
            return self._act(fault, lambda: self._run(handler, argument))
        return handler(argument)

    # -- fault injection (mailgw.testing; context.faults is None in production)

    def _fault(self, step: str | None, subject: str) -> object | None:
        """The injected fault for this step, if a test set one."""
        faults = self.context.faults
        if faults is None or step is None:
            return None
        return faults.take("smtp", step, subject)

    def _act(self, fault: object, proceed: object) -> Deferred | None:
        """Carry out an injected fault, then maybe ``proceed()``."""
        from mailgw.testing.faults import act

        return act(fault, partial(self._fault_reply, step=fault.step), self._hang_up, proceed)

    def _fault_reply(self, text: str, step: str) -> None:
        """Send an injected reply line; one refusing DATA ends the transaction, as a refusal
        after the final dot does; a 421 closes the session, as it says."""
        self.sendLine(text.encode("utf-8"))
        if step == "data":
            self._abort_transaction()
        if text.startswith("421"):
            self._abort_transaction()
            self._hang_up()

    def _run(self, handler: object, argument: bytes) -> Deferred | None:
        """Run a command after an injected delay, answering its CommandError."""
        try:
            return handler(argument)
        except CommandError as error:
            self.reply(error.reply)
            return None

    # -- output

    def pauseProducing(self) -> None:
        """The transport's write buffer is full (the client does not read its replies): stop
        reading and running commands, so that replies are never buffered without bound."""
        self._output_full = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """The replies went out: read and run commands again, unless one is still waiting."""
        self._output_full = False
        if self._waiting is None and not self._lost:
            self.transport.resumeProducing()
            self._drain()

    def stopProducing(self) -> None:
        """The connection is going away; ``connectionLost`` cleans up."""

    def _hang_up(self) -> None:
        """Close once the replies are sent (a registered producer would hold the close)."""
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def reply(self, reply: Reply) -> None:
        """Send a reply; hang up after too many errors in one session."""
        for line in reply.lines():
            self.sendLine(line)
        if reply.code >= 500:
            self._errors += 1
            if self._errors >= self.context.limits.session_errors:
                for line in replies.TOO_MANY_ERRORS.lines():
                    self.sendLine(line)
                self._abort_transaction()
                self._hang_up()

    # -- commands

    def do_EHLO(self, argument: bytes) -> None:
        """Start an ESMTP session and list the extensions."""
        self._start_session(parse_helo(argument), extended=True)
        lines = [
            f"{self.context.hostname} Hello [{self._client_ip}]",
            "PIPELINING",
            f"SIZE {self.context.limits.message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ]
        if self.context.tls is not None and self.canStartTLS and not self.secure:
            lines.append("STARTTLS")
        if self._auth_allowed():
            lines.append("AUTH " + " ".join(m.decode() for m in sasl.MECHANISMS))
        self.reply(Reply(250, "", "\n".join(lines)))

    def do_HELO(self, argument: bytes) -> None:
        """Start a plain SMTP session."""
        self._start_session(parse_helo(argument), extended=False)
        self.reply(Reply(250, "", self.context.hostname))

    def do_MAIL(self, argument: bytes) -> None:
        """Start a transaction: check the sender and a declared SIZE."""
        if self._helo_name is None:
            raise CommandError(replies.NEED_HELO)
        if self._mail is not None:
            raise CommandError(replies.NESTED_MAIL)
        if self.submission and not self.authenticated:
            raise CommandError(replies.AUTH_REQUIRED)
        command = parse_mail(argument)
        if command.size is not None and command.size > self.context.limits.message_size:
            raise CommandError(replies.MESSAGE_TOO_BIG)
        self.delivery.validateFrom(self._helo_info(), command.sender)
        self._mail = command
        self._recipients = {}
        self._users = {}
        self._remote = {}
        self.reply(replies.SENDER_OK)

    def do_RCPT(self, argument: bytes) -> None:
        """Add a recipient: a local one, or (submission after AUTH) one in another domain."""
        if self._mail is None:
            raise CommandError(replies.NEED_MAIL)
        if len(self._recipients) >= self.context.limits.smtp_recipients:
            raise CommandError(replies.TOO_MANY_RECIPIENTS)
        mailbox = parse_rcpt(argument)
        if self.delivery.relays(mailbox):
            self._remote[str(mailbox)] = None
        else:
            self._users.update(dict.fromkeys(self.delivery.validateTo(mailbox)))
        self._recipients[str(mailbox)] = None
        self.reply(replies.RECIPIENT_OK)

    def do_DATA(self, argument: bytes) -> None:
        """Start receiving the message into the store."""
        if self._mail is None:
            raise CommandError(replies.NEED_MAIL)
        if not self._recipients:
            raise CommandError(replies.NEED_RCPT)
        if argument:
            raise CommandError(replies.SYNTAX)
        transaction_id = secrets.token_hex(8).upper()
        limits = self.context.limits
        self.delivery = self.delivery.bind(self._session())
        sender = self._mail.sender
        try:
            writer = MessageWriter(
                self.context.store.incoming() if self._users else None,
                limits.message_size,
                limits.smtp_text_line,
                transaction_id,
                queue=self.context.queue if self._remote else None,
                complete_headers=self.submission,
                hostname=self.context.hostname,
            )
            writer.write_header(
                b"Return-Path: <%s>" % str(sender or "").encode("ascii"), local_only=True
            )
            writer.write_header(
                self.delivery.receivedHeader(
                    self._helo_info(),
                    sender,
                    list(self._recipients),
                    transaction_id=transaction_id,
                )
            )
        except (StoreError, QueueError, OSError):
            _log.failure("Cannot start incoming message {id}", id=transaction_id)
            raise CommandError(replies.LOCAL_ERROR) from None
        self._writer = writer
        self.setTimeout(limits.smtp_data_timeout)
        self.reply(replies.START_DATA)

    def do_RSET(self, argument: bytes) -> None:
        """Forget the current transaction."""
        if argument:
            raise CommandError(replies.SYNTAX)
        self._abort_transaction()
        self.reply(replies.RESET)

    def do_NOOP(self, argument: bytes) -> None:
        """Do nothing, successfully."""
        self.reply(replies.OK)

    def do_QUIT(self, argument: bytes) -> None:
        """Say goodbye and close."""
        self.reply(replies.BYE)
        self._abort_transaction()
        self._hang_up()

    def do_VRFY(self, argument: bytes) -> None:
        """Never tell whether a user exists (RFC 5321 3.5.3: 252)."""
        if not argument:
            raise CommandError(replies.SYNTAX)
        self.reply(replies.CANNOT_VRFY)

    def do_STARTTLS(self, argument: bytes) -> None:
        """Start TLS; everything the client sent before the handshake is thrown away."""
        if argument:
            raise CommandError(replies.SYNTAX)
        if self.secure:
            raise CommandError(replies.ALREADY_TLS)
        if self.context.tls is None or not self.canStartTLS:
            raise CommandError(replies.TLS_NOT_AVAILABLE)
        self.transport.unregisterProducer()  # registered again by handshakeCompleted
        self.reply(replies.START_TLS)
        self._buffer = b""
        self._lines.clear()
        self.transport.startTLS(self.context.tls)
        self.startedTLS = True
        self._logout()
        self._start_session(None, extended=False)

    def do_AUTH(self, argument: bytes) -> Deferred | None:
        """Start a SASL exchange (PLAIN or LOGIN), with an optional initial response."""
        if self._helo_name is None or not self._extended:
            raise CommandError(replies.NEED_HELO.with_text("Send EHLO first"))
        if self.authenticated:
            raise CommandError(replies.ALREADY_AUTHENTICATED)
        if self._mail is not None:
            raise CommandError(replies.BAD_SEQUENCE.with_text("AUTH not allowed during a mail"))
        if not self._auth_allowed():
            raise CommandError(replies.ENCRYPTION_REQUIRED)
        mechanism, _, initial = argument.partition(b" ")
        exchange = sasl.MECHANISMS.get(mechanism.upper())
        if exchange is None:
            raise CommandError(replies.UNKNOWN_MECHANISM)
        self._exchange = exchange()
        if initial.strip():
            return self._auth_line(initial)
        self._challenge()
        return None

    # -- AUTH

    def _auth_allowed(self) -> bool:
        return self.portal is not None and (self.secure or self.context.allow_plaintext)

    def _challenge(self) -> None:
        challenge = self._exchange.challenge()
        self.reply(Reply(334, "", base64.b64encode(challenge).decode("ascii")))

    def _auth_line(self, line: bytes) -> Deferred | None:
        exchange = self._exchange
        try:
            if len(line) > self.context.limits.smtp_command_line - 2:
                raise CommandError(replies.LINE_TOO_LONG)
            exchange.respond(sasl.decode_response(line))
        except sasl.Cancelled:
            self._exchange = None
            raise CommandError(replies.AUTH_CANCELLED) from None
        except CommandError:
            self._exchange = None
            raise
        if not exchange.done:
            self._challenge()
            return None
        self._exchange = None
        credentials = ClientCredentials(exchange.username, exchange.password, self._client_ip)
        login = self.portal.login(credentials, None, IMessageDelivery)
        login.addCallbacks(self._logged_in, self._login_failed, (exchange.username,))
        return login

    def _logged_in(self, result: tuple, username: str) -> None:
        _interface, avatar, logout = result
        self.authenticated = True
        self._onLogout = logout
        self.tracked.logged_in(username)
        self.delivery = avatar.bind(self._session())
        self.reply(replies.AUTH_OK)

    def _login_failed(self, failure: Failure) -> None:
        if failure.check(UnauthorizedLogin):
            self.reply(replies.AUTH_FAILED)
        else:
            _log.failure("SMTP login error", failure)
            self.reply(replies.AUTH_TEMPORARY)

    def _logout(self) -> None:
        if self._onLogout is not None:
            self._onLogout()
            self._onLogout = None
        self.authenticated = False

    # -- session state

    def _session(self) -> Session:
        relay = self.submission and self.context.queue is not None
        return Session(
            self.factory.recipients, self.context.hostname, self._tls_description(), relay
        )

    def _tls_description(self) -> str | None:
        """The TLS in use as Postfix writes it in Received:, e.g. ``TLSv1.3 with cipher ...``."""
        if not self.secure:
            return None
        connection = self.transport.getHandle()
        version = connection.get_protocol_version_name()
        cipher = connection.get_cipher_name()
        if not cipher or version == "Unknown":
            return None
        bits = connection.get_cipher_bits()
        return f"{version} with cipher {cipher} ({bits}/{bits} bits)"

    def _start_session(self, helo_name: str | None, extended: bool) -> None:
        """EHLO/HELO (or STARTTLS, which forgets the EHLO): reset the transaction."""
        self._abort_transaction()
        self._helo_name = helo_name
        self._extended = extended
        self.delivery = self.delivery.bind(self._session())

    def _helo_info(self) -> tuple:
        return (self._helo_name, self._client_ip, self._extended)

    def _data_line(self, line: bytes) -> Deferred | None:
        writer = self._writer
        if not writer.feed(line):
            return None
        sender, addresses, remote = self._mail.sender, list(self._users), list(self._remote)
        envelope = (str(sender or ""), list(self._recipients))
        self._writer = None
        self._mail = None
        self._recipients = {}
        self._users = {}
        self._remote = {}
        finished = writer.finish(sender, addresses, remote)
        if self.context.on_delivery is not None:
            finished.addCallback(self._tell_delivery, writer, *envelope)
        finished.addCallback(self._data_reply)
        return finished

    def _data_reply(self, reply: Reply) -> None:
        """Send the reply to the end of DATA (a 250 comes only after the commit)."""
        self.reply(reply)
        if reply.code == 250:
            crash_point("delivery.replied")

    def _tell_delivery(self, reply: Reply, writer: MessageWriter, sender: str, rcpts: list):
        """Tell ``context.on_delivery`` (mailgw.testing) of a committed message."""
        if writer.delivered:
            self.context.on_delivery(sender, rcpts, writer.delivered)
        return reply

    def _abort_transaction(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self._mail = None
        self._recipients = {}
        self._users = {}
        self._remote = {}


class SMTPFactory(ServerFactory):
    """Builds SMTPServer sessions over one ServerContext."""

    noisy = False

    def __init__(self, context: ServerContext, submission: bool = False) -> None:
        self.context = context
        self.submission = submission
        #: Who receives mail for a local address.
        self.recipients = context.recipients or Recipients(
            context.users, tuple(sorted(context.domains))
        )
        busy = Reply(421, "4.7.0", f"{context.hostname} {BUSY_TEXT}")
        limits = context.limits
        self.sessions = SessionTracker(
            limits,
            "submission" if submission else "smtp",
            b"".join(line + b"\r\n" for line in busy.lines()),
            # The MX port takes mail from other servers; submission serves the users, an office
            # of them behind one NAT address.
            per_ip=limits.connections_per_ip if submission else limits.smtp_connections_per_ip,
        )

    def buildProtocol(self, addr: object) -> SMTPServer | Protocol:
        """A new session, or a refusal when the connection limits are reached."""
        tracked = self.sessions.start(addr)
        if tracked is None:
            return self.sessions.refusal()
        protocol = SMTPServer(self.context, tracked, self.submission)
        protocol.factory = self
        return protocol


def make_factory(context: ServerContext, submission: bool = False) -> SMTPFactory:
    """The factory for an SMTP listener: MX (port 25) or submission (587/465)."""
    return SMTPFactory(context, submission)
