"""One IMAP connection: bytes in, commands framed, parsed and run one at a time; responses out.

The client's bytes go to ``wire.framing.CommandAssembler`` (lines and literals, their limits),
whole commands to ``wire.parser.parse_command`` (a typed command, or BAD with the reason), and
the command to the handler the explicit table of the session's state names (``TABLES``); a
command not in the table of the state is answered BAD.  Every response goes through
``wire.responses``.

- One command at a time: reading pauses (``transport.pauseProducing``; what was already read
  stays buffered) while a command runs, so pipelined commands run in order and memory stays
  bounded; the idle timeout (``imap_idle_timeout``) is suspended meanwhile.  A handler that needs
  the client's next line (IDLE's DONE, AUTHENTICATE's response) asks ``read_line()``.
- Before a tagged reply, changes made elsewhere to the selected mailbox are reported as
  EXPUNGE/EXISTS/FETCH where RFC 3501 7.4.1 allows (never EXPUNGE while answering FETCH, STORE
  or SEARCH); in IDLE at once.
- Limits are answered before any disconnect: an over-long line ``* BAD [TOOBIG]`` and BYE, a
  literal over its limit BAD (a non-synchronising one BYE), ``session_errors`` BADs BYE.
- Fault injection for tests (``mailgw.testing``): at LOGIN/AUTHENTICATE and at each command,
  when ``context.faults`` is set (None in production: one attribute test).
- ``enabled`` holds the extensions the client enabled (RFC 5161), for those that change what
  the session sends: once CONDSTORE is (by ENABLE or a CONDSTORE enabling action, RFC 7162
  3.1), every FETCH a flag change causes carries MODSEQ; once QRESYNC is, UID too, and
  expunges are told with VANISHED instead of EXPUNGE.
- IMAP4rev2 (RFC 9051) is offered beside IMAP4rev1 when ``IMAP4REV2`` is on; a client that
  sends ``ENABLE IMAP4rev2`` gets rev2 behaviour (``rev2``): no \\Recent and no RECENT
  responses, SEARCH answered with ESEARCH, a LIST response in SELECT's answer, UID in every
  unsolicited FETCH.  A session that does not enable it sees exactly IMAP4rev1.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from mailgw.context import ServerContext
from mailgw.imap import auth, compress, fetch, folders, ordering_commands, selected, selecting
from mailgw.imap.mailbox import ISessionListener, SessionMailbox
from mailgw.imap.reply import Reply, bad
from mailgw.imap.wire import commands as c
from mailgw.imap.wire import responses as r
from mailgw.imap.wire.framing import CommandAssembler, CommandReady, CommandRejected
from mailgw.imap.wire.parser import ParseError, parse_command
from mailgw.sessions import TrackedSession

_log = Logger()

GREETING = b"mailgw IMAP4rev1 ready"
#: Seconds between rescans of the folder in IDLE, for changes other programs make (the
#: store tells of this process's own at once).  A rescan of an unchanged folder is two stats.
IDLE_CHECK_INTERVAL = 2.0
#: Is IMAP4rev2 (RFC 9051) announced, and ENABLE IMAP4rev2 accepted?  IMAP4rev2 requires the
#: FETCH side of BINARY (RFC 3516), which is announced; a session sees rev2 only after ENABLE.
IMAP4REV2 = True

#: Commands valid in every state.
_ANY = {c.Capability: auth.capability, c.Noop: auth.noop, c.Logout: auth.logout, c.Id: auth.id_}
#: Commands valid once logged in, with or without a mailbox selected.
_AUTHENTICATED = {
    **_ANY,
    c.Select: selecting.select,
    c.Create: folders.create,
    c.Delete: folders.delete,
    c.Rename: folders.rename,
    c.Subscribe: folders.subscribe,
    c.Unsubscribe: folders.unsubscribe,
    c.List: folders.list_,
    c.Lsub: folders.lsub,
    c.Namespace: folders.namespace,
    c.Status: folders.status,
    c.Append: folders.append,
    c.Idle: selected.idle,
    c.Compress: compress.compress,
}
#: The handler of each command, by session state.
TABLES: dict[str, dict[type, Callable]] = {
    "unauth": {
        **_ANY,
        c.StartTLS: auth.starttls,
        c.Login: auth.login,
        c.Authenticate: auth.authenticate,
    },
    "auth": {**_AUTHENTICATED, c.Enable: auth.enable},
    "selected": {
        **_AUTHENTICATED,
        c.Check: selected.check,
        c.Close: selected.close,
        c.Unselect: selected.unselect,
        c.Expunge: selected.expunge,
        c.Fetch: fetch.fetch,
        c.Store: selected.store,
        c.Copy: selected.copy,
        c.Search: selected.search,
        c.Sort: ordering_commands.sort,
        c.Thread: ordering_commands.thread,
    },
}
_KNOWN = frozenset(kind for table in TABLES.values() for kind in table)

#: Commands after which the selected mailbox is not (or not yet) the one to report on.
_NO_SYNC = (c.Select, c.Close, c.Unselect, c.Logout)
#: Commands whose replies must not carry EXPUNGE responses (RFC 3501 7.4.1), UID forms too.
_NO_EXPUNGE = (c.Fetch, c.Store, c.Search, c.Sort, c.Thread)


def subject(command: c.Command) -> str:
    """The command's name as faults match it: ``FETCH``, ``UID FETCH``, ``EXAMINE``, ``MOVE``."""
    name = command.name.decode("ascii")
    if isinstance(command, c.Select) and command.readonly:
        name = "EXAMINE"
    elif isinstance(command, c.Copy) and command.move:
        name = "MOVE"
    if getattr(command, "uid", False) or getattr(command, "uids", None) is not None:
        name = "UID " + name
    return name


def _tag_of(data: bytes) -> bytes | None:
    """The tag a refused command started with, if it is one."""
    tag = data.split(b" ", 1)[0]
    if tag and len(tag) < len(data) and tag.isascii() and all(33 < b < 127 for b in tag):
        if not any(b in b'(){%*"\\+' for b in tag):
            return tag
    return None


@implementer(ISessionListener)
class IMAPSession(Protocol, TimeoutMixin):
    """One IMAP connection and its state: ``unauth``, ``auth``, ``selected`` (and ``logout``)."""

    def __init__(self, context: ServerContext, tracked: TrackedSession) -> None:
        self.context = context
        self.tracked = tracked
        limits = context.limits
        self.state = "unauth"
        #: The logged-in user's MailAccount, and the selected mailbox.
        self.account = None
        self.mailbox: SessionMailbox | None = None
        #: Extensions enabled with ENABLE (RFC 5161).
        self.enabled: set[str] = set()
        #: What ends the login (the realm's logout), once logged in.
        self.on_logout: Callable[[], None] | None = None
        self._assembler = CommandAssembler(limits.command_line, self._literal_limit)
        self._events: deque = deque()
        self._running: c.Command | None = None
        self._line_waiter: Deferred | None = None
        self._draining = False
        self._reading = True
        self._errors = 0
        self._idling = False
        #: COMPRESS's Deflate once active: the client's input passes through it first.
        self.compression = None

    # -- connection life cycle ----------------------------------------------------------

    def connectionMade(self) -> None:
        """Log the session start, then greet the client."""
        self.tracked.connected(self.transport)
        self.setTimeout(self.context.limits.imap_idle_timeout)
        caps = b" ".join(self.capabilities())
        self.send(r.status_line(None, b"OK", b"[CAPABILITY " + caps + b"] " + GREETING))

    def connectionLost(self, reason: Failure) -> None:
        """Log the session end (which uncounts its login); leave the mailbox; log out."""
        self.state = "logout"
        self.setTimeout(None)
        self.tracked.ended(reason)
        self.deselect()
        if self.on_logout is not None:
            logout, self.on_logout = self.on_logout, None
            logout()
        self._events.clear()
        waiter, self._line_waiter = self._line_waiter, None
        if waiter is not None:
            waiter.errback(reason)

    def timeoutConnection(self) -> None:
        """Autologout after ``imap_idle_timeout`` seconds of silence."""
        self.tracked.closing("idle timeout")
        self.send(r.status_line(None, b"BYE", b"Autologout; connection idle too long"))
        self.close_connection()

    def close_connection(self) -> None:
        """Hang up once what was written is sent; read nothing more."""
        self.state = "logout"
        self._events.clear()
        self.transport.loseConnection()

    @property
    def closing(self) -> bool:
        """Is the connection going away?"""
        return self.state == "logout" or self.transport.disconnecting

    # -- security -------------------------------------------------------------------------

    def is_secure(self) -> bool:
        """Does this session run over TLS (implicit, or after STARTTLS)?"""
        return ISSLTransport.providedBy(self.transport)

    def can_start_tls(self) -> bool:
        """Could STARTTLS be offered now?"""
        if self.is_secure() or self.context.tls is None:
            return False
        return ITLSTransport(self.transport, None) is not None

    def login_disabled(self) -> bool:
        """Are passwords refused here (no TLS yet, and plaintext not allowed)?"""
        return not self.is_secure() and not self.context.allow_plaintext

    def capabilities(self) -> list[bytes]:
        """What CAPABILITY lists now: IMAP4rev1 (and IMAP4rev2 if ``IMAP4REV2``),
        STARTTLS/LOGINDISABLED/AUTH=PLAIN as the transport and settings say, and the
        extensions."""
        caps = [b"IMAP4rev1", b"IMAP4rev2"] if IMAP4REV2 else [b"IMAP4rev1"]
        if self.can_start_tls():
            caps.append(b"STARTTLS")
        if self.login_disabled():
            caps.append(b"LOGINDISABLED")
        elif self.state == "unauth":
            caps += [b"AUTH=PLAIN", b"SASL-IR"]
        caps += [b"LITERAL+", b"IDLE", b"NAMESPACE", b"ID", b"UIDPLUS", b"MOVE", b"UNSELECT"]
        caps += [b"MULTIAPPEND", b"SPECIAL-USE", b"COMPRESS=DEFLATE"]
        caps += [b"ENABLE", b"CONDSTORE", b"QRESYNC", b"BINARY"]
        caps += ordering_commands.CAPABILITIES
        caps += folders.CAPABILITIES
        caps += selected.CAPABILITIES
        caps.append(b"APPENDLIMIT=%d" % self.context.limits.message_size)
        return caps

    def start_tls(self) -> None:
        """Start TLS; whatever the client sent after STARTTLS is thrown away."""
        self._assembler.reset()
        self._events.clear()
        self.transport.startTLS(self.context.tls)

    def start_compression(self, stream) -> None:
        """COMPRESS: what the client sent after the command is thrown away; from now on
        ``stream`` (``compress.Deflate``) is the transport and the first stage of input."""
        self._assembler.reset()
        self._events.clear()
        self.compression = self.transport = stream

    # -- output ---------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Write serialised responses (``wire.responses``)."""
        self.transport.write(data)

    # -- input ----------------------------------------------------------------------------

    def _literal_limit(self, first_line: bytes) -> int:
        limits = self.context.limits
        if self.state == "unauth":
            return limits.imap_literal_before_login
        words = first_line.split(None, 2)
        if len(words) > 1 and words[1].upper() == b"APPEND":
            return limits.message_size
        return limits.command_line

    def dataReceived(self, data: bytes) -> None:
        """The client's bytes: inflated first once COMPRESS is active (``compress.Deflate``)."""
        if self.compression is not None:
            self.compression.dataReceived(data)
        else:
            self.received(data)

    def received(self, data: bytes) -> None:
        """Frame what arrived; run the commands it completes, one at a time."""
        self.resetTimeout()
        if self.closing:
            return
        self._events.extend(self._assembler.feed(data))
        self._drain()

    def _drain(self) -> None:
        """Handle queued events until a command is running (or none are left)."""
        if self._draining:
            return
        self._draining = True
        try:
            while self._events and not self.closing:
                if self._running is not None and self._line_waiter is None:
                    break
                event = self._events.popleft()
                if isinstance(event, CommandReady):
                    if self._line_waiter is not None:
                        waiter, self._line_waiter = self._line_waiter, None
                        waiter.callback(event.data)
                    else:
                        self._command_received(event.data)
                elif isinstance(event, CommandRejected):
                    self._rejected(event)
                else:
                    self.send(r.continuation(b"Ready for literal data"))
        finally:
            self._draining = False
        self._update_reading()

    def _update_reading(self) -> None:
        want = self._running is None or self._line_waiter is not None
        if self.closing or want == self._reading:
            return
        self._reading = want
        if want:
            self.transport.resumeProducing()
        else:
            self.transport.pauseProducing()

    def read_line(self) -> Deferred:
        """The client's next line (IDLE's DONE, a SASL response), without its line end; the
        running command keeps the session until it replies."""
        self._line_waiter = Deferred()
        self.setTimeout(self.context.limits.imap_idle_timeout)
        d = self._line_waiter.addCallback(self._got_line)
        reactor.callLater(0, self._drain)
        return d

    def _got_line(self, data: bytes) -> bytes:
        self.setTimeout(None)
        self._update_reading()
        return data.rstrip(b"\r\n")

    def _rejected(self, event: CommandRejected) -> None:
        """A command refused for a limit: BAD (and BYE if the rest cannot be skipped)."""
        if event.reason == "line too long":
            self.send(r.status_line(None, b"BAD", b"[TOOBIG] Command line too long"))
            self.send(r.status_line(None, b"BYE", b"Closing connection"))
            self.tracked.closing("command line too long")
            self.close_connection()
            return
        text = b"[TOOBIG] " + event.reason.encode("ascii").capitalize()
        if event.fatal:
            self.send(r.status_line(None, b"BYE", text))
            self.tracked.closing(event.reason)
            self.close_connection()
            return
        self._tagged(_tag_of(event.data_so_far), bad(text))

    def _command_received(self, data: bytes) -> None:
        try:
            command = parse_command(data, self.rev2)
        except ParseError as error:
            self._tagged(error.tag, bad(error.reason.encode("utf-8", "replace")))
            return
        if self.context.faults is not None:
            fault = self.context.faults.take("imap", "command", subject(command))
            if fault is not None:
                self._start(command, self.faulted(fault, lambda: self._dispatch(command)))
                return
        self._start(command, self._dispatch(command))

    async def _dispatch(self, command: c.Command) -> Reply:
        handler = TABLES.get(self.state, {}).get(type(command))
        if handler is None:
            if type(command) in _KNOWN:
                return bad(command.name + b" is not valid in this state")
            return bad(command.name + b" is not supported")
        return await handler(self, command)

    def _start(self, command: c.Command, work: Awaitable) -> None:
        """Run a command; its reply (or failure) finishes it."""
        self._running = command
        self.setTimeout(None)
        d = ensureDeferred(work)
        d.addErrback(self._crashed, command)
        d.addCallback(self._finish, command)
        d.addErrback(lambda failure: _log.failure("IMAP reply failed", failure))

    def _crashed(self, failure: Failure, command: c.Command) -> Reply | None:
        if self.closing:
            return None
        _log.failure("IMAP {command} failed", failure, command=subject(command))
        return Reply(b"NO", b"[SERVERBUG] " + command.name + b" failed: internal error")

    def _finish(self, reply: Reply | None, command: c.Command) -> None:
        self._running = None
        self._line_waiter = None
        if reply is None or self.closing:
            return
        if not isinstance(command, _NO_SYNC):
            self.report_changes(allow_expunge=not isinstance(command, _NO_EXPUNGE))
        self._tagged(command.tag, reply)
        if not self.closing:
            self.setTimeout(self.context.limits.imap_idle_timeout)
            self._drain()

    def _tagged(self, tag: bytes | None, reply: Reply) -> None:
        """Write a tagged reply; count BADs (too many: BYE)."""
        self.send(r.status_line(tag, reply.status, reply.text))
        if reply.then is not None:
            reply.then()
        if reply.status == b"BAD":
            self._errors += 1
            if self._errors >= self.context.limits.session_errors and not self.closing:
                self.send(r.status_line(None, b"BYE", b"Too many invalid commands"))
                self.tracked.closing("too many invalid commands")
                self.close_connection()

    # -- the selected mailbox -------------------------------------------------------------

    def select(self, mailbox: SessionMailbox) -> None:
        """Show ``mailbox`` (after leaving the one selected, if any)."""
        self.deselect()
        mailbox.watch(self)
        self.mailbox = mailbox
        self.state = "selected"

    def deselect(self) -> None:
        """Leave the selected mailbox (if any): back to the authenticated state."""
        if self.mailbox is not None:
            self.mailbox.close()
            self.mailbox = None
            if self.state == "selected":
                self.state = "auth"

    @property
    def condstore(self) -> bool:
        """Is CONDSTORE enabled (RFC 7162 3.1)?"""
        return "CONDSTORE" in self.enabled

    @property
    def qresync(self) -> bool:
        """Is QRESYNC enabled (RFC 7162 3.2)?"""
        return "QRESYNC" in self.enabled

    @property
    def rev2(self) -> bool:
        """Did the client enable IMAP4rev2 (RFC 9051 6.3.1)?"""
        return "IMAP4rev2" in self.enabled

    def enable_condstore(self) -> None:
        """CONDSTORE is enabled from now on (ENABLE, or SELECT/EXAMINE ... (CONDSTORE))."""
        self.enabled.add("CONDSTORE")

    async def condstore_action(self) -> None:
        """A CONDSTORE enabling action in the selected state (RFC 7162 3.1): CONDSTORE is
        enabled, and the first one tells the mailbox's HIGHESTMODSEQ before its tagged reply."""
        if self.condstore:
            return
        self.enable_condstore()
        highest = await self.mailbox.highest_modseq()
        self.send(r.status_line(None, b"OK", b"[HIGHESTMODSEQ %d] Highest" % highest))

    def expunged_lines(self, gone: list) -> bytes:
        """The responses telling of messages gone, ``(seq, uid)`` each with seq valid when its
        EXPUNGE is sent: ``* n EXPUNGE`` each, or with QRESYNC one ``* VANISHED uids``."""
        if not gone:
            return b""
        if self.qresync:
            uids = r.sequence_set(sorted(uid for _, uid in gone))
            return r.untagged(r.Atom(b"VANISHED " + uids))
        return b"".join(r.untagged(seq, r.Atom(b"EXPUNGE")) for seq, _ in gone)

    def keyword_lines(self, flag_sets) -> bytes:
        """``* FLAGS`` and ``* OK [PERMANENTFLAGS ...]`` if one of ``flag_sets`` holds a
        keyword the client has not been told of (RFC 3501 7.2.6: to be sent before any
        response that shows it), else nothing."""
        if not self.mailbox.tell(f for flags in flag_sets for f in flags):
            return b""
        return selecting.flags_lines(self.mailbox)

    def flags_line(self, seq: int, uid: int, flags, modseq: int, with_uid: bool) -> bytes:
        """``* seq FETCH`` for a flag change: FLAGS, with UID if ``with_uid`` or QRESYNC is
        enabled, and MODSEQ once CONDSTORE is."""
        items = [b"FLAGS " + r.flag_list(flags)]
        if with_uid or self.qresync:
            items.append(b"UID %d" % uid)
        if self.condstore:
            items.append(b"MODSEQ (%d)" % modseq)
        return r.fetch_response(seq, items)

    def report_changes(self, allow_expunge: bool) -> None:
        """Send what changed elsewhere in the selected mailbox since the client was told (with
        IMAP4rev2: no RECENT, and UID in each FETCH, RFC 9051 7.5.2)."""
        if self.mailbox is None:
            return
        updates = self.mailbox.sync(allow_expunge)
        if updates is None:
            return
        out = [self.keyword_lines([updates.keywords]), self.expunged_lines(updates.expunged)]
        for seq, (uid, flags, modseq) in updates.flags.items():
            out.append(self.flags_line(seq, uid, flags, modseq, self.rev2))
        if updates.exists is not None:
            out.append(r.untagged(updates.exists, r.Atom(b"EXISTS")))
        if updates.recent is not None and not self.rev2:
            out.append(r.untagged(updates.recent, r.Atom(b"RECENT")))
        self.send(b"".join(out))

    def changes_pending(self) -> None:
        """In IDLE, report changes at once; otherwise before the next tagged reply."""
        if self._idling:
            self.report_changes(allow_expunge=True)

    async def idle_until_done(self) -> bytes:
        """IDLE: report changes as they happen until the client's next line (returned): those
        of other sessions at once, those of other programs (found by rescanning the folder
        every IDLE_CHECK_INTERVAL seconds) soon."""
        self._idling = True
        check = LoopingCall(self._check_folder)
        if self.mailbox is not None:
            check.start(IDLE_CHECK_INTERVAL, now=False)
        try:
            self.report_changes(allow_expunge=True)
            return await self.read_line()
        finally:
            self._idling = False
            if check.running:
                check.stop()

    def _check_folder(self) -> Deferred | None:
        if self.mailbox is None or self.closing:
            return None
        d = self.mailbox.refresh().addCallback(lambda _: self.changes_pending())
        return d.addErrback(lambda failure: _log.failure("IDLE could not rescan", failure))

    # -- fault injection (mailgw.testing; context.faults is None in production) -------------

    async def faulted(self, fault, proceed: Callable[[], Awaitable]) -> Reply | None:
        """Carry out a fault a test injected: after its delay, hang up (None), answer its
        reply, or ``await proceed()`` (pure latency)."""
        from mailgw.testing.faults import outcome

        if fault.delay > 0:
            await deferLater(reactor, fault.delay, lambda: None)
            if self.closing or not self.transport.connected:
                return None
        replies: list[str] = []
        result = outcome(fault, replies.append, self._fault_hang_up, proceed)
        if replies:
            status, _, text = replies[0].encode("utf-8").partition(b" ")
            return Reply(status, text)
        if result is None:
            return None
        return await result

    def _fault_hang_up(self) -> None:
        self.tracked.closing("injected fault")
        self.close_connection()
