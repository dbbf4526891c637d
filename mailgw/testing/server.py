"""``MailServer``: the real mailgw services as a test fixture.

Start one, point the application under test at ``smtp_port`` (or ``imap_port``...), then look at
``messages()`` or ``wait_for()``; seed mailboxes with ``deliver()``; inject faults with
``fault()``.  ``start()``/``stop()`` (or ``with MailServer() as server``) run it on Twisted's
global reactor from a plain test thread: the reactor is started in a daemon thread named
``mailgw-reactor`` if nothing runs it yet and then serves every MailServer of the process (a
Twisted reactor cannot be restarted, so it is not stopped with the server); if another thread
already runs it (crochet, a test suite's own reactor thread) it is used through
``blockingCallFromThread``.  Code running *in* the reactor (trial) uses ``start_in_reactor()`` and
``stop_in_reactor()``, which return Deferreds.

Envelopes: the sender of a captured message is its ``Return-Path:`` header (added by the server);
the envelope recipients of each SMTP transaction are kept in a side table, not in the message,
so ``raw`` is what a real mailbox would hold.  Messages seeded with ``deliver()`` have
``envelope_from`` None and ``envelope_to`` ``[address]``.
"""

from __future__ import annotations

import email.policy
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from email.message import EmailMessage
from email.parser import BytesParser
from functools import partial
from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.internet.threads import blockingCallFromThread
from twisted.python import threadable

from mailgw import smtp
from mailgw.auth.passwd import canonical_address
from mailgw.config import IMPLICIT_TLS, SERVICES, Config
from mailgw.context import GuardSettings, ServerContext
from mailgw.recipients import CaptureAll
from mailgw.service import MailgwService
from mailgw.store.interfaces import FolderExists, NoSuchFolder
from mailgw.testing.ca import make_certificates
from mailgw.testing.faults import Fault, FaultTable

#: No login delay, no lock-out: a test may fail logins on purpose as often as it likes.
TEST_GUARD = GuardSettings(delay_start=0.0, delay_max=0.0, max_failures=10**6, block_seconds=1.0)

#: Keyword arguments of ``wait_for`` that are not header matchers.
_ATTRIBUTES = ("address", "envelope_from", "envelope_to", "folder")


class CapturedMessage(EmailMessage):
    """A stored message, parsed (``email.policy.default``), with where it is and its envelope."""

    #: The message as stored, CRLF line endings, with the headers the server added.
    raw: bytes = b""
    #: The SMTP envelope sender ('' for the null sender), None if not received over SMTP.
    envelope_from: str | None = None
    #: The envelope recipients of the SMTP transaction (all of them, Bcc included).
    envelope_to: list
    #: The mailbox (address) and folder the message is in, and its IMAP UID there.
    address: str = ""
    folder: str = "INBOX"
    uid: int = 0
    #: IMAP flags, e.g. ``{"\\Seen"}``.
    flags: frozenset = frozenset()

    def field(self, key: str) -> str:
        """The value ``wait_for`` matches for ``key``: an attribute or a header ("" if absent)."""
        if key == "envelope_to":
            return ", ".join(self.envelope_to)
        if key in _ATTRIBUTES:
            return getattr(self, key) or ""
        name = "from" if key == "from_" else key.replace("_", "-")
        return ", ".join(str(value) for value in self.get_all(name, ()))


_PARSER = BytesParser(_class=CapturedMessage, policy=email.policy.default)


def _reactor() -> object:
    from twisted.internet import reactor

    return reactor


class ReactorThread:
    """Runs calls on the global reactor from other threads, starting it once if needed."""

    _lock = threading.Lock()
    thread: threading.Thread | None = None

    @classmethod
    def call(cls, fn: Callable, *args: object) -> object:
        """``fn(*args)`` in the reactor thread; its Deferred's result, or its exception."""
        reactor = _reactor()
        if threadable.isInIOThread() and reactor.running:
            raise RuntimeError(
                "MailServer.start()/stop() block and cannot run in the reactor thread: "
                "use start_in_reactor()/stop_in_reactor()"
            )
        with cls._lock:
            if not reactor.running and cls.thread is None:
                if getattr(reactor, "_startedBefore", False):
                    raise RuntimeError("the Twisted reactor has stopped and cannot be restarted")
                cls.thread = threading.Thread(
                    target=reactor.run,
                    kwargs={"installSignalHandlers": False},
                    name="mailgw-reactor",
                    daemon=True,
                )
                cls.thread.start()
        return blockingCallFromThread(reactor, fn, *args)


class _TrackingFactory(Factory):
    """Hands connections to ``real`` and remembers them, so that stop can close them all."""

    noisy = False

    def __init__(self, real: Factory, connections: set) -> None:
        self.real = real
        self.connections = connections

    def startFactory(self) -> None:
        """Start the real factory."""
        self.real.doStart()

    def stopFactory(self) -> None:
        """Stop the real factory."""
        self.real.doStop()

    def buildProtocol(self, addr: object) -> object:
        """The real factory's protocol, remembered."""
        protocol = self.real.buildProtocol(addr)
        if protocol is not None:
            self.connections.add(protocol)
        return protocol


class _TestingService(MailgwService):
    """MailgwService with the testing-only settings no configuration file can turn on."""

    def __init__(self, config: Config, reactor: object, server: MailServer) -> None:
        super().__init__(config, reactor)
        self.server = server
        self.connections: set = set()

    def _build_context(self) -> ServerContext:
        context = super()._build_context()
        server = self.server
        # A test server never sends mail out: no outbound queue, so other domains are refused.
        changes = {"faults": server.faults, "on_delivery": server._delivered, "queue": None}
        if server.catch_all:
            changes["recipients"] = CaptureAll(tuple(server.domains))
        return _replace(context, **changes)

    def _hint_users(self) -> None:
        """No "add users with mailgw user add" hint: the test adds its users itself."""

    def _start_relay(self, bound: dict) -> dict:
        """No relay scheduler: there is no outbound queue for it to scan."""
        return bound

    def _protocol_factory(self, name: str) -> Factory:
        if name == "smtp" and self.server.auth_required:
            factory = smtp.make_factory(self.context, submission=True)
        else:
            factory = super()._protocol_factory(name)
        return _TrackingFactory(factory, self.connections)

    def close_connections(self) -> Deferred:
        """Abort every open connection; fire once the reactor has processed the losses."""
        for protocol in list(self.connections):
            transport = getattr(protocol, "transport", None)
            if transport is not None and getattr(transport, "connected", False):
                transport.abortConnection()
        self.connections.clear()
        return deferLater(self.reactor, 0, lambda: None)


def _replace(context: ServerContext, **changes: object) -> ServerContext:
    import dataclasses

    return dataclasses.replace(context, **changes)


class MailServer:
    """The real mailgw services on ephemeral loopback ports, over a temporary data directory.

    ``catch_all``: SMTP accepts any recipient at any domain without authentication and stores a
    copy in each recipient's own INBOX (a capture server); otherwise only users added with
    ``add_user`` (in ``domains``) receive mail.  ``auth_required``: the ``smtp_port`` listener
    requires AUTH before MAIL, as submission does.  ``allow_plaintext``: passwords may be sent
    without TLS.  ``services``: the listeners to run.  ``data_dir``: where the data goes
    (default: a temporary directory, removed at stop; a given one is kept).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        catch_all: bool = True,
        auth_required: bool = False,
        allow_plaintext: bool = True,
        domains: Iterable[str] = ("example.test",),
        hostname: str = "mx.example.test",
        services: Iterable[str] = SERVICES,
        data_dir: Path | None = None,
    ) -> None:
        self.catch_all = catch_all
        self.auth_required = auth_required
        self.allow_plaintext = allow_plaintext
        self.domains = tuple(domain.lower() for domain in domains)
        self.hostname = hostname
        self.services = tuple(services)
        unknown = set(self.services) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)} (known: {', '.join(SERVICES)})")
        self.faults = FaultTable()
        self.cafile: Path | None = None
        self.data_dir: Path | None = Path(data_dir) if data_dir is not None else None
        self._own_dir = data_dir is None
        self._service: _TestingService | None = None
        self._ports: dict[str, int] = {}
        self._changed = threading.Condition()
        self._generation = 0
        #: (address, folder, uid) -> (envelope sender, envelope recipients)
        self._envelopes: dict[tuple, tuple] = {}
        self._mailboxes: set[str] = set()
        self._users_lock = threading.Lock()
        #: Callables run (in the reactor thread) after each delivery: pending ``when``s.
        self._watchers: set[Callable[[], None]] = set()

    # -- ports

    def _port(self, service: str) -> int | None:
        return self._ports.get(service)

    smtp_port = property(lambda self: self._port("smtp"), doc="The SMTP (MX) port.")
    submission_port = property(lambda self: self._port("submission"), doc="Submission (587).")
    submissions_port = property(lambda self: self._port("submissions"), doc="Implicit TLS (465).")
    pop3_port = property(lambda self: self._port("pop3"), doc="The POP3 port (STLS offered).")
    pop3s_port = property(lambda self: self._port("pop3s"), doc="POP3 over implicit TLS.")
    imap_port = property(lambda self: self._port("imap"), doc="The IMAP port (STARTTLS offered).")
    imaps_port = property(lambda self: self._port("imaps"), doc="IMAP over implicit TLS.")

    def endpoints(self) -> dict:
        """``{service: port, ..., "host": host, "cafile": str(cafile)}`` of the running server."""
        return {**self._ports, "host": self.host, "cafile": str(self.cafile)}

    def ssl_context(self) -> ssl.SSLContext:
        """A client SSLContext that trusts ``cafile`` (and verifies host names)."""
        if self.cafile is None:
            raise RuntimeError("the server is not started")
        return ssl.create_default_context(cafile=str(self.cafile))

    # -- life cycle

    def start(self, timeout: float = 10.0) -> MailServer:
        """Start on the reactor thread; return once every listener has sent its greeting.

        Each listener is connected to (over TLS for the implicit-TLS ones, verified against
        ``cafile``) and its greeting read, as aiosmtpd's ``Controller`` does.  If one has not
        greeted within ``timeout`` seconds (all listeners together), or hangs up first, the
        server is stopped and TimeoutError (or RuntimeError) names that listener."""
        ReactorThread.call(self.start_in_reactor)
        deadline = time.monotonic() + timeout
        try:
            for name, port in self._ports.items():
                self._await_greeting(name, port, deadline, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _await_greeting(self, name: str, port: int, deadline: float, timeout: float) -> bytes:
        """Connect to listener ``name`` and read its greeting (all of a multi-line SMTP 220)."""
        where = f"the {name} listener ({self.host}:{port})"

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"MailServer: {where} sent no greeting within {timeout} s")
            return left

        smtp_like = name in ("smtp", "submission", "submissions")
        received = b""
        try:
            sock = socket.create_connection((self.host, port), timeout=remaining())
            if name in IMPLICIT_TLS:
                with sock:  # wrap_socket detaches sock on success; closes it if the TLS fails
                    sock.settimeout(remaining())
                    sock = self.ssl_context().wrap_socket(sock, server_hostname=self.host)
            with sock:
                while True:
                    *lines, _partial = received.split(b"\r\n")
                    if lines and not (smtp_like and lines[-1][3:4] == b"-"):
                        return received
                    sock.settimeout(remaining())
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise RuntimeError(
                            f"MailServer: {where} closed the connection before its greeting"
                            f" (received {received!r})"
                        )
                    received += chunk
        except TimeoutError:
            raise TimeoutError(
                f"MailServer: {where} sent no greeting within {timeout} s (received {received!r})"
            ) from None
        except OSError as error:
            raise RuntimeError(f"MailServer: {where} could not be reached: {error}") from error

    def stop(self) -> None:
        """Stop listening, close every connection, remove the temporary data directory."""
        if self._service is not None:
            ReactorThread.call(self.stop_in_reactor)

    def __enter__(self) -> MailServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start_in_reactor(self) -> Deferred:
        """Start on the running reactor, from its thread; fire with this server once bound."""
        if self._service is not None:
            raise RuntimeError("this MailServer is already started")
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="mailgw-test-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tls_dir = self.data_dir / "test-tls"
        tls_dir.mkdir(mode=0o700, exist_ok=True)
        self.cafile, certificate, key = make_certificates(self.hostname).write(tls_dir)
        config = Config(
            data_dir=self.data_dir,
            hostname=self.hostname,
            domains=self.domains,
            listen={name: "tcp:0:interface=127.0.0.1" for name in self.services},
            tls_certificate=certificate,
            tls_key=key,
            allow_plaintext=self.allow_plaintext,
            allow_plaintext_schemes=True,
            guard=TEST_GUARD,
        )
        self._service = _TestingService(config, _reactor(), self)
        try:
            self._service.startService()
        except Exception:
            self._service = None
            self._remove_data()
            raise
        return self._service.ready.addCallbacks(self._bound, self._failed)

    def _bound(self, ports: dict) -> MailServer:
        self._ports = dict(ports)
        return self

    def _failed(self, failure: object) -> object:
        self._service = None
        self._remove_data()
        return failure

    def stop_in_reactor(self) -> Deferred:
        """Stop on the running reactor, from its thread; fire once everything is closed."""
        service, self._service = self._service, None
        if service is None:
            return succeed(None)
        stopped = service.stopService() or succeed(None)
        stopped.addCallback(lambda _: service.close_connections())
        stopped.addBoth(self._stopped)
        return stopped

    def _stopped(self, result: object) -> object:
        self._ports = {}
        self._remove_data()
        return result

    def _remove_data(self) -> None:
        if self._own_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def _context(self) -> ServerContext:
        if self._service is None or self._service.context is None:
            raise RuntimeError("the server is not started")
        return self._service.context

    # -- users and mail

    def add_user(self, address: str, password: str) -> None:
        """Add a user who may log in (POP3, IMAP, SMTP AUTH) with ``password``."""
        context = self._context()
        address = canonical_address(address)
        if ":" in password or "\n" in password or not password:
            raise ValueError("a test password must be non-empty, without ':' or a line break")
        with self._users_lock:
            if context.users.exists(address):
                raise ValueError(f"user {address} already exists")
            path = self._service.config.users_file
            with path.open("a", encoding="utf-8") as stream:
                stream.write(f"{address}:{{PLAIN}}{password}\n")
        self._mailboxes.add(address)

    def deliver(
        self,
        address: str,
        message: bytes | EmailMessage,
        folder: str = "INBOX",
        flags: Iterable[str] = (),
    ) -> int:
        """Store ``message`` in ``address``'s ``folder`` (created if missing); return its UID."""
        store = self._context().store
        address = canonical_address(address)
        if isinstance(message, EmailMessage):
            data = message.as_bytes(policy=email.policy.SMTP)
        else:
            data = bytes(message).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        try:
            target = store.folder(address, folder)
        except NoSuchFolder:
            try:
                target = store.create_folder(address, folder)
            except FolderExists:
                target = store.folder(address, folder)
        uid = target.append(data, tuple(flags))
        self._mailboxes.add(address)
        self._envelopes[(address, target.name, uid)] = (None, [address])
        self._notify()
        return uid

    def messages(self, address: str | None = None, folder: str = "INBOX") -> list:
        """The messages in ``folder`` of ``address``, or of every mailbox when None.

        Ordered by arrival (then address and UID)."""
        store = self._context().store
        addresses = [canonical_address(address)] if address else sorted(self._mailboxes)
        found = []
        for owner in addresses:
            try:
                source = store.folder(owner, folder)
            except NoSuchFolder:
                continue
            for info in source.messages():
                with source.open_message(info.uid) as stream:
                    raw = stream.read()
                found.append(
                    (info.internal_date, owner, info.uid, self._parse(raw, owner, source, info))
                )
        found.sort(key=lambda row: row[:3])
        return [row[3] for row in found]

    def _parse(self, raw: bytes, owner: str, source: object, info: object) -> CapturedMessage:
        message = _PARSER.parsebytes(raw.replace(b"\r\n", b"\n"))
        message.raw = raw
        message.address = owner
        message.folder = source.name
        message.uid = info.uid
        message.flags = frozenset(info.flags)
        sender, recipients = self._envelopes.get((owner, source.name, info.uid), (None, [owner]))
        if sender is None and message["Return-Path"] is not None:
            sender = str(message["Return-Path"]).strip().strip("<>")
        message.envelope_from = sender
        message.envelope_to = list(recipients)
        return message

    def wait_for(self, count: int = 1, timeout: float = 5, **match: object) -> list:
        """Wait until ``count`` messages match; return all that match.  Raise TimeoutError.

        ``address=`` and ``folder=`` choose where to look (default every mailbox's INBOX); every
        other keyword matches an attribute (``envelope_from``, ``envelope_to``) or a header
        (``subject=``, ``to=``, ``from_=``, ``message_id=``...): a string matches as a
        case-insensitive substring, a callable is given the value and says yes or no.  The wait
        is woken by each delivery (SMTP or ``deliver``), not by polling."""
        if threadable.isInIOThread() and _reactor().running:
            raise RuntimeError("wait_for blocks and cannot run in the reactor thread")
        address = match.pop("address", None)
        folder = match.pop("folder", "INBOX")
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                generation = self._generation
            found = [
                message
                for message in self.messages(address, folder)
                if all(_matches(message.field(key), want) for key, want in match.items())
                and (address is None or message.address == canonical_address(address))
            ]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            with self._changed:
                changed = self._changed.wait_for(
                    partial(self._changed_since, generation), remaining
                )
            if not changed:
                raise TimeoutError(self._describe(count, timeout, address, folder, match))

    def _changed_since(self, generation: int) -> bool:
        return self._generation != generation

    def _describe(self, count: int, timeout: float, address: object, folder: str, match: dict):
        wanted = ", ".join(f"{key}={value!r}" for key, value in match.items()) or "anything"
        present = self.messages(address, folder)
        lines = [
            f"waited {timeout}s for {count} message(s) matching {wanted} in {folder}"
            f"{' of ' + str(address) if address else ''}; there are {len(present)}:"
        ]
        lines += [
            f"  {m.address} uid {m.uid}: from {m.envelope_from!r} subject {m['Subject']!r}"
            for m in present
        ]
        return "\n".join(lines)

    def matching(self, **match: object) -> list:
        """The messages that match now, as ``wait_for`` would return them, without waiting."""
        address = match.pop("address", None)
        folder = match.pop("folder", "INBOX")
        return [
            message
            for message in self.messages(address, folder)
            if all(_matches(message.field(key), want) for key, want in match.items())
        ]

    def when(self, count: int = 1, timeout: float = 5, **match: object) -> Deferred:
        """In the reactor thread: ``wait_for`` as a Deferred, which does not block the reactor.

        It fires with ``matching(**match)`` once that holds ``count`` messages (checked at each
        delivery) or fails with TimeoutError after ``timeout`` seconds; cancelling it stops the
        wait."""
        found = self.matching(**match)
        if len(found) >= count:
            return succeed(found)

        def check() -> None:
            if waiting.called:  # already woken, timed out or cancelled
                return
            found = self.matching(**match)
            if len(found) >= count:
                self._watchers.discard(check)
                timer.cancel()
                waiting.callback(found)

        def expire() -> None:
            self._watchers.discard(check)
            address, folder = match.get("address"), match.get("folder", "INBOX")
            others = {k: v for k, v in match.items() if k not in ("address", "folder")}
            waiting.errback(TimeoutError(self._describe(count, timeout, address, folder, others)))

        def cancel(_: Deferred) -> None:
            self._watchers.discard(check)
            if timer.active():
                timer.cancel()

        waiting = Deferred(cancel)
        timer = _reactor().callLater(timeout, expire)
        self._watchers.add(check)
        return waiting

    def clear(self) -> None:
        """Remove every message of every mailbox (all folders) and every fault; keep users."""
        store = self._context().store
        self.faults.clear()
        for owner in sorted(self._mailboxes):
            for name in store.list_folders(owner):
                target = store.folder(owner, name)
                uids = [info.uid for info in target.messages()]
                if uids:
                    target.expunge(uids)
        self._envelopes.clear()

    # -- faults

    def fault(
        self,
        protocol: str,
        step: str,
        *,
        reply: str | None = None,
        match: str | Callable[[str], bool] | None = None,
        times: int | None = 1,
        drop: bool = False,
        delay: float = 0.0,
    ) -> Fault:
        """Make ``protocol`` (smtp, pop3, imap) fail at ``step``; see ``mailgw.testing.faults``."""
        return self.faults.add(Fault(protocol, step, reply, match, times, drop, delay))

    def clear_faults(self) -> None:
        """Remove every fault."""
        self.faults.clear()

    # -- events

    def _delivered(self, sender: str, recipients: list, uids: dict) -> None:
        """Told of every SMTP delivery (in the reactor thread): keep its envelope, wake waiters."""
        for owner, uid in uids.items():
            self._mailboxes.add(owner)
            self._envelopes[(owner, "INBOX", uid)] = (sender, list(recipients))
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
        if self._watchers:
            _reactor().callFromThread(self._wake_watchers)

    def _wake_watchers(self) -> None:
        for check in list(self._watchers):
            check()


def _matches(value: str, want: object) -> bool:
    """Does ``value`` match a wait_for criterion (substring, case-insensitive; or a callable)?"""
    if callable(want):
        return bool(want(value))
    return str(want).lower() in value.lower()
