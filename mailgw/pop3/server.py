"""POP3 sessions over mailgw's store: ``twisted.mail.pop3.POP3`` made strict and store-aware.

Reuses from ``twisted.mail.pop3.POP3``: line framing (``LineOnlyReceiver``), the idle timer
(``TimeoutMixin``), the reply helpers, login through ``portal.login(..., IMailbox)`` with the
avatar's logout called when the connection ends, the ``blocked`` queue that keeps pipelined
commands in order while one is in progress, and streaming with ``basic.FileSender``.

Replaces, and why:

- dispatch: Twisted finds ``do_<KEYWORD>`` by reflection and lets every command run in both
  states; here ``parser.parse_command`` types the line and an explicit table per state
  (AUTHORIZATION, TRANSACTION) names the handler.  Bad input gets ``-ERR`` and the session goes
  on; ``ctx.limits.session_errors`` of them end it.  Client mistakes are not logged as failures.
- message numbers: ``DELE 0`` no longer marks the last message, deleted messages are neither
  counted by STAT/LIST/UIDL nor retrievable.
- QUIT: the marked messages are expunged in a thread and ``+OK`` is sent only once that is
  durable; a dropped connection deletes nothing.
- the maildrop is exclusive (Twisted takes no lock): login locks it (``lock``), a second login
  meanwhile gets ``-ERR [IN-USE]``, and the lock goes at the end of UPDATE (before the ``+OK``
  to QUIT), on disconnect and on timeout.
- sessions per user and client address (``sessions_per_user_ip``) and per user
  (``sessions_per_user``), counted together with IMAP's by ``mailgw.sessions`` (POP3 alone
  can never reach them, having one session per maildrop): a login over one gets
  ``-ERR [IN-USE]`` (RFC 2449/3206) before the maildrop is locked.
- long operations: reading from the client is paused while one runs, so pipelined input stays
  bounded, and an unexpected failure answers ``-ERR`` instead of stalling the session.
- limits: an over-long line gets ``-ERR`` before the disconnect; idle timeout from
  ``ctx.limits.pop3_idle_timeout``.
- login: USER/PASS and AUTH PLAIN (RFC 5034, ``sasl``), both only on a secure session unless
  ``ctx.allow_plaintext``, both through the portal and its password-guessing guard; STLS with
  ``ctx.tls``, discarding any input that followed the STLS line (RFC 2595 section 4).  CAPA
  (RFC 2449) lists USER, SASL and STLS only when they can be used at that moment.
- APOP is not offered: it proves knowledge of the plaintext password, which the server would
  have to keep, while the user database holds only password hashes; and its MD5 digest is no
  protection today.  Passwords are protected by TLS instead.
- fault injection for tests (``mailgw.testing``): at login and at each command, when
  ``ctx.faults`` is set (None in production: one attribute test).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import partial
from typing import BinaryIO

from twisted.cred.error import LoginFailed
from twisted.internet import defer, protocol, reactor
from twisted.internet.interfaces import IAddress, ISSLTransport
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.mail.pop3 import POP3, IMailbox
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure

from mailgw.auth import ClientCredentials
from mailgw.context import ServerContext
from mailgw.pop3 import sasl
from mailgw.pop3.mailbox import MessageDeleted, NoSuchMessageNumber
from mailgw.pop3.multiline import TERMINATOR, DotStuffer, TopReader
from mailgw.pop3.parser import Command, CommandError, parse_command
from mailgw.sessions import BUSY_TEXT, SessionTracker, TrackedSession
from mailgw.store.interfaces import MaildropLocked, NoSuchMessage

log = Logger(namespace="mailgw.pop3")

#: RFC 2449 / RFC 3206 response codes used in -ERR replies.
AUTH_CODE = "[AUTH] "
SYS_TEMP_CODE = "[SYS/TEMP] "
IN_USE_CODE = "[IN-USE] "

#: The -ERR text for a login to a maildrop that another POP3 session holds.
MAILDROP_LOCKED = IN_USE_CODE + "maildrop already locked"

#: A message up to this many octets is read whole (on the reactor thread if its file is where
#: the login's snapshot says, else in a worker thread) and its reply sent in one write; a larger
#: one is streamed through a producer after its first INLINE_OCTETS.
INLINE_OCTETS = 128 * 1024

#: Replies written at once may queue up this many octets for a client that pipelines commands
#: without reading the answers; then the next message goes through the producer, which waits
#: for the client to take them.
FLUSH_OCTETS = 1024 * 1024

PLAINTEXT_REFUSED = AUTH_CODE + "Plaintext authentication disallowed on non-secure connections"
LOGIN_FAILED = AUTH_CODE + "Authentication failed"


class TransferStopped(Exception):
    """The client went away while a message was being sent."""


class MessageSender(FileSender):
    """``FileSender`` whose transfer fails with TransferStopped when the connection goes away."""

    def stopProducing(self) -> None:
        """The consumer is gone: fail the transfer with TransferStopped."""
        if self.deferred:
            self.deferred.errback(TransferStopped())
            self.deferred = None


class POP3Session(POP3):
    """One POP3 connection: AUTHORIZATION, then TRANSACTION over a Maildrop, then UPDATE."""

    #: Lines are split at LF, and parse_command drops the CR, so bare-LF clients work too.
    delimiter = b"\n"

    def __init__(self, ctx: ServerContext, tracked: TrackedSession) -> None:
        self.ctx = ctx
        self.tracked = tracked
        self.timeOut = self._idle_timeout = ctx.limits.pop3_idle_timeout
        self.MAX_LENGTH = ctx.limits.command_line
        self._user_name: str | None = None
        self._errors = 0
        self._lost = False
        self._in_flight: defer.Deferred | None = None
        self._reading_paused = False
        self._unflushed = 0
        self._receiving = False
        self._discard_plaintext = False
        self._sasl_pending = False

    # -- connection ----------------------------------------------------------------------------

    def connectionMade(self) -> None:
        """Greet the client and start the idle timer."""
        self.tracked.connected(self.transport)
        self.successResponse(f"{self.ctx.hostname} POP3 server ready")
        self.setTimeout(self.timeOut)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        """Stop the timer; log out once any operation in progress has finished."""
        self._lost = True
        self.tracked.ended(reason)
        self.setTimeout(None)
        logout, self._onLogout = self._onLogout, None
        if logout is not None:
            if self._in_flight is not None:
                self._in_flight.addBoth(lambda _: logout())
            else:
                logout()

    def timeoutConnection(self) -> None:
        """Autologout after ``pop3_idle_timeout`` seconds of silence; nothing is deleted."""
        self.tracked.closing("idle timeout")
        self.failResponse("Disconnected for inactivity")
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """Split input into lines; after STLS drop whatever plaintext followed it."""
        self._receiving = True
        try:
            super().dataReceived(data)
        finally:
            self._receiving = False
            self._end_plaintext_discard()

    def sendLine(self, line: bytes) -> None:
        """Send one reply line, ending CRLF (input lines are split at LF alone)."""
        self.transport.write(line + b"\r\n")

    def lineLengthExceeded(self, line: bytes) -> None:
        """Answer an over-long line with -ERR, then hang up."""
        self.failResponse("Line too long")
        self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        """Run a command now, or queue it while another is in progress."""
        self.resetTimeout()
        if self._discard_plaintext:
            return
        if self.blocked is not None:
            self.blocked.append(line)
            return
        self._process_line(line)

    def _process_line(self, line: bytes) -> None:
        if self._sasl_pending:
            self._sasl_pending = False
            self._sasl_response(line)
            return
        try:
            command = parse_command(line)
        except CommandError as error:
            self._client_error(str(error))
            return
        table = self._TRANSACTION if self.mbox is not None else self._AUTHORIZATION
        handler = table.get(command.name)
        if handler is None:
            self._client_error(f"{command.name} is not valid in this state")
            return
        if self.ctx.faults is not None:
            if self._faulted("command", command.name, partial(handler, self, command)):
                return
        handler(self, command)

    def _client_error(self, text: str) -> None:
        self._errors += 1
        if self._errors >= self.ctx.limits.session_errors:
            self.failResponse("Too many errors, closing connection")
            self.transport.loseConnection()
        else:
            self.failResponse(text)

    # -- long operations -----------------------------------------------------------------------

    def _long_operation(self, d: defer.Deferred) -> defer.Deferred:
        """Hold further commands, the idle timer and reading until ``d`` has finished."""
        self.setTimeout(None)
        self.blocked = []
        self._pause_reading()
        self._in_flight = d
        d.addErrback(self._unexpected_failure)
        d.addCallback(self._finish_operation)
        return d

    def _finish_operation(self, _: object) -> None:
        self._in_flight = None
        self._unblock(None)
        if self.blocked is None and not self._lost:
            self._resume_reading()
            self.setTimeout(self._idle_timeout)

    def _unblock(self, _: object) -> None:
        """Run the queued commands in order until one starts another long operation."""
        queue, self.blocked = self.blocked or [], None
        while queue and self.blocked is None:
            if self._lost or self._discard_plaintext or self.transport.disconnecting:
                queue.clear()
                break
            self._process_line(queue.pop(0))
        if self.blocked is not None:
            self.blocked.extend(queue)
        if not self._receiving:
            self._end_plaintext_discard()

    def _unexpected_failure(self, failure: Failure) -> None:
        log.failure("POP3 command failed unexpectedly", failure)
        if not self._lost:
            self.failResponse(SYS_TEMP_CODE + "Internal server error")

    def _pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()

    def _resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()

    # -- fault injection (mailgw.testing; ctx.faults is None in production) --------------------

    def _faulted(self, step: str, subject: str, proceed: Callable[[], object]) -> bool:
        """If a test injected a fault at ``step`` for ``subject``, carry it out and return True;
        ``proceed()`` is what runs if the fault only adds latency."""
        fault = self.ctx.faults.take("pop3", step, subject)
        if fault is None:
            return False
        from mailgw.testing.faults import outcome

        run = partial(outcome, fault, self._fault_reply, self._fault_hang_up, proceed)
        if fault.delay <= 0:
            run()
            return True
        # Hold later commands, the idle timer and reading, as a long operation does, but
        # run the delayed command before the held ones.
        self.setTimeout(None)
        self.blocked = []
        self._pause_reading()
        reactor.callLater(fault.delay, self._fault_delay_over, run)
        return True

    def _fault_delay_over(self, run: Callable[[], object]) -> None:
        queue, self.blocked = self.blocked or [], None
        if self._lost:
            return
        run()
        if self.blocked is not None:  # the command started a long operation: queue after it
            self.blocked.extend(queue)
            return
        self.blocked = queue
        self._finish_operation(None)

    def _fault_reply(self, text: str) -> None:
        self.sendLine(text.encode("utf-8"))

    def _fault_hang_up(self) -> None:
        self.tracked.closing("injected fault")
        self.transport.loseConnection()

    # -- AUTHORIZATION -------------------------------------------------------------------------

    def _is_secure(self) -> bool:
        return ISSLTransport.providedBy(self.transport)

    def _password_allowed(self) -> bool:
        return self.ctx.allow_plaintext or self._is_secure()

    def _capa(self, command: Command) -> None:
        caps = [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING"]
        if self.mbox is None:
            if self._password_allowed():
                caps.append(b"USER")
                caps.append(b"SASL " + b" ".join(sasl.MECHANISMS))
            if self.ctx.tls is not None and not self._is_secure():
                caps.append(b"STLS")
        caps.append(b"IMPLEMENTATION mailgw")
        body = b"".join(cap + b"\r\n" for cap in caps)
        self.transport.write(b"+OK Capability list follows\r\n" + body + TERMINATOR)

    def _stls(self, command: Command) -> None:
        if self.ctx.tls is None:
            self._client_error("STLS not available")
            return
        if self._is_secure():
            self._client_error("Already using TLS")
            return
        self.successResponse("Begin TLS negotiation now")
        self._user_name = None
        self._buffer = b""
        self._discard_plaintext = True
        self.transport.startTLS(self.ctx.tls)

    def _end_plaintext_discard(self) -> None:
        if self._discard_plaintext:
            self._discard_plaintext = False
            self._buffer = b""

    def _user(self, command: Command) -> None:
        if not self._password_allowed():
            self._client_error(PLAINTEXT_REFUSED)
            return
        try:
            self._user_name = command.text.decode("utf-8")
        except UnicodeDecodeError:
            self._client_error("User name is not UTF-8")
            return
        self.successResponse("Send PASS")

    def _pass(self, command: Command) -> None:
        if not self._password_allowed():
            self._client_error(PLAINTEXT_REFUSED)
            return
        if self._user_name is None:
            self._client_error("USER first")
            return
        user, self._user_name = self._user_name, None
        self._login(user, command.text)

    def _auth(self, command: Command) -> None:
        """AUTH (RFC 5034): bare, list the mechanisms; else start a PLAIN exchange."""
        allowed = sasl.MECHANISMS if self._password_allowed() else ()
        if not command.text:
            body = b"".join(mechanism + b"\r\n" for mechanism in allowed)
            self.transport.write(b"+OK Mechanisms follow\r\n" + body + TERMINATOR)
            return
        if command.text not in sasl.MECHANISMS:
            self._client_error("Unsupported authentication mechanism")
            return
        if not allowed:
            self._client_error(PLAINTEXT_REFUSED)
            return
        self._user_name = None
        if command.response is None:
            self._sasl_pending = True
            self.transport.write(b"+ \r\n")
            return
        self._sasl_response(command.response)

    def _sasl_response(self, line: bytes) -> None:
        """Take the client's PLAIN response (initial or after the ``+`` challenge) and log in."""
        try:
            user, password = sasl.plain_credentials(sasl.decode_response(line))
        except sasl.Cancelled:
            self.failResponse("Authentication cancelled")
            return
        except sasl.SaslError as error:
            self._client_error(AUTH_CODE + str(error))
            return
        self._login(user, password)

    def _login(self, user: str, password: bytes) -> None:
        """Check the credentials through the portal, then lock and open the maildrop."""
        if self.ctx.faults is not None:
            if self._faulted("login", user, partial(self._check_login, user, password)):
                return
        self._check_login(user, password)

    def _check_login(self, user: str, password: bytes) -> None:
        creds = ClientCredentials(user, password, self.transport.getPeer().host)
        d = self.ctx.portal.login(creds, None, IMailbox)
        d.addCallback(self._logged_in, user)
        d.addErrback(self._login_failed, user)
        self._long_operation(d)

    def _logged_in(self, result: tuple, user: str) -> defer.Deferred:
        _interface, maildrop, logout = result
        refused = self.tracked.logged_in(user, maildrop.address)
        if refused is not None:
            logout()
            if not self._lost:
                self.failResponse(IN_USE_CODE + refused)
            return defer.succeed(None)
        self._onLogout = logout
        d = deferToThread(maildrop.load)
        d.addCallback(self._maildrop_opened, maildrop, user)
        return d

    def _maildrop_opened(self, _: object, maildrop, user: str) -> None:
        if self._lost:
            return
        self.mbox = maildrop
        count, octets = maildrop.stat()
        self.successResponse(
            f"{maildrop.address}'s maildrop has {_messages(count)} ({octets} octets)"
        )

    def _login_failed(self, failure: Failure, user: str) -> None:
        self.tracked.logged_out()
        if failure.check(LoginFailed):
            self.failResponse(LOGIN_FAILED)
            return
        if failure.check(MaildropLocked):
            logout, self._onLogout = self._onLogout, None
            if logout is not None:
                logout()
            log.info("POP3 login for {user} refused: maildrop in use", user=user)
            self.failResponse(MAILDROP_LOCKED)
            return
        log.failure("POP3 login for {user} could not complete", failure, user=user)
        logout, self._onLogout = self._onLogout, None
        if logout is not None:
            logout()
        self.failResponse(SYS_TEMP_CODE + "Unable to open the maildrop")

    def _quit_authorization(self, command: Command) -> None:
        self.successResponse(f"{self.ctx.hostname} POP3 server signing off")
        self.transport.loseConnection()

    # -- TRANSACTION ---------------------------------------------------------------------------

    def _lookup(self, number: int):
        """Return the IMessageInfo of message ``number``, or None after answering -ERR."""
        try:
            return self.mbox.info(number - 1)
        except NoSuchMessageNumber:
            self._client_error(f"No message {number}")
        except MessageDeleted:
            self._client_error(f"Message {number} already deleted")
        return None

    def _stat(self, command: Command) -> None:
        count, octets = self.mbox.stat()
        self.successResponse(f"{count} {octets}")

    def _list(self, command: Command) -> None:
        if command.number is not None:
            info = self._lookup(command.number)
            if info is not None:
                self.successResponse(f"{command.number} {info.size}")
            return
        listing = self.mbox.undeleted()
        count, octets = self.mbox.stat()
        lines = [b"%d %d\r\n" % (i + 1, info.size) for i, info in listing]
        head = f"+OK {_messages(count)} ({octets} octets)\r\n".encode("ascii")
        self.transport.writeSequence([head, *lines, TERMINATOR])

    def _uidl(self, command: Command) -> None:
        if command.number is not None:
            info = self._lookup(command.number)
            if info is not None:
                self.successResponse(b"%d %s" % (command.number, self.mbox.uidl(info)))
            return
        lines = [b"%d %s\r\n" % (i + 1, self.mbox.uidl(info)) for i, info in self.mbox.undeleted()]
        self.transport.writeSequence([b"+OK\r\n", *lines, TERMINATOR])

    def _retr(self, command: Command) -> None:
        info = self._lookup(command.number)
        if info is not None:
            self._send_message(command.number, info.size, f"{info.size} octets", None)

    def _top(self, command: Command) -> None:
        info = self._lookup(command.number)
        if info is not None:
            self._send_message(command.number, info.size, "Top of message follows", command.count)

    def _send_message(self, number: int, size: int, status: str, top: int | None) -> None:
        """Answer RETR (``top`` None) or TOP ``top`` for message ``number`` of ``size`` octets.

        A message up to INLINE_OCTETS is read on the reactor thread (``Maildrop.read_whole``: an
        open and a read, no lock, no scan) and answered in one write, with no thread, no
        Deferred and no pause in reading; after FLUSH_OCTETS so sent, one goes through the
        producer instead, which waits until the client has taken what was sent.  Anything else
        (a large message, a file renamed or gone since the login) is opened in a thread."""
        if size <= INLINE_OCTETS:
            data = self.mbox.read_whole(number - 1)
            if data is not None:
                if top is not None:
                    data = TopReader(io.BytesIO(data), top).read(len(data) + 1)
                if self._unflushed < FLUSH_OCTETS:
                    stuffer = DotStuffer()
                    reply = b"".join((_ok(status), stuffer.transform(data), stuffer.terminator()))
                    self._unflushed += len(reply)
                    self.transport.write(reply)
                    return
                self._long_operation(self._stream(io.BytesIO(data), b"", status))
                return
        wrap = (lambda fp: fp) if top is None else (lambda fp: TopReader(fp, top))
        d = deferToThread(self._read_start, number - 1, wrap)
        d.addCallbacks(
            lambda start: self._stream(*start, status),
            self._message_unreadable,
            errbackArgs=(number,),
        )
        self._long_operation(d)

    def _read_start(self, index: int, wrap: Callable) -> tuple[BinaryIO | None, bytes]:
        """(In a thread.)  Open the message's view and read its first INLINE_OCTETS; return
        (None, all of it) if that was all, else (the open view, what was read)."""
        fp = wrap(self.mbox.getMessage(index))
        try:
            head = fp.read(INLINE_OCTETS)
        except BaseException:
            fp.close()
            raise
        if len(head) < INLINE_OCTETS:
            fp.close()
            return None, head
        return fp, head

    def _stream(self, fp: BinaryIO | None, head: bytes, status: str) -> defer.Deferred | None:
        """Send ``+OK status``, then ``head`` and the rest of ``fp`` (if any) byte-stuffed, then
        the terminating line.  A message read whole goes out in one write; ``fp`` goes through
        a producer, whose Deferred fires once the client has taken all that was sent."""
        if self._lost:
            if fp is not None:
                fp.close()
            return None
        stuffer = DotStuffer()
        if fp is None:
            self.transport.write(
                b"".join((_ok(status), stuffer.transform(head), stuffer.terminator()))
            )
            return None
        self.transport.write(_ok(status) + stuffer.transform(head))
        d = MessageSender().beginFileTransfer(fp, self.transport, stuffer.transform)

        def sent(_: object) -> None:
            self._unflushed = 0
            self.transport.write(stuffer.terminator())

        def failed(failure: Failure) -> None:
            if not failure.check(TransferStopped):
                log.failure("POP3 message transfer failed", failure)
                self.transport.loseConnection()

        d.addCallbacks(sent, failed)
        d.addBoth(lambda _: fp.close())
        return d

    def _message_unreadable(self, failure: Failure, number: int) -> None:
        if failure.check(NoSuchMessage):
            self.failResponse(f"Message {number} was removed by another session")
            return
        log.failure("POP3 could not open message {number}", failure, number=number)
        self.failResponse(SYS_TEMP_CODE + f"Unable to read message {number}")

    def _dele(self, command: Command) -> None:
        if self._lookup(command.number) is not None:
            self.mbox.deleteMessage(command.number - 1)
            self.successResponse(f"message {command.number} deleted")

    def _rset(self, command: Command) -> None:
        self.mbox.undeleteMessages()
        count, octets = self.mbox.stat()
        self.successResponse(f"Maildrop has {_messages(count)} ({octets} octets)")

    def _noop(self, command: Command) -> None:
        self.transport.write(b"+OK\r\n")

    def _quit_transaction(self, command: Command) -> None:
        """Enter UPDATE: expunge the marked messages durably, then answer and hang up."""
        d = deferToThread(self.mbox.sync)
        d.addCallbacks(self._updated, self._update_failed)
        self._long_operation(d)

    def _updated(self, _: object) -> None:
        count, _octets = self.mbox.stat()
        self.mbox.close()
        left = f"{_messages(count)} left" if count else "maildrop empty"
        self.successResponse(f"{self.ctx.hostname} POP3 server signing off ({left})")
        self.transport.loseConnection()

    def _update_failed(self, failure: Failure) -> None:
        log.failure("POP3 could not remove deleted messages", failure)
        self.failResponse(SYS_TEMP_CODE + "Some deleted messages not removed")
        self.transport.loseConnection()

    _AUTHORIZATION: dict[str, Callable] = {
        "CAPA": _capa,
        "STLS": _stls,
        "USER": _user,
        "PASS": _pass,
        "AUTH": _auth,
        "QUIT": _quit_authorization,
    }

    _TRANSACTION: dict[str, Callable] = {
        "CAPA": _capa,
        "STAT": _stat,
        "LIST": _list,
        "UIDL": _uidl,
        "RETR": _retr,
        "TOP": _top,
        "DELE": _dele,
        "RSET": _rset,
        "NOOP": _noop,
        "QUIT": _quit_transaction,
    }


def _ok(status: str) -> bytes:
    """The ``+OK status`` line, with its CRLF."""
    return b"+OK " + status.encode("utf-8") + b"\r\n"


def _messages(count: int) -> str:
    """``1 message``, ``2 messages``."""
    return f"{count} message" if count == 1 else f"{count} messages"


class POP3Factory(protocol.ServerFactory):
    """Builds a POP3Session per connection, all sharing one ServerContext."""

    noisy = False

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        busy = f"-ERR {SYS_TEMP_CODE}{BUSY_TEXT}\r\n".encode("ascii")
        self.sessions = SessionTracker(ctx.limits, "pop3", busy, users=ctx.user_sessions)

    def buildProtocol(self, addr: IAddress) -> POP3Session | protocol.Protocol:
        """Return a new session for a connection from ``addr``, or a refusal when the
        connection limits are reached."""
        tracked = self.sessions.start(addr)
        if tracked is None:
            return self.sessions.refusal()
        session = POP3Session(self.ctx, tracked)
        session.factory = self
        return session


def make_factory(ctx: ServerContext) -> POP3Factory:
    """Return the POP3 server factory for a listener (plain, or under implicit TLS)."""
    return POP3Factory(ctx)
