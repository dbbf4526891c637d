"""Service composition: one ServerContext for everything, one listener per configured endpoint.

``MailgwService`` is what ``twistd mailgw`` runs (through ``makeService``, used by the plugin in
``twisted/plugins/mailgw_plugin.py``).  Start-up has two steps, so that ``twistd --uid mail``
can bind ports below 1024 as root and still create every file as the run-as user:

- ``privilegedStartService`` (as root, before the switch): reads the [tls] certificate and key if
  configured, and binds every listener with a ``PendingFactory`` standing in for the protocol
  factory;
- ``startService`` (after the switch): creates the data directories, the store, the user
  database, the login guard, the portal and a generated certificate if none is configured, hands
  each listener its real factory and, once all are bound, writes the ports file.

Run any other way, ``privilegedStartService`` is still called first by the application, or by
``startService`` itself when nothing called it.
"""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Callable
from functools import partial
from pathlib import Path

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, FirstError, gatherResults, maybeDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.mail.pop3 import IMailbox
from twisted.mail.smtp import IMessageDelivery
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.python.failure import Failure

from mailgw import imap, pop3, smtp
from mailgw.auth import (
    CredentialsCache,
    HashingPool,
    LoginGuard,
    MailRealm,
    PasswdFileUserDatabase,
    UserDatabaseError,
    build_portal,
)
from mailgw.config import (
    IMPLICIT_TLS,
    SERVICES,
    Config,
    ConfigError,
    default_config,
    load_config,
    server_endpoint,
)
from mailgw.context import ServerContext
from mailgw.durable import remove_stale_temps
from mailgw.recipients import AliasFile, Recipients
from mailgw.relay.queue import OutboundQueue, QueueError
from mailgw.relay.scheduler import RelayScheduler, make_scheduler
from mailgw.store.interfaces import StoreError
from mailgw.store.maildir import MaildirStore
from mailgw.tls import load_configured_tls, load_or_create_tls

log = Logger()


class StartupError(Exception):
    """mailgw cannot start: the data directory is unusable or a listener cannot be bound."""


def build_context(
    config: Config,
    reactor: object,
    tls: CertificateOptions | None = None,
    run_in_thread: Callable[..., Deferred] = deferToThread,
) -> ServerContext:
    """Create the data directories, the store, users, guard, realm, portal and TLS options.

    ``tls`` is the TLS options already read from the [tls] files; without it they are read (or
    a certificate is generated into the data directory) here.  Passwords are checked through
    ``run_in_thread`` (the service's HashingPool).
    """
    for directory in (config.data_dir, config.mail_dir, config.tmp_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = MaildirStore(
        config.mail_dir, config.tmp_dir, config.hostname, dispatch=reactor.callFromThread
    )
    users = PasswdFileUserDatabase(
        config.users_file, allow_plaintext_schemes=config.allow_plaintext_schemes
    )
    guard = LoginGuard(config.guard, clock=reactor)
    recipients = Recipients(
        users,
        config.domains,
        AliasFile(config.aliases_file, frozenset(config.domains), users),
        config.recipient_delimiter,
        config.postmaster,
    )
    recipients.check()
    realm = MailRealm(
        {
            IMessageDelivery: partial(smtp.make_avatar, store),
            IMailbox: partial(pop3.make_avatar, store),
            imap.IAccount: partial(imap.make_avatar, store),
        }
    )
    return ServerContext(
        hostname=config.hostname,
        domains=frozenset(config.domains),
        store=store,
        users=users,
        portal=build_portal(
            users,
            guard,
            realm,
            clock=reactor,
            run_in_thread=run_in_thread,
            cache=CredentialsCache(
                config.login_cost.cache_ttl, config.login_cost.cache_size, clock=reactor
            ),
        ),
        tls=tls if tls is not None else load_or_create_tls(config),
        allow_plaintext=config.allow_plaintext,
        limits=config.limits,
        recipients=recipients,
        queue=OutboundQueue(config.queue_dir),
    )


#: service -> make_factory(context); an implicit-TLS service uses its plain twin's (without "s").
_FACTORY_MAKERS = {
    "smtp": smtp.make_factory,
    "submission": partial(smtp.make_factory, submission=True),
    "pop3": pop3.make_factory,
    "imap": imap.make_factory,
}


def make_protocol_factory(context: ServerContext, service: str) -> object:
    """The protocol factory for one of SERVICES (TLS not yet added for implicit-TLS ones)."""
    plain = service.removesuffix("s") if service in IMPLICIT_TLS else service
    return _FACTORY_MAKERS[plain](context)


class PendingFactory(Factory):
    """Bound in place of a protocol factory that does not exist yet.

    Listeners are bound as root, before ``twistd --uid`` drops privileges, but their protocol
    factories need the ServerContext, built afterwards.  ``attach`` hands over the real factory,
    to which ``buildProtocol`` and the start/stop notifications are passed from then on.  No
    connection is accepted before the reactor runs, so none is lost; one that somehow arrives
    before ``attach`` is closed at once.
    """

    noisy = False

    def __init__(self, name: str) -> None:
        self.name = name
        #: The real protocol factory, once attached.
        self.real: Factory | None = None

    def logPrefix(self) -> str:
        """Name the listener in Twisted's "... starting on PORT" messages."""
        return self.name

    def attach(self, real: Factory) -> None:
        """Serve every further connection with ``real``."""
        self.real = real
        if self.numPorts:
            real.doStart()

    def startFactory(self) -> None:
        """Start the real factory, if there is one yet."""
        if self.real is not None:
            self.real.doStart()

    def stopFactory(self) -> None:
        """Stop the real factory, if there is one."""
        if self.real is not None:
            self.real.doStop()

    def buildProtocol(self, addr: object) -> Protocol | None:
        """The real factory's protocol, or None (the connection is closed) before ``attach``."""
        if self.real is None:
            log.warn(
                "{service}: closed a connection from {peer} made before start-up ended",
                service=self.name,
                peer=str(addr),
            )
            return None
        return self.real.buildProtocol(addr)


class ListenerService(Service):
    """One listener: bound in ``privilegedStartService``, stops listening when stopped."""

    def __init__(self, name: str, description: str, endpoint: object, factory: object) -> None:
        self.name = name
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        #: Fires with the IListeningPort once bound (set by privilegedStartService).
        self.bound: Deferred | None = None
        self.port = None

    def privilegedStartService(self) -> None:
        """Start listening (as root under ``twistd --uid``: ports below 1024 are allowed)."""
        super().privilegedStartService()
        self.bound = self.endpoint.listen(self.factory)
        self.bound.addCallback(self._listening)

    def _listening(self, port: object) -> object:
        self.port = port
        return port

    def stopService(self) -> Deferred | None:
        """Stop listening (connections already accepted are left alone)."""
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return maybeDeferred(port.stopListening)
        if self.bound is not None:
            self.bound.cancel()
        return None


class MailgwService(MultiService):
    """The whole server: the shared context and one ListenerService per configured endpoint.

    ``ready`` fires with ``{service: port}`` once every listener is bound and the ports file is
    written, or fails with StartupError (and every listener is stopped again) if one cannot be
    bound.  ``privilegedStartService`` raises ConfigError when an endpoint string or the [tls]
    files are unusable (nothing is bound then); ``startService`` raises StartupError when the
    data directory or the ports file is unusable, after closing every listener again.
    """

    def __init__(self, config: Config, reactor: object) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.context: ServerContext | None = None
        self.ready: Deferred = Deferred()
        #: TLS options read from the [tls] files as root, if any are configured.
        self._configured_tls: CertificateOptions | None = None
        #: Has privilegedStartService bound the listeners since the last stop?
        self._bound = False
        #: The effective uid privilegedStartService ran as (twistd --uid switches after it).
        self._privileged_uid = os.geteuid()
        #: Delivers the outbound queue; started once every listener is bound.
        self.relay: RelayScheduler | None = None
        #: The threads passwords are checked on, [auth] hash_threads of them.
        self.hashing = HashingPool(config.login_cost.hash_threads, reactor)

    def privilegedStartService(self) -> None:
        """Read the configured [tls] files and bind every listener; nothing is written."""
        self._privileged_uid = os.geteuid()
        if self.context is None:
            self._configured_tls = load_configured_tls(self.config)
        if not self.services:
            for listener in self._make_listeners():
                listener.setServiceParent(self)
        super().privilegedStartService()
        self._bound = True

    def startService(self) -> None:
        """Create the data and the context (once), serve on every listener, write the ports file.

        Binds the listeners first if ``privilegedStartService`` has not.
        """
        if not self._bound:
            self.privilegedStartService()
        try:
            self._prepare()
        except (ConfigError, StartupError):
            self._unbind()
            raise
        if not self.services:
            log.warn("No listener is configured: mailgw serves nothing ([listen] is empty)")
        self.hashing.start()
        super().startService()
        listeners = list(self)
        waiting = [
            listener.bound.addErrback(self._cannot_listen, listener) for listener in listeners
        ]
        self.ready = gatherResults(waiting, consumeErrors=True)
        self.ready.addCallback(self._all_bound, listeners)
        self.ready.addErrback(self._start_failed)
        self.ready.addCallback(self._start_relay)

    def _start_relay(self, bound: dict) -> dict:
        """Start delivering the outbound queue."""
        if self.relay is None:
            self.relay = make_scheduler(self.context, self.config.relay, self.reactor)
            if self.context.queue is not None:
                self.context.queue.add_listener(lambda queue_id: self.relay.poke())
        self.relay.start()
        return bound

    def _prepare(self) -> None:
        """Remove a stale ports file (and a killed start's temp file of it); build the context
        and attach the real factories (once)."""
        try:
            _remove(self.config.ports_file)
            if self.config.ports_file is not None:
                remove_stale_temps(self.config.ports_file)
        except OSError as error:
            problem = error.strerror or error
            raise StartupError(f"cannot remove {self.config.ports_file}: {problem}") from None
        if self.context is None:
            self.context = self._build_context()
            for listener in self:
                listener.factory.attach(self._protocol_factory(listener.name))

    def _unbind(self) -> None:
        """Close every listener after a failed start."""
        for listener in self:
            listener.stopService()
        self._bound = False

    def _build_context(self) -> ServerContext:
        """build_context, with its failures turned into one-line StartupErrors."""
        try:
            return build_context(
                self.config, self.reactor, self._configured_tls, run_in_thread=self.hashing
            )
        except OSError as error:
            where = f": {error.filename}" if error.filename else ""
            raise StartupError(f"{error.strerror or error}{where}") from None
        except (StoreError, UserDatabaseError, QueueError) as error:
            raise StartupError(str(error)) from None

    def _make_listeners(self) -> list[ListenerService]:
        """One unbound ListenerService per configured endpoint; ConfigError for a bad one."""
        listeners = []
        for name in SERVICES:
            description = self.config.listen.get(name)
            if not description:
                continue
            try:
                endpoint, _ = server_endpoint(self.reactor, name, description)
            except ValueError as error:
                source = self.config.source or "<configuration>"
                raise ConfigError(f"{source}: [listen] {name}: {error}") from None
            listeners.append(ListenerService(name, description, endpoint, PendingFactory(name)))
        return listeners

    def _protocol_factory(self, name: str) -> Factory:
        """The real factory for listener ``name``, wrapped in TLS if it is an implicit-TLS one."""
        factory = make_protocol_factory(self.context, name)
        if name in IMPLICIT_TLS:
            factory = TLSMemoryBIOFactory(self.context.tls, False, factory)
        return factory

    def _cannot_listen(self, failure: Failure, listener: ListenerService) -> Failure:
        """Name the listener that could not be bound."""
        message = f"cannot listen for {listener.name} on {listener.description}: "
        return Failure(StartupError(message + failure.getErrorMessage()))

    def _all_bound(self, ports: list, listeners: list) -> dict:
        """Log where each service listens, write the ports file, hint at adding users."""
        bound = {}
        for listener, port in zip(listeners, ports, strict=True):
            host = port.getHost()
            bound[listener.name] = getattr(host, "port", None) or os.fsdecode(host.name)
            where = f"{host.host}:{host.port}" if hasattr(host, "port") else bound[listener.name]
            log.info("{service} listening on {where}", service=listener.name, where=where)
        if self.config.ports_file is not None:
            try:
                _write_json(self.config.ports_file, bound)
            except OSError as error:
                problem = error.strerror or error
                raise StartupError(f"cannot write {self.config.ports_file}: {problem}") from None
        self._hint_users()
        return bound

    def _hint_users(self) -> None:
        """Say how to add a user, and that none exists yet if so."""
        source = self.config.source
        if source is not None:
            command = f"mailgw --config {source} user add ADDRESS"
        else:  # the embedded default finds its data in the current directory
            command = f"mailgw user add ADDRESS (run in {self.config.data_dir.parent})"
        if os.geteuid() != self._privileged_uid:  # twistd --uid: the files belong to this user
            command = f"sudo -u {_user_name(os.geteuid())} {command}"
        if self.context.users.users():
            log.info("mailgw is ready; add users with: {command}", command=command)
        else:
            log.warn(
                "mailgw is ready but has no users yet: add one with: {command}", command=command
            )

    def _start_failed(self, failure: Failure) -> Failure:
        """Stop what was bound and fail ``ready`` with a StartupError saying why."""
        if failure.check(FirstError):
            failure = failure.value.subFailure
        if not failure.check(StartupError):
            log.failure("Unexpected error during start-up", failure)
        message = failure.getErrorMessage()
        log.critical("mailgw cannot start: {error}", error=message)
        self.stopService()
        return Failure(StartupError(message))

    def stopService(self) -> Deferred:
        """Stop every listener and remove the ports file."""
        self._bound = False
        if self.relay is not None:
            self.relay.stop()
        stopped = super().stopService()
        self.hashing.stop()
        try:
            _remove(self.config.ports_file)
        except OSError as error:
            log.warn("Cannot remove {path}: {error}", path=str(error.filename), error=error)
        return stopped


def _write_json(path: Path, value: object) -> None:
    """Write ``value`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _user_name(uid: int) -> str:
    """The name of ``uid``, or ``#uid`` (as sudo accepts it) if it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def _remove(path: Path | None) -> None:
    """Remove ``path`` if given and present."""
    if path is not None:
        path.unlink(missing_ok=True)


class Options(usage.Options):
    """The command line of ``twistd mailgw``."""

    synopsis = "[--config FILE]"
    longdesc = (
        "Run the mailgw mail server (SMTP, submission, POP3, IMAP4).  Without --config, the "
        "embedded default is used: data in ./mailgw-data/, domain localhost, unprivileged ports "
        "on 127.0.0.1 only (smtp 2525, submission 2587, submissions 2465, pop3 1110, pop3s 1995, "
        "imap 1143, imaps 1993).  To serve ports below 1024, start it as root with twistd's "
        "--uid and --gid: listeners are bound and the [tls] files read before the switch, and "
        "every file is created after it, as that user."
    )
    optParameters = [
        ["config", "c", None, "the configuration file (see etc/mailgw.ini)", Path],
    ]


class _TwistdService(MailgwService):
    """MailgwService under twistd: a start-up failure ends the process with one line."""

    _exit_message: str | None = None

    def privilegedStartService(self) -> None:
        """Bind, or raise SystemExit (twistd exits non-zero) with the reason on one line."""
        try:
            super().privilegedStartService()
        except (ConfigError, StartupError) as error:
            raise SystemExit(f"mailgw: error: {error}") from None

    def startService(self) -> None:
        """Start, or raise SystemExit (twistd exits non-zero) with the reason on one line."""
        try:
            super().startService()
        except (ConfigError, StartupError) as error:
            raise SystemExit(f"mailgw: error: {error}") from None
        self.ready.addErrback(self._exit)
        if self._exit_message is not None:
            raise SystemExit(self._exit_message)

    def _exit(self, failure: Failure) -> None:
        """Remember why start-up failed; stop the reactor if it already runs."""
        self._exit_message = f"mailgw: error: {failure.getErrorMessage()}"
        if self.reactor.running:
            self.reactor.stop()


def makeService(options: Options) -> MultiService:
    """Build the service ``twistd mailgw`` runs; a bad configuration exits with one line."""
    from twisted.internet import reactor

    path = options["config"]
    try:
        config = default_config() if path is None else load_config(path)
    except ConfigError as error:
        raise SystemExit(f"mailgw: error: {error}") from None
    if path is None:
        log.info(
            "No --config given: using the embedded default (data in {data_dir}, "
            "listening on 127.0.0.1 only)",
            data_dir=str(config.data_dir),
        )
    return _TwistdService(config, reactor)
