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
- SELECT reports UIDNEXT, PERMANENTFLAGS and UNSEEN; changes made elsewhere are reported as
  EXPUNGE/EXISTS/FETCH just before a tagged reply where RFC 3501 7.4.1 allows, or at once in
  IDLE (the session is the mailbox's ``ISessionListener``).

FETCH lives in ``fetch.py`` and the folder commands in ``folders.py`` (mixins of this class).
"""

from __future__ import annotations

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.mail import imap4
from zope.interface import implementer

from mailgw.auth import ClientCredentials
from mailgw.context import ServerContext
from mailgw.imap.fetch import FetchCommands
from mailgw.imap.folders import FolderCommands
from mailgw.imap.mailbox import ISessionListener
from mailgw.sessions import BUSY_TEXT, SessionTracker, TrackedSession

_log = Logger()

_Server = imap4.IMAP4Server

#: Commands whose replies must not carry EXPUNGE responses (RFC 3501 7.4.1), unless UID ...
_NO_EXPUNGE = frozenset({b"FETCH", b"STORE", b"SEARCH"})
#: Commands after which the selected mailbox is not (or not yet) the one to report on.
_NO_SYNC = frozenset({b"SELECT", b"EXAMINE", b"CLOSE", b"LOGOUT"})


@implementer(ISessionListener)
class IMAPServer(FetchCommands, FolderCommands, imap4.IMAP4Server):
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

    # -- connection life cycle ----------------------------------------------------------

    def connectionMade(self) -> None:
        """Log the session start, then greet the client."""
        self.tracked.connected(self.transport)
        _Server.connectionMade(self)

    def connectionLost(self, reason) -> None:
        """Log the session end; log out."""
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
        """IMAP4rev1 plus STARTTLS/LOGINDISABLED as the transport and settings say."""
        caps: dict = {}
        if not self.is_secure():
            if self.ctx is not None and self.canStartTLS:
                caps[b"STARTTLS"] = None
            if not self.context.allow_plaintext:
                caps[b"LOGINDISABLED"] = None
        caps[b"NAMESPACE"] = None
        caps[b"IDLE"] = None
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
        self.authenticateLogin(user, passwd).addCallbacks(
            self._logged_in, self._login_failed, (tag, user), None, (tag,)
        )

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

    def _logged_in(self, result, tag, user):
        _, avatar, logout = result
        self.account = avatar
        self._onLogout = logout
        self.tracked.logged_in(user.decode("utf-8"))
        self.state = "auth"
        self.sendPositiveResponse(tag, b"LOGIN completed")

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

    def _stringLiteral(self, size):
        limit = self._literalStringLimit
        if self.state == "unauth":
            limit = min(limit, self.context.limits.imap_literal_before_login)
        if size < 0 or size > limit:
            raise imap4.IllegalClientResponse("Literal too large")
        return _Server._stringLiteral(self, size)

    def _fileLiteral(self, size):
        if size < 0 or size > self.context.limits.message_size:
            raise imap4.IllegalClientResponse("[TOOBIG] Message too large")
        return _Server._fileLiteral(self, size)

    # -- one command at a time ------------------------------------------------------------

    def dispatchCommand(self, tag, cmd, rest, uid=None):
        """Remember which command runs, then let Twisted dispatch it."""
        self._command = (cmd.upper(), bool(uid))
        self._searched = False
        return _Server.dispatchCommand(self, tag, cmd, rest, uid)

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
        name, by_uid = self._command
        if self.mbox is not None and name not in _NO_SYNC:
            self.mbox.sync(allow_expunge=by_uid or name not in _NO_EXPUNGE)

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

    # -- selection ------------------------------------------------------------------------

    def _cbSelectWork(self, mbox, cmdName, tag):
        if mbox is None:
            self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
            return
        flags = b" ".join(flag.encode("ascii") for flag in mbox.getFlags())
        permanent = flags if mbox.isWriteable() else b""
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
        self.sessions = SessionTracker(context.limits, "imap", busy)

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
