"""The other worker processes of one server, as a worker sees them: broadcast and subscribe.

With ``[mailgw] workers = N`` above 1, the worker processes share state through small messages
relayed by the master process (``mailgw.workers.feed``): a folder changed, a login failed, a
message was queued.  Code that needs to tell the other workers something holds an ``IPeers``;
in a single process it is ``NO_PEERS``, which sends nothing and never calls a handler.
"""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import Interface, implementer


class IPeers(Interface):
    """The other workers of this server."""

    def broadcast(topic: str, message: dict) -> None:
        """Send ``message`` (JSON-serialisable) to every other worker; they see the messages of
        one sender in the order sent.  Never blocks, never raises: a message to a worker that
        is gone (or restarting) is dropped."""

    def subscribe(topic: str, handler: Callable[[dict], None]) -> None:
        """Call ``handler(message)`` on the reactor thread for each ``topic`` message another
        worker broadcasts (never for this worker's own)."""


@implementer(IPeers)
class NoPeers:
    """A server of one process: broadcasts go nowhere, no handler is ever called."""

    def broadcast(self, topic: str, message: dict) -> None:
        """Send nothing."""

    def subscribe(self, topic: str, handler: Callable[[dict], None]) -> None:
        """Remember nothing: no other worker exists."""


#: The peers of a single-process server.
NO_PEERS = NoPeers()
