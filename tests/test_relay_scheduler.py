"""The relay scheduler end to end: a real queue, a real store, an aiosmtpd next hop on loopback.

Time passes through ``twisted.internet.task.Clock`` (shared by the queue and the scheduler),
never by sleeping; the network and threads are the real reactor's.
"""

from __future__ import annotations

import asyncio
import email
import imaplib
import smtplib
import time
from dataclasses import replace

import pytest
from conftest import in_reactor, make_config
from test_relay_client import FakeResolver, Smarthost
from twisted.internet import reactor
from twisted.internet.task import Clock

from mailgw import imap
from mailgw.relay import RelaySettings
from mailgw.relay.bounce import make_bounce
from mailgw.relay.queue import OutboundQueue, PendingBounce
from mailgw.relay.scheduler import BACKOFF, Relay, RelayScheduler, backoff
from mailgw.service import MailgwService

ALICE = "alice@example.test"
MESSAGE = b"From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: report\r\n\r\nbody\r\n"


class Harness:
    """A queue and a scheduler over the test server's store, with a fake clock."""

    def __init__(self, server, tmp_path, settings: RelaySettings, **relay_options) -> None:
        self.server = server
        self.clock = Clock()
        self.clock.advance(time.time())
        self.queue = OutboundQueue(tmp_path / "queue", clock=self.clock.seconds)
        self.settings = settings
        relay = Relay(reactor, settings, "mx.example.test", **relay_options)
        self.scheduler = RelayScheduler(self.queue, settings, server.context, self.clock, relay)

    def run(self) -> None:
        """One scan, waiting for every attempt it started."""
        in_reactor(self.scheduler.run_once)

    def inbox(self, address: str = ALICE) -> list[email.message.Message]:
        """The messages in a local INBOX, parsed."""
        folder = self.server.store.folder(address)
        found = []
        for info in folder.messages():
            with folder.open_message(info.uid) as stream:
                found.append(email.message_from_bytes(stream.read()))
        return found


@pytest.fixture
def smarthost():
    """An aiosmtpd smarthost without TLS."""
    host = Smarthost()
    yield host
    host.close()


@pytest.fixture
def harness(server, tmp_path, smarthost):
    """A scheduler relaying to ``smarthost`` without TLS; alice is a local user."""
    server.add_user(ALICE)
    settings = RelaySettings(smarthost=("127.0.0.1", smarthost.port), smarthost_tls="none")
    return Harness(server, tmp_path, settings)


def test_delivered_through_the_smarthost(harness, smarthost):
    """A queued message reaches the smarthost once and leaves the queue."""
    harness.queue.enqueue(MESSAGE, ALICE, ["bob@remote.test"])
    harness.run()
    harness.run()
    assert smarthost.messages == [(ALICE, ["bob@remote.test"], MESSAGE)]
    assert harness.queue.entries() == []


def test_temporary_failure_then_success_after_backoff(harness, smarthost):
    """451 at DATA: kept with the reply, not retried before the back-off, delivered after it."""
    smarthost.data_replies = ["451 4.3.0 try again later"]
    harness.queue.enqueue(MESSAGE, ALICE, ["bob@remote.test"])
    start = harness.clock.seconds()
    harness.run()
    (entry,) = harness.queue.entries()
    assert entry.attempts == 1 and entry.next_attempt == start + BACKOFF[0]
    assert "451 4.3.0 try again later" in entry.last_error
    harness.clock.advance(BACKOFF[0] - 1)
    harness.run()
    assert smarthost.messages == [] and len(harness.queue.entries()) == 1
    harness.clock.advance(1)
    harness.run()
    assert len(smarthost.messages) == 1 and harness.queue.entries() == []
    assert harness.inbox() == []


def test_backoff_grows_then_stays_hourly():
    """1, 5, 15, 30 minutes, then every hour."""
    assert [backoff(n) for n in range(1, 8)] == [60, 300, 900, 1800, 3600, 3600, 3600]


def test_permanent_failure_bounces_to_the_sender_over_imap(harness, smarthost, server):
    """550 for one recipient: the other is delivered, the sender reads a DSN over IMAP."""
    smarthost.rcpt_replies = {"gone@remote.test": "550 5.1.1 no such user"}
    harness.queue.enqueue(MESSAGE, ALICE, ["bob@remote.test", "gone@remote.test"])
    harness.run()
    assert [m[1] for m in smarthost.messages] == [["bob@remote.test"]]
    assert harness.queue.entries() == []
    client = imaplib.IMAP4("127.0.0.1", server.listen(imap.make_factory), timeout=10)
    try:
        client.login(ALICE, "secret")
        client.select("INBOX")
        _, data = client.fetch("1", "(RFC822)")
    finally:
        client.logout()
    bounce = email.message_from_bytes(data[0][1])
    assert bounce.get_content_type() == "multipart/report"
    assert bounce.get_param("report-type") == "delivery-status"
    text = data[0][1].decode()
    assert "gone@remote.test" in text and "Status: 5.1.1" in text
    assert "bob@remote.test>:" not in text  # only the failed recipient is reported
    assert "Subject: report" in text  # the original headers are quoted


def test_expiry_bounces_and_removes(harness, smarthost):
    """Always 4xx: once older than max_age, the message bounces with status 4.4.7."""
    smarthost.data_replies = ["421 4.4.2 overloaded"] * 10
    harness.queue.enqueue(MESSAGE, ALICE, ["bob@remote.test"])
    harness.run()
    assert len(harness.queue.entries()) == 1 and harness.inbox() == []
    harness.clock.advance(harness.settings.max_age)
    harness.run()
    assert harness.queue.entries() == [] and smarthost.messages == []
    (bounce,) = harness.inbox()
    assert "Status: 4.4.7" in bounce.as_string() and "overloaded" in bounce.as_string()


def test_null_sender_is_never_bounced(harness, smarthost):
    """A bounce that fails for good is dropped: nothing queued, nothing delivered."""
    smarthost.rcpt_replies = {"gone@remote.test": "550 5.1.1 no such user"}
    harness.queue.enqueue(MESSAGE, "", ["gone@remote.test"])
    harness.run()
    assert harness.queue.entries() == [] and harness.inbox() == []


def test_acknowledgement_recorded_before_quit(harness, smarthost):
    """When QUIT reaches the smarthost, the delivered entry is already gone from the queue:
    a crash after the 250 never sends it again."""
    at_quit: list[int] = []

    async def handle_QUIT(server, session, envelope):
        at_quit.append(len(harness.queue.entries()))
        return "221 bye"

    smarthost.handle_QUIT = handle_QUIT
    harness.queue.enqueue(MESSAGE, ALICE, ["bob@remote.test"])
    harness.run()
    assert at_quit == [0] and len(smarthost.messages) == 1


def test_connection_refused_stays_queued(server, tmp_path):
    """No smarthost listening: the entry stays, with the reason, for a later attempt."""
    dead = Smarthost()
    dead.close()
    settings = RelaySettings(smarthost=("127.0.0.1", dead.port), smarthost_tls="none")
    harness = Harness(server, tmp_path, settings)
    harness.queue.enqueue(MESSAGE, ALICE, ["bob@remote.test"])
    harness.run()
    (entry,) = harness.queue.entries()
    assert "cannot connect" in entry.last_error


def test_concurrency_per_destination_is_bounded(harness, smarthost):
    """Six messages to one smarthost with concurrency 2: never more than 2 sessions at once."""
    harness.scheduler.settings = replace(harness.settings, concurrency_per_destination=2)
    active, peak = [0], [0]
    accept = smarthost.handle_DATA

    async def slow_DATA(server, session, envelope):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.1)
        active[0] -= 1
        return await accept(server, session, envelope)

    smarthost.handle_DATA = slow_DATA
    for _ in range(6):
        harness.queue.enqueue(MESSAGE, ALICE, ["bob@remote.test"])
    harness.run()
    assert len(smarthost.messages) == 6 and peak[0] == 2
    assert harness.queue.entries() == []


def test_direct_mx_delivery_with_a_controlled_resolver(server, tmp_path, smarthost):
    """No smarthost: the preferred MX (unreachable) is skipped for the next one; a domain
    that does not exist bounces at once."""
    server.add_user(ALICE)
    resolver = FakeResolver(
        mx={"remote.test": [(20, "mx2.remote.test"), (10, "mx1.remote.test")]},
        hosts={"mx1.remote.test": "127.0.0.2", "mx2.remote.test": "127.0.0.1"},
    )
    settings = RelaySettings(verify_certificates=False)
    harness = Harness(server, tmp_path, settings, resolver=resolver, mx_port=smarthost.port)
    harness.queue.enqueue(MESSAGE, ALICE, ["bob@remote.test", "x@missing.test"])
    harness.run()
    assert smarthost.messages == [(ALICE, ["bob@remote.test"], MESSAGE)]
    assert harness.queue.entries() == []
    (bounce,) = harness.inbox()
    assert "x@missing.test" in bounce.as_string() and "does not exist" in bounce.as_string()


def test_running_server_relays_submitted_mail(tmp_path, smarthost):
    """The whole path in a running MailgwService: submission with AUTH, the queue, the
    scheduler the service started (poked by the enqueue), the smarthost; stopping the service
    stops the scheduler."""
    relay = RelaySettings(smarthost=("127.0.0.1", smarthost.port), smarthost_tls="none")
    config = make_config(
        tmp_path / "data", listen={"submission": "tcp:0:interface=127.0.0.1"}, relay=relay
    )
    service = MailgwService(config, reactor)
    in_reactor(service.startService)
    try:
        port = in_reactor(lambda: service.ready)["submission"]
        service.context.users.add_user(ALICE, b"secret")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.login(ALICE, "secret")
            client.sendmail(ALICE, ["bob@remote.test"], MESSAGE)
        # The 250 pokes the relay: the message leaves at once, not at the next scan (10 s).
        deadline = time.monotonic() + 3
        while not smarthost.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        ((sender, recipients, content),) = smarthost.messages
        assert (sender, recipients) == (ALICE, ["bob@remote.test"])
        assert b"Subject: report\r\n" in content and content.endswith(b"\r\n\r\nbody\r\n")
        assert service.context.queue.entries() == []
    finally:
        in_reactor(service.stopService)
    assert not service.relay.running


@pytest.mark.parametrize("delivered_before_crash", [False, True])
def test_pending_bounce_left_by_a_crash_goes_exactly_once(
    harness, smarthost, delivered_before_crash
):
    """The state a crash leaves after recording a bounce (``bounce.recorded``) or after
    delivering it (``bounce.delivered``): the next scan delivers it once in all, and never
    asks the refusing server again."""
    asked = []
    smarthost.handle_RCPT = lambda *args: asked.append(args) or "550 5.1.1 no such user"
    queue = harness.queue
    entry_id = queue.enqueue(MESSAGE, ALICE, ["gone@remote.test", "bob@remote.test"])
    entry = queue.get(entry_id)
    failures = {"gone@remote.test": "550 5.1.1 no such user"}
    folder = harness.server.store.folder(ALICE)
    bounce = PendingBounce(failures, False, "<x.bounce@mx.example.test>", {ALICE: folder.uid_next})
    queue.fail_recipients(entry_id, ["gone@remote.test"], bounce)
    queue.record_attempt(entry_id, {}, [], harness.clock.seconds() + 3600)  # bob: not due
    if delivered_before_crash:
        data = make_bounce(entry, b"", failures, "mx.example.test", False, bounce.message_id)
        folder.append(data)
    harness.run()
    harness.run()
    [delivered] = harness.inbox()
    assert delivered["Message-ID"] == bounce.message_id
    assert asked == [] and smarthost.messages == []
    [left] = queue.entries()
    assert left.bounce is None and left.recipients == ["bob@remote.test"]


def test_pending_bounce_to_a_remote_sender_is_queued_once(harness, smarthost):
    """Its own queue entry exists already (a crash after queueing it): not queued again."""
    queue = harness.queue
    entry_id = queue.enqueue(MESSAGE, "carol@remote.test", ["gone@remote.test"])
    bounce = PendingBounce(
        {"gone@remote.test": "550 gone"}, False, "<y@mx>", queue_id=queue.new_id()
    )
    queue.fail_recipients(entry_id, ["gone@remote.test"], bounce)
    queue.enqueue(b"Subject: the bounce\r\n\r\n", "", ["carol@remote.test"], bounce.queue_id)
    harness.run()
    harness.run()
    assert [(m[0], m[1]) for m in smarthost.messages] == [("<>", ["carol@remote.test"])]
    assert b"the bounce" in smarthost.messages[0][2] and queue.entries() == []
