"""The IMAP4rev1 session: Twisted's ``IMAP4Server`` made strict about order, limits and TLS.

Reuses ``twisted.mail.imap4.IMAP4Server`` (its command parser, state tables and response
writers) and extends or replaces where it falls short:

- command order: Twisted starts the next pipelined command while a Deferred one is still running;
  here reading pauses until each command's tagged reply is sent (memory stays bounded too);
- STARTTLS: input the client pipelined after STARTTLS is discarded, not run inside TLS;
  ``LOGINDISABLED`` and ``NO`` for LOGIN without TLS unless ``ctx.allow_plaintext``;
- LOGIN goes through ``ctx.portal`` with ``ClientCredentials`` (the client's IP for the guard);
- limits: over-long lines and literals are answered (BAD/BYE) before disconnecting; one idle
  timeout (``imap_idle_timeout``), suspended while a command runs; too many errors end it;
- AUTHENTICATE PLAIN (with SASL-IR) goes the same way, under the same plaintext rule;
- literals: ``{n}`` and LITERAL+ ``{n+}`` (RFC 7888) parsed strictly (``{-1}``, ``{abc}`` and
  overflowing sizes get BAD); over the limit a synchronising literal gets BAD with no
  continuation, a non-synchronising one closes the connection; every ``arg_*`` parser named in
  Twisted's command tables is looked up on this class, so the overrides here apply everywhere;
- sessions per user and client address (``sessions_per_user_ip``) and per user
  (``sessions_per_user``), counted with POP3's by ``mailgw.sessions``: one more login gets
  ``NO [LIMIT]`` (RFC 5530) and the session stays unauthenticated;
- SELECT reports UIDNEXT, PERMANENTFLAGS (with ``\\*``) and UNSEEN; changes made elsewhere are
  reported as EXPUNGE/EXISTS/FETCH just before a tagged reply where RFC 3501 7.4.1 allows (never
  EXPUNGE while answering FETCH, STORE or SEARCH, with or without UID), or at once in IDLE (the
  session is the mailbox's ``ISessionListener``);
- fault injection for tests (``mailgw.testing``): at LOGIN/AUTHENTICATE and at each command,
  when ``context.faults`` is set (None in production: one attribute test).

FETCH lives in ``fetch.py``, the folder commands in ``folders.py``, and COPY/MOVE/SEARCH/STORE/
EXPUNGE/UID/IDLE/ID/NAMESPACE/LIST/LSUB/SUBSCRIBE in ``commands.py`` (mixins of this class).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.mail import imap4
from zope.interface import implementer

from mailgw.auth import ClientCredentials, sasl
from mailgw.context import ServerContext
from mailgw.imap.account import StoreFailed
from mailgw.imap.commands import SelectedCommands
from mailgw.imap.fetch import FetchCommands
from mailgw.imap.folders import FolderCommands, store_failed
from mailgw.imap.mailbox import ISessionListener
from mailgw.sessions import BUSY_TEXT, SessionTracker, TrackedSession

_log = Logger()

_Server = imap4.IMAP4Server

#: Commands whose replies must not carry EXPUNGE responses (RFC 3501 7.4.1), UID forms too.
_NO_EXPUNGE = frozenset({b"FETCH", b"STORE", b"SEARCH"})
#: A literal's announcement: ``{n}`` or ``{n+}``, at most 20 digits.
_PARSERS = ("arg_", "opt_")
_LITERAL = re.compile(rb"^\{(\d{1,20})(\+?)\}$")
#: Commands after which the selected mailbox is not (or not yet) the one to report on.
_NO_SYNC = frozenset({b"SELECT", b"EXAMINE", b"CLOSE", b"LOGOUT"})


@implementer(ISessionListener)
class IMAPServer(SelectedCommands, FetchCommands, FolderCommands, imap4.IMAP4Server):
    """One IMAP connection."""

    IDENT = b"mailgw IMAP4rev1 ready"

    def __init__(self, context: ServerContext, tracked: TrackedSession) -> None:
        super().__init__(chal={}, contextFactory=context.tls)
        self.context = context
        self.tracked = tracked
        self.portal = context.portal
        self.MAX_LENGTH = context.limits.command_line
        self.timeOut = self.POSTAUTH_TIMEOUT = context.limits.imap_idle_timeout
        self._command: tuple | None = None
        self._held = False
        self._saved_timeout: float | None = None
        self._errors = 0
        self._searched = False
        self._literalStringLimit = context.limits.command_line
        self._idle_tag = None
        self._sasl_tag = None

    # -- connection life cycle ----------------------------------------------------------

    def connectionMade(self) -> None:
        """Log the session start, then greet the client."""
        self.tracked.connected(self.transport)
        _Server.connectionMade(self)

    def connectionLost(self, reason) -> None:
        """Log the session end (which uncounts its login); log out."""
        self.tracked.ended(reason)
        _Server.connectionLost(self, reason)

    def timeoutConnection(self) -> None:
        """Autologout after ``imap_idle_timeout`` seconds of silence."""
        self.tracked.closing("idle timeout")
        _Server.timeoutConnection(self)

    # -- security -------------------------------------------------------------------------

    def is_secure(self) -> bool:
        """Does this session run over TLS (implicit, or after STARTTLS)?"""
        return ISSLTransport.providedBy(self.transport)

    def capabilities(self) -> dict:
        """IMAP4rev1, STARTTLS/LOGINDISABLED/AUTH=PLAIN as the transport and settings say, and
        the extensions."""
        caps: dict = {}
        if not self.is_secure():
            if self.ctx is not None and self.canStartTLS:
                caps[b"STARTTLS"] = None
            if not self.context.allow_plaintext:
                caps[b"LOGINDISABLED"] = None
        if b"LOGINDISABLED" not in caps and self.state == "unauth":
            caps[b"AUTH"] = [b"PLAIN"]
            caps[b"SASL-IR"] = None
        for name in (b"LITERAL+", b"IDLE", b"NAMESPACE", b"ID", b"UIDPLUS", b"MOVE"):
            caps[name] = None
        caps[b"SPECIAL-USE"] = None
        caps[b"APPENDLIMIT=%d" % self.context.limits.message_size] = None
        return caps

    def do_STARTTLS(self, tag):
        """Start TLS; whatever the client sent after the command is thrown away."""
        if self.is_secure():
            self.sendNegativeResponse(tag, b"TLS is already active")
        elif self.ctx is None or not self.canStartTLS:
            self.sendNegativeResponse(tag, b"TLS not available")
        else:
            self.clearLineBuffer()
            self.sendPositiveResponse(tag, b"Begin TLS negotiation now")
            self.transport.startTLS(self.ctx)
            self.startedTLS = True

    unauth_STARTTLS = (do_STARTTLS,)

    def do_LOGIN(self, tag, user, passwd):
        """LOGIN through the portal; NO before TLS when plaintext passwords are not allowed."""
        if b"LOGINDISABLED" in self.capabilities():
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] Use STARTTLS before LOGIN")
            return
        self._login(tag, user, passwd)

    unauth_LOGIN = (do_LOGIN, _Server.arg_astring, _Server.arg_finalastring)

    def authenticateLogin(self, user: bytes, passwd: bytes) -> Deferred:
        """Ask the portal for an IAccount avatar; fires with (interface, avatar, logout)."""
        try:
            username = user.decode("utf-8")
        except UnicodeDecodeError:
            return fail(UnauthorizedLogin())
        peer = self.transport.getPeer()
        creds = ClientCredentials(username, passwd, getattr(peer, "host", ""))
        return self.portal.login(creds, None, imap4.IAccount)

    def do_AUTHENTICATE(self, tag, line):
        """AUTHENTICATE PLAIN (RFC 4616), with an initial response (SASL-IR) or after "+ "."""
        words = line.split()
        if not words or len(words) > 2:
            self.sendBadResponse(tag, b"AUTHENTICATE takes a mechanism and a response")
        elif words[0].upper() != b"PLAIN":
            self.sendNegativeResponse(tag, b"[CANNOT] Only PLAIN is supported")
        elif b"LOGINDISABLED" in self.capabilities():
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] Use STARTTLS first")
        elif len(words) == 2:
            self._sasl_response(tag, words[1])
        else:
            self._sasl_tag = tag
            self.parseState = "sasl"
            self.sendLine(b"+ ")

    unauth_AUTHENTICATE = (do_AUTHENTICATE, _Server.arg_line)

    def parse_sasl(self, line):
        """The client's PLAIN response to "+ "."""
        self.parseState = "command"
        tag, self._sasl_tag = self._sasl_tag, None
        self._sasl_response(tag, line.strip())

    def _sasl_response(self, tag, data: bytes) -> None:
        try:
            user, password = sasl.plain_credentials(sasl.decode_response(data))
        except sasl.Cancelled:
            self.sendBadResponse(tag, b"AUTHENTICATE cancelled")
        except sasl.ForeignIdentity:
            self.sendNegativeResponse(tag, b"[AUTHORIZATIONFAILED] Cannot act as another user")
        except sasl.SaslError as error:
            self.sendBadResponse(tag, str(error).encode("ascii"))
        else:
            self._login(tag, user.encode("utf-8"), password)

    def _login(self, tag: bytes, user: bytes, password: bytes) -> None:
        if self.context.faults is not None:
            subject = user.decode("utf-8", "replace")
            if self._faulted(
                "login", subject, tag, partial(self._check_login, tag, user, password)
            ):
                return
        self._check_login(tag, user, password)

    def _check_login(self, tag: bytes, user: bytes, password: bytes) -> None:
        self.authenticateLogin(user, password).addCallbacks(
            self._logged_in, self._login_failed, (tag, user), None, (tag,)
        )

    def _logged_in(self, result, tag, user):
        _, avatar, logout = result
        refused = self.tracked.logged_in(user.decode("utf-8"), avatar.address)
        if refused is not None:
            logout()
            self.sendNegativeResponse(tag, b"[LIMIT] " + refused.encode("ascii"))
            return
        self.account = avatar
        self._onLogout = logout
        self.state = "auth"
        avatar.prepare().addErrback(self._prepare_failed).addCallback(
            lambda _: self.sendPositiveResponse(tag, b"LOGIN completed")
        )

    def _prepare_failed(self, failure):
        _log.failure("could not create the special-use folders", failure)

    def _login_failed(self, failure, tag):
        if failure.check(UnauthorizedLogin):
            self.sendNegativeResponse(tag, b"[AUTHENTICATIONFAILED] Authentication failed")
        else:
            _log.failure("IMAP login could not be checked", failure)
            self.sendNegativeResponse(tag, b"[UNAVAILABLE] Login is not possible now")

    # -- limits ---------------------------------------------------------------------------

    def lineLengthExceeded(self, line):
        """Answer an over-long command line before hanging up."""
        self.sendLine(b"* BAD [TOOBIG] Command line too long")
        self.sendLine(b"* BYE Closing connection")
        self.transport.loseConnection()

    def literal_spec(self, text: bytes) -> tuple[int, bool]:
        """``(size, non-synchronising)`` of ``{n}``/``{n+}``; IllegalClientResponse if bad."""
        match = _LITERAL.match(text)
        if match is None:
            raise imap4.IllegalClientResponse("Bad literal size")
        return int(match.group(1)), bool(match.group(2))

    def _start_literal(self, size: int, plus: bool, limit: int, literal_class):
        if size > limit:
            if plus:
                # The octets are on their way and would be read as commands: hang up.
                self.sendLine(b"* BYE [TOOBIG] Literal too large")
                self.transport.loseConnection()
            raise imap4.IllegalClientResponse("[TOOBIG] Literal too large")
        d = Deferred()
        self.parseState = "pending"
        self._pendingLiteral = literal_class(size, d)
        if not plus:
            self.sendContinuationRequest(b"Ready for literal data")
        self.setRawMode()
        return d

    def _stringLiteral(self, size, plus=False):
        limit = self._literalStringLimit
        if self.state == "unauth":
            limit = min(limit, self.context.limits.imap_literal_before_login)
        return self._start_literal(size, plus, limit, imap4.LiteralString)

    def arg_astring(self, line, final=False):
        """An astring; a literal may be ``{n}`` or ``{n+}``."""
        stripped = line.strip()
        if stripped[:1] != b"{":
            return _Server.arg_astring(self, line, final)
        size, plus = self.literal_spec(stripped)
        if final and not size:
            return (b"", b"")
        return self._stringLiteral(size, plus)

    def arg_finalastring(self, line):
        """The last astring of a command (may be an empty literal)."""
        return self.arg_astring(line, final=True)

    def arg_literal(self, line):
        """APPEND's message literal, at most ``message_size`` octets (APPENDLIMIT)."""
        size, plus = self.literal_spec(line.strip())
        limit = self.context.limits.message_size
        return self._start_literal(size, plus, limit, imap4.LiteralFile)

    def arg_flaglist(self, line):
        """STORE's flags; none at all is BAD (RFC 3501 9), not "remove every flag"."""
        if not line.strip():
            raise imap4.IllegalClientResponse("Missing flags")
        return _Server.arg_flaglist(self, line)

    def _IMAP4Server__doCommand(self, tag, handler, args, parseargs, line, uid):
        # Twisted's command tables name its own arg_* functions: use this class's instead.
        # Missing arguments come as None, on which Twisted's parsers fail ("BAD Server error"):
        # given b"" they answer "BAD Missing argument".
        line = line or b""
        cls = type(self)
        parseargs = tuple(
            getattr(cls, arg.__name__, arg)
            if callable(arg) and arg.__name__[:4] in _PARSERS
            else arg
            for arg in parseargs
        )
        return _Server._IMAP4Server__doCommand(self, tag, handler, args, parseargs, line, uid)

    # -- one command at a time ------------------------------------------------------------

    def dispatchCommand(self, tag, cmd, rest, uid=None):
        """Remember which command runs, then let Twisted dispatch it."""
        self._command = (cmd.upper(), bool(uid))
        self._searched = False
        if self.context.faults is not None and uid is None:
            name = cmd.upper()
            if name == b"UID" and rest:  # the subject is "UID FETCH", not just "UID"
                name += b" " + rest.split(None, 1)[0].upper()
            run = partial(self._run_command, tag, cmd, rest)
            if self._faulted("command", name.decode("ascii", "replace"), tag, run):
                return None
        return _Server.dispatchCommand(self, tag, cmd, rest, uid)

    def lookupCommand(self, cmd):
        """The handler of ``cmd``; None (BAD Unsupported command) for a name that is not ASCII,
        which Twisted would answer with ``BAD Server error``."""
        if not cmd.isascii():
            return None
        return _Server.lookupCommand(self, cmd)

    def lineReceived(self, line):
        """Run a line; if its command is still running, stop reading until it answers."""
        _Server.lineReceived(self, line)
        running = self._command is not None and self.parseState == "command"
        if running and not self._held and not self.transport.disconnecting:
            self._held = True
            self._saved_timeout = self.setTimeout(None)
            self.pauseProducing()

    def sendUntaggedResponse(self, message, isAsync=None):
        """Send an untagged response (noting a SEARCH result)."""
        if message.startswith(b"SEARCH"):
            self._searched = True
        _Server.sendUntaggedResponse(self, message, isAsync)

    def sendBadResponse(self, tag=None, message=b""):
        """BAD; a response code (e.g. [TOOBIG]) comes first, not after Twisted's prefix."""
        prefix = b"Illegal syntax: "
        if message.startswith(prefix + b"["):
            message = message[len(prefix) :]
        _Server.sendBadResponse(self, tag, message)

    def _respond(self, state, tag, message):
        tagged = tag is not None and state in (b"OK", b"NO", b"BAD")
        if tagged and self._command is not None:
            if state == b"OK" and self._command[0] == b"SEARCH" and not self._searched:
                # RFC 3501 7.2.5: "* SEARCH" even when nothing matched (Twisted omits it).
                _Server._respond(self, b"SEARCH", None, None)
            self._report_changes()
        _Server._respond(self, state, tag, message)
        if tagged or state.startswith(b"BAD"):
            self._command_done(bad=state.startswith(b"BAD"))

    def _report_changes(self) -> None:
        name, _ = self._command
        if self.mbox is not None and name not in _NO_SYNC:
            self.mbox.sync(allow_expunge=name not in _NO_EXPUNGE)

    def _command_done(self, bad: bool) -> None:
        self._command = None
        if bad:
            self._errors += 1
            if self._errors >= self.context.limits.session_errors:
                self.sendLine(b"* BYE Too many invalid commands")
                self.transport.loseConnection()
                return
        if self._held:
            self._held = False
            self.setTimeout(self._saved_timeout)
            reactor.callLater(0, self._read_on)

    def _read_on(self) -> None:
        if self.paused and not self._held and not self.transport.disconnecting:
            self.resumeProducing()

    # -- fault injection (mailgw.testing; context.faults is None in production) -------------

    def _faulted(self, step: str, subject: str, tag: bytes, proceed: Callable[[], object]) -> bool:
        """If a test injected a fault at ``step`` for ``subject``, carry it out (answering
        ``tag``) and return True; ``proceed()`` is what runs if the fault only adds latency.
        Reading waits meanwhile, as for any command whose tagged reply is not sent yet."""
        fault = self.context.faults.take("imap", step, subject)
        if fault is None:
            return False
        from mailgw.testing.faults import outcome

        run = partial(outcome, fault, partial(self._fault_reply, tag), self._fault_hang_up, proceed)
        if fault.delay > 0:
            reactor.callLater(fault.delay, self._fault_delay_over, run)
        else:
            run()
        return True

    def _fault_delay_over(self, run: Callable[[], object]) -> None:
        if self.transport.connected and not self.transport.disconnecting:
            run()

    def _fault_reply(self, tag: bytes, text: str) -> None:
        state, _, message = text.encode("utf-8").partition(b" ")
        self._respond(state, tag, message)

    def _fault_hang_up(self) -> None:
        self.tracked.closing("injected fault")
        self.transport.loseConnection()

    def _run_command(self, tag: bytes, cmd: bytes, rest: bytes | None) -> None:
        """Run a command after an injected delay, answering its errors as parse_command does."""
        try:
            _Server.dispatchCommand(self, tag, cmd, rest)
        except imap4.IllegalClientResponse as error:
            self.sendBadResponse(tag, b"Illegal syntax: " + str(error).encode("utf-8"))
        except (imap4.IllegalOperation, imap4.IllegalMailboxEncoding) as error:
            self.sendNegativeResponse(tag, b"Illegal operation: " + str(error).encode("utf-8"))

    # -- selection ------------------------------------------------------------------------

    def _ebSelectWork(self, failure, cmdName, tag):
        """SELECT/EXAMINE failed (not for want of the folder): NO [SERVERBUG] or [UNAVAILABLE],
        logged; the session stays authenticated with nothing selected."""
        if failure.check(StoreFailed):
            self.sendNegativeResponse(tag, store_failed(failure.value, cmdName))
            return
        _log.failure("{command} failed", failure, command=cmdName.decode("ascii", "replace"))
        self.sendNegativeResponse(tag, b"[SERVERBUG] " + cmdName + b" failed: internal error")

    def _cbSelectWork(self, mbox, cmdName, tag):
        if mbox is None:
            self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
            return
        flags = b" ".join(flag.encode("ascii") for flag in mbox.getFlags())
        permanent = flags + b" \\*" if mbox.isWriteable() else b""
        self.sendUntaggedResponse(b"%d EXISTS" % mbox.getMessageCount())
        self.sendUntaggedResponse(b"%d RECENT" % mbox.getRecentCount())
        self.sendUntaggedResponse(b"FLAGS (" + flags + b")")
        self.sendPositiveResponse(None, b"[PERMANENTFLAGS (" + permanent + b")] Limited")
        unseen = mbox.firstUnseen()
        if unseen is not None:
            self.sendPositiveResponse(None, b"[UNSEEN %d] First unseen" % unseen)
        self.sendPositiveResponse(None, b"[UIDVALIDITY %d] UIDs valid" % mbox.getUIDValidity())
        self.sendPositiveResponse(None, b"[UIDNEXT %d] Predicted next UID" % mbox.getUIDNext())
        mbox.addListener(self)
        self.mbox = mbox
        self.state = "select"
        mode = b"[READ-WRITE]" if mbox.isWriteable() else b"[READ-ONLY]"
        self.sendPositiveResponse(tag, mode + b" " + cmdName + b" completed")

    # -- ISessionListener -----------------------------------------------------------------

    def messagesExpunged(self, sequence_numbers: list) -> None:
        """Send EXPUNGE responses."""
        for seq in sequence_numbers:
            self.sendUntaggedResponse(b"%d EXPUNGE" % seq)

    def changesPending(self) -> None:
        """In IDLE, report changes at once; otherwise before the next tagged reply."""
        if self.parseState == "idle" and self.mbox is not None:
            self.mbox.sync(allow_expunge=True)


class IMAPFactory(ServerFactory):
    """Builds an IMAPServer per connection, all sharing one ServerContext."""

    noisy = False

    def __init__(self, context: ServerContext) -> None:
        self.context = context
        busy = f"* BYE [UNAVAILABLE] {BUSY_TEXT}\r\n".encode("ascii")
        self.sessions = SessionTracker(context.limits, "imap", busy, users=context.user_sessions)

    def buildProtocol(self, addr) -> IMAPServer | Protocol:
        """A new session, or a refusal when the connection limits are reached."""
        tracked = self.sessions.start(addr)
        if tracked is None:
            return self.sessions.refusal()
        protocol = IMAPServer(self.context, tracked)
        protocol.factory = self
        return protocol


def make_factory(ctx: ServerContext) -> IMAPFactory:
    """The IMAP listener's factory (plain, STARTTLS-capable, or behind implicit TLS)."""
    return IMAPFactory(ctx)
