"""Outbound mail: the durable queue, its delivery to the next hop, and bounces.

The contract between the parts (the submission service, the delivery side and the command line):

- ``mailgw.relay.queue.OutboundQueue`` (``DATA/queue``, ``Config.queue_dir``) holds every
  message accepted for a non-local recipient.  The submission service enqueues it (fsync'd)
  before its 250 reply; it always exists, whether or not ``[relay]`` is configured.
- The delivery side (``mailgw.relay.scheduler``, ``client``, ``dns``) rescans the queue directory
  periodically (``OutboundQueue.due(now)``), so entries added or rescheduled by another process
  (``mailgw queue flush``) are picked up without a signal.  After each attempt it calls
  ``OutboundQueue.record_attempt`` at once, so an acknowledged recipient is never sent twice.
- ``mailgw.relay.bounce.make_bounce`` builds the RFC 3464 report sent to the sender's mailbox
  after a permanent failure or expiry; the caller sends none when the sender is null (``""``).
  The scheduler records it in the entry (``OutboundQueue.fail_recipients`` with a
  ``PendingBounce``) before sending it and clears it after (``bounce_done``), so that a crash
  neither loses it nor sends it twice.
- ``RelaySettings`` is the ``[relay]`` section of the configuration (``Config.relay``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The values of ``[relay] smarthost_tls``.
SMARTHOST_TLS_MODES = ("required", "opportunistic", "none")


@dataclass(frozen=True)
class RelaySettings:
    """The ``[relay]`` section: where and how outbound mail goes; see ``etc/mailgw.ini``."""

    #: ``(host, port)`` of the smarthost (``smarthost = host:port``, ``[v6addr]:port``), or None
    #: to deliver straight to each recipient domain's MX hosts.
    smarthost: tuple[str, int] | None = None
    #: AUTH user name and password for the smarthost (both or neither).
    smarthost_user: str | None = None
    smarthost_password: str | None = None
    #: STARTTLS toward the smarthost: "required", "opportunistic" or "none".
    smarthost_tls: str = "required"
    #: Verify the smarthost's certificate (service-identity); toward MX hosts TLS is unverified.
    verify_certificates: bool = True
    #: Seconds a message may stay in the queue before it bounces as expired (default 5 days).
    max_age: float = 432000.0
    #: Connections at once toward one destination (smarthost, or one recipient domain).
    concurrency_per_destination: int = 4
