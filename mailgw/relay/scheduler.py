"""The delivery side of the outbound queue: who to hand each message to, when, and what then.

``RelayScheduler`` rescans the queue every ``interval`` seconds (and when ``poke``d after an
enqueue), delivers each due entry through a ``Relay`` (the smarthost, or each recipient
domain's MX hosts), at most ``concurrency_per_destination`` connections at once toward one
destination, and then:

- records the recipients the next hop acknowledged the moment its ``250`` to DATA arrives, so
  that a crash after it never sends them again;
- reschedules temporary failures with a growing back-off (``BACKOFF``, then hourly) until the
  entry is older than ``max_age``, when they bounce as expired;
- bounces permanent failures at once.  A bounce (RFC 3464, ``make_bounce``) goes into the
  sender's INBOX when the sender is local, else into the queue from the null sender; a message
  from the null sender is never bounced.

A bounce goes exactly once, crash or not.  It is first recorded in the entry as a
``PendingBounce`` (with its Message-ID, and the sender's INBOX UIDNEXT or the bounce's own
queue id), its recipients dropped from the entry; then delivered; then forgotten
(``bounce_done``), which removes the entry if nothing is left.  After a crash between the
two, the next scan finds the pending bounce before any other attempt and delivers it only to
the mailboxes that hold no message with its Message-ID above the recorded UIDNEXT (or queues
it only if its queue entry does not exist): the refusing server is never asked again, and the
sender never gets it twice.

Time comes from ``clock`` (the reactor, or ``twisted.internet.task.Clock`` in tests); the queue
and the store are called in threads, since they fsync.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from mailgw.crashpoint import crash_point
from mailgw.recipients import PostmasterUnavailable, UnknownRecipient
from mailgw.relay import RelaySettings
from mailgw.relay.bounce import bounce_message_id, make_bounce
from mailgw.relay.client import ClientSettings, Envelope, Outcome, RecipientResult, deliver
from mailgw.relay.dns import SMTP_PORT, Destination, RouteError, destinations
from mailgw.relay.queue import NoSuchEntry, PendingBounce, QueueEntry, QueueError

log = Logger()

#: Seconds to wait after the 1st, 2nd, ... temporary failure; hourly after the last.
BACKOFF = (60.0, 300.0, 900.0, 1800.0, 3600.0)

#: How often the queue directory is rescanned for due entries, in seconds.
SCAN_INTERVAL = 10.0

#: Read at most this much of a queued message for the headers a bounce quotes.
MAX_BOUNCE_HEADERS = 64 * 1024


def backoff(attempts: int) -> float:
    """Seconds until the next attempt after ``attempts`` failed ones (at least one)."""
    return BACKOFF[min(max(attempts, 1), len(BACKOFF)) - 1]


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


class Relay:
    """Hands a message to the next hop for its recipients: the configured smarthost, or else
    the MX hosts of the recipients' domain (tried in order while they cannot be reached)."""

    def __init__(
        self,
        reactor: object,
        settings: RelaySettings,
        helo: str,
        resolver: object | None = None,
        trust_root: object | None = None,
        mx_port: int = SMTP_PORT,
    ) -> None:
        """``resolver`` answers MX and address lookups (default: the system's DNS servers);
        ``trust_root`` verifies certificates (default: the platform's CA store); ``mx_port`` is
        the port of MX hosts (25, except in tests)."""
        self.reactor = reactor
        self.settings = settings
        self.mx_port = mx_port
        self._resolver = resolver
        common = {"helo": helo, "verify": settings.verify_certificates, "trust_root": trust_root}
        self.smarthost_client = ClientSettings(
            tls=settings.smarthost_tls,
            username=settings.smarthost_user,
            password=settings.smarthost_password,
            **common,
        )
        # Toward MX hosts, as Postfix's default (smtp_tls_security_level = may): encrypt when
        # offered, without requiring a certificate that verifies (many MX hosts have none).
        self.mx_client = ClientSettings(tls="opportunistic", **{**common, "verify": False})

    def key(self, recipient: str) -> str:
        """The destination ``recipient`` is delivered through (concurrency is bounded per key)."""
        if self.settings.smarthost is not None:
            host, port = self.settings.smarthost
            return f"{host}:{port}"
        return _domain(recipient)

    async def send(
        self,
        envelope: Envelope,
        open_data: Callable[[], object],
        on_accepted: Callable[[list[str]], object],
    ) -> list[RecipientResult]:
        """Deliver to the recipients of ``envelope``, all of one ``key``."""
        if self.settings.smarthost is not None:
            host, port = self.settings.smarthost
            hop = Destination(host=host, port=port, address=host)
            args = (envelope, open_data, on_accepted)
            return await deliver(self.reactor, hop, self.smarthost_client, *args)
        domain = _domain(envelope.recipients[0])
        try:
            hops = await destinations(self._dns(), domain, self.mx_port)
        except RouteError as error:
            outcome = Outcome.PERMANENT if error.permanent else Outcome.TEMPORARY
            log.warn("Relay: {error}", error=str(error))
            return [RecipientResult(r, outcome, 0, str(error), domain) for r in envelope.recipients]
        results: list[RecipientResult] = []
        for hop in hops:
            results = await deliver(
                self.reactor, hop, self.mx_client, envelope, open_data, on_accepted
            )
            if any(result.code for result in results):  # this host answered: it decided
                break
        return results

    def _dns(self) -> object:
        """The resolver, the system's by default (made on first use)."""
        if self._resolver is None:
            from twisted.names.client import createResolver

            self._resolver = createResolver()
        return self._resolver


class RelayScheduler:
    """Delivers due queue entries, retries, expires and bounces them (see the module)."""

    def __init__(
        self,
        queue: object,
        settings: RelaySettings,
        context: object,
        clock: object,
        deliver: Relay,
        interval: float = SCAN_INTERVAL,
    ) -> None:
        """``queue`` is the OutboundQueue; ``context`` the ServerContext whose store, recipients
        and host name bounces use; ``deliver`` a Relay (or anything with its ``key`` and
        ``send``)."""
        self.queue = queue
        self.settings = settings
        self.context = context
        self.clock = clock
        self.relay = deliver
        self.interval = interval
        self._loop: LoopingCall | None = None
        self._in_flight: set[str] = set()
        self._semaphores: dict[str, defer.DeferredSemaphore] = {}
        self._scanning: defer.Deferred | None = None

    @property
    def running(self) -> bool:
        """Is the periodic scan on?"""
        return self._loop is not None

    def start(self) -> None:
        """Scan now, then every ``interval`` seconds."""
        self._loop = LoopingCall(self.poke)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        """Stop scanning; attempts under way finish (or fail and stay queued)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def poke(self) -> None:
        """Scan the queue now (after an enqueue, or ``mailgw queue flush``)."""
        self.run_once().addErrback(lambda failure: log.failure("Relay scan failed", failure))

    def run_once(self) -> defer.Deferred:
        """Start an attempt for every due entry not already under way; fire when they end."""
        return defer.ensureDeferred(self._scan())

    async def _scan(self) -> None:
        try:
            due = await deferToThread(self.queue.due, self.clock.seconds())
        except QueueError as error:
            log.error("Relay: cannot read the queue: {error}", error=str(error))
            return
        # Pending bounces (left by a crash) first: one going into the queue must be found
        # there, not already delivered by an attempt of this scan.
        for batch in (
            [entry for entry in due if entry.bounce is not None],
            [entry for entry in due if entry.bounce is None],
        ):
            attempts = []
            for entry in batch:
                if entry.id in self._in_flight:
                    continue
                self._in_flight.add(entry.id)
                attempts.append(defer.ensureDeferred(self._attempt(entry)))
            await defer.DeferredList(attempts, consumeErrors=True)

    async def _attempt(self, entry: QueueEntry) -> None:
        try:
            if entry.bounce is not None:
                entry = await self._send_bounce(entry, entry.bounce)
                if entry is None or entry.next_attempt > self.clock.seconds():
                    return
            groups: dict[str, list[str]] = {}
            for recipient in entry.recipients:
                groups.setdefault(self.relay.key(recipient), []).append(recipient)
            sends = [self._send(entry, key, group) for key, group in groups.items()]
            outcomes = await defer.gatherResults([defer.ensureDeferred(s) for s in sends])
            await self._settle(entry, [result for group in outcomes for result in group])
        except NoSuchEntry:
            log.info("Relay: queue entry {id} was removed meanwhile", id=entry.id)
        except Exception:
            log.failure("Relay: attempt for queue entry {id} failed", id=entry.id)
        finally:
            self._in_flight.discard(entry.id)

    async def _send(self, entry: QueueEntry, key: str, group: list[str]) -> list[RecipientResult]:
        """One destination's share of an entry, within that destination's concurrency."""
        limit = self.settings.concurrency_per_destination
        semaphore = self._semaphores.setdefault(key, defer.DeferredSemaphore(limit))
        await semaphore.acquire()
        try:
            results = await self.relay.send(
                Envelope(entry.sender, tuple(group)),
                lambda: self.queue.open_message(entry.id),
                lambda accepted: self._accepted(entry, accepted),
            )
        finally:
            semaphore.release()
            if semaphore.tokens == semaphore.limit and not semaphore.waiting:
                del self._semaphores[key]  # idle: do not keep one per domain ever seen
        for result in results:
            log.info(
                "Relay: {id} to <{to}> via {host}: {outcome} {code} {text}",
                id=entry.id,
                to=result.recipient,
                host=result.host,
                outcome=result.outcome.value,
                code=result.code,
                text=result.text,
            )
        return results

    def _accepted(self, entry: QueueEntry, accepted: list[str]) -> Awaitable:
        """Durably forget recipients the next hop acknowledged, before anything else."""
        return deferToThread(self.queue.record_attempt, entry.id, {}, accepted, entry.next_attempt)

    async def _settle(self, entry: QueueEntry, results: list[RecipientResult]) -> None:
        """Bounce what failed for good, reschedule the rest (or bounce it as expired)."""
        temporary = {r.recipient: _reason(r) for r in results if r.outcome is Outcome.TEMPORARY}
        permanent = {r.recipient: _reason(r) for r in results if r.outcome is Outcome.PERMANENT}
        if not temporary and not permanent:
            return
        now = self.clock.seconds()
        expired = bool(temporary) and now - entry.created >= self.settings.max_age
        if permanent:
            await self._give_up(entry, permanent, expired=False)
        if expired:
            log.warn("Relay: queue entry {id} expired; bouncing it", id=entry.id)
            await self._give_up(entry, temporary, expired=True)
        elif temporary:
            next_attempt = now + backoff(entry.attempts + 1)
            await deferToThread(self.queue.record_attempt, entry.id, temporary, [], next_attempt)

    async def _give_up(self, entry: QueueEntry, failures: dict[str, str], expired: bool) -> None:
        """Drop ``failures``' recipients from the entry and tell the sender (see the module);
        nothing for the null sender (a bounce never bounces)."""
        if not entry.sender:
            log.info("Relay: no bounce for queue entry {id} (null sender)", id=entry.id)
            await deferToThread(self.queue.fail_recipients, entry.id, list(failures), None)
            return
        bounce = await deferToThread(self._plan_bounce, entry, failures, expired)
        await deferToThread(self.queue.fail_recipients, entry.id, list(failures), bounce)
        if bounce is not None:
            await self._send_bounce(entry, bounce)

    def _plan_bounce(
        self, entry: QueueEntry, failures: dict[str, str], expired: bool
    ) -> PendingBounce | None:
        """Where the bounce of ``failures`` goes, before it goes (in a thread); None when the
        sender's local address no longer exists."""
        message_id = bounce_message_id(entry, self.context.hostname)
        recipients = self.context.recipients
        if not recipients.is_local(_domain(entry.sender)):
            queue_id = self.queue.new_id()
            return PendingBounce(dict(failures), expired, message_id, queue_id=queue_id)
        try:
            users = recipients.resolve(entry.sender)
        except (UnknownRecipient, PostmasterUnavailable):
            log.warn(
                "Relay: bounce of {id} dropped: <{to}> is no longer a local address",
                id=entry.id,
                to=entry.sender,
            )
            return None
        store = self.context.store
        marks = {user: store.folder(user).uid_next for user in users}
        return PendingBounce(dict(failures), expired, message_id, marks=marks)

    async def _send_bounce(self, entry: QueueEntry, bounce: PendingBounce) -> QueueEntry | None:
        """Deliver the pending ``bounce`` of ``entry`` where it is not yet, then forget it;
        return the entry as it is then, or None if it is gone."""
        queued = await deferToThread(self._deliver_bounce, entry, bounce)
        crash_point("bounce.delivered")
        log.info("Relay: bounced queue entry {id} to <{to}>", id=entry.id, to=entry.sender)
        left = await deferToThread(self.queue.bounce_done, entry.id)
        if queued:
            self.poke()
        return left

    def _headers(self, entry_id: str) -> bytes:
        """The header section of a queued message (bounded), for the bounce to quote."""
        with self.queue.open_message(entry_id) as stream:
            head = stream.read(MAX_BOUNCE_HEADERS)
        end = head.find(b"\r\n\r\n")
        return head if end < 0 else head[: end + 2]

    def _deliver_bounce(self, entry: QueueEntry, bounce: PendingBounce) -> bool:
        """Into the local sender's INBOX(es) that lack it, or queued from the null sender unless
        it is already (in a thread); return whether it was queued."""
        headers = self._headers(entry.id)
        host = self.context.hostname
        data = make_bounce(
            entry, headers, bounce.failures, host, bounce.expired, message_id=bounce.message_id
        )
        if bounce.queue_id is not None:
            if self.queue.has(bounce.queue_id):
                return False
            self.queue.enqueue(data, "", [entry.sender], entry_id=bounce.queue_id)
            return True
        users = [
            user
            for user, mark in bounce.marks.items()
            if not self._holds(user, mark, bounce.message_id)
        ]
        if users:
            message = self.context.store.incoming()
            message.write(data)
            message.commit(users)
        return False

    def _holds(self, user: str, mark: int, message_id: str) -> bool:
        """Does ``user``'s INBOX hold a message with ``message_id`` at a UID from ``mark`` on?"""
        folder = self.context.store.folder(user)
        wanted = f"message-id: {message_id}".encode().lower()
        for info in folder.messages():
            if info.uid < mark:
                continue
            with folder.open_message(info.uid) as stream:
                head = stream.read(MAX_BOUNCE_HEADERS)
            end = head.find(b"\r\n\r\n")
            lines = (head if end < 0 else head[:end]).lower().split(b"\r\n")
            if wanted in (line.strip() for line in lines):
                return True
        return False


def _reason(result: RecipientResult) -> str:
    """The reply as a bounce quotes it: "550 5.1.1 text", or the local reason alone."""
    return f"{result.code} {result.text}" if result.code else result.text


def make_scheduler(context: object, settings: RelaySettings, reactor: object) -> RelayScheduler:
    """The scheduler of a running server: its queue, the real network, DNS and clock."""
    relay = Relay(reactor, settings, context.hostname)
    return RelayScheduler(context.queue, settings, context, reactor, relay)
